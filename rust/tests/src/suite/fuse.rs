//! Tests through a real `eggsfuse` mount: namespace and attribute operations with `std::fs`
//! checked against a model, and `rsync`/`tar` round trips. What the mount shows is also
//! compared with what the client library reads.

use super::{ensure, Context, Env, TestError, TestResult};
use crate::{rs_4_2_policy, wait_writable, FastRng};
use eggs_client::Client;
use eggs_protocol::posix::{S_IFDIR, S_IFMT, S_IFREG, S_ISGID, S_ISUID, S_ISVTX, S_IXGRP};
use eggs_protocol::{InodeId, Name};
use eggs_run::FuseMount;
use nix::sys::stat::{umask, Mode};
use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SPAN: u32 = 1 << 20;
const STRIPE: u32 = 64 << 10;
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// A file system tree as relative path -> node (the root itself is not in it).
type Tree = BTreeMap<PathBuf, Node>;

/// What `stat` shows of an entry's POSIX attributes: `st_mode` (file type, permission bits,
/// setuid, setgid, sticky), owner and group.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Attrs {
    fn of(m: &std::fs::Metadata) -> Attrs {
        Attrs {
            mode: m.mode() & (S_IFMT | 0o7777),
            uid: m.uid(),
            gid: m.gid(),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

impl std::fmt::Debug for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mode {:o} uid {} gid {}", self.mode, self.uid, self.gid)
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
}

#[derive(Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    attrs: Attrs,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Dir => write!(f, "dir")?,
            Kind::File(d) => write!(f, "file({} bytes, crc {:08x})", d.len(), crc32c::crc32c(d))?,
        }
        write!(f, " {:?}", self.attrs)
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

/// Everything under `root` through `std::fs`: each entry's type and attributes by `lstat`,
/// a file's bytes by reading it.
fn walk(root: &Path) -> Result<Tree, TestError> {
    let mut out = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).ctx(format!("listing {}", dir.display()))? {
            let e = e.ctx(format!("listing {}", dir.display()))?;
            let r = rel.join(e.file_name());
            let attrs = lstat(&e.path()).ctx(format!("lstat {}", r.display()))?;
            if attrs.is_dir() {
                let kind = Kind::Dir;
                out.insert(r.clone(), Node { kind, attrs });
                stack.push(r);
            } else {
                let data = std::fs::read(e.path()).ctx(format!("reading {}", r.display()))?;
                let kind = Kind::File(data);
                out.insert(r, Node { kind, attrs });
            }
        }
    }
    Ok(out)
}

fn lstat(p: &Path) -> std::io::Result<Attrs> {
    std::fs::symlink_metadata(p).map(|m| Attrs::of(&m))
}

