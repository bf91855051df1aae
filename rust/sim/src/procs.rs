//! The simulated server processes: what survives a crash (their stores) and what does not.

use crate::kv::SimKv;
use eggs_cdc::cdc_core::{Loaded, ShardSend, StepReply, Write};
use eggs_cdc::record::{Counters, TxnId, TxnRecord};
use eggs_cdc::CdcCore;
use eggs_protocol::cdc::CdcRequest;
use eggs_protocol::shard::ShardRequest;
use eggs_protocol::ShardId;
use eggs_shard::group_commit::MAX_QUEUED_GROUPS;
use eggs_shard::{GroupCommit, ShardCore};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Who sends and receives datagrams.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum NodeId {
    Client(u32),
    Shard(u32),
    Cdc,
}

impl NodeId {
    pub fn tag(self) -> u64 {
        match self {
            NodeId::Client(i) => i as u64,
            NodeId::Shard(i) => (1 << 32) | i as u64,
            NodeId::Cdc => 2 << 32,
        }
    }
}

/// A shard process: like `eggsshard`, serving the shards `s % processes == index` with a
/// few core threads, core `i` serving the shards `s % cores == i` over its own handle on the
/// process's store.
pub struct ShardProc {
    pub cores: Vec<CoreSlot>,
    /// The server's group commit: which replies may leave after which sync. Lost in a crash.
    pub commit: GroupCommit<(NodeId, Vec<u8>)>,
    /// Bumped at every crash; events of an earlier incarnation are ignored.
    pub incarnation: u64,
    pub skew_ns: i64,
}

/// One core thread of a shard process.
pub struct CoreSlot {
    pub shards: Vec<ShardId>,
    /// Durable across crashes (minus what this core had not synced).
    pub kv: SimKv,
    pub core: Option<ShardCore<SimKv>>,
    pub inbox: VecDeque<(NodeId, ShardRequest)>,
    /// A group is being handled (its syncing does not hold the core: pipelining).
    pub busy: bool,
}

impl ShardProc {
    pub fn new(kv: SimKv, shards: Vec<ShardId>, cores: usize) -> ShardProc {
        // As the server: never more cores than shards.
        let n = cores.clamp(1, shards.len().max(1));
        let cores: Vec<CoreSlot> = (0..n)
            .map(|i| CoreSlot {
                shards: shards
                    .iter()
                    .copied()
                    .filter(|s| s.0 as usize % n == i)
                    .collect(),
                kv: kv.sibling(),
                core: None,
                inbox: VecDeque::new(),
                busy: false,
            })
            .collect();
        ShardProc {
            commit: GroupCommit::new(cores.len(), MAX_QUEUED_GROUPS),
            cores,
            incarnation: 0,
            skew_ns: 0,
        }
    }

    /// A crash: the group commit's queue and the sync under way are gone.
    pub fn reset_commit(&mut self) {
        self.commit = GroupCommit::new(self.cores.len(), MAX_QUEUED_GROUPS);
    }

    /// The core serving `shard`.
    pub fn core_of(&self, shard: ShardId) -> usize {
        shard.0 as usize % self.cores.len()
    }
}

/// What the CDC's main loop takes in.
pub enum CdcIn {
    Request(SocketAddr, CdcRequest),
    Step(StepReply),
    Tick,
}

/// The client id the CDC's database was created with (the real store picks it at random).
pub const CDC_CLIENT_ID: u64 = 0xcdc0_0000_0000_0001;

/// One shard step being performed, as the driver's `perform_step` task does.
pub struct StepCall {
    pub send: ShardSend,
    pub to: NodeId,
    pub bytes: Vec<u8>,
    pub first_sent_ns: u64,
    /// The shard client's retries of this call (`eggs-client`'s retry core).
    pub retry: eggs_client::Retry,
}

pub struct CdcProc {
    pub store: CdcStore,
    pub core: Option<CdcCore>,
    pub inbox: VecDeque<CdcIn>,
    pub busy: bool,
    pub incarnation: u64,
    pub skew_ns: i64,
    pub steps: BTreeMap<u64, StepCall>,
    /// Per transaction: consecutive failed steps and the last one, for diagnosing a CDC
    /// that does not settle.
    pub step_errors: BTreeMap<TxnId, (u32, String)>,
}

/// The CDC's RocksDB: synced writes survive anything, unsynced ones survive a process crash
/// but not a power loss (and then neither does anything written after them).
#[derive(Default)]
pub struct CdcStore {
    counters: Option<Counters>,
    records: BTreeMap<TxnId, TxnRecord>,
    unsynced: Vec<(Vec<Write>, Option<Counters>)>,
}

impl CdcStore {
    pub fn persist(&mut self, writes: &[Write], counters: Option<Counters>, sync: bool) {
        self.unsynced.push((writes.to_vec(), counters));
        if sync {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (writes, counters) in std::mem::take(&mut self.unsynced) {
            if counters.is_some() {
                self.counters = counters;
            }
            for w in writes {
                match w {
                    Write::Put(r) => {
                        self.records.insert(r.id, r);
                    }
                    Write::Delete { id, .. } => {
                        self.records.remove(&id);
                    }
                }
            }
        }
    }

    pub fn crash(&mut self, power_loss: bool) {
        if power_loss {
            self.unsynced.clear();
        } else {
            self.flush();
        }
    }

    pub fn load(&self) -> Loaded {
        Loaded {
            counters: self.counters.unwrap_or_default(),
            records: self.records.values().cloned().collect(),
            // Persisted with the database, as the real store does.
            client_id: CDC_CLIENT_ID,
        }
    }
}
