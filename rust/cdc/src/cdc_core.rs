//! The CDC's state machine, free of I/O so that it can run under a deterministic simulator.
//!
//! Inputs are events (a client request, a shard step's outcome, a clock tick), each with the
//! current time. Outputs accumulate until [`CdcCore::take_output`]: records to persist, shard
//! requests to send and replies to send. The driver must persist an output's records before
//! it sends that output's requests and replies: that is what makes a transaction durable
//! before its first step and its result durable before the client hears of it.

use crate::locks::{normalize, LockKey, LockTable};
use crate::record::{Counters, Progress, TxnId, TxnRecord, TxnState};
use crate::txn::{self, Transition};
use eggs_protocol::cdc::{CdcReq, CdcRequest, CdcResp, CdcResponse};
use eggs_protocol::shard::{ShardReq, ShardRequest, ShardResp};
use eggs_protocol::{EggsError, EggsTime, InodeId, InodeType, RequestHeader, ShardId};
use foldhash::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Running plus queued transactions; requests beyond it are dropped (clients retry).
    pub max_txns: usize,
    /// How long a finished transaction's result stays available to retries.
    pub finished_ttl_ns: u64,
    /// Cap on finished transactions kept, oldest evicted first, to bound memory.
    pub max_finished: usize,
    /// Distinct client addresses remembered per transaction for its reply.
    pub max_waiters: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_txns: 4096,
            finished_ttl_ns: 10 * 60 * 1_000_000_000,
            max_finished: 1 << 20,
            max_waiters: 4,
        }
    }
}

/// What the store holds at start.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub counters: Counters,
    pub records: Vec<TxnRecord>,
    /// The CDC's client id towards the shards, fixed when its database was created.
    pub client_id: u64,
}

/// A shard request to perform for step `step` of transaction `txn`: after `delay_ms`, one
/// call (the shard client retransmits the datagram until its deadline), whose outcome the
/// driver reports as a [`StepReply`], a call that got no answer as `Timeout`. Whether and
/// when the step is sent again is the core's decision (see [`CdcCore::on_shard_reply`]), so
/// the driver and the simulator share it.
#[derive(Clone, PartialEq, Debug)]
pub struct ShardSend {
    pub txn: TxnId,
    /// Sequence number of the step within the transaction (in memory only): outcomes of
    /// earlier sends are ignored.
    pub step: u32,
    pub shard: ShardId,
    pub req: ShardReq,
    /// Send with exactly this header (see [`step_header`]).
    pub header: RequestHeader,
    /// Wait this long before sending: the back-off when the step is sent again after a
    /// failure. The timer this asks for is the driver's to run.
    pub delay_ms: u64,
}

/// The header of a transaction step. The CDC's client id is persisted and the request id is
/// a function of the transaction, the request itself and the attempt (how many times this
/// must-complete step has failed so far). A step resent after a CDC restart thus carries the
/// same header as its copy sent before the crash, and the shard answers it from its dedup
/// table instead of applying it again after the transaction moved on (which could re-lock
/// an edge already unlocked, or re-create an edge a client has replaced since). Each retry
/// after a failure gets a new id, since the shard remembers failures too; after a restart
/// the attempts start again from 0 and walk through the remembered failures.
pub fn step_header(
    client_id: u64,
    txn: TxnId,
    attempt: u32,
    shard: ShardId,
    req: &ShardReq,
) -> RequestHeader {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&txn.to_le_bytes());
    eat(&attempt.to_le_bytes());
    let blank = ShardRequest {
        header: RequestHeader {
            client_id: 0,
            request_id: 0,
        },
        shard,
        body: req.clone(),
    };
    eat(&eggs_protocol::codec::encode(&blank));
    RequestHeader {
        client_id,
        request_id: h,
    }
}

/// The outcome of a [`ShardSend`]: the shard's answer, or `Timeout` if none came.
#[derive(Clone, PartialEq, Debug)]
pub struct StepReply {
    pub txn: TxnId,
    pub step: u32,
    pub result: Result<ShardResp, EggsError>,
}

#[derive(Clone, PartialEq, Debug)]
pub struct Reply {
    pub to: SocketAddr,
    pub resp: CdcResponse,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Write {
    Put(TxnRecord),
    /// Deletes the record (its request is forgotten: a retry now is a new request).
    Delete {
        id: TxnId,
    },
}

/// Everything the driver must do after a burst of events, in this order: persist `writes`
/// and `counters` in one batch (synced if `sync`), then send `sends` and `replies`.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Output {
    pub writes: Vec<Write>,
    pub counters: Option<Counters>,
    pub sync: bool,
    pub sends: Vec<ShardSend>,
    pub replies: Vec<Reply>,
}

