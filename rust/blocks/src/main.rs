//! `eggsblocks`: block services, one per storage directory, in one process.

use clap::Parser;
use eggs_blocks::{BlocksConfig, DEFAULT_REGISTER_INTERVAL_MS};
use eggs_common::daemon::{self, Runtime};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "eggsblocks",
    version,
    about = "EggsFS block services: one per storage directory"
)]
struct Args {
    /// A storage directory and its class, `PATH[:flash|hdd]` (default flash); repeat for
    /// each disk. Created if missing.
    #[arg(long = "dir", required = true, value_parser = parse_dir)]
    dirs: Vec<(std::path::PathBuf, eggs_protocol::policy::StorageClass)>,
    /// Failure domain of these disks (at most 16 bytes); defaults to the host name.
    #[arg(long, value_parser = parse_failure_domain)]
    failure_domain: Option<[u8; 16]>,
    /// Address to listen on (TCP, IPv4); it is what shuckle hands out to clients.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Shuckle's address.
    #[arg(long, default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Time between registrations with shuckle, which also refresh the flags.
    #[arg(long, default_value_t = DEFAULT_REGISTER_INTERVAL_MS)]
    register_interval_ms: u64,
}

fn parse_dir(s: &str) -> Result<(std::path::PathBuf, eggs_protocol::policy::StorageClass), String> {
    eggs_blocks::parse_dir(s).map_err(|e| e.to_string())
}

fn parse_failure_domain(s: &str) -> Result<[u8; 16], String> {
    eggs_blocks::failure_domain(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Servers need no capabilities: as root they still own, and may write, what they create.
    daemon::run(Runtime::MultiThread, &[], serve(args))
}

async fn serve(args: Args) -> Result<(), eggs_blocks::BlocksError> {
    let cfg = BlocksConfig {
        dirs: args.dirs,
        failure_domain: args
            .failure_domain
            .unwrap_or_else(eggs_blocks::default_failure_domain),
        bind: args.bind,
        shuckle: args.shuckle,
        register_interval_ms: args.register_interval_ms,
    };
    let blocks = eggs_blocks::Blocks::bind(cfg).await?;
    blocks.run(eggs_common::shutdown_signal()).await
}
