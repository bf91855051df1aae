//! The event loop: a virtual clock, a queue of timed events, the network between the nodes,
//! crashes and restarts, the clients' retries, and the checkpoints.

use crate::blocks::BlockServices;
use crate::client::{Next, Op, Reply, Req};
use crate::config::SimConfig;
use crate::kv::SimKv;
use crate::model::{Cluster, Model, Outcome};
use crate::procs::{CdcIn, CdcProc, CdcStore, NodeId, ShardProc, StepCall};
use crate::rng::{Rng, TraceHash};
use crate::watch::ErrorEvents;
use crate::{Report, SimError};
use eggs_cdc::cdc_core::{encode_reply, CoreConfig, Output, ShardSend, StepReply};
use eggs_cdc::CdcCore;
use eggs_client::{Retry, RetryPolicy};
use eggs_protocol::cdc::{CdcRequest, CdcResponse};
use eggs_protocol::conv::{fit, low_byte, usize_of};
use eggs_protocol::shard::{BlockWriteTarget, ShardReq, ShardRequest, ShardResp, ShardResponse};
use eggs_protocol::shuckle::{
    self as sk, RegisterCdcReq, RegisterShardsReq, ShardBlockServicesReq, ShuckleReq, ShuckleResp,
};
use eggs_protocol::{
    codec, Addr, BlockId, BlockServiceId, EggsError, EggsTime, InodeId, Name, RequestHeader,
    ShardId,
};
use eggs_shard::{ShardCore, ShardOptions};
use eggs_shuckle::registry::Registry;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;

/// Virtual time 0 is this wall-clock time, so that times look like real ones.
const EPOCH_NS: u64 = 1_750_000_000 * 1_000_000_000;
const MS: u64 = 1_000_000;
const US: u64 = 1_000;
/// The CDC's shard client gives up on one call after this long (then the core backs off and
/// sends the step again).
const STEP_CALL_DEADLINE_MS: u64 = 10 * 60 * 1000;
/// As in the shard server and the CDC driver.
const SHARD_MAX_BATCH: usize = 1024;
const SHARD_QUEUE_LEN: usize = 16 * 1024;
const CDC_MAX_BURST: usize = 2048;
const CDC_QUEUE_LEN: usize = 4096;
/// Names per directory the clients choose from: few, so that operations collide.
const NAMES: u64 = 6;
/// Shards, the CDC and block services register with shuckle this often, as the servers do.
const HEARTBEAT_MS: u64 = 1000;
/// A GC pass runs this often, besides the one after each checkpoint.
const GC_INTERVAL_MS: u64 = 3000;
/// Share of block writes that fail (a block service's disk or connection): the client
/// removes the span again and writes the data inline.
const BLOCK_FAIL_RATE: f64 = 0.1;
/// A checkpoint waits at most this long (virtual) for the cluster to settle.
const SETTLE_LIMIT_NS: u64 = 30 * 60 * 1000 * MS;

enum Ev {
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
    },
    /// A late copy of a CDC step whose deduplication entry expired meanwhile.
    DeliverStale {
        to: NodeId,
        bytes: Vec<u8>,
    },
    ClientStart {
        client: u32,
    },
    ClientTimeout {
        client: u32,
        request_id: u64,
    },
    ShardBatch {
        proc: u32,
        core: usize,
        inc: u64,
    },
    /// The WAL sync a shard process started has finished.
    ShardSynced {
        proc: u32,
        inc: u64,
    },
    CdcBurst {
        inc: u64,
    },
    CdcPersisted {
        inc: u64,
        out: Output,
    },
    CdcStepStart {
        inc: u64,
        send: ShardSend,
    },
    CdcStepTimeout {
        inc: u64,
        request_id: u64,
    },
    CdcTick {
        inc: u64,
    },
    Crash,
    Restart {
        node: NodeId,
    },
    /// The block services answer a client's writes or erases.
    BlockReply {
        client: u32,
        result: Result<Vec<[u8; 8]>, EggsError>,
    },
    /// Every server registers with shuckle; shards fetch the block service list.
    Heartbeat,
    /// A GC pass over every shard.
    Gc,
}

impl Ev {
    fn tag(&self) -> u64 {
        match self {
            Ev::Deliver { .. } => 1,
            Ev::ClientStart { .. } => 2,
            Ev::ClientTimeout { .. } => 3,
            Ev::ShardBatch { .. } => 4,
            Ev::ShardSynced { .. } => 5,
            Ev::CdcBurst { .. } => 6,
            Ev::CdcPersisted { .. } => 7,
            Ev::CdcStepStart { .. } => 8,
            Ev::CdcStepTimeout { .. } => 9,
            Ev::CdcTick { .. } => 10,
            Ev::Crash => 11,
            Ev::Restart { .. } => 12,
            Ev::DeliverStale { .. } => 13,
            Ev::BlockReply { .. } => 14,
            Ev::Heartbeat => 15,
            Ev::Gc => 16,
        }
    }