impl Output {
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || self.counters.is_some()
    }

    /// Nothing to persist and nothing to send.
    pub fn is_empty(&self) -> bool {
        !self.has_writes() && self.sends.is_empty() && self.replies.is_empty()
    }
}

/// What became of a client request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Admission {
    /// A new transaction took its locks and sent its first step.
    Started(TxnId),
    /// A new transaction waits for its locks.
    Queued(TxnId),
    /// A retry of a known request: answered from, or attached to, its transaction.
    Duplicate(TxnId),
    /// Refused without a transaction.
    Rejected(EggsError),
    /// Too many transactions: dropped without a reply.
    Dropped,
}

/// A transaction that has not finished: queued for its locks or running.
struct LiveTxn {
    header: RequestHeader,
    req: CdcReq,
    arrived_at: EggsTime,
    progress: Progress,
    locks: Vec<LockKey>,
    waiters: Vec<SocketAddr>,
    running: bool,
    step_seq: u32,
    /// Consecutive definite failures of the current must-complete step: the attempt number
    /// in its header, and the back-off.
    failures: u32,
    /// Consecutive transient failures (no answer, or "not now") of the current step since
    /// its last definite outcome: sent again with the same header, after a back-off.
    transient_failures: u32,
    /// The next step, sent before its turn (see [`txn::concurrent_successor`]).
    ahead: Option<Ahead>,
}

/// A step in flight (or done) before its turn. Its outcome is kept until the current step
/// completes; then it is that step's outcome. Only its result is early: its progress is
/// persisted when its turn comes, so after a restart it is simply sent again (with the same
/// header, which the shard's dedup answers).
struct Ahead {
    progress: Progress,
    seq: u32,
    outcome: Option<Result<ShardResp, EggsError>>,
}

/// Marks the sequence numbers of steps sent ahead, apart from the current steps' numbers.
const AHEAD_SEQ: u32 = 1 << 31;

impl LiveTxn {
    fn record(&self, id: TxnId) -> TxnRecord {
        TxnRecord {
            id,
            header: self.header,
            req: self.req.clone(),
            arrived_at: self.arrived_at,
            state: TxnState::Running(self.progress.clone()),
        }
    }
}

struct FinishedTxn {
    header: RequestHeader,
    result: Result<CdcResp, EggsError>,
}

#[derive(Default)]
struct Pending {
    writes: BTreeMap<TxnId, Write>,
    counters_dirty: bool,
    sync: bool,
    sends: Vec<ShardSend>,
    replies: Vec<Reply>,
}

pub struct CdcCore {
    cfg: CoreConfig,
    counters: Counters,
    client_id: u64,
    live: HashMap<TxnId, LiveTxn>,
    finished: HashMap<TxnId, FinishedTxn>,
    /// Finished transactions by finish time, for expiry.
    finished_order: VecDeque<(EggsTime, TxnId)>,
    by_header: HashMap<RequestHeader, TxnId>,
    locks: LockTable,
    pending: Pending,
    /// The time of the latest event.
    now: EggsTime,
}

/// First back-off after a step fails, doubled per failure up to the maximum.
const RETRY_BASE_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 5_000;

/// Largest encoded reply: every client accepts a datagram of this size.
const MAX_REPLY_BYTES: usize = eggs_protocol::DEFAULT_UDP_MTU as usize;

impl CdcCore {
    /// Rebuilds the state from stored records: unfinished transactions queue again in id
    /// (arrival) order and those that get their locks resend their recorded step.
    pub fn new(cfg: CoreConfig, loaded: Loaded, now: EggsTime) -> CdcCore {
        let mut core = CdcCore {
            now,
            cfg,
            counters: loaded.counters,
            client_id: loaded.client_id,
            live: HashMap::default(),
            finished: HashMap::default(),
            finished_order: VecDeque::new(),
            by_header: HashMap::default(),
            locks: LockTable::default(),
            pending: Pending::default(),
        };
        let mut records = loaded.records;
        records.sort_by_key(|r| r.id);
        let mut finished = Vec::new();
        for r in records {
            core.counters.next_txn_id = core.counters.next_txn_id.max(r.id + 1);
            core.by_header.insert(r.header, r.id);
            match r.state {
                TxnState::Running(progress) => {
                    core.resume(r.id, r.header, r.req, r.arrived_at, progress)
                }
                TxnState::Done {
                    result,
                    finished_at,
                } => {
                    finished.push((finished_at, r.id));
                    core.finished.insert(
                        r.id,
                        FinishedTxn {
                            header: r.header,
                            result,
                        },
                    );
                }
            }
        }
        finished.sort_unstable();
        core.finished_order = finished.into();
        assert!(
            core.live
                .keys()
                .chain(core.finished.keys())
                .all(|&id| id < core.counters.next_txn_id),
            "a loaded transaction id is not below the next one"
        );
        core
    }

