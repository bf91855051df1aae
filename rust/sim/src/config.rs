//! What a simulation run does: its seed, its size and its fault rates.

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Client operations in total, spread over the clients.
    pub ops: u64,
    pub clients: u32,
    /// Shard processes; process `p` serves the shards `s % shard_procs == p`.
    pub shard_procs: u32,
    /// Core threads per shard process (`eggsshard --core-threads`).
    pub cores_per_proc: u32,
    /// Probability that a datagram is lost.
    pub drop_rate: f64,
    /// Probability that a datagram is delivered twice.
    pub dup_rate: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    /// Probability that a datagram is held back up to `slow_max_ms` (reordering).
    pub slow_rate: f64,
    pub slow_max_ms: u64,
    /// Mean virtual time between two crashes (of a random shard process or the CDC);
    /// 0 disables crashes.
    pub crash_interval_ms: u64,
    pub restart_min_ms: u64,
    pub restart_max_ms: u64,
    /// Share of CDC crashes that also lose its unsynced writes (power loss, not just kill -9).
    pub power_loss_rate: f64,
    /// Each process incarnation's clock is off by up to this much (either way).
    pub clock_skew_ms: u64,
    /// A client gives up on a request after this long (the outcome is then unknown).
    pub client_deadline_ms: u64,
    /// How long shards keep deduplication entries (`ShardOptions::dedup_keep_ns`, 10 minutes
    /// in production): short enough here that entries expire within a run, long enough for
    /// every client retry.
    pub dedup_keep_ms: u64,
    /// How long the CDC keeps finished transactions' results for retries
    /// (`CoreConfig::finished_ttl_ns`), short here for the same reason.
    pub cdc_finished_ttl_ms: u64,
    /// How long a transient file lives before GC may destroy it
    /// (`ShardOptions::transient_deadline_ns`, an hour in production).
    pub transient_deadline_ms: u64,
    /// Operations between two checkpoints (quiescent comparisons against the model).
    pub checkpoint_every: u64,
    /// Print every event to stderr.
    pub trace: bool,
    /// Probability that a CDC step datagram gets an extra copy that arrives late with a fresh
    /// request id: as if the copy outlived its deduplication entry (kept 10 minutes, or
    /// dropped early by the FIFO column family), so that the shard runs the step again.
    pub stale_step_rate: f64,
    /// Such a late copy arrives up to this long after the original.
    pub stale_step_max_ms: u64,
    /// Stale copies of every step kind, not only of CreateCurrentEdge and of the new edge's
    /// UnlockCurrentEdge (the first steps fenced against an expired deduplication entry;
    /// every step is now, see ARCHITECTURE.md).
    pub stale_all_steps: bool,
    /// Sabotage: shards ignore their deduplication entries (retried writes apply twice).
    /// Only for showing that the checker catches a broken cluster.
    pub break_dedup: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            ops: 2000,
            clients: 4,
            shard_procs: 3,
            cores_per_proc: 2,
            drop_rate: 0.03,
            dup_rate: 0.02,
            delay_min_us: 50,
            delay_max_us: 2_000,
            slow_rate: 0.03,
            slow_max_ms: 300,
            crash_interval_ms: 1_500,
            restart_min_ms: 10,
            restart_max_ms: 1_500,
            power_loss_rate: 0.5,
            clock_skew_ms: 50,
            client_deadline_ms: 4_000,
            dedup_keep_ms: 20_000,
            cdc_finished_ttl_ms: 20_000,
            transient_deadline_ms: 2_000,
            checkpoint_every: 250,
            stale_step_rate: 0.05,
            stale_step_max_ms: 3_000,
            stale_all_steps: false,
            trace: false,
            break_dedup: false,
        }
    }
}

impl SimConfig {
    /// The `eggssim` command line that replays this run.
    pub fn command(&self) -> String {
        let mut cmd = format!(
            "cargo run -p eggs-sim --bin eggssim -- --seed {} --ops {} --clients {} \
             --shard-procs {} --cores-per-proc {} --drop-rate {} --dup-rate {} --delay-min-us {} --delay-max-us {} \
             --slow-rate {} --slow-max-ms {} --crash-interval-ms {} --restart-min-ms {} \
             --restart-max-ms {} --power-loss-rate {} --clock-skew-ms {} \
             --client-deadline-ms {} --dedup-keep-ms {} --cdc-finished-ttl-ms {} \
             --transient-deadline-ms {} --checkpoint-every {} --stale-step-rate {} --stale-step-max-ms {}",
            self.seed,
            self.ops,
            self.clients,
            self.shard_procs,
            self.cores_per_proc,
            self.drop_rate,
            self.dup_rate,
            self.delay_min_us,
            self.delay_max_us,
            self.slow_rate,
            self.slow_max_ms,
            self.crash_interval_ms,
            self.restart_min_ms,
            self.restart_max_ms,
            self.power_loss_rate,
            self.clock_skew_ms,
            self.client_deadline_ms,
            self.dedup_keep_ms,
            self.cdc_finished_ttl_ms,
            self.transient_deadline_ms,
            self.checkpoint_every,
            self.stale_step_rate,
            self.stale_step_max_ms
        );
        if self.stale_all_steps {
            cmd.push_str(" --stale-all-steps");
        }
        if self.break_dedup {
            cmd.push_str(" --break-dedup");
        }
        cmd.push_str(" --trace");
        cmd
    }
}
