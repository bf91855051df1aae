use clap::Parser;
use eggs_common::daemon::{self, Runtime};
use eggs_shard::{parse_shard_set, ShardOptions, ShardServer, ShardServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// EggsFS metadata shard server: serves any set of the 256 logical shards from one RocksDB.
#[derive(Parser)]
#[command(name = "eggsshard", version)]
struct Args {
    /// Directory holding this process's RocksDB.
    #[arg(long)]
    dir: PathBuf,
    /// Shuckle address to register with.
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Shards to serve: `A..=B`, `A..B`, or a comma list.
    #[arg(long, default_value = "0..=255")]
    shards: String,
    /// UDP address to listen on; core thread i uses the port plus i (port 0 picks free
    /// ones; shuckle learns the real ones).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Transient files not changed for this long may be destroyed by GC.
    #[arg(long, default_value_t = 3_600_000)]
    transient_deadline_ms: u64,
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Threads running shard logic (each owns a subset of the shards); 0 = one per CPU, at
    /// most 4.
    #[arg(long, default_value_t = 0)]
    core_threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Servers need no capabilities. The core threads start inside `serve`, after the drop,
    // so they inherit none either. One thread for the socket loop: the cores do the work.
    daemon::run(Runtime::CurrentThread, &[], serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = ShardServerConfig {
        dir: args.dir,
        bind: args.bind,
        shuckle: args.shuckle,
        shards: parse_shard_set(&args.shards)?,
        options: ShardOptions {
            transient_deadline_ns: args.transient_deadline_ms.saturating_mul(1_000_000),
            ..ShardOptions::default()
        },
        db: Default::default(),
        heartbeat_ms: args.heartbeat_ms,
        core_threads: args.core_threads,
    };
    let server = ShardServer::start(cfg)?;
    server.run(eggs_common::shutdown_signal()).await;
    Ok(())
}