    /// Whether the event is work the cluster must finish before it is quiescent (ticks,
    /// crash timers and client starts are not).
    fn is_work(&self) -> bool {
        !matches!(
            self,
            Ev::CdcTick { .. } | Ev::Crash | Ev::ClientStart { .. } | Ev::Heartbeat | Ev::Gc
        )
    }
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in scheduling order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Inflight {
    request_id: u64,
    to: NodeId,
    bytes: Vec<u8>,
    first_sent_ns: u64,
    retry: Retry,
}

/// `eggs-client`'s default retry policy with another deadline.
fn retry_policy(deadline_ms: u64) -> RetryPolicy {
    RetryPolicy {
        deadline_ms,
        ..RetryPolicy::default()
    }
}

struct ClientState {
    client_id: u64,
    next_request_id: u64,
    rng: Rng,
    op: Option<Op>,
    inflight: Option<Inflight>,
    remaining: u64,
}

pub struct Sim {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    work: u64,
    net_rng: Rng,
    fault_rng: Rng,
    /// Only for stale step copies, so that enabling them leaves the other streams alone.
    stale_rng: Rng,
    hash: TraceHash,
    shards: Vec<ShardProc>,
    cdc: CdcProc,
    up_shards: Vec<bool>,
    cdc_up: bool,
    clients: Vec<ClientState>,
    /// Request ids of the GC passes' writes (their deduplication entries must not collide).
    gc_request_id: u64,
    /// The real shuckle registry core (shuckle itself does not crash here).
    shuckle: Registry,
    blocks: BlockServices,
    model: Model,
    report: Report,
    paused_since: Option<u64>,
    crash_timer: bool,
    next_checkpoint: u64,
    recent: VecDeque<String>,
    failure: Vec<String>,
    /// `tracing::error!` events of the code under test: each one fails the run.
    errors: ErrorEvents,
}

fn client_addr(i: u32) -> SocketAddr {
    let [_, _, hi, lo] = i.to_be_bytes();
    SocketAddr::from(([10, 1, hi, lo], 4000))
}

/// The client id of the GC passes' requests.
const GC_CLIENT_ID: u64 = 0x6c00_0000_0000_0001;

/// Where shard process `p` registers (the simulator routes by node, not by address).
fn shard_addr(p: u32) -> SocketAddr {
    let [_, _, hi, lo] = p.to_be_bytes();
    SocketAddr::from(([10, 2, hi, lo], 5000))
}

/// The shard process of `procs` that serves `shard`.
fn shard_proc(shard: ShardId, procs: u32) -> u32 {
    u32::from(shard.0) % procs
}

/// The shards shard process `p` of `procs` serves.
fn shards_of(p: u32, procs: u32) -> Vec<ShardId> {
    ShardId::all()
        .filter(|&s| shard_proc(s, procs) == p)
        .collect()
}

fn cdc_addr() -> SocketAddr {
    SocketAddr::from(([10, 3, 0, 1], 6000))
}

fn addr_client(a: SocketAddr) -> Option<u32> {
    match a {
        SocketAddr::V4(v4) if v4.ip().octets()[..2] == [10, 1] => {
            let o = v4.ip().octets();
            Some(((o[2] as u32) << 8) | o[3] as u32)
        }
        _ => None,
    }
}

impl Sim {
    pub fn new(cfg: SimConfig, errors: ErrorEvents) -> Sim {
        let mut root = Rng::new(cfg.seed);
        let net_rng = root.fork();
        let fault_rng = root.fork();
        let procs = cfg.shard_procs.max(1);
        let shards = (0..procs)
            .map(|p| {
                let kv = if cfg.break_dedup {
                    SimKv::forgetting_dedup()
                } else {
                    SimKv::default()
                };
                let shards = shards_of(p, procs);
                ShardProc::new(kv, shards, cfg.cores_per_proc as usize)
            })
            .collect();
        let n = cfg.clients.max(1);
        let clients = (0..n)
            .map(|i| {
                let mut rng = root.fork();
                ClientState {
                    client_id: rng.next_u64(),
                    next_request_id: rng.next_u64() >> 1,
                    rng,
                    op: None,
                    inflight: None,
                    remaining: cfg.ops / n as u64 + u64::from((i as u64) < cfg.ops % n as u64),
                }
            })
            .collect();
        let stale_rng = root.fork();
        let blocks = BlockServices::new(&mut root.fork());
        let cdc = CdcProc {
            store: CdcStore::default(),
            core: None,
            inbox: VecDeque::new(),
            busy: false,
            incarnation: 0,
            skew_ns: 0,
            steps: Default::default(),
            step_errors: Default::default(),
        };
        Sim {
            next_checkpoint: cfg.checkpoint_every.max(1),
            report: Report {
                seed: cfg.seed,
                ..Default::default()
            },
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            work: 0,
            net_rng,
            fault_rng,
            stale_rng,
            hash: TraceHash::default(),
            shards,
            cdc,
            up_shards: vec![false; procs as usize],
            cdc_up: false,
            clients,
            gc_request_id: 0,
            shuckle: Registry::new(std::time::Duration::from_millis(
                eggs_shuckle::DEFAULT_STALE_AFTER_MS,
            )),
            blocks,
            model: Model::default(),
            paused_since: None,
            crash_timer: false,
            recent: VecDeque::new(),
            failure: Vec::new(),
            errors,
        }
    }

    /// Runs every operation, with checkpoints, to the final checkpoint.
    pub fn run(&mut self) -> Result<Report, SimError> {
        // Block services first, as `eggsrun` starts them: shards find them at their start.
        self.register_block_services();
        self.schedule(HEARTBEAT_MS * MS, Ev::Heartbeat);
        self.schedule(GC_INTERVAL_MS * MS, Ev::Gc);
        for p in 0..self.procs() {
            self.restart(NodeId::Shard(p));
        }
        self.restart(NodeId::Cdc);
        for c in 0..fit::<u32, usize>(self.clients.len()) {
            let after = self.fault_rng.between(0, MS);
            self.schedule(after, Ev::ClientStart { client: c });
        }
        self.arm_crash();
        loop {
            for e in self.errors.take() {
                self.failure
                    .push(format!("error event in the code under test: {e}"));
            }
            if !self.failure.is_empty() {
                return Err(self.error());
            }
            if let Some(since) = self.paused_since {
                if self.quiescent() {
                    self.checkpoint();
                    if !self.failure.is_empty() {
                        return Err(self.error());
                    }
                    if self.clients.iter().all(|c| c.remaining == 0) {
                        self.report.virtual_ms = self.now / MS;
                        self.report.trace_hash = self.hash.0;
                        return Ok(self.report.clone());
                    }
                    self.resume();
                } else if self.now - since > SETTLE_LIMIT_NS {
                    let what = format!("the cluster did not settle: {}", self.unsettled());
                    self.failure.push(what);
                    continue;
                }
            }
            let Some(s) = self.queue.pop() else {
                self.failure.push("no events left".into());
                continue;
            };
            self.now = s.at;
            if s.ev.is_work() {
                self.work -= 1;
            }
            self.hash.u64(s.at);
            self.hash.u64(s.ev.tag());
            self.handle(s.ev);
        }
    }

    /// The report of a run that panicked in the code under test (the event being handled
    /// is the last one in `recent`, when tracing).
    pub fn panicked(&self, panic: &str) -> SimError {
        let mut e = self.error();
        e.what
            .push(format!("panic in the code under test: {panic}"));
        e
    }

    fn error(&self) -> SimError {
        SimError {
            seed: self.cfg.seed,
            time_ms: self.now / MS,
            what: self.failure.clone(),
            recent: self.recent.iter().cloned().collect(),
            command: self.cfg.command(),
        }
    }

    fn note(&mut self, line: String) {
        if self.cfg.trace {
            eprintln!("{:>10.3} ms  {line}", self.now as f64 / MS as f64);
        }
        if self.recent.len() == 64 {
            self.recent.pop_front();
        }
        self.recent
            .push_back(format!("{:.3} ms {line}", self.now as f64 / MS as f64));
    }

