//! `eggsgc`: the garbage collector daemon (see the library for what each loop does).

use clap::Parser;
use eggs_client::{Client, ClientOptions};
use eggs_common::daemon::{self, Runtime};
use eggs_gc::{daemon as gc_daemon, GcOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "eggsgc", about = "EggsFS garbage collector")]
struct Args {
    /// Shuckle's address.
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Pause between directory collection passes.
    #[arg(long, default_value_t = 60_000)]
    collect_interval_ms: u64,
    /// Pause between file destruction passes.
    #[arg(long, default_value_t = 60_000)]
    destroy_interval_ms: u64,
    /// Where to write what each loop did (read by `eggscli gc status`).
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Shards worked on at once.
    #[arg(long, default_value_t = 16)]
    shard_parallelism: usize,
    /// Directories or files of one shard worked on at once.
    #[arg(long, default_value_t = 32)]
    item_parallelism: usize,
    /// Pause between scrub passes (each checks every block once); 0 disables scrubbing.
    #[arg(long, default_value_t = 24 * 3600 * 1000)]
    scrub_interval_ms: u64,
    /// Block bytes the scrubber verifies per second, over all block services.
    #[arg(long, default_value_t = 50 << 20)]
    scrub_rate_bytes_per_s: u64,
    /// Pause between looks for decommissioned block services to empty; 0 disables it.
    #[arg(long, default_value_t = 60_000)]
    migrate_interval_ms: u64,
    /// Run one collection pass and one destruction pass, print what they did, and exit.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Servers need no capabilities: as root they still own, and may write, what they create.
    daemon::run(Runtime::MultiThread, &[], serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    let client = Client::new(args.shuckle, ClientOptions::default())
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())?;
    let opts = GcOptions {
        shard_parallelism: args.shard_parallelism,
        item_parallelism: args.item_parallelism,
    };
    if args.once {
        let r = eggs_gc::run_once(&client, &opts).await;
        println!("collect: {}", r.collect);
        println!("destroy: {}", r.destroy);
        return match r.collect.errors + r.destroy.errors {
            0 => Ok(()),
            n => Err(format!("{n} errors in the passes")),
        };
    }
    let mut loops = gc_daemon::standard_loops(
        client.clone(),
        opts,
        Duration::from_millis(args.collect_interval_ms),
        Duration::from_millis(args.destroy_interval_ms),
    );
    let scrub = eggs_gc::scrub::ScrubOptions {
        rate_bytes_per_s: args.scrub_rate_bytes_per_s,
        ..Default::default()
    };
    let maintenance = gc_daemon::maintenance_loops(
        client,
        scrub,
        Duration::from_millis(args.scrub_interval_ms),
        Duration::from_millis(args.migrate_interval_ms),
    );
    let wanted = [args.scrub_interval_ms, args.migrate_interval_ms];
    loops.extend(
        maintenance
            .into_iter()
            .zip(wanted)
            .filter(|(_, interval_ms)| *interval_ms > 0)
            .map(|(l, _)| l),
    );
    gc_daemon::run_daemon(loops, args.status_file, eggs_common::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
