//! Deterministic simulation of EggsFS: the shard cores, the CDC core and clients run in one
//! thread under a seeded scheduler that owns the network (delays, drops, duplicates,
//! reordering), the clocks and crashes. A model of the namespace, built from the operations
//! clients saw acknowledged, is compared with what the shards hold at quiescent checkpoints.
//! The same seed and configuration always replay the same run (see [`Report::trace_hash`]).
//! A run also fails on any `tracing::error!` event or panic in the code under test
//! ([`watch`]).

pub mod blocks;
pub mod client;
pub mod config;
pub mod gc;
pub mod kv;
pub mod model;
pub mod procs;
pub mod rng;
pub mod sim;
pub mod watch;

pub use config::SimConfig;

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    /// Hash of every event (time, kind, datagram bytes) and operation outcome: equal for
    /// equal runs.
    pub trace_hash: u64,
    pub virtual_ms: u64,
    pub ops: u64,
    pub ops_done: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Late copies of CDC steps sent with a fresh request id (see `stale_step_rate`).
    pub stale_steps: u64,
    pub crashes: u64,
    /// Block spans whose blocks were all written, and block writes that failed (the client
    /// then removed the span).
    pub block_spans: u64,
    pub block_failures: u64,
    /// Transient files destroyed by the GC passes at checkpoints, and blocks they erased.
    pub gc_files: u64,
    pub gc_blocks: u64,
    pub checkpoints: u64,
    /// Size of the namespace at the last checkpoint.
    pub dirs: u64,
    pub files: u64,
}

/// A run that found a violation (or could not settle).
#[derive(Debug, thiserror::Error)]
#[error(
    "seed {seed} failed at {time_ms} ms (virtual):\n  {}\nlast events:\n  {}\nreproduce with: {command}",
    what.join("\n  "),
    recent.join("\n  ")
)]
pub struct SimError {
    pub seed: u64,
    pub time_ms: u64,
    pub what: Vec<String>,
    pub recent: Vec<String>,
    pub command: String,
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> Result<Report, SimError> {
    let errors = watch::ErrorEvents::default();
    let (seed, command) = (cfg.seed, cfg.command());
    let mut sim = match watch::watched(&errors, || sim::Sim::new(cfg, errors.clone())) {
        Ok(sim) => sim,
        Err(panic) => {
            return Err(SimError {
                seed,
                time_ms: 0,
                what: vec![format!("panic while setting up: {panic}")],
                recent: Vec::new(),
                command,
            })
        }
    };
    match watch::watched(&errors, || sim.run()) {
        Ok(result) => result,
        Err(panic) => Err(sim.panicked(&panic)),
    }
}
