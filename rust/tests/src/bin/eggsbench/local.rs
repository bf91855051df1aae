//! `eggsbench meta --local DIR`: the metadata benchmark's operations on a local directory,
//! with the same labels and table, as the baseline `cargo xtask bench` puts beside EggsFS.
//!
//! Operations run on `threads` OS threads (local calls take microseconds, so more in flight
//! would only measure the scheduler). They are not durable: nothing is fsynced, while every
//! EggsFS write is synced to its WAL before the reply.

use eggs_tests::Latencies;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ctx {
    root: PathBuf,
    unique: AtomicU64,
}

impl Ctx {
    fn lookups(&self) -> PathBuf {
        self.root.join("lookups")
    }
    fn worker(&self, w: usize, side: &str) -> PathBuf {
        self.root.join(format!("w{w}{side}"))
    }
}

/// Runs every operation whose label contains `only` (all when `None`) for `secs` seconds and
/// prints the table; removes what it made.
pub fn run(dir: &Path, threads: usize, secs: u64, only: Option<&str>) -> io::Result<()> {
    let root = dir.join(format!("eggsbench-local-{}", std::process::id()));
    let ctx = Arc::new(Ctx {
        root,
        unique: AtomicU64::new(0),
    });
    setup(&ctx, threads)?;
    println!("| operation | ops/s | p50 µs | p99 µs | ops |");
    println!("|---|---:|---:|---:|---:|");
    let want = |n: &str| only.is_none_or(|o| n.contains(o));
    let d = Duration::from_secs(secs);
    let result = (|| -> io::Result<()> {
        if want("lookup") {
            bench("lookup", &ctx, threads, d, |c, w, i| {
                fs::symlink_metadata(c.lookups().join(format!("file-{}", (w * 7919 + i) % 100)))
                    .map(drop)
            })?;
            bench("lookup (16 directories)", &ctx, threads, d, |c, w, i| {
                let k = (w * 7919 + i) % 160;
                let p = c.root.join(format!("spread-{}/file-{}", k / 10, k % 10));
                fs::symlink_metadata(p).map(drop)
            })?;
        }
        if want("stat") {
            bench("stat file", &ctx, threads, d, |c, w, i| {
                fs::metadata(c.lookups().join(format!("file-{}", (w * 7919 + i) % 100))).map(drop)
            })?;
        }
        if want("readdir") {
            bench("readdir (100 entries)", &ctx, threads, d, |c, _, _| {
                fs::read_dir(c.lookups())?.try_for_each(|e| e.map(drop))
            })?;
        }
        if want("mkdir") {
            bench("mkdir", &ctx, threads, d, |c, w, _| {
                let u = c.unique.fetch_add(1, Ordering::Relaxed);
                fs::create_dir(c.worker(w, "a").join(format!("d{u}")))
            })?;
        }
        if want("create") {
            bench("create empty file", &ctx, threads, d, |c, w, _| {
                let u = c.unique.fetch_add(1, Ordering::Relaxed);
                fs::File::create(c.worker(w, "a").join(format!("c{u}"))).map(drop)
            })?;
        }
        if want("same-dir") {
            bench("same-directory rename", &ctx, threads, d, |c, w, i| {
                let dir = c.worker(w, "a");
                let names = ["ping", "pong"];
                if i == 0 {
                    fs::File::create(dir.join(names[0]))?;
                }
                fs::rename(dir.join(names[i % 2]), dir.join(names[(i + 1) % 2]))
            })?;
        }
        if want("cross-dir") {
            bench("cross-directory rename", &ctx, threads, d, |c, w, i| {
                let dirs = [c.worker(w, "a"), c.worker(w, "b")];
                if i == 0 {
                    fs::File::create(dirs[0].join("mover"))?;
                }
                fs::rename(dirs[i % 2].join("mover"), dirs[(i + 1) % 2].join("mover"))
            })?;
        }
        if want("unlink") {
            unlinks(&ctx, threads, d)?;
        }
        Ok(())
    })();
    let cleanup = fs::remove_dir_all(&ctx.root);
    result.and(cleanup)
}

fn setup(ctx: &Ctx, threads: usize) -> io::Result<()> {
    fs::create_dir_all(ctx.lookups())?;
    for i in 0..100 {
        fs::write(ctx.lookups().join(format!("file-{i}")), b"hello")?;
    }
    for d in 0..16 {
        let dir = ctx.root.join(format!("spread-{d}"));
        fs::create_dir(&dir)?;
        for i in 0..10 {
            fs::write(dir.join(format!("file-{i}")), b"hello")?;
        }
    }
    for w in 0..threads {
        fs::create_dir(ctx.worker(w, "a"))?;
        fs::create_dir(ctx.worker(w, "b"))?;
    }
    Ok(())
}

/// Runs `op(ctx, worker, iteration)` on `threads` threads for `d`, timing each call.
fn bench<F>(label: &str, ctx: &Arc<Ctx>, threads: usize, d: Duration, op: F) -> io::Result<()>
where
    F: Fn(&Ctx, usize, usize) -> io::Result<()> + Send + Sync + Clone + 'static,
{
    timed(label, ctx, threads, d, move |c, w, i, lat| {
        let t = Instant::now();
        op(c, w, i)?;
        lat.push(t.elapsed());
        Ok(())
    })
}

/// Creates a file (not timed), then unlinks it (timed).
fn unlinks(ctx: &Arc<Ctx>, threads: usize, d: Duration) -> io::Result<()> {
    timed("unlink", ctx, threads, d, |c, w, _, lat| {
        let u = c.unique.fetch_add(1, Ordering::Relaxed);
        let p = c.worker(w, "b").join(format!("u{u}"));
        fs::File::create(&p)?;
        let t = Instant::now();
        fs::remove_file(&p)?;
        lat.push(t.elapsed());
        Ok(())
    })
}

fn timed<F>(label: &str, ctx: &Arc<Ctx>, threads: usize, d: Duration, step: F) -> io::Result<()>
where
    F: Fn(&Ctx, usize, usize, &mut Latencies) -> io::Result<()> + Send + Sync + Clone + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (ctx, stop, step) = (ctx.clone(), stop.clone(), step.clone());
            std::thread::spawn(move || -> io::Result<Latencies> {
                let mut lat = Latencies::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    step(&ctx, w, i, &mut lat)?;
                    i += 1;
                }
                Ok(lat)
            })
        })
        .collect();
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(l)) => all.merge(l),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(io::Error::other("worker panicked"))),
        }
    }
    if let Some(e) = first_err {
        return Err(io::Error::new(e.kind(), format!("{label}: {e}")));
    }
    crate::report(label, start.elapsed(), &mut all);
    Ok(())
}
