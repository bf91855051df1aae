//! Tests through a real `eggsfuse` mount: namespace operations with `std::fs` checked against
//! a model, and `rsync`/`tar` round trips. What the mount shows is also compared with what
//! the client library reads.

use super::{ensure, Context, Env, TestError, TestResult};
use crate::{rs_4_2_policy, wait_writable, FastRng};
use eggs_client::Client;
use eggs_protocol::{InodeId, Name};
use eggs_run::FuseMount;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SPAN: u32 = 1 << 20;
const STRIPE: u32 = 64 << 10;
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// A file system tree as relative path -> node (the root itself is not in it).
type Tree = BTreeMap<PathBuf, Node>;

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dir => write!(f, "dir"),
            Node::File(d) => write!(f, "file({} bytes, crc {:08x})", d.len(), crc32c::crc32c(d)),
        }
    }
}

/// Unmounts when dropped, so that a failing test does not leave a mount behind.
struct MountGuard(Option<FuseMount>);

impl MountGuard {
    async fn stop(mut self) {
        if let Some(m) = self.0.take() {
            m.stop().await;
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = eggs_run::send_signal(m.pid(), eggs_run::Signal::SIGTERM);
            eggs_run::lazy_unmount(m.mountpoint());
        }
    }
}

/// Gives the test's directory a 4+2 policy with 1 MiB spans (SEVEN_FLASH serves it), waits
/// until block-backed writes work, and mounts the cluster in the scratch directory. Returns
/// the mount and the test's directory as seen through it.
async fn mount(env: &Env) -> Result<(MountGuard, PathBuf), TestError> {
    let c = &env.client;
    c.set_directory_info(env.dir, rs_4_2_policy(SPAN, STRIPE))
        .await
        .ctx("setting the span policy")?;
    let probe = Name::new("probe").expect("valid");
    wait_writable(
        c,
        env.dir,
        &probe,
        u64::from(SPAN) + 1,
        Duration::from_secs(30),
    )
    .await
    .ctx("first block-backed write")?;
    let rel = dir_path(c, env.dir).await?;
    let mnt = env.scratch.join("mnt");
    std::fs::create_dir_all(&mnt).ctx(format!("creating {}", mnt.display()))?;
    let log = env.scratch.join("eggsfuse.log");
    let m = FuseMount::start(env.bin_dir(), env.shuckle(), &mnt, &log, MOUNT_TIMEOUT).await?;
    Ok((MountGuard(Some(m)), mnt.join(rel)))
}

/// The path of a directory under `/eggstests` (where every test directory is), relative to
/// the root.
async fn dir_path(c: &Client, dir: InodeId) -> Result<PathBuf, TestError> {
    let top = c.resolve("/eggstests").await.ctx("resolving /eggstests")?;
    let entries = c.readdir(top).await.ctx("listing /eggstests")?;
    let e = entries
        .iter()
        .find(|e| e.target_id == dir)
        .ok_or_else(|| TestError::Failed(format!("{dir} is not in /eggstests")))?;
    Ok(PathBuf::from("eggstests").join(e.name.to_string()))
}

/// Runs blocking file-system work off the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TestError> + Send + 'static,
) -> Result<T, TestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TestError::Failed(format!("blocking task: {e}")))?
}

/// Everything under `root` through `std::fs`.
fn walk(root: &Path) -> Result<Tree, TestError> {
    let mut out = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).ctx(format!("listing {}", dir.display()))? {
            let e = e.ctx(format!("listing {}", dir.display()))?;
            let r = rel.join(e.file_name());
            let t = e.file_type().ctx(format!("type of {}", r.display()))?;
            if t.is_dir() {
                out.insert(r.clone(), Node::Dir);
                stack.push(r);
            } else {
                let data = std::fs::read(e.path()).ctx(format!("reading {}", r.display()))?;
                out.insert(r, Node::File(data));
            }
        }
    }
    Ok(out)
}