/// The attributes the shard holds for an inode, as `stat` would show them (the whole mode,
/// so that a stray bit beyond the type and permission bits shows too).
async fn client_attrs(c: &Client, id: InodeId, what: &Path) -> Result<Attrs, TestError> {
    let st = c.stat(id).await.ctx(format!("stat {}", what.display()))?;
    let a = st.attrs();
    Ok(Attrs {
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
    })
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
            let attrs = client_attrs(c, e.target_id, &r).await?;
            if e.target_id.is_dir() {
                out.insert(
                    r.clone(),
                    Node {
                        kind: Kind::Dir,
                        attrs,
                    },
                );
                stack.push((r, e.target_id));
            } else {
                let data = c
                    .read_file(e.target_id)
                    .await
                    .ctx(format!("reading {}", r.display()))?;
                let kind = Kind::File(data);
                out.insert(r, Node { kind, attrs });
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

/// Who the test runs as, for the model's rules.
struct Caller {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Caller {
    fn current() -> Caller {
        Caller {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.as_raw())
                .collect(),
        }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Linux's `in_group_or_capable`: root (`CAP_FSETID`) or a member of `gid`.
    fn in_group_or_root(&self, gid: u32) -> bool {
        self.is_root() || self.gid == gid || self.groups.contains(&gid)
    }

    /// What a new entry of type `typ` in a directory with attributes `dir` gets, `perms`
    /// being the permission bits the call asked for less the umask (Linux's
    /// `inode_init_owner` and `mode_strip_sgid`): the caller as owner; in a setgid directory
    /// the directory's group, and for a directory its setgid bit too (a file keeps a setgid
    /// bit it asked for with group execute only if the caller is root or in that group);
    /// elsewhere the caller's group.
    fn new_attrs(&self, dir: Attrs, typ: u32, perms: u32) -> Attrs {
        let mut mode = typ | perms;
        let gid = if dir.mode & S_ISGID != 0 {
            if typ == S_IFDIR {
                mode |= S_ISGID;
            } else if mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP
                && !self.in_group_or_root(dir.gid)
            {
                mode &= !S_ISGID;
            }
            dir.gid
        } else {
            self.gid
        };
        Attrs {
            mode,
            uid: self.uid,
            gid,
        }
    }
}

/// The model of the test's tree: its entries, and the attributes of its root (which the
/// operations change too, and which entries made right under it inherit from).
struct Model {
    root: Attrs,
    tree: Tree,
    caller: Caller,
    /// Entries made in setgid directories (which get the directory's group).
    in_setgid: usize,
}

impl Model {
    fn attrs(&self, p: &Path) -> Attrs {
        if p.as_os_str().is_empty() {
            self.root
        } else {
            self.tree[p].attrs
        }
    }

    fn attrs_mut(&mut self, p: &Path) -> &mut Attrs {
        if p.as_os_str().is_empty() {
            &mut self.root
        } else {
            &mut self.tree.get_mut(p).expect("in the model").attrs
        }
    }

    fn create(&mut self, p: PathBuf, kind: Kind, perms: u32) {
        let parent = p.parent().expect("a name in a directory");
        let typ = if kind == Kind::Dir { S_IFDIR } else { S_IFREG };
        let dir = self.attrs(parent);
        self.in_setgid += usize::from(dir.mode & S_ISGID != 0);
        let attrs = self.caller.new_attrs(dir, typ, perms);
        self.tree.insert(p, Node { kind, attrs });
    }

    /// `chmod` by the owner or root (Linux's `setattr_prepare`): the new bits, but setgid
    /// only if the caller is root or in the entry's group.
    fn chmod(&mut self, p: &Path, perms: u32) {
        let in_group = self.caller.in_group_or_root(self.attrs(p).gid);
        let a = self.attrs_mut(p);
        let perms = if in_group { perms } else { perms & !S_ISGID };
        a.mode = (a.mode & S_IFMT) | perms;
    }

    /// `chown` by root (Linux's `chown_common` and `notify_change`, which clear the bits
    /// even when the ids stay the same): a non-directory loses setuid, and setgid if group
    /// execute is set (setgid without it marks mandatory locking and stays); a directory
    /// keeps its bits.
    fn chown(&mut self, p: &Path, uid: Option<u32>, gid: Option<u32>) {
        let a = self.attrs_mut(p);
        if let Some(u) = uid {
            a.uid = u;
        }
        if let Some(g) = gid {
            a.gid = g;
        }
        if !a.is_dir() {
            a.mode &= !S_ISUID;
            if a.mode & S_IXGRP != 0 {
                a.mode &= !S_ISGID;
            }
        }
    }

    /// Fails unless `lstat` of `p` (under the mount's `root`) shows the model's type,
    /// attributes and size, right after `what`.
    fn check(&self, root: &Path, p: &Path, what: &str) -> Result<(), TestError> {
        let m = std::fs::symlink_metadata(root.join(p)).ctx(format!("lstat after {what}"))?;
        let (got, want) = (Attrs::of(&m), self.attrs(p));
        ensure!(got == want, "after {what}: {got:?}, expected {want:?}");
        if let Some(Node {
            kind: Kind::File(d),
            ..
        }) = self.tree.get(p)
        {
            ensure!(
                m.len() == d.len() as u64,
                "after {what}: {} bytes, expected {}",
                m.len(),
                d.len()
            );
        }
        Ok(())
    }
}

/// The process's umask set to a value while this lives. A process has one umask: the test
/// sets it only around its own creations, while nothing else in the process makes files.
struct UmaskGuard(Mode);

impl UmaskGuard {
    fn set(mask: u32) -> UmaskGuard {
        UmaskGuard(umask(Mode::from_bits_truncate(mask)))
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        umask(self.0);
    }
}

/// Creates `path` with `mode` under umask `mask`, as a program with that umask would, and
/// writes `data` into it.
fn create_file(path: &Path, mode: u32, mask: u32, data: &[u8]) -> std::io::Result<()> {
    let mut f = {
        let _umask = UmaskGuard::set(mask);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?
    };
    f.write_all(data)
}

fn mkdir(path: &Path, mode: u32, mask: u32) -> std::io::Result<()> {
    let _umask = UmaskGuard::set(mask);
    DirBuilder::new().mode(mode).create(path)
}

/// `b` one time in `n`.
fn bit(rng: &mut FastRng, n: u64, b: u32) -> u32 {
    if rng.next_u64().is_multiple_of(n) {
        b
    } else {
        0
    }
}

/// Mostly a usual umask, sometimes any bits.
fn random_umask(rng: &mut FastRng) -> u32 {
    const USUAL: [u32; 5] = [0o022, 0o002, 0o077, 0o027, 0o000];
    let r = rng.next_u64();
    if r.is_multiple_of(4) {
        (r >> 8) as u32 & 0o777
    } else {
        USUAL[(r >> 8) as usize % USUAL.len()]
    }
}

/// Any permission bits for a file, sometimes with setuid or setgid.
fn random_file_perms(rng: &mut FastRng) -> u32 {
    let perms = rng.next_u64() as u32 & 0o777;
    perms | bit(rng, 6, S_ISUID) | bit(rng, 4, S_ISGID)
}

/// Permission bits for a directory: always the owner's (so that any user could go on
/// working in it), the others' any, sometimes setgid or sticky.
fn random_dir_perms(rng: &mut FastRng) -> u32 {
    let perms = 0o700 | (rng.next_u64() as u32 & 0o077);
    perms | bit(rng, 2, S_ISGID) | bit(rng, 4, S_ISVTX)
}

/// Mostly a usual owner or group, sometimes any id (but -1, which means "unchanged").
fn random_id(rng: &mut FastRng) -> u32 {
    const USUAL: [u32; 8] = [0, 1, 100, 1000, 1001, 65534, 65535, 65536];
    let r = rng.next_u64();
    if r.is_multiple_of(3) {
        ((r >> 8) as u32).min(u32::MAX - 1)
    } else {
        USUAL[(r >> 8) as usize % USUAL.len()]
    }
}

/// What [`random_ops`] did of each kind.
const OP_NAMES: [&str; 8] = [
    "mkdir", "write", "mv file", "mv dir", "rm", "rmdir", "chmod", "chown",
];

/// Random namespace and attribute operations on `root` through `std::fs`, mirrored in
/// `model`; each creation, `chmod` and `chown` is checked with `lstat` at once.
fn random_ops(
    root: &Path,
    seed: u64,
    ops: usize,
    model: &mut Model,
) -> Result<[usize; 8], TestError> {
    let mut rng = FastRng::new(seed);
    let mut done = [0usize; 8];
    let mut fresh = 0usize;
    for _ in 0..ops {
        let dirs: Vec<PathBuf> = std::iter::once(PathBuf::new())
            .chain(
                model
                    .tree
                    .iter()
                    .filter(|(_, n)| n.is_dir())
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let files: Vec<PathBuf> = model
            .tree
            .iter()
            .filter(|(_, n)| !n.is_dir())
            .map(|(p, _)| p.clone())
            .collect();
        fresh += 1;
        let parent = pick(&mut rng, &dirs).cloned().unwrap_or_default();
        // Creations outnumber removals, so the tree grows.
        let kind = (rng.next_u64() % 13) as usize;
        let category = match kind {
            0 | 8 => {
                let p = parent.join(format!("d{fresh}"));
                // mkdir(2) takes only the permission bits and sticky (setgid comes from
                // the parent); the umask leaves the owner's bits.
                let mode = 0o700 | (rng.next_u64() as u32 & 0o077) | bit(&mut rng, 4, S_ISVTX);
                let mask = random_umask(&mut rng) & 0o077;
                let what = format!("mkdir -m {mode:o} {} (umask {mask:03o})", p.display());
                mkdir(&root.join(&p), mode, mask).ctx(what.clone())?;
                model.create(p.clone(), Kind::Dir, mode & !mask);
                model.check(root, &p, &what)?;
                0
            }
            1 | 2 | 9 => {
                let p = parent.join(format!("f{fresh}"));
                let len = random_size(&mut rng);
                let data = random_data(&mut rng, len);
                let mode = random_file_perms(&mut rng);
                let mask = random_umask(&mut rng);
                let what = format!(
                    "writing {} (mode {mode:o}, umask {mask:03o}, {len} bytes)",
                    p.display()
                );
                create_file(&root.join(&p), mode, mask, &data).ctx(what.clone())?;
                model.create(p.clone(), Kind::File(data), mode & !mask);
                model.check(root, &p, &what)?;
                1
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
                let n = model.tree.remove(&from).expect("in the model");
                model.tree.insert(to, n);
                2
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
                    .tree
                    .keys()
                    .filter(|p| p.starts_with(&from))
                    .cloned()
                    .collect();
                for p in moved {
                    let n = model.tree.remove(&p).expect("listed");
                    let rest = p.strip_prefix(&from).expect("prefix");
                    model.tree.insert(to.join(rest), n);
                }
                3
            }
            5 | 6 => {
                let Some(f) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                std::fs::remove_file(root.join(&f)).ctx(format!("rm {}", f.display()))?;
                model.tree.remove(&f);
                4
            }
            7 => {
                let empty: Vec<PathBuf> = dirs[1..]
                    .iter()
                    .filter(|d| !model.tree.keys().any(|p| p != *d && p.starts_with(d)))
                    .cloned()
                    .collect();
                let Some(d) = pick(&mut rng, &empty).cloned() else {
                    continue;
                };
                std::fs::remove_dir(root.join(&d)).ctx(format!("rmdir {}", d.display()))?;
                model.tree.remove(&d);
                5
            }
            10 | 11 => {
                // Any entry, the root too.
                let all: Vec<PathBuf> = dirs.iter().chain(&files).cloned().collect();
                let Some(p) = pick(&mut rng, &all).cloned() else {
                    continue;
                };
                let perms = if model.attrs(&p).is_dir() {
                    random_dir_perms(&mut rng)
                } else {
                    random_file_perms(&mut rng)
                };
                let what = format!("chmod {perms:o} /{}", p.display());
                std::fs::set_permissions(root.join(&p), Permissions::from_mode(perms))
                    .ctx(what.clone())?;
                model.chmod(&p, perms);
                model.check(root, &p, &what)?;
                6
            }
            _ => {
                if !model.caller.is_root() {
                    continue; // only root gives entries away
                }
                let all: Vec<PathBuf> = dirs.iter().chain(&files).cloned().collect();
                let Some(p) = pick(&mut rng, &all).cloned() else {
                    continue;
                };
                // chown, chgrp, or both.
                let which = rng.next_u64() % 3;
                let uid = (which != 1).then(|| random_id(&mut rng));
                let gid = (which != 0).then(|| random_id(&mut rng));
                let what = format!("chown {uid:?}:{gid:?} /{}", p.display());
                std::os::unix::fs::chown(root.join(&p), uid, gid).ctx(what.clone())?;
                model.chown(&p, uid, gid);
                model.check(root, &p, &what)?;
                7
            }
        };
        done[category] += 1;
    }
    Ok(done)
}

/// Random mkdir/write (with random modes and umasks)/rename (within and across
/// directories, files and directories)/unlink/rmdir/chmod/chown through the mount, checked
/// against a model (contents, types, modes, owners and groups); then the whole tree through
/// the mount and through the client library.
pub(super) async fn fuse_fs(env: &mut Env) -> TestResult {
    let (guard, base) = mount(env).await?;
    let root = base.join("fs");
    // About as many namespace operations as before attribute changes joined them.
    let ops = env.count(260);
    let seed = env.seed;
    let r = {
        let root = root.clone();
        blocking(move || {
            let caller = Caller::current();
            let dir = lstat(&base).ctx(format!("lstat {}", base.display()))?;
            let mask = 0o022;
            mkdir(&root, 0o755, mask).ctx(format!("mkdir {}", root.display()))?;
            let mut model = Model {
                root: caller.new_attrs(dir, S_IFDIR, 0o755 & !mask),
                tree: Tree::new(),
                caller,
                in_setgid: 0,
            };
            model.check(&root, Path::new(""), "making the tree's root")?;
            let done = random_ops(&root, seed, ops, &mut model)?;
            let seen = walk(&root)?;
            compare("the mount after the operations", &model.tree, &seen)?;
            model.check(&root, Path::new(""), "the operations (the tree's root)")?;
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

async fn check_client(env: &Env, model: &Model, done: [usize; 8]) -> TestResult {
    let fs = Name::new("fs").expect("valid");
    let id = env.client.lookup(env.dir, &fs).await.ctx("lookup fs")?;
    let root = client_attrs(&env.client, id.target_id, Path::new("fs")).await?;
    ensure!(
        root == model.root,
        "the client library's view of the tree's root: {root:?}, expected {:?}",
        model.root
    );
    let seen = walk_client(&env.client, id.target_id).await?;
    compare("the client library's view", &model.tree, &seen)?;
    let bytes: usize = model
        .tree
        .values()
        .map(|n| match &n.kind {
            Kind::File(d) => d.len(),
            Kind::Dir => 0,
        })
        .sum();
    let counts: Vec<String> = OP_NAMES
        .iter()
        .zip(done)
        .map(|(n, k)| format!("{n} {k}"))
        .collect();
    Ok(format!(
        "{} ops ({}; {} made in setgid directories) leaving {} entries ({bytes} bytes) \
         matched the model (contents, modes, owners, groups) through the mount and the client",
        done.iter().sum::<usize>(),
        counts.join(", "),
        model.in_setgid,
        model.tree.len()
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
/// `tar -x` into it, every copy compared with the source (contents, modes, owners, groups:
/// both keep them, run as root).
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
