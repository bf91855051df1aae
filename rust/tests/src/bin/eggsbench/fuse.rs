//! `eggsbench fuse`: the same workloads through an eggsfuse mount and in a local directory,
//! side by side, in one run.
//!
//! Starts its own cluster (eggs-run, the default 14 failure domains, binaries next to this
//! one), mounts it with eggsfuse, and runs, in the mount and in `--local-dir`: a sequential
//! write and a cold-cache sequential read of `--size-gib`, four parallel readers of its
//! quarters, create/stat/list/delete of `--files` empty files, `--files` files of 4 KiB
//! written then read, and `--renames` renames across directories. Needs root (it drops the
//! page cache between writing and reading). `--markdown FILE` also writes the results as a
//! BENCHMARKS.md section.

use eggs_client::FileWriter;
use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig, FuseMount};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct FuseArgs {
    /// Size of the large file, in GiB.
    #[arg(long, default_value_t = 4)]
    size_gib: u64,
    /// Files for the small-file workloads.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Renames across directories.
    #[arg(long, default_value_t = 1_000)]
    renames: usize,
    /// The local directory to compare with (on the disk the cluster uses).
    #[arg(long, default_value = "/tmp/eggsfusebench-local")]
    local_dir: PathBuf,
    /// Where the cluster keeps its data (removed at the end).
    #[arg(long, default_value = "/tmp/eggsfusebench-cluster")]
    cluster_dir: PathBuf,
    /// Client-library sequential write MB/s to compare with (BENCHMARKS.md, data path).
    #[arg(long, default_value_t = 189.0)]
    library_write_mbs: f64,
    /// Client-library sequential read MB/s to compare with.
    #[arg(long, default_value_t = 737.0)]
    library_read_mbs: f64,
    /// Also write the results as a Markdown section to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const IO: usize = 1 << 20;

/// One row: what, how much (bytes or operations), seconds on local and on EggsFS.
struct Row {
    what: String,
    unit: &'static str,
    amount: f64,
    local_s: f64,
    eggs_s: f64,
}

impl Row {
    fn rate(&self, s: f64) -> f64 {
        if self.unit == "MB/s" {
            self.amount / 1e6 / s
        } else {
            self.amount / s
        }
    }
}

pub async fn run(args: FuseArgs) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&args.cluster_dir);
    let _ = std::fs::remove_dir_all(&args.local_dir);
    let mut cfg = ClusterConfig::new(&args.cluster_dir);
    cfg.shuckle_port = 0;
    cfg.block_services = BlockServicesLayout::RS_10_4;
    let cluster = Cluster::start(cfg).await.map_err(|e| e.to_string())?;
    cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    wait_writable(&cluster).await?;
    let mnt = args.cluster_dir.join("fuse/mnt");
    std::fs::create_dir_all(args.cluster_dir.join("logs")).map_err(|e| e.to_string())?;
    let mount = FuseMount::start(
        &cluster.config().bin_dir,
        cluster.shuckle_addr(),
        &mnt,
        &args.cluster_dir.join("logs/fuse.log"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())?;
    let local = args.local_dir.clone();
    let eggs = mnt.join("bench");
    std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&eggs).map_err(|e| e.to_string())?;
    let load_before = loadavg();
    let params = (args.size_gib, args.files, args.renames);
    let rows = tokio::task::spawn_blocking(move || workloads(&params, &local, &eggs))
        .await
        .map_err(|e| e.to_string())?;
    let library = library_rows(&cluster, args.size_gib << 30).await?;
    let load_after = loadavg();
    mount.stop().await;
    let _ = cluster.stop().await;
    let text = report(&args, &rows, &library, &load_before, &load_after);
    println!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&args.cluster_dir);
    let _ = std::fs::remove_dir_all(&args.local_dir);
    Ok(())
}