    fn schedule(&mut self, after_ns: u64, ev: Ev) {
        if ev.is_work() {
            self.work += 1;
        }
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after_ns,
            seq: self.seq,
            ev,
        });
    }

    /// How many shard processes run.
    fn procs(&self) -> u32 {
        fit(self.shards.len())
    }

    /// The shard process serving `shard`.
    fn proc_of(&self, shard: ShardId) -> u32 {
        shard_proc(shard, self.procs())
    }

    fn clock(&self, skew_ns: i64) -> EggsTime {
        EggsTime((EPOCH_NS + self.now).saturating_add_signed(skew_ns))
    }

    fn skew(&mut self) -> i64 {
        let span = self.cfg.clock_skew_ms * MS;
        fit::<i64, u64>(self.fault_rng.between(0, 2 * span)) - fit::<i64, u64>(span)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Ev::DeliverStale { to, bytes } => self.deliver_stale(to, bytes),
            Ev::ClientStart { client } => self.client_start(client),
            Ev::ClientTimeout { client, request_id } => self.client_timeout(client, request_id),
            Ev::ShardBatch { proc, core, inc } => self.shard_batch(proc, core, inc),
            Ev::ShardSynced { proc, inc } => self.shard_synced(proc, inc),
            Ev::CdcBurst { inc } => self.cdc_burst(inc),
            Ev::CdcPersisted { inc, out } => {
                if inc == self.cdc.incarnation && self.cdc_up {
                    self.cdc.store.persist(&out.writes, out.counters, out.sync);
                    self.cdc_execute(out);
                }
            }
            Ev::CdcStepStart { inc, send } => self.step_start(inc, send),
            Ev::CdcStepTimeout { inc, request_id } => self.step_timeout(inc, request_id),
            Ev::CdcTick { inc } => {
                if inc == self.cdc.incarnation && self.cdc_up {
                    self.cdc_push(CdcIn::Tick);
                    self.schedule(1000 * MS, Ev::CdcTick { inc });
                }
            }
            Ev::Crash => self.crash(),
            Ev::Restart { node } => self.restart(node),
            Ev::BlockReply { client, result } => {
                let next = match self.clients[client as usize].op.as_mut() {
                    Some(op) => op.on_reply(Reply::Blocks(result)),
                    None => return,
                };
                self.advance(client, next);
            }
            Ev::Heartbeat => self.heartbeat(),
            Ev::Gc => {
                // While clients run too: a slow create may lose its file to GC, and must
                // then fail cleanly. Only with every shard up (eggsgc would wait for the
                // others).
                if self.up_shards.iter().all(|&u| u) {
                    self.collect_garbage();
                }
                self.schedule(GC_INTERVAL_MS * MS, Ev::Gc);
            }
        }
    }

    // ---- network ----

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        self.report.sent += 1;
        if self.net_rng.chance(self.cfg.drop_rate) {
            self.report.dropped += 1;
            return;
        }
        let copies = if self.net_rng.chance(self.cfg.dup_rate) {
            self.report.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self
                .net_rng
                .between(self.cfg.delay_min_us, self.cfg.delay_max_us)
                * US;
            if self.net_rng.chance(self.cfg.slow_rate) {
                delay += self.net_rng.below(self.cfg.slow_max_ms * MS);
            }
            self.schedule(
                delay,
                Ev::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        self.hash.u64(from.tag());
        self.hash.u64(to.tag());
        self.hash.bytes(&bytes);
        self.report.delivered += 1;
        if self.cfg.trace {
            self.note(format!(
                "{from:?} -> {to:?}: {}",
                describe(from, to, &bytes)
            ));
        }
        match to {
            NodeId::Client(c) => self.client_receive(c, from, &bytes),
            NodeId::Shard(p) => {
                if !self.up_shards[p as usize] {
                    return;
                }
                // As the receive thread: decode, then queue on the core owning the shard.
                let Ok(req) = codec::decode::<ShardRequest>(&bytes) else {
                    return self.failure.push("shard cannot decode a request".into());
                };
                let proc = &mut self.shards[p as usize];
                let core = proc.core_of(req.shard);
                let slot = &mut proc.cores[core];
                if slot.inbox.len() < SHARD_QUEUE_LEN {
                    slot.inbox.push_back((from, req));
                    self.shard_kick(p, core);
                }
            }
            NodeId::Cdc => {
                if !self.cdc_up {
                    return;
                }
                match from {
                    NodeId::Client(c) => match codec::decode::<CdcRequest>(&bytes) {
                        Ok(req) if self.cdc.inbox.len() < CDC_QUEUE_LEN => {
                            self.cdc_push(CdcIn::Request(client_addr(c), req))
                        }
                        Ok(_) => {}
                        Err(e) => self
                            .failure
                            .push(format!("CDC cannot decode a client request: {e}")),
                    },
                    _ => self.step_response(&bytes),
                }
            }
        }
    }

    // ---- clients ----

    fn client_start(&mut self, c: u32) {
        let st = &self.clients[c as usize];
        if self.paused_since.is_some() || st.op.is_some() || st.remaining == 0 {
            return;
        }
        let mut op = self.pick_op(c);
        self.clients[c as usize].remaining -= 1;
        self.report.ops += 1;
        let next = op.start();
        self.note(format!("client {c} starts {}", op.describe()));
        self.clients[c as usize].op = Some(op);
        self.advance(c, next);
    }

    fn pick_op(&mut self, c: u32) -> Op {
        let dirs = self.model.live_dirs();
        let edges = self.model.live_edges();
        let rng = &mut self.clients[c as usize].rng;
        let name = |rng: &mut Rng| {
            Name::new(format!("n{}", rng.below(NAMES))).unwrap_or_else(|_| unreachable!())
        };
        let dir = |rng: &mut Rng| *rng.pick(&dirs).unwrap_or(&InodeId::ROOT);
        let edge_where = |rng: &mut Rng, f: &dyn Fn(InodeId) -> bool| {
            let matching: Vec<_> = edges.iter().filter(|(_, t)| f(*t)).collect();
            match rng.pick(&matching) {
                Some((k, _)) if !rng.chance(0.1) => k.clone(),
                _ => (dir(rng), name(rng)),
            }
        };
        match rng.below(100) {
            0..=9 => Op::Lookup {
                dir: dir(rng),
                name: name(rng),
            },
            10..=14 => Op::ReadDir {
                dir: dir(rng),
                start: None,
                seen: Vec::new(),
            },
            15..=39 => {
                let len = if rng.chance(0.8) {
                    rng.below(200)
                } else {
                    rng.below(6000)
                };
                let data = (0..len).map(|_| low_byte(rng.next_u64())).collect();
                Op::Create {
                    dir: dir(rng),
                    name: name(rng),
                    data,
                    blocks: rng.chance(0.3),
                    stage: crate::client::CreateStage::Construct,
                }
            }
            40..=51 => {
                let (dir, name) = edge_where(rng, &|t| !t.is_dir());
                Op::Unlink {
                    dir,
                    name,
                    edge: None,
                }
            }
            52..=61 => {
                let from = edge_where(rng, &|_| true);
                let to = (from.0, name(rng));
                Op::Rename {
                    from,
                    to,
                    edge: None,
                }
            }
            62..=75 => {
                let from = edge_where(rng, &|_| true);
                let to = (dir(rng), name(rng));
                Op::Rename {
                    from,
                    to,
                    edge: None,
                }
            }
            76..=87 => Op::Mkdir {
                owner: dir(rng),
                name: name(rng),
            },
            _ => {
                let (owner, name) = edge_where(rng, &|t| t.is_dir());
                Op::Rmdir {
                    owner,
                    name,
                    edge: None,
                }
            }
        }
    }

    fn advance(&mut self, c: u32, next: Next) {
        match next {
            Next::Send(req) => self.client_send(c, req),
            Next::Done(outcome) => self.finish_op(c, outcome),
        }
    }

    fn client_send(&mut self, c: u32, req: Req) {
        let req = match req {
            Req::WriteBlocks(writes) => return self.write_blocks(c, writes),
            Req::EraseBlocks(blocks) => return self.erase_blocks(c, &blocks),
            other => other,
        };
        let procs = self.procs();
        let st = &mut self.clients[c as usize];
        let header = RequestHeader {
            request_id: st.next_request_id,
            client_id: st.client_id,
        };
        st.next_request_id += 1;
        let (to, bytes) = match req {
            Req::Shard(shard, body) => (
                NodeId::Shard(shard_proc(shard, procs)),
                codec::encode(&ShardRequest {
                    header,
                    shard,
                    body,
                }),
            ),
            Req::Cdc(body) => (NodeId::Cdc, codec::encode(&CdcRequest { header, body })),
            Req::WriteBlocks(_) | Req::EraseBlocks(_) => unreachable!("handled above"),
        };
        let mut retry = Retry::new(retry_policy(self.cfg.client_deadline_ms));
        let timeout_ms = retry.next_attempt().timeout_ms;
        st.inflight = Some(Inflight {
            request_id: header.request_id,
            to,
            bytes: bytes.clone(),
            first_sent_ns: self.now,
            retry,
        });
        self.send(NodeId::Client(c), to, bytes);
        self.schedule(
            timeout_ms * MS,
            Ev::ClientTimeout {
                client: c,
                request_id: header.request_id,
            },
        );
    }

    /// As `UdpRpc::call`, by the same [`Retry`]: resend with the same id, until it gives up.
    fn client_timeout(&mut self, c: u32, request_id: u64) {
        let now = self.now;
        let st = &mut self.clients[c as usize];
        let Some(f) = st.inflight.as_mut().filter(|f| f.request_id == request_id) else {
            return;
        };
        if f.retry.gives_up((now - f.first_sent_ns) / MS) {
            st.inflight = None;
            let next = match st.op.as_mut() {
                Some(op) => op.on_reply(Reply::GaveUp),
                None => return,
            };
            self.advance(c, next);
            return;
        }
        let t = f.retry.next_attempt().timeout_ms;
        let (to, bytes) = (f.to, f.bytes.clone());
        self.send(NodeId::Client(c), to, bytes);
        self.schedule(
            t * MS,
            Ev::ClientTimeout {
                client: c,
                request_id,
            },
        );
    }

    fn client_receive(&mut self, c: u32, from: NodeId, bytes: &[u8]) {
        let (request_id, reply) = match from {
            NodeId::Cdc => match codec::decode::<CdcResponse>(bytes) {
                Ok(r) => (r.request_id, Reply::Cdc(r.result)),
                Err(e) => return self.failure.push(format!("undecodable CDC response: {e}")),
            },
            _ => match codec::decode::<ShardResponse>(bytes) {
                Ok(r) => (r.request_id, Reply::Shard(r.result)),
                Err(e) => {
                    return self
                        .failure
                        .push(format!("undecodable shard response: {e}"))
                }
            },
        };
        let st = &mut self.clients[c as usize];
        if st.inflight.as_ref().map(|f| f.request_id) != Some(request_id) {
            return; // a late or duplicated reply: the caller is no longer waiting
        }
        st.inflight = None;
        let next = match st.op.as_mut() {
            Some(op) => op.on_reply(reply),
            None => return,
        };
        self.advance(c, next);
    }

    fn finish_op(&mut self, c: u32, o: Outcome) {
        self.hash.bytes(o.kind.as_bytes());
        self.hash.u64(o.error.map_or(0, |e| e.code() as u64));
        if let Some(v) = &o.violation {
            self.failure.push(v.clone());
        }
        match (&o.unknown, o.error, o.events.is_empty()) {
            (Some(_), _, _) => self.report.ops_unknown += 1,
            (_, Some(_), _) => self.report.ops_failed += 1,
            _ => {}
        }
        let line = format!(
            "client {c} {} -> {}",
            o.kind,
            match (&o.unknown, o.error) {
                (Some(u), _) => format!("UNKNOWN {:?}", u.keys),
                (_, Some(e)) => format!("error {e:?}"),
                _ => format!(
                    "ok {:?}",
                    o.events
                        .iter()
                        .map(|e| (&e.key, e.state))
                        .collect::<Vec<_>>()
                ),
            }
        );
        self.note(line);
        self.model.record(&o);
        self.clients[c as usize].op = None;
        self.report.ops_done += 1;
        if self.report.ops_done >= self.next_checkpoint
            || self.clients.iter().all(|c| c.remaining == 0)
        {
            self.paused_since.get_or_insert(self.now);
        }
        let think = self.clients[c as usize].rng.between(0, 2 * MS);
        self.schedule(think, Ev::ClientStart { client: c });
    }

    // ---- block services ----

    /// A client writes a span's blocks (over TCP in reality: no loss, only latency). Some
    /// writes fail part way, as a block service's disk or connection can.
    fn write_blocks(&mut self, c: u32, writes: Vec<(BlockWriteTarget, Vec<u8>)>) {
        let fail_at = self
            .fault_rng
            .chance(BLOCK_FAIL_RATE)
            .then(|| usize_of(self.fault_rng.below(writes.len() as u64)));
        let mut proofs = Vec::with_capacity(writes.len());
        let mut result = Ok(());
        for (i, (target, data)) in writes.iter().enumerate() {
            if fail_at == Some(i) {
                result = Err(EggsError::BlockIoError);
                break;
            }
            match self.blocks.write(target, data) {
                Ok(p) => proofs.push(p),
                Err(e) => {
                    self.failure.push(format!(
                        "block service {:?} refused a shard's write certificate: {e:?}",
                        target.block_service_id
                    ));
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) => self.report.block_spans += 1,
            Err(_) => self.report.block_failures += 1,
        }
        let result = result.map(|()| proofs);
        let after = self.fault_rng.between(100, 2000) * US;
        self.schedule(after, Ev::BlockReply { client: c, result });
    }

    fn erase_blocks(&mut self, c: u32, blocks: &[BlockWriteTarget]) {
        let mut proofs = Vec::with_capacity(blocks.len());
        for target in blocks {
            match self.blocks.erase(target) {
                Ok(p) => proofs.push(p),
                Err(e) => self.failure.push(format!(
                    "block service {:?} refused a shard's erase certificate: {e:?}",
                    target.block_service_id
                )),
            }
        }
        let after = self.fault_rng.between(100, 2000) * US;
        self.schedule(
            after,
            Ev::BlockReply {
                client: c,
                result: Ok(proofs),
            },
        );
    }

    // ---- shuckle ----

    /// One request to the registry core, its changes applied at once (shuckle's store is
    /// not what is under test here).
    fn shuckle_request(&mut self, req: ShuckleReq) -> Option<ShuckleResp> {
        let out = self.shuckle.handle(req, self.clock(0));
        self.shuckle.apply(out.changes);
        match out.result {
            Ok(r) => Some(r),
            Err(e) => {
                self.failure
                    .push(format!("shuckle refused a registration: {e:?}"));
                None
            }
        }
    }

    fn register_block_services(&mut self) {
        let req = ShuckleReq::RegisterBlockServices(self.blocks.registration());
        self.shuckle_request(req);
    }

    fn heartbeat(&mut self) {
        self.register_block_services();
        for p in 0..self.procs() {
            if self.up_shards[p as usize] {
                self.shard_heartbeat(p);
                self.expire_dedup(p);
            }
        }
        if self.cdc_up {
            let addr = Addr::from_socket_addr(cdc_addr()).unwrap_or_default();
            self.shuckle_request(ShuckleReq::RegisterCdc(RegisterCdcReq { addr }));
        }
        self.schedule(HEARTBEAT_MS * MS, Ev::Heartbeat);
    }

    /// As the shard server's heartbeat: fetch the block services (with their keys) for the
    /// cores, then register the process's shards.
    fn shard_heartbeat(&mut self, p: u32) {
        if let Some(ShuckleResp::ShardBlockServices(r)) =
            self.shuckle_request(ShuckleReq::ShardBlockServices(ShardBlockServicesReq {}))
        {
            for slot in &mut self.shards[p as usize].cores {
                if let Some(core) = slot.core.as_mut() {
                    core.set_block_services(r.services.clone());
                }
            }
        }
        let shards = shards_of(p, self.procs());
        let addr = Addr::from_socket_addr(shard_addr(p)).unwrap_or_default();
        self.shuckle_request(ShuckleReq::RegisterShards(RegisterShardsReq {
            shards,
            addr,
        }));
    }

    /// As the server's core threads between groups: drop expired deduplication entries.
    fn expire_dedup(&mut self, p: u32) {
        let now = self.clock(self.shards[p as usize].skew_ns);
        for slot in &mut self.shards[p as usize].cores {
            if let Some(core) = slot.core.as_mut() {
                if let Err(e) = core.expire_dedup(now) {
                    self.failure.push(format!("expiring dedup entries: {e}"));
                }
            }
        }
    }

    /// What shuckle must know once the cluster has settled: every shard at the process
    /// serving it, the CDC, and every block service, none stale.
    fn check_shuckle(&mut self) {
        let now = self.clock(0);
        match self
            .shuckle
            .handle(ShuckleReq::Shards(sk::ShardsReq {}), now)
            .result
        {
            Ok(ShuckleResp::Shards(r)) => {
                for (shard, info) in ShardId::all().zip(&r.shards) {
                    let want =
                        Addr::from_socket_addr(shard_addr(self.proc_of(shard))).unwrap_or_default();
                    if info.addr != want {
                        self.failure.push(format!(
                            "shuckle has shard {shard} at {:?}, served by {want:?}",
                            info.addr
                        ));
                    }
                }
            }
            other => self
                .failure
                .push(format!("shuckle's shard list: {other:?}")),
        }
        match self
            .shuckle
            .handle(ShuckleReq::BlockServices(sk::BlockServicesReq {}), now)
            .result
        {
            Ok(ShuckleResp::BlockServices(r)) => {
                let want = self.blocks.registration().services.len();
                let fresh = r
                    .services
                    .iter()
                    .filter(|s| s.flags & sk::flags::STALE == 0)
                    .count();
                if r.services.len() != want || fresh != want {
                    self.failure.push(format!(
                        "shuckle lists {} block services ({fresh} fresh), {want} registered",
                        r.services.len()
                    ));
                }
            }
            other => self
                .failure
                .push(format!("shuckle's block services: {other:?}")),
        }
    }

    // ---- shards ----

    fn shard_kick(&mut self, p: u32, core: usize) {
        let proc = &mut self.shards[p as usize];
        let inc = proc.incarnation;
        // Back-pressure, as in the server: a process this far ahead of its disk waits.
        let full = proc.commit.is_full();
        let slot = &mut proc.cores[core];
        if self.up_shards[p as usize] && !slot.busy && !slot.inbox.is_empty() && !full {
            slot.busy = true;
            self.schedule(20 * US, Ev::ShardBatch { proc: p, core, inc });
        }
    }

    /// As the server's core thread: handle a group, hand it to the group commit, send what
    /// it lets out at once, and go on with the next group (its sync runs meanwhile).
    fn shard_batch(&mut self, p: u32, core: usize, inc: u64) {
        let now = self.clock(self.shards[p as usize].skew_ns);
        let proc = &mut self.shards[p as usize];
        if proc.incarnation != inc {
            return;
        }
        let slot = &mut proc.cores[core];
        let Some(shard_core) = slot.core.as_mut() else {
            return;
        };
        let n = slot.inbox.len().min(SHARD_MAX_BATCH);
        let mut replies = Vec::with_capacity(n);
        let mut wrote = false;
        for (from, req) in slot.inbox.drain(..n) {
            wrote |= req.body.is_write();
            match shard_core.handle(&req, now) {
                Ok(resp) => replies.push((from, codec::encode(&resp))),
                Err(e) => self
                    .failure
                    .push(format!("shard core failed on {:?}: {e}", req.body.kind())),
            }
        }
        slot.busy = false;
        let now_out = proc.commit.handled(core, wrote, replies);
        for (to, bytes) in now_out {
            self.send(NodeId::Shard(p), to, bytes);
        }
        self.shard_start_sync(p);
        self.shard_kick(p, core);
    }

    /// As the server's commit thread: start a sync for every group queued, if none is under
    /// way. Nothing is durable before the sync ends, so that a crash meanwhile loses every
    /// write it covers: replies let out early would then report lost writes.
    fn shard_start_sync(&mut self, p: u32) {
        let proc = &mut self.shards[p as usize];
        if proc.commit.start_sync().is_none() {
            return;
        }
        let inc = proc.incarnation;
        let latency = self.fault_rng.between(200, 2000) * US;
        self.schedule(latency, Ev::ShardSynced { proc: p, inc });
        // The queue emptied: cores held back by a full one may go on.
        for core in 0..self.shards[p as usize].cores.len() {
            self.shard_kick(p, core);
        }
    }

    fn shard_synced(&mut self, p: u32, inc: u64) {
        let proc = &mut self.shards[p as usize];
        if proc.incarnation != inc {
            return; // crashed meanwhile: nothing of the sync's groups was acknowledged
        }
        // Groups handled while the sync was under way may be made durable by it too (as a
        // WAL sync may), but their replies wait for the next one.
        for slot in &proc.cores {
            if let Err(e) = eggs_shard::Kv::sync(&slot.kv) {
                self.failure.push(format!("sync: {e}"));
            }
        }
        let proc = &mut self.shards[p as usize];
        for (_, replies) in proc.commit.synced(true) {
            for (to, bytes) in replies {
                self.send(NodeId::Shard(p), to, bytes);
            }
        }
        self.shard_start_sync(p);
    }

    // ---- CDC ----

    fn cdc_push(&mut self, ev: CdcIn) {
        self.cdc.inbox.push_back(ev);
        self.cdc_kick();
    }

    fn cdc_kick(&mut self) {
        if self.cdc_up && !self.cdc.busy && !self.cdc.inbox.is_empty() {
            self.cdc.busy = true;
            let inc = self.cdc.incarnation;
            self.schedule(10 * US, Ev::CdcBurst { inc });
        }
    }

    /// As the driver's main loop: handle what is waiting, then persist, then send.
    fn cdc_burst(&mut self, inc: u64) {
        if inc != self.cdc.incarnation || !self.cdc_up {
            return;
        }
        let now = self.clock(self.cdc.skew_ns);
        let Some(core) = self.cdc.core.as_mut() else {
            return;
        };
        let n = self.cdc.inbox.len().min(CDC_MAX_BURST);
        for ev in self.cdc.inbox.drain(..n) {
            match ev {
                CdcIn::Request(from, req) => {
                    core.on_request(now, from, req);
                }
                CdcIn::Step(reply) => core.on_shard_reply(now, reply),
                CdcIn::Tick => core.on_tick(now),
            }
        }
        let out = core.take_output();
        self.cdc_output(out);
    }

    fn cdc_output(&mut self, out: Output) {
        self.cdc.busy = true;
        if out.has_writes() {
            let latency = if out.sync {
                self.fault_rng.between(500, 3000)
            } else {
                self.fault_rng.between(20, 100)
            };
            let inc = self.cdc.incarnation;
            self.schedule(latency * US, Ev::CdcPersisted { inc, out });
        } else {
            self.cdc_execute(out);
        }
    }

    fn cdc_execute(&mut self, out: Output) {
        let inc = self.cdc.incarnation;
        // The core chose every send and its delay (its back-off after failures): the driver
        // only runs the timer.
        for send in out.sends {
            self.schedule(send.delay_ms * MS, Ev::CdcStepStart { inc, send });
        }
        for r in out.replies {
            match addr_client(r.to) {
                Some(c) => self.send(NodeId::Cdc, NodeId::Client(c), encode_reply(&r.resp)),
                None => self
                    .failure
                    .push(format!("CDC replied to unknown address {}", r.to)),
            }
        }
        self.cdc.busy = false;
        self.cdc_kick();
    }

    /// As the driver's `perform_step`: one call, retransmitted until its deadline.
    fn step_start(&mut self, inc: u64, send: ShardSend) {
        if inc != self.cdc.incarnation || !self.cdc_up {
            return;
        }
        // The core chose the header: every copy of a step, before or after a restart, carries
        // the same one, exactly as the real driver sends it.
        let header = send.header;
        let req = ShardRequest {
            header,
            shard: send.shard,
            body: send.req.clone(),
        };
        let bytes = codec::encode(&req);
        let to = NodeId::Shard(self.proc_of(send.shard));
        let mut retry = Retry::new(retry_policy(STEP_CALL_DEADLINE_MS));
        let timeout_ms = retry.next_attempt().timeout_ms;
        self.cdc.steps.insert(
            header.request_id,
            StepCall {
                send,
                to,
                bytes: bytes.clone(),
                first_sent_ns: self.now,
                retry,
            },
        );
        self.send(NodeId::Cdc, to, bytes);
        self.stale_copy(to, req);
        self.schedule(
            timeout_ms * MS,
            Ev::CdcStepTimeout {
                inc,
                request_id: header.request_id,
            },
        );
    }

    /// Maybe sends an extra copy of a step that arrives late, when its deduplication entry
    /// has expired: the shard runs it again. Bug D was such a copy of CreateCurrentEdge
    /// re-creating an edge that a client had changed since.
    fn stale_copy(&mut self, to: NodeId, req: ShardRequest) {
        // Every step is fenced against such copies now (see ARCHITECTURE.md "CDC
        // transactions"); by default only the create and the new edge's unlock get them, the
        // first steps that were, so that the seeds pinned since keep their runs.
        let fenced = match &req.body {
            ShardReq::CreateCurrentEdge(_) => true,
            ShardReq::UnlockCurrentEdge(u) => u.new_edge,
            _ => false,
        };
        if !(fenced || self.cfg.stale_all_steps) || !self.stale_rng.chance(self.cfg.stale_step_rate)
        {
            return;
        }
        self.report.stale_steps += 1;
        let delay = self.stale_rng.below(self.cfg.stale_step_max_ms.max(1) * MS);
        let bytes = codec::encode(&req);
        self.schedule(delay, Ev::DeliverStale { to, bytes });
    }

    fn deliver_stale(&mut self, to: NodeId, bytes: Vec<u8>) {
        if let (NodeId::Shard(p), Ok(req)) = (to, codec::decode::<ShardRequest>(&bytes)) {
            let h = req.header;
            for slot in &self.shards[p as usize].cores {
                slot.kv.expire_request(h.client_id, h.request_id);
            }
        }
        self.deliver(NodeId::Cdc, to, bytes);
    }

    fn step_timeout(&mut self, inc: u64, request_id: u64) {
        if inc != self.cdc.incarnation || !self.cdc_up {
            return;
        }
        let now = self.now;
        let Some(call) = self.cdc.steps.get_mut(&request_id) else {
            return;
        };
        if call.retry.gives_up((now - call.first_sent_ns) / MS) {
            // The call gives up: reported as the driver does, the core decides what next.
            if let Some(call) = self.cdc.steps.remove(&request_id) {
                let reply = StepReply {
                    txn: call.send.txn,
                    step: call.send.step,
                    result: Err(EggsError::Timeout),
                };
                self.cdc_push(CdcIn::Step(reply));
            }
            return;
        }
        let t = call.retry.next_attempt().timeout_ms;
        let (to, bytes) = (call.to, call.bytes.clone());
        self.send(NodeId::Cdc, to, bytes);
        self.schedule(t * MS, Ev::CdcStepTimeout { inc, request_id });
    }

    fn step_response(&mut self, bytes: &[u8]) {
        let resp = match codec::decode::<ShardResponse>(bytes) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .failure
                    .push(format!("CDC cannot decode a shard response: {e}"))
            }
        };
        let Some(call) = self.cdc.steps.remove(&resp.request_id) else {
            return;
        };
        match &resp.result {
            Ok(_) => {
                self.cdc.step_errors.remove(&call.send.txn);
            }
            Err(e) => {
                let entry = self.cdc.step_errors.entry(call.send.txn).or_default();
                entry.0 += 1;
                entry.1 = format!("{:?} -> {e:?}", call.send.req);
            }
        }
        // Every answer goes to the core, transient errors too: it decides about resending.
        let reply = StepReply {
            txn: call.send.txn,
            step: call.send.step,
            result: resp.result,
        };
        self.cdc_push(CdcIn::Step(reply));
    }

    // ---- crashes ----

    fn arm_crash(&mut self) {
        if self.cfg.crash_interval_ms == 0 || self.crash_timer {
            return;
        }
        self.crash_timer = true;
        let i = self.cfg.crash_interval_ms;
        let after = self.fault_rng.between(i / 2, i * 3 / 2) * MS;
        self.schedule(after, Ev::Crash);
    }

    fn crash(&mut self) {
        self.crash_timer = false;
        if self.paused_since.is_some() {
            return; // no new crashes while settling for a checkpoint
        }
        let victim: u32 = fit(self.fault_rng.below(u64::from(self.procs()) + 1));
        let node = if victim == self.procs() {
            NodeId::Cdc
        } else {
            NodeId::Shard(victim)
        };
        let up = match node {
            NodeId::Shard(p) => self.up_shards[p as usize],
            _ => self.cdc_up,
        };
        if up {
            self.report.crashes += 1;
            match node {
                NodeId::Shard(p) => {
                    let proc = &mut self.shards[p as usize];
                    for slot in &mut proc.cores {
                        slot.kv.crash();
                        slot.core = None;
                        slot.inbox.clear();
                        slot.busy = false;
                    }
                    proc.reset_commit();
                    proc.incarnation += 1;
                    self.up_shards[p as usize] = false;
                }
                _ => {
                    let power_loss = self.fault_rng.chance(self.cfg.power_loss_rate);
                    self.cdc.store.crash(power_loss);
                    self.cdc.core = None;
                    self.cdc.inbox.clear();
                    self.cdc.steps.clear();
                    self.cdc.busy = false;
                    self.cdc.incarnation += 1;
                    self.cdc_up = false;
                }
            }
            self.note(format!("CRASH {node:?}"));
            let down = self
                .fault_rng
                .between(self.cfg.restart_min_ms, self.cfg.restart_max_ms)
                * MS;
            self.schedule(down, Ev::Restart { node });
        }
        self.arm_crash();
    }

    fn restart(&mut self, node: NodeId) {
        let skew = self.skew();
        match node {
            NodeId::Shard(p) => {
                let now = self.clock(skew);
                self.shards[p as usize].skew_ns = skew;
                for core in 0..self.shards[p as usize].cores.len() {
                    let seed = self.fault_rng.next_u64();
                    let slot = &mut self.shards[p as usize].cores[core];
                    // Every field is set today; the update keeps fields added later at
                    // their defaults.
                    #[allow(clippy::needless_update)]
                    let opts = ShardOptions {
                        seed: Some(seed),
                        dedup_keep_ns: self.cfg.dedup_keep_ms * MS,
                        transient_deadline_ns: self.cfg.transient_deadline_ms * MS,
                        ..ShardOptions::default()
                    };
                    match ShardCore::open(slot.kv.clone(), &slot.shards, opts, now) {
                        Ok(c) => slot.core = Some(c),
                        Err(e) => {
                            return self
                                .failure
                                .push(format!("shard process {p} cannot open: {e}"))
                        }
                    }
                }
                self.up_shards[p as usize] = true;
                // The server's heartbeat loop starts with a fetch and a registration.
                self.shard_heartbeat(p);
            }
            NodeId::Cdc => {
                self.cdc.skew_ns = skew;
                let now = self.clock(skew);
                let cfg = CoreConfig {
                    finished_ttl_ns: self.cfg.cdc_finished_ttl_ms * MS,
                    ..CoreConfig::default()
                };
                let mut core = CdcCore::new(cfg, self.cdc.store.load(), now);
                let first = core.take_output();
                self.cdc.core = Some(core);
                self.cdc_up = true;
                self.cdc_output(first);
                let inc = self.cdc.incarnation;
                self.schedule(1000 * MS, Ev::CdcTick { inc });
            }
            NodeId::Client(_) => {}
        }
        self.note(format!("START {node:?}"));
    }

    // ---- checkpoints ----

    fn quiescent(&self) -> bool {
        self.work == 0
            && self.clients.iter().all(|c| c.op.is_none())
            && self.up_shards.iter().all(|&u| u)
            && self.shards.iter().all(|p| p.commit.is_idle())
            && self
                .shards
                .iter()
                .flat_map(|p| &p.cores)
                .all(|c| !c.busy && c.inbox.is_empty() && c.kv.unsynced() == 0)
            && self.cdc_up
            && !self.cdc.busy
            && self.cdc.inbox.is_empty()
            && self.cdc.steps.is_empty()
            && self.cdc.core.as_ref().is_some_and(|c| c.live_txns() == 0)
    }

    fn unsettled(&self) -> String {
        let steps: Vec<String> = self
            .cdc
            .steps
            .values()
            .map(|s| format!("txn {} {:?}", s.send.txn, s.send.req))
            .collect();
        let failing: Vec<String> = self
            .cdc
            .step_errors
            .iter()
            .filter(|(_, (n, _))| *n >= 3)
            .map(|(txn, (n, last))| format!("txn {txn} failed {n} times in a row, last {last}"))
            .collect();
        format!(
            "{} queued events, CDC up {} with {} live transactions, steps in flight: {steps:?}, \
             failing steps: {failing:?}",
            self.work,
            self.cdc_up,
            self.cdc.core.as_ref().map_or(0, |c| c.live_txns())
        )
    }

    fn checkpoint(&mut self) {
        self.report.checkpoints += 1;
        let now = self.clock(0);
        self.check_shuckle();
        let mut cluster = Reader {
            shards: &mut self.shards,
            cdc: &self.cdc,
            blocks: &self.blocks,
            now,
            next_id: 0,
        };
        match self.model.checkpoint(&mut cluster) {
            Ok(obs) => {
                self.hash.u64(obs.dirs as u64);
                self.hash.u64(obs.files as u64);
                self.report.dirs = obs.dirs as u64;
                self.report.files = obs.files as u64;
                let line = format!(
                    "CHECKPOINT ok: {} directories, {} files",
                    obs.dirs, obs.files
                );
                self.note(line);
            }
            Err(v) => return self.failure.extend(v),
        }
        self.collect_garbage();
    }

    /// As `eggsgc`: destroys the transient files past their deadline through the real shard
    /// cores (each request handled at once, as if no other request came meanwhile), then
    /// makes that durable.
    fn collect_garbage(&mut self) {
        let now = self.clock(0);
        let n = self.shards.len();
        let shards = &mut self.shards;
        let next_id = &mut self.gc_request_id;
        let mut send = |shard: ShardId, body: ShardReq| {
            let proc = &mut shards[shard.0 as usize % n];
            let i = proc.core_of(shard);
            let core = proc.cores[i].core.as_mut().ok_or(EggsError::Timeout)?;
            *next_id += 1;
            let req = ShardRequest {
                header: RequestHeader {
                    request_id: *next_id,
                    client_id: GC_CLIENT_ID,
                },
                shard,
                body,
            };
            core.handle(&req, now)
                .map_err(|_| EggsError::InternalError)?
                .result
        };
        match crate::gc::collect_transient(&mut send, &mut self.blocks, now) {
            Ok(c) => {
                self.report.gc_files += c.files;
                self.report.gc_blocks += c.blocks;
                self.hash.u64(c.files);
            }
            Err(e) => self.failure.push(format!("GC: {e}")),
        }
        for slot in self.shards.iter().flat_map(|p| &p.cores) {
            if let Err(e) = eggs_shard::Kv::sync(&slot.kv) {
                self.failure.push(format!("sync after GC: {e}"));
            }
        }
    }

    fn resume(&mut self) {
        self.paused_since = None;
        self.next_checkpoint = self.report.ops_done + self.cfg.checkpoint_every.max(1);
        for c in 0..fit::<u32, usize>(self.clients.len()) {
            self.schedule(0, Ev::ClientStart { client: c });
        }
        self.arm_crash();
    }
}

