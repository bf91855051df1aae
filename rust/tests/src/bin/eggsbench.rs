//! Benchmarks through the client library against a running cluster.
//!
//! `eggsbench meta --shuckle ADDR` runs each metadata operation with many requests in flight
//! for a fixed time and prints a Markdown table of ops/s and p50/p99 latencies.
//!
//! `eggsbench meta --local DIR` runs the same operations on a local directory instead (the
//! baseline `cargo xtask bench` prints beside them; see `local.rs`).
//!
//! `eggsbench data --shuckle ADDR` measures the data path: erasure coding and CRC in memory,
//! the local disk, and sequential file writes and reads through the cluster (see `data.rs`).
//!
//! `eggsbench fuse` starts a cluster of its own and compares an eggsfuse mount with a local
//! directory (`fuse.rs`); `eggsbench gc` and `eggsbench scrub --shuckle ADDR` time a GC pass
//! and a scrub pass (`gc.rs`, `scrub.rs`).

// The test harness: a failed unwrap or expect is a failed test (with its message), and
// casts of test patterns, sizes and rates need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

// Next to this file rather than in `src/bin/`, where Cargo would take them for binaries.
#[path = "eggsbench/data.rs"]
mod data;
#[path = "eggsbench/fuse.rs"]
mod fuse;
#[path = "eggsbench/gc.rs"]
mod gc;
#[path = "eggsbench/local.rs"]
mod local;
#[path = "eggsbench/scrub.rs"]
mod scrub;

use clap::{Parser, Subcommand};
use eggs_client::{Client, FileWriter};
use eggs_protocol::{EggsTime, InodeId, Name};
use eggs_tests::Latencies;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "eggsbench")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Metadata operations: ops/s and latencies.
    Meta(Args),
    /// Data path: codec, local disk and cluster throughput.
    Data(data::DataArgs),
    /// An eggsfuse mount next to a local directory (starts its own cluster; needs root).
    Fuse(fuse::FuseArgs),
    /// Garbage collection of many deleted files.
    Gc(gc::GcArgs),
    /// A scrub pass next to the raw disk bandwidth (needs root).
    Scrub(scrub::ScrubArgs),
}

/// What a benchmark that fails says.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args)]
struct Args {
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds per operation.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Only run operations whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Run the operations on this local directory instead of the cluster (the baseline).
    #[arg(long)]
    local: Option<std::path::PathBuf>,
    /// Threads for --local.
    #[arg(long, default_value_t = 8)]
    local_threads: usize,
}

struct Ctx {
    client: Client,
    /// Per worker: a directory of its own and a second one for cross-directory renames.
    dirs: Vec<(InodeId, InodeId)>,
    /// Names that exist in the shared lookup directory.
    lookup_dir: InodeId,
    lookup_names: Vec<(Name, InodeId)>,
    /// Names in 16 directories (so on up to 16 shards): lookups that use every core thread.
    spread_names: Vec<(InodeId, Name)>,
    unique: AtomicU64,
}

fn main() {
    eggs_common::logging::init("warn");
    let cli = Cli::parse();
    let r: Result<(), BoxError> = match cli.mode {
        Mode::Meta(args) => match &args.local {
            Some(dir) => {
                let threads = args.local_threads.max(1);
                local::run(dir, threads, args.seconds, args.only.as_deref())
                    .map_err(|e| format!("meta --local {}: {e}", dir.display()).into())
            }
            None => {
                two_workers().block_on(run(args));
                Ok(())
            }
        },
        Mode::Data(args) => two_workers()
            .block_on(data::run(args))
            .map_err(|e| format!("data: {e}").into()),
        // These ran as programs of their own, on a runtime with a worker per core.
        Mode::Fuse(args) => default_runtime()
            .block_on(fuse::run(args))
            .map_err(|e| format!("fuse: {e}").into()),
        Mode::Gc(args) => default_runtime()
            .block_on(gc::run(args))
            .map_err(|e| format!("gc: {e}").into()),
        Mode::Scrub(args) => default_runtime()
            .block_on(scrub::run(args))
            .map_err(|e| format!("scrub: {e}").into()),
    };
    if let Err(e) = r {
        eprintln!("eggsbench {e}");
        std::process::exit(1);
    }
}