/// The same large file written and read (cold) through the client library in this run, for
/// a comparison on equal terms: (write MB/s, read MB/s).
async fn library_rows(cluster: &Cluster, size: u64) -> Result<(f64, f64), String> {
    let client = cluster.client().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let reader = PatternReader {
        pattern: pattern(),
        pos: 0,
        left: size,
    };
    let id = FileWriter::write_path(&client, "/library-big", reader)
        .await
        .map_err(|e| e.to_string())?;
    let write = size as f64 / 1e6 / t0.elapsed().as_secs_f64();
    eprintln!("client library write: {write:.0} MB/s");
    tokio::task::spawn_blocking(drop_caches)
        .await
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let n = client
        .read_file_to(id, tokio::io::sink())
        .await
        .map_err(|e| e.to_string())?;
    let read = n as f64 / 1e6 / t0.elapsed().as_secs_f64();
    eprintln!("client library read: {read:.0} MB/s");
    client
        .unlink("/library-big")
        .await
        .map_err(|e| e.to_string())?;
    Ok((write, read))
}

/// `left` bytes of the repeating pattern.
struct PatternReader {
    pattern: Vec<u8>,
    pos: usize,
    left: u64,
}

impl tokio::io::AsyncRead for PatternReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64)
            .min(self.left)
            .min((self.pattern.len() - self.pos) as u64) as usize;
        let at = self.pos;
        buf.put_slice(&self.pattern[at..at + n]);
        self.pos = (at + n) % self.pattern.len();
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

fn pattern() -> Vec<u8> {
    let mut pattern = vec![0u8; 64 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for c in pattern.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    pattern
}

/// Block writes fail until the shards have heard of the block services.
async fn wait_writable(cluster: &Cluster) -> Result<(), String> {
    let client = cluster.client().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    loop {
        match FileWriter::write_path(&client, "/.probe", &[7u8; 100_000][..]).await {
            Ok(_) => return client.unlink("/.probe").await.map_err(|e| e.to_string()),
            Err(e) if t0.elapsed() > Duration::from_secs(60) => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().next().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into())
}

fn drop_caches() {
    nix::unistd::sync();
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("eggsfusebench: cannot drop the page cache ({e}); reads may be warm");
    }
}

fn workloads(params: &(u64, usize, usize), local: &Path, eggs: &Path) -> Vec<Row> {
    let &(size_gib, files, renames) = params;
    let size = size_gib << 30;
    let mut rows = Vec::new();
    let mut both = |what: &str, unit: &'static str, amount: f64, f: &dyn Fn(&Path)| {
        let mut secs = [0.0; 2];
        for (i, dir) in [local, eggs].into_iter().enumerate() {
            let t0 = Instant::now();
            f(dir);
            secs[i] = t0.elapsed().as_secs_f64();
            eprintln!("{what} in {}: {:.2} s", dir.display(), secs[i]);
        }
        rows.push(Row {
            what: what.into(),
            unit,
            amount,
            local_s: secs[0],
            eggs_s: secs[1],
        });
    };
    let bytes = size as f64;
    both(
        &format!("sequential write, {size_gib} GiB (until durable/visible)"),
        "MB/s",
        bytes,
        &|d| write_big(&d.join("big"), size),
    );
    both(
        &format!("sequential read, {size_gib} GiB, cold cache"),
        "MB/s",
        bytes,
        &|d| {
            drop_caches();
            read_range(&d.join("big"), 0, size);
        },
    );
    both(
        "4 parallel readers of its quarters, cold cache",
        "MB/s",
        bytes,
        &|d| {
            drop_caches();
            parallel_read(&d.join("big"), size, 4);
        },
    );
    for d in [local, eggs] {
        let _ = std::fs::remove_file(d.join("big"));
    }
    let n = files as f64;
    both(&format!("create {files} empty files"), "ops/s", n, &|d| {
        let dir = d.join("empty");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..files {
            File::create(dir.join(i.to_string())).unwrap();
        }
    });
    both(&format!("stat {files} files"), "ops/s", n, &|d| {
        for i in 0..files {
            std::fs::metadata(d.join("empty").join(i.to_string())).unwrap();
        }
    });
    both(&format!("list {files} files"), "entries/s", n, &|d| {
        let count = std::fs::read_dir(d.join("empty")).unwrap().count();
        assert_eq!(count, files);
    });
    both(&format!("delete {files} files"), "ops/s", n, &|d| {
        for i in 0..files {
            std::fs::remove_file(d.join("empty").join(i.to_string())).unwrap();
        }
    });
    let small = vec![0x5au8; 4096];
    both(
        &format!("write {files} files of 4 KiB"),
        "files/s",
        n,
        &|d| {
            let dir = d.join("small");
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..files {
                let mut f = File::create(dir.join(i.to_string())).unwrap();
                f.write_all(&small).unwrap();
            }
        },
    );
    both(
        &format!("read {files} files of 4 KiB, cold cache"),
        "files/s",
        n,
        &|d| {
            drop_caches();
            let mut buf = Vec::new();
            for i in 0..files {
                buf.clear();
                File::open(d.join("small").join(i.to_string()))
                    .unwrap()
                    .read_to_end(&mut buf)
                    .unwrap();
                assert_eq!(buf.len(), 4096);
            }
        },
    );
    for d in [local, eggs] {
        let a = d.join("ra");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(d.join("rb")).unwrap();
        for i in 0..renames {
            File::create(a.join(i.to_string())).unwrap();
        }
    }
    both(
        &format!("{renames} renames across directories"),
        "ops/s",
        renames as f64,
        &|d| {
            for i in 0..renames {
                let name = i.to_string();
                std::fs::rename(d.join("ra").join(&name), d.join("rb").join(&name)).unwrap();
            }
        },
    );
    rows
}