/// Everything under `dir` through the client library.
async fn walk_client(c: &Client, dir: InodeId) -> Result<Tree, TestError> {
    let mut out = Tree::new();
    let mut stack = vec![(PathBuf::new(), dir)];
    while let Some((rel, id)) = stack.pop() {
        for e in c
            .readdir(id)
            .await
            .ctx(format!("readdir {}", rel.display()))?
        {
            let r = rel.join(e.name.to_string());
            if e.target_id.is_dir() {
                out.insert(r.clone(), Node::Dir);
                stack.push((r, e.target_id));
            } else {
                let data = c
                    .read_file(e.target_id)
                    .await
                    .ctx(format!("reading {}", r.display()))?;
                out.insert(r, Node::File(data));
            }
        }
    }
    Ok(out)
}

/// Fails with the first differences between two trees.
fn compare(what: &str, want: &Tree, got: &Tree) -> Result<(), TestError> {
    if want == got {
        return Ok(());
    }
    let mut diffs = Vec::new();
    for (p, n) in want {
        match got.get(p) {
            None => diffs.push(format!("{} missing", p.display())),
            Some(g) if g != n => diffs.push(format!("{}: {g:?}, expected {n:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("{} unexpected", p.display()));
    }
    diffs.truncate(8);
    Err(TestError::Failed(format!(
        "{what}: {} vs {} entries: {}",
        got.len(),
        want.len(),
        diffs.join("; ")
    )))
}

/// Mostly small files, some past a stripe, a few past a span.
fn random_size(rng: &mut FastRng) -> usize {
    let r = rng.next_u64();
    match r % 100 {
        0..=69 => (r >> 8) as usize % 4096,
        70..=96 => (r >> 8) as usize % (200 << 10),
        _ => SPAN as usize + (r >> 8) as usize % (SPAN as usize / 2),
    }
}

fn random_data(rng: &mut FastRng, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    rng.fill(&mut d);
    d
}

fn pick<'a>(rng: &mut FastRng, items: &'a [PathBuf]) -> Option<&'a PathBuf> {
    if items.is_empty() {
        return None;
    }
    items.get(rng.next_u64() as usize % items.len())
}

/// Random namespace operations on `root` through `std::fs`, mirrored in `model`.
fn random_ops(
    root: &Path,
    seed: u64,
    ops: usize,
    model: &mut Tree,
) -> Result<[usize; 6], TestError> {
    let mut rng = FastRng::new(seed);
    let mut done = [0usize; 6];
    let mut fresh = 0usize;
    for _ in 0..ops {
        let dirs: Vec<PathBuf> = std::iter::once(PathBuf::new())
            .chain(
                model
                    .iter()
                    .filter(|(_, n)| **n == Node::Dir)
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let files: Vec<PathBuf> = model
            .iter()
            .filter(|(_, n)| **n != Node::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        fresh += 1;
        let parent = pick(&mut rng, &dirs).cloned().unwrap_or_default();
        // Creations outnumber removals, so the tree grows.
        let kind = (rng.next_u64() % 10) as usize;
        match kind {
            0 | 8 => {
                let p = parent.join(format!("d{fresh}"));
                std::fs::create_dir(root.join(&p)).ctx(format!("mkdir {}", p.display()))?;
                model.insert(p, Node::Dir);
            }
            1 | 2 | 9 => {
                let p = parent.join(format!("f{fresh}"));
                let len = random_size(&mut rng);
                let data = random_data(&mut rng, len);
                std::fs::write(root.join(&p), &data).ctx(format!("writing {}", p.display()))?;
                model.insert(p, Node::File(data));
            }
            3 => {
                let Some(from) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                let to = parent.join(format!("r{fresh}"));
                std::fs::rename(root.join(&from), root.join(&to)).ctx(format!(
                    "mv {} {}",
                    from.display(),
                    to.display()
                ))?;
                let n = model.remove(&from).expect("in the model");
                model.insert(to, n);
            }
            4 => {
                let Some(from) = pick(&mut rng, &dirs[1..]).cloned() else {
                    continue;
                };
                if parent.starts_with(&from) {
                    continue; // into itself
                }
                let to = parent.join(format!("m{fresh}"));
                std::fs::rename(root.join(&from), root.join(&to)).ctx(format!(
                    "mv {} {}",
                    from.display(),
                    to.display()
                ))?;
                let moved: Vec<PathBuf> = model
                    .keys()
                    .filter(|p| p.starts_with(&from))
                    .cloned()
                    .collect();
                for p in moved {
                    let n = model.remove(&p).expect("listed");
                    let rest = p.strip_prefix(&from).expect("prefix");
                    model.insert(to.join(rest), n);
                }
            }
            5 | 6 => {
                let Some(f) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                std::fs::remove_file(root.join(&f)).ctx(format!("rm {}", f.display()))?;
                model.remove(&f);
            }
            _ => {
                let empty: Vec<PathBuf> = dirs[1..]
                    .iter()
                    .filter(|d| !model.keys().any(|p| p != *d && p.starts_with(d)))
                    .cloned()
                    .collect();
                let Some(d) = pick(&mut rng, &empty).cloned() else {
                    continue;
                };
                std::fs::remove_dir(root.join(&d)).ctx(format!("rmdir {}", d.display()))?;
                model.remove(&d);
            }
        }
        // [mkdir, write, mv file, mv dir, rm, rmdir]
        let category = match kind {
            0 | 8 => 0,
            1 | 2 | 9 => 1,
            3 => 2,
            4 => 3,
            5 | 6 => 4,
            _ => 5,
        };
        done[category] += 1;
    }
    Ok(done)
}

/// Random mkdir/write/rename (within and across directories, files and directories)/unlink/
/// rmdir through the mount, checked against a model; then the whole tree through the mount
/// and through the client library.
pub(super) async fn fuse_fs(env: &mut Env) -> TestResult {
    let (guard, base) = mount(env).await?;
    let root = base.join("fs");
    let ops = env.count(200);
    let seed = env.seed;
    let r = {
        let root = root.clone();
        blocking(move || {
            std::fs::create_dir(&root).ctx(format!("mkdir {}", root.display()))?;
            let mut model = Tree::new();
            let done = random_ops(&root, seed, ops, &mut model)?;
            let seen = walk(&root)?;
            compare("the mount after the operations", &model, &seen)?;
            Ok((model, done))
        })
        .await
    };
    let result = match r {
        Ok((model, done)) => check_client(env, &model, done).await,
        Err(e) => Err(e),
    };
    guard.stop().await;
    result
}

async fn check_client(env: &Env, model: &Tree, done: [usize; 6]) -> TestResult {
    let fs = Name::new("fs").expect("valid");
    let id = env.client.lookup(env.dir, &fs).await.ctx("lookup fs")?;
    let seen = walk_client(&env.client, id.target_id).await?;
    compare("the client library's view", model, &seen)?;
    let bytes: usize = model
        .values()
        .map(|n| match n {
            Node::File(d) => d.len(),
            Node::Dir => 0,
        })
        .sum();
    Ok(format!(
        "{} ops (mkdir {}, write {}, mv file {}, mv dir {}, rm {}, rmdir {}) leaving {} \
         entries ({bytes} bytes) matched the model through the mount and the client",
        done.iter().sum::<usize>(),
        done[0],
        done[1],
        done[2],
        done[3],
        done[4],
        done[5],
        model.len()
    ))
}

/// Runs a command, failing with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command) -> Result<String, TestError> {
    let what = format!("{cmd:?}");
    let out = cmd.output().ctx(format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Many small files in nested directories and a few multi-span ones.
fn make_source(src: &Path, seed: u64, dirs: usize, files: usize) -> Result<usize, TestError> {
    let mut rng = FastRng::new(seed);
    let mut n = 0;
    for d in 0..dirs {
        let dir = src.join(format!("dir{d}")).join(format!("sub{}", d % 3));
        std::fs::create_dir_all(&dir).ctx(format!("mkdir {}", dir.display()))?;
        for f in 0..files {
            let len = (rng.next_u64() % 6000) as usize;
            let p = dir.join(format!("file{f}"));
            std::fs::write(&p, random_data(&mut rng, len))
                .ctx(format!("writing {}", p.display()))?;
            n += 1;
        }
    }
    std::fs::create_dir_all(src.join("empty")).ctx("mkdir empty")?;
    let span = SPAN as usize;
    for (i, len) in [span + 1, 2 * span + STRIPE as usize + 7, 3 * span / 2]
        .iter()
        .enumerate()
    {
        let p = src.join(format!("big{i}"));
        std::fs::write(&p, random_data(&mut rng, *len)).ctx(format!("writing {}", p.display()))?;
        n += 1;
    }
    Ok(n)
}

/// `rsync -a` into the mount and again (nothing to transfer), `tar -c` from the mount and
/// `tar -x` into it, every copy compared with the source.
pub(super) async fn fuse_rsync_tar(env: &mut Env) -> TestResult {
    let (guard, base) = mount(env).await?;
    let scratch = env.scratch.clone();
    let (seed, dirs, files) = (env.seed, env.count(12), env.count(15));
    let r = blocking(move || rsync_tar(&scratch, &base, seed, dirs, files)).await;
    let result = match r {
        Ok((n, src)) => {
            let rs = Name::new("rs").expect("valid");
            match env.client.lookup(env.dir, &rs).await.ctx("lookup rs") {
                Ok(e) => match walk_client(&env.client, e.target_id).await {
                    Ok(seen) => compare("rsync copy through the client", &src, &seen).map(|()| {
                        format!(
                            "{n} files ({} entries) rsynced (second rsync changed nothing, not \
                             even directory times), tarred out and untarred in, all equal to the \
                             source, also via the client",
                            src.len()
                        )
                    }),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    guard.stop().await;
    result
}

fn rsync_tar(
    scratch: &Path,
    base: &Path,
    seed: u64,
    dirs: usize,
    files: usize,
) -> Result<(usize, Tree), TestError> {
    let src = scratch.join("src");
    let n = make_source(&src, seed, dirs, files)?;
    let want = walk(&src)?;
    let rs = base.join("rs");
    let src_arg = format!("{}/", src.display());
    run(Command::new("rsync").arg("-a").arg(&src_arg).arg(&rs))?;
    compare("rsync copy", &want, &walk(&rs)?)?;
    let again = run(Command::new("rsync")
        .args(["-a", "--itemize-changes", "--stats"])
        .arg(&src_arg)
        .arg(&rs))?;
    second_rsync_copied_nothing(&again)?;

    let tarball = scratch.join("rs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rs)
        .arg("-cf")
        .arg(&tarball)
        .arg("."))?;
    let out = scratch.join("untarred");
    std::fs::create_dir(&out).ctx("mkdir untarred")?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&out)
        .arg("-xf")
        .arg(&tarball))?;
    compare("tar from the mount", &want, &walk(&out)?)?;
    let tx = base.join("tx");
    std::fs::create_dir(&tx).ctx("mkdir tx in the mount")?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&tx)
        .arg("-xf")
        .arg(&tarball))?;
    compare("tar into the mount", &want, &walk(&tx)?)?;
    Ok((n, want))
}

/// The second `rsync -a --itemize-changes --stats` must change nothing at all: no file
/// transferred or created, and no itemized line, not even a directory's time (eggsfuse keeps
/// the times rsync sets on directories, through the shard's `SetTime`).
fn second_rsync_copied_nothing(out: &str) -> Result<(), TestError> {
    let has = |line: &str| out.lines().any(|l| l.trim() == line);
    ensure!(
        has("Number of regular files transferred: 0") && has("Number of created files: 0"),
        "second rsync transferred files:\n{out}"
    );
    // With --stats the itemized lines come first, then an empty line, then the statistics.
    let changes: Vec<&str> = out.lines().take_while(|l| !l.trim().is_empty()).collect();
    ensure!(
        changes.is_empty(),
        "second rsync changed something:\n{}",
        changes.join("\n")
    );
    Ok(())
}