/// Reads for checkpoints: real requests handled by the cores, without the network.
struct Reader<'a> {
    shards: &'a mut [ShardProc],
    cdc: &'a CdcProc,
    blocks: &'a BlockServices,
    now: EggsTime,
    next_id: u64,
}

impl Reader<'_> {
    fn core(&mut self, shard: ShardId) -> Option<&mut ShardCore<SimKv>> {
        let n = self.shards.len();
        let proc = &mut self.shards[shard.0 as usize % n];
        let i = proc.core_of(shard);
        proc.cores[i].core.as_mut()
    }
}

impl Cluster for Reader<'_> {
    fn read(&mut self, shard: ShardId, body: ShardReq) -> Result<ShardResp, EggsError> {
        self.next_id += 1;
        let (request_id, now) = (self.next_id, self.now);
        let core = self.core(shard).ok_or(EggsError::Timeout)?;
        let req = ShardRequest {
            header: RequestHeader {
                request_id,
                client_id: 0,
            },
            shard,
            body,
        };
        match core.handle(&req, now) {
            Ok(resp) => resp.result,
            Err(_) => Err(EggsError::InternalError),
        }
    }

    fn edge_locked(&mut self, dir: InodeId, name: &Name) -> Option<bool> {
        let core = self.core(dir.shard())?;
        core.edge_locked(dir, name).ok().flatten()
    }

    fn read_block(&self, service: BlockServiceId, block: BlockId) -> Option<Vec<u8>> {
        self.blocks.read(service, block).map(|b| b.to_vec())
    }

    fn next_dir_counter(&self) -> u64 {
        self.cdc
            .core
            .as_ref()
            .map_or(0, |c| c.counters().next_dir_counter)
    }
}

/// A datagram for the trace.
fn describe(from: NodeId, to: NodeId, bytes: &[u8]) -> String {
    match (from, to) {
        (NodeId::Client(_), NodeId::Cdc) => format!("{:?}", codec::decode::<CdcRequest>(bytes)),
        (NodeId::Cdc, NodeId::Client(_)) => format!("{:?}", codec::decode::<CdcResponse>(bytes)),
        (_, NodeId::Shard(_)) => format!("{:?}", codec::decode::<ShardRequest>(bytes)),
        _ => format!("{:?}", codec::decode::<ShardResponse>(bytes)),
    }
}