/// Writes `size` bytes of pseudo-random data in 1 MiB writes; local files are fsynced, EggsFS
/// files are waited for until they are linked (visible with their full size).
fn write_big(path: &Path, size: u64) {
    let pattern = pattern();
    let mut f = File::create(path).unwrap();
    let mut done = 0u64;
    let mut i = 0usize;
    while done < size {
        let n = IO.min((size - done) as usize);
        let at = (i * IO) % pattern.len();
        f.write_all(&pattern[at..at + n]).unwrap();
        done += n as u64;
        i += 1;
    }
    f.sync_all().unwrap();
    drop(f);
    // On EggsFS the file is linked after the close; a lookup waits for that.
    assert_eq!(std::fs::metadata(path).unwrap().len(), size);
}

fn read_range(path: &Path, from: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; IO];
    let mut pos = from;
    while pos < from + len {
        let n = f.read_at(&mut buf, pos).unwrap();
        assert!(n > 0, "short file");
        pos += n as u64;
    }
}

fn parallel_read(path: &Path, size: u64, readers: u64) {
    let part = size / readers;
    std::thread::scope(|s| {
        for r in 0..readers {
            s.spawn(move || read_range(path, r * part, part));
        }
    });
}

fn report(
    args: &FuseArgs,
    rows: &[Row],
    library: &(f64, f64),
    load_before: &str,
    load_after: &str,
) -> String {
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut t = String::new();
    t += &format!("## FUSE mount vs local directory ({date})\n\n");
    t += &format!(
        "`target/release/eggsfusebench --size-gib {} --files {} --renames {}`: a fresh cluster \
         (eggs-run, 14 failure domains, default policies: the large file is 100 MiB RS(10,4) \
         spans on hdd-class services), mounted by eggsfuse; the same workloads in a local \
         directory on the same disk, one after the other. Single-threaded programs (std::fs), \
         1 MiB reads and writes; the page cache is dropped before each read. Load average {} \
         before, {} after.\n\n",
        args.size_gib, args.files, args.renames, load_before, load_after
    );
    t += "| workload | unit | local | EggsFS (FUSE) | EggsFS / local |\n|---|---|---:|---:|---:|\n";
    for r in rows {
        let (l, e) = (r.rate(r.local_s), r.rate(r.eggs_s));
        t += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |\n",
            r.what,
            r.unit,
            l,
            e,
            e / l
        );
    }
    let (w, rd) = (&rows[0], &rows[1]);
    let (fw, fr) = (w.rate(w.eggs_s), rd.rate(rd.eggs_s));
    t += &format!(
        "\nThe same {} GiB through the client library in this run (the `eggsbench data` path): \
         write {:.0} MB/s, cold read {:.0} MB/s. The mount reaches {:.2} of it writing and \
         {:.2} reading (target: at least 0.8); against the quiet-machine data-path figures \
         ({:.0} and {:.0} MB/s): {:.2} and {:.2}.\n",
        args.size_gib,
        library.0,
        library.1,
        fw / library.0,
        fr / library.1,
        args.library_write_mbs,
        args.library_read_mbs,
        fw / args.library_write_mbs,
        fr / args.library_read_mbs,
    );
    t
}
