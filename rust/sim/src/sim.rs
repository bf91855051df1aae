//! The event loop: a virtual clock, a queue of timed events, the network between the nodes,
//! crashes and restarts, the clients' retries, and the checkpoints.

use crate::client::{Next, Op, Reply, Req};
use crate::config::SimConfig;
use crate::kv::SimKv;
use crate::model::{Cluster, Model, Outcome};
use crate::procs::{CdcIn, CdcProc, CdcStore, NodeId, ShardProc, StepCall};
use crate::rng::{Rng, TraceHash};
use crate::{Report, SimError};
use eggs_cdc::cdc_core::{encode_reply, CoreConfig, Output, ShardSend, StepReply};
use eggs_cdc::CdcCore;
use eggs_protocol::cdc::{CdcRequest, CdcResponse};
use eggs_protocol::shard::{ShardReq, ShardRequest, ShardResp, ShardResponse};
use eggs_protocol::{codec, EggsError, EggsTime, InodeId, Name, RequestHeader, ShardId};
use eggs_shard::{ShardCore, ShardOptions};
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;

/// Virtual time 0 is this wall-clock time, so that times look like real ones.
const EPOCH_NS: u64 = 1_750_000_000 * 1_000_000_000;
const MS: u64 = 1_000_000;
const US: u64 = 1_000;
/// As in `eggs-client`'s default retry policy.
const INITIAL_TIMEOUT_MS: u64 = 250;
const MAX_TIMEOUT_MS: u64 = 2_000;
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
    ShardSynced {
        proc: u32,
        core: usize,
        inc: u64,
        replies: Vec<(NodeId, Vec<u8>)>,
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
        }
    }

    /// Whether the event is work the cluster must finish before it is quiescent (ticks,
    /// crash timers and client starts are not).
    fn is_work(&self) -> bool {
        !matches!(
            self,
            Ev::CdcTick { .. } | Ev::Crash | Ev::ClientStart { .. }
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
    timeout_ms: u64,
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
    model: Model,
    report: Report,
    paused_since: Option<u64>,
    crash_timer: bool,
    next_checkpoint: u64,
    recent: VecDeque<String>,
    failure: Vec<String>,
}

fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4000))
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
    pub fn new(cfg: SimConfig) -> Sim {
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
                let shards = (0..eggs_protocol::NUM_SHARDS as u32)
                    .filter(|s| s % procs == p)
                    .map(|s| ShardId(s as u8))
                    .collect();
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
            model: Model::default(),
            paused_since: None,
            crash_timer: false,
            recent: VecDeque::new(),
            failure: Vec::new(),
        }
    }

    /// Runs every operation, with checkpoints, to the final checkpoint.
    pub fn run(mut self) -> Result<Report, SimError> {
        for p in 0..self.shards.len() as u32 {
            self.restart(NodeId::Shard(p));
        }
        self.restart(NodeId::Cdc);
        for c in 0..self.clients.len() as u32 {
            let after = self.fault_rng.between(0, MS);
            self.schedule(after, Ev::ClientStart { client: c });
        }
        self.arm_crash();
        loop {
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
                        return Ok(self.report);
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

    fn clock(&self, skew_ns: i64) -> EggsTime {
        EggsTime((EPOCH_NS + self.now).saturating_add_signed(skew_ns))
    }

    fn skew(&mut self) -> i64 {
        let span = self.cfg.clock_skew_ms * MS;
        self.fault_rng.between(0, 2 * span) as i64 - span as i64
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Ev::DeliverStale { to, bytes } => self.deliver_stale(to, bytes),
            Ev::ClientStart { client } => self.client_start(client),
            Ev::ClientTimeout { client, request_id } => self.client_timeout(client, request_id),
            Ev::ShardBatch { proc, core, inc } => self.shard_batch(proc, core, inc),
            Ev::ShardSynced {
                proc,
                core,
                inc,
                replies,
            } => self.shard_synced(proc, core, inc, replies),
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
                let data = (0..len).map(|_| rng.next_u64() as u8).collect();
                Op::Create {
                    dir: dir(rng),
                    name: name(rng),
                    data,
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
        let st = &mut self.clients[c as usize];
        let header = RequestHeader {
            request_id: st.next_request_id,
            client_id: st.client_id,
        };
        st.next_request_id += 1;
        let (to, bytes) = match req {
            Req::Shard(shard, body) => {
                let p = shard.0 as u32 % self.shards.len() as u32;
                (
                    NodeId::Shard(p),
                    codec::encode(&ShardRequest {
                        header,
                        shard,
                        body,
                    }),
                )
            }
            Req::Cdc(body) => (NodeId::Cdc, codec::encode(&CdcRequest { header, body })),
        };
        st.inflight = Some(Inflight {
            request_id: header.request_id,
            to,
            bytes: bytes.clone(),
            first_sent_ns: self.now,
            timeout_ms: INITIAL_TIMEOUT_MS,
        });
        self.send(NodeId::Client(c), to, bytes);
        self.schedule(
            INITIAL_TIMEOUT_MS * MS,
            Ev::ClientTimeout {
                client: c,
                request_id: header.request_id,
            },
        );
    }

    /// As `UdpRpc::call`: resend with the same id and a doubled time-out, until the deadline.
    fn client_timeout(&mut self, c: u32, request_id: u64) {
        let now = self.now;
        let deadline_ns = self.cfg.client_deadline_ms * MS;
        let st = &mut self.clients[c as usize];
        let Some(f) = st.inflight.as_mut().filter(|f| f.request_id == request_id) else {
            return;
        };
        if now - f.first_sent_ns >= deadline_ns {
            st.inflight = None;
            let next = match st.op.as_mut() {
                Some(op) => op.on_reply(Reply::GaveUp),
                None => return,
            };
            self.advance(c, next);
            return;
        }
        f.timeout_ms = (f.timeout_ms * 2).min(MAX_TIMEOUT_MS);
        let (to, bytes, t) = (f.to, f.bytes.clone(), f.timeout_ms);
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

    // ---- shards ----

    fn shard_kick(&mut self, p: u32, core: usize) {
        let proc = &mut self.shards[p as usize];
        let inc = proc.incarnation;
        let slot = &mut proc.cores[core];
        if self.up_shards[p as usize] && !slot.busy && !slot.inbox.is_empty() {
            slot.busy = true;
            self.schedule(20 * US, Ev::ShardBatch { proc: p, core, inc });
        }
    }

    /// As the server's core thread: handle a batch, sync once, then reply.
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
        if wrote {
            let sync = self.fault_rng.between(200, 2000) * US;
            let ev = Ev::ShardSynced {
                proc: p,
                core,
                inc,
                replies,
            };
            self.schedule(sync, ev);
        } else {
            self.shard_synced(p, core, inc, replies);
        }
    }

    fn shard_synced(&mut self, p: u32, core: usize, inc: u64, replies: Vec<(NodeId, Vec<u8>)>) {
        let proc = &mut self.shards[p as usize];
        if proc.incarnation != inc {
            return; // crashed meanwhile: nothing of the batch was acknowledged
        }
        let slot = &mut proc.cores[core];
        if let Err(e) = eggs_shard::Kv::sync(&slot.kv) {
            self.failure.push(format!("sync: {e}"));
        }
        slot.busy = false;
        for (to, bytes) in replies {
            self.send(NodeId::Shard(p), to, bytes);
        }
        self.shard_kick(p, core);
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
        let to = NodeId::Shard(send.shard.0 as u32 % self.shards.len() as u32);
        self.cdc.steps.insert(
            header.request_id,
            StepCall {
                send,
                to,
                bytes: bytes.clone(),
                first_sent_ns: self.now,
                timeout_ms: INITIAL_TIMEOUT_MS,
            },
        );
        self.send(NodeId::Cdc, to, bytes);
        self.stale_copy(to, req);
        self.schedule(
            INITIAL_TIMEOUT_MS * MS,
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
        if now - call.first_sent_ns >= STEP_CALL_DEADLINE_MS * MS {
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
        call.timeout_ms = (call.timeout_ms * 2).min(MAX_TIMEOUT_MS);
        let (to, bytes, t) = (call.to, call.bytes.clone(), call.timeout_ms);
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
        let victim = self.fault_rng.below(self.shards.len() as u64 + 1) as u32;
        let node = if victim == self.shards.len() as u32 {
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
                    let opts = ShardOptions {
                        seed: Some(seed),
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
            }
            NodeId::Cdc => {
                self.cdc.skew_ns = skew;
                let now = self.clock(skew);
                let mut core = CdcCore::new(CoreConfig::default(), self.cdc.store.load(), now);
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
        let mut cluster = Reader {
            shards: &mut self.shards,
            cdc: &self.cdc,
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
            Err(v) => self.failure.extend(v),
        }
    }

    fn resume(&mut self) {
        self.paused_since = None;
        self.next_checkpoint = self.report.ops_done + self.cfg.checkpoint_every.max(1);
        for c in 0..self.clients.len() as u32 {
            self.schedule(0, Ev::ClientStart { client: c });
        }
        self.arm_crash();
    }
}

/// Reads for checkpoints: real requests handled by the cores, without the network.
struct Reader<'a> {
    shards: &'a mut [ShardProc],
    cdc: &'a CdcProc,
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
