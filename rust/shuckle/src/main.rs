//! `eggsshuckle`: the registry of shards, the CDC and block services.

use clap::Parser;
use eggs_common::daemon::{self, Runtime};
use eggs_shuckle::{
    ShuckleConfig, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_STALE_AFTER_MS,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "eggsshuckle",
    version,
    about = "EggsFS registry of shards, the CDC and block services"
)]
struct Args {
    /// Address to listen on (TCP).
    #[arg(long, default_value = "127.0.0.1:10001")]
    addr: SocketAddr,
    /// RocksDB directory holding the registry; created if missing.
    #[arg(long)]
    dir: PathBuf,
    /// Report block services silent for longer than this as STALE.
    #[arg(long, default_value_t = DEFAULT_STALE_AFTER_MS)]
    stale_after_ms: u64,
    /// Connections served at once; further ones wait to be accepted.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Close connections that take longer than this to send a request.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    idle_timeout_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Servers need no capabilities: as root they still own, and may write, what they create.
    daemon::run(Runtime::MultiThread, &[], serve(args))
}

async fn serve(args: Args) -> Result<(), eggs_shuckle::ShuckleError> {
    let cfg = ShuckleConfig {
        addr: args.addr,
        dir: args.dir,
        stale_after_ms: args.stale_after_ms,
        max_connections: args.max_connections,
        idle_timeout_ms: args.idle_timeout_ms,
    };
    eggs_shuckle::serve(cfg, eggs_common::shutdown_signal()).await
}
