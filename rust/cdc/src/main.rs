//! `eggscdc`: the cross-directory coordinator.

use clap::Parser;
use eggs_cdc::CdcConfig;
use eggs_common::daemon::{self, Runtime};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "eggscdc", about = "EggsFS cross-directory coordinator")]
struct Args {
    /// Directory of the CDC's RocksDB database (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// UDP address to serve clients on (IPv4; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Shuckle's address, where the CDC registers itself and finds the shards.
    #[arg(long, default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
}

// One thread: the main loop, the step tasks and the client's UDP tasks hand work to each
// other constantly, and on one thread that costs no cross-thread wake-ups. RocksDB syncs
// run on the blocking pool.
fn main() -> ExitCode {
    let args = Args::parse();
    // Servers need no capabilities: as root they still own, and may write, what they create.
    daemon::run(Runtime::CurrentThread, &[], serve(args))
}

async fn serve(args: Args) -> Result<(), eggs_cdc::CdcError> {
    let cfg = CdcConfig {
        dir: args.dir,
        bind: args.bind,
        shuckle: args.shuckle,
    };
    eggs_cdc::run(cfg, eggs_common::shutdown_signal()).await
}
