//! `eggssim`: runs seeded simulations, one or a range, for long soak runs.

use clap::Parser;
use eggs_sim::SimConfig;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "eggssim",
    about = "Deterministic simulation of EggsFS shards, CDC and clients"
)]
struct Args {
    /// One seed to run.
    #[arg(long)]
    seed: Option<u64>,
    /// A range of seeds, `START..END` (END excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Client operations per seed.
    #[arg(long, default_value_t = 2000)]
    ops: u64,
    #[arg(long, default_value_t = 4)]
    clients: u32,
    #[arg(long, default_value_t = 3)]
    shard_procs: u32,
    /// Core threads per shard process.
    #[arg(long, default_value_t = 2)]
    cores_per_proc: u32,
    #[arg(long, default_value_t = 0.03)]
    drop_rate: f64,
    #[arg(long, default_value_t = 0.02)]
    dup_rate: f64,
    #[arg(long, default_value_t = 50)]
    delay_min_us: u64,
    #[arg(long, default_value_t = 2000)]
    delay_max_us: u64,
    /// Share of datagrams held back up to --slow-max-ms (reordering).
    #[arg(long, default_value_t = 0.03)]
    slow_rate: f64,
    #[arg(long, default_value_t = 300)]
    slow_max_ms: u64,
    /// Mean virtual time between crashes; 0 disables them.
    #[arg(long, default_value_t = 1500)]
    crash_interval_ms: u64,
    #[arg(long, default_value_t = 10)]
    restart_min_ms: u64,
    #[arg(long, default_value_t = 1500)]
    restart_max_ms: u64,
    /// Share of CDC crashes that lose its unsynced writes.
    #[arg(long, default_value_t = 0.5)]
    power_loss_rate: f64,
    #[arg(long, default_value_t = 50)]
    clock_skew_ms: u64,
    #[arg(long, default_value_t = 4000)]
    client_deadline_ms: u64,
    /// How long shards keep deduplication entries (expired ones are ignored and dropped).
    #[arg(long, default_value_t = 20000)]
    dedup_keep_ms: u64,
    /// How long the CDC keeps finished transactions' results for retries.
    #[arg(long, default_value_t = 20000)]
    cdc_finished_ttl_ms: u64,
    /// How long a transient file lives before the checkpoints' GC pass destroys it.
    #[arg(long, default_value_t = 2000)]
    transient_deadline_ms: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Probability of an extra, late copy of a CDC step with a fresh request id (its
    /// deduplication entry taken to have expired).
    #[arg(long, default_value_t = 0.05)]
    stale_step_rate: f64,
    #[arg(long, default_value_t = 3000)]
    stale_step_max_ms: u64,
    /// Stale copies of every step kind, not only of the create and fence steps.
    #[arg(long)]
    stale_all_steps: bool,
    /// Sabotage: shards ignore deduplication entries (to see the checker catch it).
    #[arg(long)]
    break_dedup: bool,
    /// Print every event to stderr.
    #[arg(long)]
    trace: bool,
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (start, end) = match (&args.seeds, args.seed) {
        (Some(r), _) => match parse_range(r) {
            Some(r) => r,
            None => {
                eprintln!("--seeds wants START..END, got {r}");
                return ExitCode::from(2);
            }
        },
        (None, Some(s)) => (s, s.saturating_add(1)),
        (None, None) => (0, 1),
    };
    let mut failed = 0u64;
    for seed in start..end {
        let cfg = SimConfig {
            seed,
            ops: args.ops,
            clients: args.clients,
            shard_procs: args.shard_procs,
            cores_per_proc: args.cores_per_proc,
            drop_rate: args.drop_rate,
            dup_rate: args.dup_rate,
            delay_min_us: args.delay_min_us,
            delay_max_us: args.delay_max_us,
            slow_rate: args.slow_rate,
            slow_max_ms: args.slow_max_ms,
            crash_interval_ms: args.crash_interval_ms,
            restart_min_ms: args.restart_min_ms,
            restart_max_ms: args.restart_max_ms,
            power_loss_rate: args.power_loss_rate,
            clock_skew_ms: args.clock_skew_ms,
            client_deadline_ms: args.client_deadline_ms,
            dedup_keep_ms: args.dedup_keep_ms,
            cdc_finished_ttl_ms: args.cdc_finished_ttl_ms,
            transient_deadline_ms: args.transient_deadline_ms,
            checkpoint_every: args.checkpoint_every,
            stale_step_rate: args.stale_step_rate,
            stale_step_max_ms: args.stale_step_max_ms,
            stale_all_steps: args.stale_all_steps,
            trace: args.trace,
            break_dedup: args.break_dedup,
        };
        match eggs_sim::run(cfg) {
            Ok(r) => println!(
                "seed {seed}: ok, trace {:016x}, {} ops ({} failed, {} unknown), {} crashes, \
                 {} datagrams ({} dropped, {} duplicated, {} stale step copies), {} block spans \
                 ({} failed), {} transient files collected ({} blocks), {} checkpoints, {} dirs, \
                 {} files, {} ms virtual",
                r.trace_hash,
                r.ops_done,
                r.ops_failed,
                r.ops_unknown,
                r.crashes,
                r.sent,
                r.dropped,
                r.duplicated,
                r.stale_steps,
                r.block_spans,
                r.block_failures,
                r.gc_files,
                r.gc_blocks,
                r.checkpoints,
                r.dirs,
                r.files,
                r.virtual_ms
            ),
            Err(e) => {
                failed += 1;
                println!("{e}");
            }
        }
    }
    if failed > 0 {
        println!("{failed} of {} seeds failed", end - start);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