/// The metadata and data benchmarks' runtime: two workers drive enough requests.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn default_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn name(s: &str) -> Name {
    Name::new(s).expect("benchmark names are valid")
}

async fn run(args: Args) {
    let client = Client::new(args.shuckle, Default::default())
        .await
        .expect("connecting to the cluster");
    let ctx = Arc::new(setup(client, args.concurrency).await);
    println!("| operation | ops/s | p50 µs | p99 µs | ops |");
    println!("|---|---:|---:|---:|---:|");
    let secs = args.seconds;
    let c = args.concurrency;
    let want = |n: &str| args.only.as_deref().is_none_or(|o| n.contains(o));
    if want("lookup") {
        bench("lookup", &ctx, c, secs, |ctx, w, i| async move {
            let (n, _) = &ctx.lookup_names[(w * 7919 + i) % ctx.lookup_names.len()];
            ctx.client.lookup(ctx.lookup_dir, n).await.map(|_| ())
        })
        .await;
    }
    if want("lookup") {
        bench(
            "lookup (16 directories)",
            &ctx,
            c,
            secs,
            |ctx, w, i| async move {
                let (dir, n) = &ctx.spread_names[(w * 7919 + i) % ctx.spread_names.len()];
                ctx.client.lookup(*dir, n).await.map(|_| ())
            },
        )
        .await;
    }
    if want("stat") {
        bench("stat file", &ctx, c, secs, |ctx, w, i| async move {
            let (_, id) = ctx.lookup_names[(w * 7919 + i) % ctx.lookup_names.len()];
            ctx.client.stat(id).await.map(|_| ())
        })
        .await;
    }
    if want("readdir") {
        bench(
            "readdir (100 entries)",
            &ctx,
            c.min(32),
            secs,
            |ctx, _, _| async move { ctx.client.readdir(ctx.lookup_dir).await.map(|_| ()) },
        )
        .await;
    }
    if want("mkdir") {
        bench("mkdir", &ctx, c, secs, |ctx, w, _| async move {
            let u = ctx.unique.fetch_add(1, Ordering::Relaxed);
            ctx.client
                .mkdir_in(ctx.dirs[w].0, &name(&format!("d{u}")))
                .await
                .map(|_| ())
        })
        .await;
    }
    if want("create") {
        bench("create empty file", &ctx, c, secs, |ctx, w, _| async move {
            let u = ctx.unique.fetch_add(1, Ordering::Relaxed);
            FileWriter::write_in(
                &ctx.client,
                ctx.dirs[w].0,
                &name(&format!("c{u}")),
                &b""[..],
            )
            .await
            .map(|_| ())
        })
        .await;
    }
    if want("same-dir") {
        same_dir_renames(&ctx, c, secs).await;
    }
    if want("cross-dir") {
        cross_dir_renames(&ctx, c, secs).await;
    }
    if want("unlink") {
        unlinks(&ctx, c, secs).await;
    }
}

async fn setup(client: Client, workers: usize) -> Ctx {
    let stamp = EggsTime::now().0;
    let root = client
        .mkdir_in(InodeId::ROOT, &name(&format!("bench-{stamp}")))
        .await
        .expect("bench dir");
    let lookup_dir = client.mkdir_in(root, &name("lookups")).await.expect("dir");
    let mut lookup_names = Vec::new();
    for i in 0..100 {
        let n = name(&format!("file-{i}"));
        let id = FileWriter::write_in(&client, lookup_dir, &n, &b"hello"[..])
            .await
            .expect("file");
        lookup_names.push((n, id));
    }
    let mut spread_names = Vec::new();
    for d in 0..16 {
        let dir = client
            .mkdir_in(root, &name(&format!("spread-{d}")))
            .await
            .expect("dir");
        for i in 0..10 {
            let n = name(&format!("file-{i}"));
            FileWriter::write_in(&client, dir, &n, &b"hello"[..])
                .await
                .expect("file");
            spread_names.push((dir, n));
        }
    }
    let mut dirs = Vec::new();
    for w in 0..workers {
        let a = client
            .mkdir_in(root, &name(&format!("w{w}a")))
            .await
            .expect("dir");
        let b = client
            .mkdir_in(root, &name(&format!("w{w}b")))
            .await
            .expect("dir");
        dirs.push((a, b));
    }
    Ctx {
        client,
        dirs,
        lookup_dir,
        lookup_names,
        spread_names,
        unique: AtomicU64::new(0),
    }
}

