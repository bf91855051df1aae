//! `eggstests`: named end-to-end tests against real EggsFS processes (see
//! `eggs_tests::suite`). Starts a fresh cluster per test through eggs-run, or runs against an
//! existing one with `--shuckle`.

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

use clap::Parser;
use eggs_tests::suite::{self, Options, Outcome};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "eggstests",
    about = "End-to-end tests against a real EggsFS cluster"
)]
struct Cli {
    /// Tests to run (all when none is given); see --list.
    tests: Vec<String>,
    /// List the tests and exit.
    #[arg(long)]
    list: bool,
    /// CI size: the whole suite in a few minutes (the default).
    #[arg(long, conflicts_with = "long")]
    short: bool,
    /// Soak run: every test scaled up (durations and counts times --scale, default 20).
    #[arg(long)]
    long: bool,
    /// Scale factor for durations and counts (overrides --short/--long).
    #[arg(long)]
    scale: Option<f64>,
    /// Run against this cluster instead of starting one per test; tests that kill or stop
    /// processes are skipped.
    #[arg(long, env = "EGGS_SHUCKLE")]
    shuckle: Option<SocketAddr>,
    /// Seed for the random operations (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the server binaries are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the clusters' data directories go (default: the system temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep data directories and logs of passing tests too (failing ones are always kept).
    #[arg(long)]
    keep: bool,
    /// Stay in the machine's network namespace. By default (as root, without --shuckle) the
    /// suite runs in a private one, where the partition test can drop block services' traffic.
    #[arg(long)]
    no_netns: bool,
}

/// Enters a private network namespace unless told not to; says which namespace the suite
/// runs in.
fn network_namespace(cli: &Cli) -> String {
    let why_not = if cli.shuckle.is_some() {
        "--shuckle given".to_string()
    } else if cli.no_netns {
        "--no-netns given".to_string()
    } else {
        match eggs_tests::netns::enter_private() {
            Ok(()) => return "running in a private network namespace".into(),
            Err(e) => e.to_string(),
        }
    };
    eggs_tests::netns::stay(&why_not);
    format!(
        "running in the machine's network namespace ({why_not}): the partition test only \
         freezes processes"
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        suite::list();
        return ExitCode::SUCCESS;
    }
    // First, while the process has a single thread: the namespace is per thread, and the
    // runtime's threads and every process the suite starts inherit it.
    println!("eggstests: {}", network_namespace(&cli));
    // Faults make clients warn a lot (that is their job); EGGS_LOG=warn shows it.
    eggs_common::logging::init("error");
    let tests = match suite::select(&cli.tests) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("eggstests: {e}");
            return ExitCode::from(2);
        }
    };
    let scale = cli
        .scale
        .unwrap_or(if cli.long { 20.0 } else { 1.0 })
        .max(0.01);
    let seed = cli.seed.unwrap_or_else(|| eggs_protocol::EggsTime::now().0);
    let opts = Options {
        shuckle: cli.shuckle,
        scale,
        seed,
        bin_dir: cli.bin_dir.unwrap_or_else(eggs_run::default_bin_dir),
        work_dir: cli.work_dir.unwrap_or_else(std::env::temp_dir),
        keep: cli.keep,
    };
    println!(
        "eggstests: {} test(s), scale {scale}, seed {seed}{}",
        tests.len(),
        cli.shuckle
            .map(|a| format!(", against {a}"))
            .unwrap_or_default()
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eggstests: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = std::time::Instant::now();
    let results = rt.block_on(suite::run(&opts, &tests));
    let count = |o: Outcome| results.iter().filter(|r| r.1 == o).count();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.1 == Outcome::Failed)
        .map(|r| r.0)
        .collect();
    println!(
        "eggstests: {} passed, {} failed, {} skipped in {:.1} s (seed {seed}){}",
        count(Outcome::Passed),
        failed.len(),
        count(Outcome::Skipped),
        start.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(" "))
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
