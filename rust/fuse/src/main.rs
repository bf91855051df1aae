//! `eggsfuse`: mounts EggsFS.

use clap::Parser;
use eggs_fuse::{mount, MountConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Mounts EggsFS through FUSE until unmounted, or until SIGINT or SIGTERM (which unmount).
#[derive(Parser, Debug)]
#[command(name = "eggsfuse", version)]
struct Args {
    /// Where to mount (created if missing; a stale mount there is cleaned up first).
    mountpoint: PathBuf,
    /// Shuckle's address [default: $EGGS_SHUCKLE, else 127.0.0.1:10001].
    #[arg(long)]
    shuckle: Option<String>,
    /// Read cache budget in MiB.
    #[arg(long, default_value_t = 512)]
    read_cache_mib: usize,
    /// How long the kernel caches names, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    entry_timeout_ms: u64,
    /// How long the kernel caches file attributes, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    file_attr_timeout_ms: u64,
    /// Let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    allow_other: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn main() -> ExitCode {
    eggs_common::logging::init("info");
    let args = Args::parse();
    // Before any other thread starts (each has its own capabilities).
    if let Err(e) = eggs_common::caps::drop_all_except(eggs_fuse::MOUNT_CAPS) {
        eprintln!("eggsfuse: {e}");
        return ExitCode::FAILURE;
    }
    let shuckle = args
        .shuckle
        .clone()
        .or_else(|| std::env::var("EGGS_SHUCKLE").ok())
        .unwrap_or_else(|| eggs_client::DEFAULT_SHUCKLE_ADDR.into());
    let Some(addr) = resolve(&shuckle) else {
        eprintln!("eggsfuse: cannot resolve shuckle address {shuckle:?}");
        return ExitCode::from(2);
    };
    let mut cfg = MountConfig::new(addr, args.mountpoint);
    cfg.read_cache_bytes = args.read_cache_mib << 20;
    cfg.times.entry = Duration::from_millis(args.entry_timeout_ms);
    cfg.times.dir_attr = Duration::from_millis(args.entry_timeout_ms);
    cfg.times.file_attr = Duration::from_millis(args.file_attr_timeout_ms);
    cfg.allow_other = args.allow_other;
    cfg.threads = args.threads;
    match mount(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eggsfuse: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(s: &str) -> Option<SocketAddr> {
    s.to_socket_addrs().ok()?.next()
}