/// Runs `op(ctx, worker, iteration)` on `workers` concurrent tasks for `secs` seconds.
async fn bench<F, Fut>(label: &str, ctx: &Arc<Ctx>, workers: usize, secs: u64, op: F)
where
    F: Fn(Arc<Ctx>, usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = eggs_client::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (ctx, stop, op) = (ctx.clone(), stop.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Err(e) = op(ctx.clone(), w, i).await {
                    panic!("{e}");
                }
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await.expect("worker"));
    }
    report(label, start.elapsed(), &mut all);
}

fn report(label: &str, elapsed: Duration, lat: &mut Latencies) {
    let n = lat.micros.len();
    println!(
        "| {label} | {:.0} | {} | {} | {n} |",
        n as f64 / elapsed.as_secs_f64(),
        lat.percentile(50.0),
        lat.percentile(99.0),
    );
}

/// Runs `worker(ctx, w, stop)` on `workers` tasks; each measures its own operations until
/// `stop` is set after `secs` seconds.
async fn bench_workers<F, Fut>(label: &str, ctx: &Arc<Ctx>, workers: usize, secs: u64, worker: F)
where
    F: Fn(Arc<Ctx>, usize, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = eggs_client::Result<Latencies>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(ctx.clone(), w, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await.expect("worker").expect("benchmark operation"));
    }
    report(label, start.elapsed(), &mut all);
}

/// Each worker renames its own file back and forth within its directory.
async fn same_dir_renames(ctx: &Arc<Ctx>, workers: usize, secs: u64) {
    bench_workers(
        "same-directory rename",
        ctx,
        workers,
        secs,
        |ctx, w, stop| async move {
            let dir = ctx.dirs[w].0;
            let names = [name("ping"), name("pong")];
            let id = FileWriter::write_in(&ctx.client, dir, &names[0], &b"x"[..]).await?;
            let mut ctime = ctx.client.lookup(dir, &names[0]).await?.creation_time;
            let mut lat = Latencies::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (from, to) = (&names[i % 2], &names[(i + 1) % 2]);
                ctime = ctx
                    .client
                    .rename_edge(id, dir, from, ctime, dir, to)
                    .await?;
                lat.push(t.elapsed());
                i += 1;
            }
            Ok(lat)
        },
    )
    .await;
}

/// Each worker moves its own file between its two directories.
async fn cross_dir_renames(ctx: &Arc<Ctx>, workers: usize, secs: u64) {
    bench_workers(
        "cross-directory rename",
        ctx,
        workers,
        secs,
        |ctx, w, stop| async move {
            let dirs = [ctx.dirs[w].0, ctx.dirs[w].1];
            let n = name("mover");
            let id = FileWriter::write_in(&ctx.client, dirs[0], &n, &b"x"[..]).await?;
            let mut ctime = ctx.client.lookup(dirs[0], &n).await?.creation_time;
            let mut lat = Latencies::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (from, to) = (dirs[i % 2], dirs[(i + 1) % 2]);
                ctime = ctx.client.rename_edge(id, from, &n, ctime, to, &n).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            Ok(lat)
        },
    )
    .await;
}

/// Each worker creates files (not timed) and unlinks them (timed).
async fn unlinks(ctx: &Arc<Ctx>, workers: usize, secs: u64) {
    bench_workers("unlink", ctx, workers, secs, |ctx, w, stop| async move {
        let dir = ctx.dirs[w].1;
        let mut lat = Latencies::default();
        while !stop.load(Ordering::Relaxed) {
            let u = ctx.unique.fetch_add(1, Ordering::Relaxed);
            let n = name(&format!("u{u}"));
            let id = FileWriter::write_in(&ctx.client, dir, &n, &b""[..]).await?;
            let ctime = ctx.client.lookup(dir, &n).await?.creation_time;
            let t = Instant::now();
            ctx.client
                .shard_request(
                    dir.shard(),
                    eggs_protocol::shard::SoftUnlinkFileReq {
                        dir_id: dir,
                        target_id: id,
                        name: n,
                        creation_time: ctime,
                    },
                )
                .await?;
            lat.push(t.elapsed());
        }
        Ok(lat)
    })
    .await;
}