    fn resume(
        &mut self,
        id: TxnId,
        header: RequestHeader,
        req: CdcReq,
        arrived_at: EggsTime,
        progress: Progress,
    ) {
        assert!(!self.live.contains_key(&id), "txn {id} resumed twice");
        // Never hand out an id that a resumed MakeDirectory already chose.
        if progress.new_dir_id.is_dir() {
            let next = progress.new_dir_id.counter() + 1;
            self.counters.next_dir_counter = self.counters.next_dir_counter.max(next);
        }
        tracing::info!("txn {id} {} resumes at {:?}", req.kind(), progress.step);
        self.admit(id, header, req, arrived_at, progress, Vec::new());
    }

    /// Number of unfinished (running or queued) transactions.
    pub fn live_txns(&self) -> usize {
        self.live.len()
    }

    /// Number of finished transactions whose results are kept for retries.
    pub fn finished_txns(&self) -> usize {
        self.finished.len()
    }

    /// Whether `txn` holds its locks and is executing steps.
    pub fn is_running(&self, txn: TxnId) -> bool {
        self.live.get(&txn).is_some_and(|t| t.running)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Hands over everything accumulated since the last call.
    pub fn take_output(&mut self) -> Output {
        let p = std::mem::take(&mut self.pending);
        Output {
            writes: p.writes.into_values().collect(),
            counters: p.counters_dirty.then_some(self.counters),
            sync: p.sync,
            sends: p.sends,
            replies: p.replies,
        }
    }

    /// A client request arrived from `from`.
    pub fn on_request(
        &mut self,
        now: EggsTime,
        from: SocketAddr,
        request: CdcRequest,
    ) -> Admission {
        self.now = now;
        let CdcRequest { header, body } = request;
        if let Some(&id) = self.by_header.get(&header) {
            self.on_retry(id, from);
            return Admission::Duplicate(id);
        }
        if let Err(e) = txn::validate(&body) {
            self.reply(from, header.request_id, Err(e));
            return Admission::Rejected(e);
        }
        if self.live.len() >= self.cfg.max_txns {
            return Admission::Dropped;
        }
        let new_dir_id = match &body {
            CdcReq::MakeDirectory(_) => match self.allocate_dir_id() {
                Some(id) => id,
                None => {
                    tracing::error!("directory ids exhausted");
                    self.reply(from, header.request_id, Err(EggsError::InternalError));
                    return Admission::Rejected(EggsError::InternalError);
                }
            },
            _ => InodeId::NULL,
        };
        // Ids must grow forever (the shards fence late steps by them): overflow is a bug.
        let id = self.counters.next_txn_id;
        self.counters.next_txn_id = id
            .checked_add(1)
            .unwrap_or_else(|| panic!("transaction ids exhausted"));
        self.pending.counters_dirty = true;
        self.by_header.insert(header, id);
        let progress = txn::initial_progress(&body, new_dir_id);
        tracing::debug!(
            txn = id,
            client = header.client_id,
            request = header.request_id,
            "txn {id} {} arrived",
            body.kind()
        );
        let record = TxnRecord {
            id,
            header,
            req: body.clone(),
            arrived_at: now,
            state: TxnState::Running(progress.clone()),
        };
        // The record must be durable before the first step goes out.
        self.write(id, Write::Put(record), true);
        if self.admit(id, header, body, now, progress, vec![from]) {
            Admission::Started(id)
        } else {
            Admission::Queued(id)
        }
    }

    /// Spreads directories over the shards round-robin; counters are never reused.
    fn allocate_dir_id(&mut self) -> Option<InodeId> {
        let counter = self.counters.next_dir_counter;
        if counter > InodeId::MAX_COUNTER {
            return None;
        }
        self.counters.next_dir_counter = counter + 1;
        self.pending.counters_dirty = true;
        // Directories spread over the shards by the counter's low byte.
        let shard = ShardId(eggs_protocol::conv::low_byte(counter));
        let id = InodeId::new(InodeType::Directory, shard, counter);
        assert!(
            id.is_dir() && id.counter() == counter,
            "directory id {id} of counter {counter}"
        );
        Some(id)
    }

    fn on_retry(&mut self, id: TxnId, from: SocketAddr) {
        assert!(
            self.finished.contains_key(&id) || self.live.contains_key(&id),
            "txn {id} is indexed by its header but unknown"
        );
        if let Some(done) = self.finished.get(&id) {
            let (request_id, result) = (done.header.request_id, done.result.clone());
            self.reply(from, request_id, result);
        } else if let Some(t) = self.live.get_mut(&id) {
            if !t.waiters.contains(&from) && t.waiters.len() < self.cfg.max_waiters {
                t.waiters.push(from);
            }
        }
    }

    /// Queues a transaction for its locks, starting it if it gets them; true if it started.
    fn admit(
        &mut self,
        id: TxnId,
        header: RequestHeader,
        req: CdcReq,
        arrived_at: EggsTime,
        progress: Progress,
        waiters: Vec<SocketAddr>,
    ) -> bool {
        let locks = normalize(txn::lock_set(&req, progress.new_dir_id));
        let holds = self.locks.enqueue(id, &locks);
        let previous = self.live.insert(
            id,
            LiveTxn {
                header,
                req,
                arrived_at,
                progress,
                locks,
                waiters,
                running: false,
                step_seq: 0,
                failures: 0,
                transient_failures: 0,
                ahead: None,
            },
        );
        assert!(previous.is_none(), "txn {id} admitted twice");
        if holds {
            self.start(id);
        }
        holds
    }

    fn start(&mut self, id: TxnId) {
        let t = live_entry(&mut self.live, id);
        assert!(!t.running, "txn {id} started twice");
        t.running = true;
        tracing::debug!(
            txn = id,
            "txn {id} {} started at {:?}",
            t.req.kind(),
            t.progress.step
        );
        self.send_step(id, 0);
    }

    /// Emits the current step of `id`.
    fn send_step(&mut self, id: TxnId, delay_ms: u64) {
        let t = live_entry(&mut self.live, id);
        assert!(t.running, "txn {id} sends a step without its locks");
        match txn::step_request(&t.req, &t.progress, id) {
            Ok((shard, req)) => {
                t.step_seq += 1;
                let header = step_header(self.client_id, id, t.failures, shard, &req);
                self.pending.sends.push(ShardSend {
                    txn: id,
                    step: t.step_seq,
                    shard,
                    req,
                    header,
                    delay_ms,
                });
                self.send_ahead(id);
            }
            Err(e) => {
                // Only a corrupt record gets here: fail loudly rather than guess.
                tracing::error!(txn = id, "{e}");
                self.finish(id, Err(EggsError::InternalError));
            }
        }
    }

    /// Sends the step after the current one now if it may run concurrently (once).
    fn send_ahead(&mut self, id: TxnId) {
        let t = live_entry(&mut self.live, id);
        assert!(
            t.step_seq & AHEAD_SEQ == 0,
            "txn {id}: step numbers ran into AHEAD_SEQ"
        );
        if t.ahead.is_some() {
            return;
        }
        let Some(progress) = txn::concurrent_successor(&t.req, &t.progress) else {
            return;
        };
        let Ok((shard, req)) = txn::step_request(&t.req, &progress, id) else {
            return; // sent in its turn instead, which reports the problem
        };
        // Attempt 0: the header it would get in its turn, so a resend after a restart is
        // recognised by the shard.
        let header = step_header(self.client_id, id, 0, shard, &req);
        let seq = AHEAD_SEQ | t.step_seq;
        self.pending.sends.push(ShardSend {
            txn: id,
            step: seq,
            shard,
            req,
            header,
            delay_ms: 0,
        });
        t.ahead = Some(Ahead {
            progress,
            seq,
            outcome: None,
        });
    }

    /// The outcome of a step arrived. A transient one (no answer, or an error that says "not
    /// now") sends the step again with the same header after a back-off, forever: only a
    /// definite answer may move a transaction on or roll it back.
    pub fn on_shard_reply(&mut self, now: EggsTime, reply: StepReply) {
        self.now = now;
        let Some(t) = self.live.get_mut(&reply.txn) else {
            tracing::debug!(txn = reply.txn, "reply for a finished transaction");
            return;
        };
        if let Some(a) = t.ahead.as_mut().filter(|a| a.seq == reply.step) {
            assert!(
                a.outcome.is_none(),
                "txn {}: two outcomes of one send",
                reply.txn
            );
            match reply.result {
                Ok(r) => a.outcome = Some(Ok(r)),
                // Sent again in its turn, where failures are retried with back-off.
                Err(_) => t.ahead = None,
            }
            return;
        }
        if !t.running || reply.step != t.step_seq {
            tracing::debug!(txn = reply.txn, "stale reply for step {}", reply.step);
            return;
        }
        match reply.result {
            Err(e) if is_transient(e) => self.resend_after_transient(reply.txn, e),
            outcome => {
                live_entry(&mut self.live, reply.txn).transient_failures = 0;
                self.on_step_outcome(reply.txn, outcome)
            }
        }
    }

    /// Sends the current step of `id` again, with the same header (the shard may have
    /// applied it: its deduplication entry then answers), after a back-off.
    fn resend_after_transient(&mut self, id: TxnId, err: EggsError) {
        let t = live_entry(&mut self.live, id);
        t.transient_failures = t.transient_failures.saturating_add(1);
        let n = t.transient_failures;
        let delay_ms = retry_delay_ms(n);
        // Every failure is worth a debug line; a warning only at exponentially spaced counts.
        if n.is_power_of_two() {
            tracing::warn!(
                txn = id,
                "step {:?} failed {n} times ({err}); retrying in {delay_ms} ms",
                t.progress.step
            );
        } else {
            tracing::debug!(txn = id, "step {:?} failed: {err}", t.progress.step);
        }
        self.send_step(id, delay_ms);
    }

    /// Moves transaction `id` on after its current step's definite outcome.
    fn on_step_outcome(&mut self, id: TxnId, outcome: Result<ShardResp, EggsError>) {
        let t = live_entry(&mut self.live, id);
        assert!(t.running, "txn {id} has an outcome without running");
        match txn::advance(&t.req, &t.progress, outcome) {
            Transition::Next(p) => self.next_step(id, p),
            Transition::Retry(e) => {
                t.failures += 1;
                let delay_ms = retry_delay_ms(t.failures);
                tracing::warn!(
                    txn = id,
                    "step {:?} failed ({e}), retrying in {delay_ms} ms",
                    t.progress.step
                );
                self.send_step(id, delay_ms);
            }
            Transition::Finish(result) => self.finish(id, result),
        }
    }

    fn next_step(&mut self, id: TxnId, p: Progress) {
        let t = live_entry(&mut self.live, id);
        assert!(p != t.progress, "txn {id} stays at {:?}", p.step);
        // Leaving the fallible part (commit point or start of a rollback) is the one progress
        // write that must be synced: resending an earlier step after this one took effect
        // would not be idempotent (e.g. locking an edge that was already moved away).
        let sync = !t.progress.step.must_complete() && p.step.must_complete();
        if let (Some(e), None) = (p.failure, t.progress.failure) {
            tracing::info!(
                txn = id,
                "txn {id} {} rolls back after {:?}: {e}",
                t.req.kind(),
                t.progress.step
            );
        }
        let ahead = t.ahead.take().filter(|a| a.progress == p);
        t.progress = p;
        t.failures = 0;
        t.transient_failures = 0;
        let record = t.record(id);
        self.write(id, Write::Put(record), sync);
        match ahead {
            // Sent ahead and still in flight: its reply is this step's.
            Some(Ahead {
                seq, outcome: None, ..
            }) => live_entry(&mut self.live, id).step_seq = seq,
            // Sent ahead and done: go on with its outcome (after this progress write,
            // which goes out in the same batch).
            Some(Ahead {
                outcome: Some(outcome),
                ..
            }) => self.on_step_outcome(id, outcome),
            // Nothing ahead, or something else (its outcome, if it comes, is stale).
            None => self.send_step(id, 0),
        }
    }

    fn finish(&mut self, id: TxnId, result: Result<CdcResp, EggsError>) {
        let now = self.now;
        let Some(t) = self.live.remove(&id) else {
            panic!("txn {id} finished but is not live");
        };
        assert!(t.running, "txn {id} finished without running");
        match &result {
            Ok(_) => tracing::debug!(txn = id, "txn {id} {} succeeded", t.req.kind()),
            Err(e) => tracing::debug!(txn = id, "txn {id} {} failed: {e}", t.req.kind()),
        }
        let record = TxnRecord {
            id,
            header: t.header,
            req: t.req,
            arrived_at: t.arrived_at,
            state: TxnState::Done {
                result: result.clone(),
                finished_at: now,
            },
        };
        // The result must be durable before any client hears of it (replies follow the batch).
        self.write(id, Write::Put(record), true);
        for to in t.waiters {
            self.reply(to, t.header.request_id, result.clone());
        }
        let previous = self.finished.insert(
            id,
            FinishedTxn {
                header: t.header,
                result,
            },
        );
        assert!(previous.is_none(), "txn {id} finished twice");
        self.finished_order.push_back((now, id));
        for next in self.locks.release(id, &t.locks) {
            self.start_if_ready(next);
        }
        self.evict_beyond_cap();
    }

    fn start_if_ready(&mut self, id: TxnId) {
        assert!(
            self.live.contains_key(&id),
            "txn {id} heads a lock queue but is not live"
        );
        let ready = self
            .live
            .get(&id)
            .is_some_and(|t| !t.running && self.locks.holds_all(id, &t.locks));
        if ready {
            self.start(id);
        }
    }

    /// Periodic housekeeping: forgets finished transactions older than the retention time.
    pub fn on_tick(&mut self, now: EggsTime) {
        self.now = now;
        assert!(
            self.finished.len() <= self.cfg.max_finished,
            "finished results over the cap"
        );
        while let Some(&(at, id)) = self.finished_order.front() {
            if at.0.saturating_add(self.cfg.finished_ttl_ns) > now.0 {
                break;
            }
            self.finished_order.pop_front();
            self.forget(id);
        }
    }

    fn evict_beyond_cap(&mut self) {
        while self.finished.len() > self.cfg.max_finished {
            let Some((_, id)) = self.finished_order.pop_front() else {
                panic!(
                    "{} finished results, none in the expiry order",
                    self.finished.len()
                );
            };
            self.forget(id);
        }
    }

    fn forget(&mut self, id: TxnId) {
        // Every finished transaction is in the expiry order once, so it is still here.
        let Some(done) = self.finished.remove(&id) else {
            panic!("txn {id} expired twice");
        };
        let indexed = self.by_header.remove(&done.header);
        assert_eq!(indexed, Some(id), "txn {id} was not indexed by its header");
        self.write(id, Write::Delete { id }, false);
    }

    fn write(&mut self, id: TxnId, w: Write, sync: bool) {
        if let Write::Put(r) = &w {
            assert_eq!(r.id, id, "record of txn {} written as {id}", r.id);
        }
        self.pending.writes.insert(id, w);
        self.pending.sync |= sync;
    }

    fn reply(&mut self, to: SocketAddr, request_id: u64, result: Result<CdcResp, EggsError>) {
        assert!(
            self.pending.replies.len() < 1 << 24,
            "replies pile up without take_output"
        );
        self.pending.replies.push(Reply {
            to,
            resp: CdcResponse { request_id, result },
        });
    }
}

/// A transaction that must be live: the core looks ids up this way only where its own state
/// says so, so a miss is a bug. (A function of the map alone, so that the rest of the core
/// stays borrowable meanwhile.)
fn live_entry(live: &mut HashMap<TxnId, LiveTxn>, id: TxnId) -> &mut LiveTxn {
    match live.get_mut(&id) {
        Some(t) => t,
        None => panic!("txn {id} is not live"),
    }
}

/// The back-off before sending something again after its `failures`-th consecutive failure
/// (counted from 1): 100 ms, doubled per failure, at most 5 s. The one back-off of the CDC.
pub fn retry_delay_ms(failures: u32) -> u64 {
    assert!(failures > 0, "a back-off without a failure");
    let shift = failures.saturating_sub(1).min(16);
    (RETRY_BASE_MS << shift).min(RETRY_MAX_MS)
}

/// Encodes a reply for the wire. Replies hold a result and a few ids, so one that would not
/// fit in a datagram is a bug.
pub fn encode_reply(resp: &CdcResponse) -> Vec<u8> {
    eggs_protocol::codec::encode_within(resp, MAX_REPLY_BYTES)
}

/// Errors that say "not now" rather than "no": the core sends the step again instead of
/// acting on them, since only definite answers may roll a transaction back.
pub fn is_transient(err: EggsError) -> bool {
    matches!(
        err,
        EggsError::Timeout
            | EggsError::InternalError
            | EggsError::ShardNotRegistered
            | EggsError::WrongShard
    )
}

#[cfg(test)]
mod tests;
