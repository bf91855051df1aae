//! The shard state machine: every request's logic, over a [`Kv`], with the time passed in.

use crate::error::ShardError;
use crate::keys;
use crate::kv::{Changes, Kv};
use crate::values::{
    self, CurrentEdgeBody, DedupBody, DirectoryBody, FileBody, SnapshotEdgeBody, SpanStorage,
    SpanValue, TransientFileBody,
};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::BlockServiceWithKey;
use eggs_protocol::NUM_SHARDS;
use eggs_protocol::{codec, BlockId, EggsError, EggsTime, InodeId, InodeType, Name, ShardId};
pub use page::reply_limit;
use page::Page;

#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// How long a transient file lives without changes before GC may destroy it.
    pub transient_deadline_ns: u64,
    /// How long applied requests are remembered for deduplicating retries.
    pub dedup_keep_ns: u64,
    /// Seeds the random choices (cookies, block placement); `None` uses entropy. Fixed in
    /// simulations so that a run can be replayed.
    pub seed: Option<u64>,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            transient_deadline_ns: 3600 * 1_000_000_000,
            dedup_keep_ns: 10 * 60 * 1_000_000_000,
            seed: None,
        }
    }
}

/// Why a request failed: a client-visible error, or the shard itself is broken.
enum Fail {
    Eggs(EggsError),
    Internal(ShardError),
}

impl From<EggsError> for Fail {
    fn from(e: EggsError) -> Fail {
        Fail::Eggs(e)
    }
}

impl From<ShardError> for Fail {
    fn from(e: ShardError) -> Fail {
        Fail::Internal(e)
    }
}

type R<T> = Result<T, Fail>;

/// The state of one write in progress: its changes and its (monotonic) time.
struct Tx {
    changes: Changes,
    now: EggsTime,
}

impl Tx {
    fn put<T: bincode::Encode>(&mut self, key: Vec<u8>, v: &T) {
        self.changes.put(key, values::encode(v));
    }
}

pub struct ShardCore<K: Kv> {
    kv: K,
    /// Block services as last heard from shuckle, with their keys.
    block_services: std::collections::HashMap<eggs_protocol::BlockServiceId, BlockServiceWithKey>,
    rng: rand::rngs::StdRng,
    served: [bool; NUM_SHARDS],
    last_time: Vec<u64>,
    next_file_counter: Vec<u64>,
    next_block_counter: Vec<u64>,
    opts: ShardOptions,
}

impl<K: Kv> ShardCore<K> {
    /// Opens the shards in `served`, creating the root directory if shard 0 is among them.
    pub fn open(
        kv: K,
        served: &[ShardId],
        opts: ShardOptions,
        now: EggsTime,
    ) -> Result<ShardCore<K>, ShardError> {
        let mut core = ShardCore {
            kv,
            block_services: Default::default(),
            rng: match opts.seed {
                Some(seed) => rand::SeedableRng::seed_from_u64(seed),
                None => rand::SeedableRng::from_entropy(),
            },
            served: [false; NUM_SHARDS],
            last_time: vec![0; NUM_SHARDS],
            next_file_counter: vec![1; NUM_SHARDS],
            next_block_counter: vec![1; NUM_SHARDS],
            opts,
        };
        for &s in served {
            core.served[s.0 as usize] = true;
            core.last_time[s.0 as usize] = core.meta(s, keys::META_LAST_TIME)?.unwrap_or(0);
            core.next_file_counter[s.0 as usize] =
                core.counter(s, keys::META_NEXT_FILE_COUNTER, InodeId::MAX_FILE_SEQ)?;
            core.next_block_counter[s.0 as usize] =
                core.counter(s, keys::META_NEXT_BLOCK_COUNTER, BlockId::MAX_COUNTER)?;
        }
        if core.served[0] && core.kv.get(&keys::dir(InodeId::ROOT))?.is_none() {
            let mut tx = core.begin(ShardId(0), now);
            let root = DirectoryBody {
                owner_id: InodeId::NULL,
                mtime: tx.now,
                info: DirectoryInfo::root_default(),
                atime: tx.now,
                ctime: tx.now,
                attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
            };
            tx.put(keys::dir(InodeId::ROOT), &root);
            core.kv.apply(tx.changes)?;
            core.kv.sync()?;
            tracing::info!("created the root directory");
        }
        Ok(core)
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// Whether the current edge `name` of `dir_id` is locked by a CDC transaction (`None`
    /// if there is no such edge). Clients cannot see locks; checkers (the simulator) need to.
    pub fn edge_locked(&self, dir_id: InodeId, name: &Name) -> Result<Option<bool>, ShardError> {
        let key = keys::current_edge(dir_id, name);
        match self.kv.get(&key)? {
            Some(v) => Ok(Some(values::decode::<CurrentEdgeBody>(&key, &v)?.locked)),
            None => Ok(None),
        }
    }

    /// Replaces the known block services (the server refreshes them from shuckle).
    pub fn set_block_services(&mut self, services: Vec<BlockServiceWithKey>) {
        self.block_services = services.into_iter().map(|s| (s.info.id, s)).collect();
    }

    fn meta(&self, shard: ShardId, field: u8) -> Result<Option<u64>, ShardError> {
        let key = keys::meta(shard, field);
        match self.kv.get(&key)? {
            Some(v) => Ok(Some(
                keys::be_u64(&v).ok_or_else(|| corrupt(key, "meta field"))?,
            )),
            None => Ok(None),
        }
    }

    /// The next value of an id counter (1 in a new shard). Above `max + 1` it was never
    /// written by a shard, which stops at `max` (asserted at each allocation).
    fn counter(&self, shard: ShardId, field: u8, max: u64) -> Result<u64, ShardError> {
        let next = self.meta(shard, field)?.unwrap_or(1);
        if next == 0 || next > max.saturating_add(1) {
            return Err(corrupt(keys::meta(shard, field), "id counter out of range"));
        }
        Ok(next)
    }

    /// Starts a write on `shard`: times handed out are strictly increasing per shard, even if
    /// the clock steps back (edges are keyed by creation time).
    fn begin(&mut self, shard: ShardId, now: EggsTime) -> Tx {
        assert!(
            self.served[shard.0 as usize],
            "write on shard {shard} not served"
        );
        let last = &mut self.last_time[shard.0 as usize];
        let Some(next) = last.checked_add(1) else {
            panic!("shard {shard}: time at the end of u64");
        };
        let t = now.0.max(next);
        *last = t;
        let mut changes = Changes::default();
        changes.put(
            keys::meta(shard, keys::META_LAST_TIME),
            t.to_be_bytes().to_vec(),
        );
        Tx {
            changes,
            now: EggsTime(t),
        }
    }

    /// Handles one request. A write's changes are applied to the store before this returns
    /// but are durable only after the caller's next `kv().sync()`, which must happen before
    /// the response is sent.
    pub fn handle(
        &mut self,
        req: &ShardRequest,
        now: EggsTime,
    ) -> Result<ShardResponse, ShardError> {
        let request_id = req.header.request_id;
        let respond = |result| ShardResponse { request_id, result };
        if !self.served[req.shard.0 as usize] {
            return Ok(respond(Err(EggsError::WrongShard)));
        }
        if !req.body.is_write() {
            let applied = self.kv.applied_count();
            let result = self.read(req.shard, &req.body);
            // The read-only fast path sends a read's reply without a sync: a read that
            // changed the store would leak unsynced state.
            assert_eq!(
                self.kv.applied_count(),
                applied,
                "{} wrote",
                req.body.kind()
            );
            return match result {
                Ok(r) => Ok(respond(Ok(r))),
                Err(Fail::Eggs(e)) => Ok(respond(Err(e))),
                Err(Fail::Internal(e)) => Err(e),
            };
        }
        let dedup_key = keys::dedup(req.shard, req.header.client_id, req.header.request_id);
        if let Some(resp) = self.remembered(&dedup_key, request_id, now)? {
            return Ok(resp);
        }
        let mut tx = self.begin(req.shard, now);
        let result = match &req.body {
            ShardReq::SetAttr(r) => self.set_attr(req.shard, &mut tx, r).map(ShardResp::SetAttr),
            body => self.write(req.shard, &mut tx, body),
        };
        match result {
            Ok(r) => {
                let resp = respond(Ok(r));
                self.commit(req, &resp, tx)?;
                Ok(resp)
            }
            Err(Fail::Eggs(e)) => {
                // Failures are remembered too: a duplicate or retransmitted copy must get the
                // same answer, not run again against a state that has changed meanwhile (it
                // could then succeed after its sender was told it failed). The failed
                // attempt's partial changes are dropped; only the dedup entry is written.
                let resp = respond(Err(e));
                let tx = self.begin(req.shard, now);
                self.commit(req, &resp, tx)?;
                Ok(resp)
            }
            Err(Fail::Internal(e)) => Err(e),
        }
    }

    /// Applies a write's changes with its dedup entry. Every write answered, failed or not,
    /// carries exactly one, under its own key: a retry must find this answer.
    fn commit(
        &mut self,
        req: &ShardRequest,
        resp: &ShardResponse,
        mut tx: Tx,
    ) -> Result<(), ShardError> {
        assert_eq!(
            tx.changes.dedup_keys().count(),
            0,
            "{} wrote dedup",
            req.body.kind()
        );
        self.remember(req, resp, &mut tx);
        let h = req.header;
        let key = keys::dedup(req.shard, h.client_id, h.request_id);
        assert!(
            tx.changes.dedup_keys().eq([key.as_slice()]),
            "one dedup entry"
        );
        self.kv.apply(tx.changes)?;
        Ok(())
    }

    /// The response to an already applied request, if it is still within the window (entries
    /// past it may linger until the store drops them).
    fn remembered(
        &self,
        key: &[u8],
        request_id: u64,
        now: EggsTime,
    ) -> Result<Option<ShardResponse>, ShardError> {
        let Some(v) = self.kv.get_dedup(key)? else {
            return Ok(None);
        };
        let d: DedupBody = values::decode(key, &v)?;
        if now.0 >= d.time.0.saturating_add(self.opts.dedup_keep_ns) {
            return Ok(None);
        }
        let resp: ShardResponse = codec::decode(&d.response).map_err(|e| ShardError::Corrupt {
            key: key.to_vec(),
            why: e.to_string(),
        })?;
        // Stored data, not a programmer error: refused, never sent to the wrong request.
        if resp.request_id != request_id {
            return Err(corrupt(key.to_vec(), "dedup entry of another request"));
        }
        Ok(Some(resp))
    }

    /// Records a write's response (success or failure) so that a retry gets it instead of a
    /// re-run.
    fn remember(&self, req: &ShardRequest, resp: &ShardResponse, tx: &mut Tx) {
        assert_eq!(
            resp.request_id, req.header.request_id,
            "answer to another request"
        );
        let h = req.header;
        let body = DedupBody {
            time: tx.now,
            response: codec::encode(resp),
        };
        tx.changes.put_dedup(
            keys::dedup(req.shard, h.client_id, h.request_id),
            values::encode(&body),
        );
    }

    /// Forgets deduplication entries older than the configured window; returns how many.
    pub fn expire_dedup(&mut self, now: EggsTime) -> Result<usize, ShardError> {
        let cutoff = now.0.saturating_sub(self.opts.dedup_keep_ns);
        self.kv.expire_dedup(&|v| {
            values::decode::<DedupBody>(b"dedup", v).map_or(true, |d| d.time.0 < cutoff)
        })
    }

    // ---- reads ----

    fn read(&self, shard: ShardId, body: &ShardReq) -> R<ShardResp> {
        Ok(match body {
            ShardReq::Lookup(r) => ShardResp::Lookup(self.lookup(shard, r)?),
            ShardReq::StatFile(r) => ShardResp::StatFile(self.stat_file(shard, r)?),
            ShardReq::StatDirectory(r) => ShardResp::StatDirectory(self.stat_directory(shard, r)?),
            ShardReq::ReadDir(r) => ShardResp::ReadDir(self.read_dir(shard, r)?),
            ShardReq::FullReadDir(r) => ShardResp::FullReadDir(self.full_read_dir(shard, r)?),
            ShardReq::FileSpans(r) => ShardResp::FileSpans(self.file_spans(shard, r)?),
            ShardReq::StatTransientFile(r) => {
                ShardResp::StatTransientFile(self.stat_transient(shard, r)?)
            }
            ShardReq::BlockServiceFiles(r) => {
                ShardResp::BlockServiceFiles(self.block_service_files(shard, r)?)
            }
            ShardReq::VisitFiles(r) => ShardResp::VisitFiles(self.visit_files(shard, r)?),
            ShardReq::VisitDirectories(r) => {
                ShardResp::VisitDirectories(self.visit_directories(shard, r)?)
            }
            ShardReq::VisitTransientFiles(r) => {
                ShardResp::VisitTransientFiles(self.visit_transient_files(shard, r)?)
            }
            ShardReq::VisitReleasedFiles(r) => {
                ShardResp::VisitReleasedFiles(self.visit_released_files(shard, r)?)
            }
            // `handle` sends every other kind to `write`.
            w => unreachable!("write request {} on the read path", w.kind()),
        })
    }

    /// Checks that `id` lives on `shard` and is a directory (`Some(true)`), a file or
    /// symlink (`Some(false)`), or anything valid (`None`).
    fn check_owned(shard: ShardId, id: InodeId, want_dir: Option<bool>) -> R<()> {
        if id.shard() != shard {
            return Err(EggsError::WrongShard.into());
        }
        let Some(typ) = id.typ() else {
            return Err(EggsError::TypeMismatch.into());
        };
        match (want_dir, typ == InodeType::Directory) {
            (Some(true), false) => Err(EggsError::NotADirectory.into()),
            (Some(false), true) => Err(EggsError::IsADirectory.into()),
            _ => Ok(()),
        }
    }

    fn get_dir(&self, shard: ShardId, id: InodeId) -> R<DirectoryBody> {
        Self::check_owned(shard, id, Some(true))?;
        let key = keys::dir(id);
        match self.kv.get(&key)? {
            Some(v) => Ok(values::decode(&key, &v)?),
            None => Err(EggsError::DirectoryNotFound.into()),
        }
    }

    /// A directory that can still get new entries.
    fn get_live_dir(&self, shard: ShardId, id: InodeId) -> R<DirectoryBody> {
        let d = self.get_dir(shard, id)?;
        if d.owner_id.is_null() && id != InodeId::ROOT {
            return Err(EggsError::DirectoryRemoved.into());
        }
        Ok(d)
    }

    fn get_current_edge(&self, dir: InodeId, name: &Name) -> R<Option<CurrentEdgeBody>> {
        let key = keys::current_edge(dir, name);
        Ok(match self.kv.get(&key)? {
            Some(v) => Some(values::decode(&key, &v)?),
            None => None,
        })
    }

    fn lookup(&self, shard: ShardId, r: &LookupReq) -> R<LookupResp> {
        Self::check_owned(shard, r.dir_id, Some(true))?;
        // The hot path reads only the edge: a directory that does not exist has no edges, so
        // the directory is read only to tell "no such name" from "no such directory".
        match self.get_current_edge(r.dir_id, &r.name)? {
            Some(e) => Ok(LookupResp {
                target_id: e.target_id,
                creation_time: e.creation_time,
            }),
            None => {
                self.get_dir(shard, r.dir_id)?;
                Err(EggsError::NameNotFound.into())
            }
        }
    }

    fn stat_file(&self, shard: ShardId, r: &StatFileReq) -> R<StatFileResp> {
        Self::check_owned(shard, r.id, Some(false))?;
        let key = keys::file(r.id);
        let f: FileBody = match self.kv.get(&key)? {
            Some(v) => values::decode(&key, &v)?,
            None => return Err(EggsError::FileNotFound.into()),
        };
        Ok(StatFileResp {
            mtime: f.mtime,
            atime: f.atime,
            size: f.size,
            ctime: f.ctime,
            attrs: f.attrs,
            rdev: f.rdev,
        })
    }

    fn stat_directory(&self, shard: ShardId, r: &StatDirectoryReq) -> R<StatDirectoryResp> {
        let d = self.get_dir(shard, r.id)?;
        Ok(StatDirectoryResp {
            owner_id: d.owner_id,
            mtime: d.mtime,
            info: d.info,
            atime: d.atime,
            ctime: d.ctime,
            attrs: d.attrs,
        })
    }

    fn read_dir(&self, shard: ShardId, r: &ReadDirReq) -> R<ReadDirResp> {
        self.get_dir(shard, r.dir_id)?;
        let prefix = keys::current_prefix(r.dir_id);
        let start = match &r.start {
            Some(c) => keys::current_edge_at(r.dir_id, c.name_hash, c.name.as_bytes()),
            None => prefix.clone(),
        };
        let empty = ShardResp::ReadDir(ReadDirResp {
            next: Some(page::longest_dir_cursor()),
            entries: Vec::new(),
        });
        let mut page = Page::new(page::listing_limit(r.mtu), empty);
        let mut entries = Vec::new();
        let mut next = None;
        let mut bad = None;
        self.kv.scan(&prefix, &start, &mut |k, v| {
            let Some((hash, name, _)) = keys::parse_edge_suffix(&k[prefix.len()..]) else {
                bad = Some(k.to_vec());
                return false;
            };
            let Ok(name) = Name::new(name) else {
                bad = Some(k.to_vec());
                return false;
            };
            let Ok(e) = values::decode::<CurrentEdgeBody>(k, v) else {
                bad = Some(k.to_vec());
                return false;
            };
            let entry = CurrentEdge {
                name_hash: hash,
                name,
                target_id: e.target_id,
                creation_time: e.creation_time,
            };
            if !page.take(&entry) {
                next = Some(DirCursor {
                    name_hash: hash,
                    name: entry.name,
                });
                return false;
            }
            entries.push(entry);
            true
        })?;
        if let Some(key) = bad {
            return Err(corrupt(key, "bad current edge").into());
        }
        // Pages continue from the last name: out of order, a listing would skip or loop.
        let order = |e: &CurrentEdge| (e.name_hash, e.name.clone());
        assert_ascending(
            entries
                .iter()
                .map(order)
                .chain(next.iter().map(|c| (c.name_hash, c.name.clone()))),
        );
        Ok(ReadDirResp { next, entries })
    }

    fn full_read_dir(&self, shard: ShardId, r: &FullReadDirReq) -> R<FullReadDirResp> {
        self.get_dir(shard, r.dir_id)?;
        let empty = ShardResp::FullReadDir(FullReadDirResp {
            next: Some(page::longest_full_dir_cursor()),
            entries: Vec::new(),
        });
        let mut page = Page::new(page::listing_limit(r.mtu), empty);
        // At most this many entries can fit; take that many from each table and merge.
        let max_entries = page.left() / page::shortest_edge_len() + 1;
        let (cur_start, snap_start, min_time) = match &r.start {
            Some(c) => (
                keys::current_edge_at(r.dir_id, c.name_hash, c.name.as_bytes()),
                {
                    let mut k =
                        keys::snapshot_name_prefix(r.dir_id, c.name_hash, c.name.as_bytes());
                    k.extend_from_slice(&c.creation_time.0.to_be_bytes());
                    k
                },
                Some(c),
            ),
            None => (
                keys::current_prefix(r.dir_id),
                keys::snapshot_prefix(r.dir_id),
                None,
            ),
        };
        let mut all = self.scan_edges(r.dir_id, true, &cur_start, max_entries)?;
        all.extend(self.scan_edges(r.dir_id, false, &snap_start, max_entries)?);
        // A current edge at the cursor's name but older than its time was already returned.
        if let Some(c) = min_time {
            all.retain(|e| {
                (e.name_hash, e.name.as_bytes(), e.creation_time)
                    >= (c.name_hash, c.name.as_bytes(), c.creation_time)
            });
        }
        all.sort_by(|a, b| {
            (a.name_hash, a.name.as_bytes(), a.creation_time).cmp(&(
                b.name_hash,
                b.name.as_bytes(),
                b.creation_time,
            ))
        });
        let mut entries = Vec::new();
        let mut next = None;
        for e in all {
            if entries.len() >= max_entries || !page.take(&e) {
                next = Some(FullDirCursor {
                    name_hash: e.name_hash,
                    name: e.name,
                    creation_time: e.creation_time,
                });
                break;
            }
            entries.push(e);
        }
        let order = |e: &Edge| (e.name_hash, e.name.clone(), e.creation_time);
        let cursor = |c: &FullDirCursor| (c.name_hash, c.name.clone(), c.creation_time);
        assert_ascending(entries.iter().map(order).chain(next.iter().map(cursor)));
        Ok(FullReadDirResp { next, entries })
    }

    fn scan_edges(&self, dir: InodeId, current: bool, start: &[u8], max: usize) -> R<Vec<Edge>> {
        let prefix = if current {
            keys::current_prefix(dir)
        } else {
            keys::snapshot_prefix(dir)
        };
        let mut out = Vec::new();
        let mut bad = None;
        self.kv.scan(&prefix, start, &mut |k, v| {
            match decode_edge(&prefix, current, k, v) {
                Some(e) => out.push(e),
                None => {
                    bad = Some(k.to_vec());
                    return false;
                }
            }
            out.len() < max
        })?;
        assert!(
            out.len() <= max,
            "scan went on after its callback said stop"
        );
        match bad {
            Some(k) => Err(corrupt(k, "bad edge").into()),
            None => Ok(out),
        }
    }

    fn file_spans(&self, shard: ShardId, r: &FileSpansReq) -> R<FileSpansResp> {
        Self::check_owned(shard, r.file_id, Some(false))?;
        if self.kv.get(&keys::file(r.file_id))?.is_none()
            && self.kv.get(&keys::transient(r.file_id))?.is_none()
        {
            return Err(EggsError::FileNotFound.into());
        }
        let prefix = keys::span_prefix(r.file_id);
        let empty = ShardResp::FileSpans(FileSpansResp {
            next_offset: Some(0),
            spans: Vec::new(),
        });
        // The limit leaves room for any one span, so every page holds at least one.
        let mut page = Page::new(page::spans_limit(r.mtu), empty);
        let mut spans = Vec::new();
        let mut next_offset = None;
        let mut bad = None;
        let mut oversized = None;
        self.kv.scan(&prefix, &prefix, &mut |k, v| {
            let Some(off) = keys::be_u64(&k[prefix.len()..]) else {
                bad = Some(k.to_vec());
                return false;
            };
            let Ok(s) = values::decode::<SpanValue>(k, v) else {
                bad = Some(k.to_vec());
                return false;
            };
            if off + s.size as u64 <= r.byte_offset {
                return true;
            }
            let span = FetchedSpan {
                byte_offset: off,
                size: s.size,
                crc: s.crc,
                body: self.span_body(s.storage),
            };
            if !page.take(&span) {
                if spans.is_empty() {
                    oversized = Some(k.to_vec());
                } else {
                    next_offset = Some(off);
                }
                return false;
            }
            spans.push(span);
            true
        })?;
        if let Some(k) = bad {
            return Err(corrupt(k, "bad span").into());
        }
        assert_ascending(spans.iter().map(|s| s.byte_offset).chain(next_offset));
        if let Some(k) = oversized {
            return Err(corrupt(k, "span larger than any span the shard accepts").into());
        }
        Ok(FileSpansResp { next_offset, spans })
    }

    /// What readers need of a stored span: for blocks, where each block service is.
    fn span_body(&self, storage: SpanStorage) -> SpanBody {
        match storage {
            SpanStorage::Inline(d) => SpanBody::Inline(d),
            SpanStorage::Blocks(b) => SpanBody::Blocks(BlocksSpan {
                parity: b.parity,
                storage_class: b.storage_class,
                stripes: b.stripes,
                cell_size: b.cell_size,
                blocks: b
                    .blocks
                    .iter()
                    .map(|blk| FetchedBlock {
                        block_service_id: blk.block_service_id,
                        addr: self
                            .block_services
                            .get(&blk.block_service_id)
                            .map(|s| s.info.addr)
                            .unwrap_or_default(),
                        block_id: blk.block_id,
                        crc: blk.crc,
                    })
                    .collect(),
            }),
        }
    }

    fn get_transient(&self, id: InodeId) -> R<TransientFileBody> {
        let key = keys::transient(id);
        match self.kv.get(&key)? {
            Some(v) => Ok(values::decode(&key, &v)?),
            None if self.kv.get(&keys::file(id))?.is_some() => {
                Err(EggsError::FileNotTransient.into())
            }
            None => Err(EggsError::FileNotFound.into()),
        }
    }

    fn stat_transient(&self, shard: ShardId, r: &StatTransientFileReq) -> R<StatTransientFileResp> {
        Self::check_owned(shard, r.id, Some(false))?;
        let t = self.get_transient(r.id)?;
        Ok(StatTransientFileResp {
            size: t.size,
            mtime: t.mtime,
            deadline: t.deadline,
            attrs: t.attrs,
        })
    }
}

/// Asserts that `items` are strictly ascending: what every listing and pagination cursor relies
/// on, guaranteed by the key order of the store's scans.
fn assert_ascending<T: Ord + std::fmt::Debug>(items: impl Iterator<Item = T>) {
    let mut last: Option<T> = None;
    for item in items {
        if let Some(prev) = &last {
            assert!(
                *prev < item,
                "listing out of order: {prev:?} before {item:?}"
            );
        }
        last = Some(item);
    }
}

fn corrupt(key: Vec<u8>, why: &str) -> ShardError {
    ShardError::Corrupt {
        key,
        why: why.into(),
    }
}

fn decode_edge(prefix: &[u8], current: bool, k: &[u8], v: &[u8]) -> Option<Edge> {
    let (hash, name, rest) = keys::parse_edge_suffix(&k[prefix.len()..])?;
    let name = Name::new(name).ok()?;
    if current {
        let e: CurrentEdgeBody = values::decode(k, v).ok()?;
        Some(Edge {
            name_hash: hash,
            name,
            target_id: e.target_id,
            creation_time: e.creation_time,
            current: true,
        })
    } else {
        let e: SnapshotEdgeBody = values::decode(k, v).ok()?;
        Some(Edge {
            name_hash: hash,
            name,
            target_id: e.target_id,
            creation_time: EggsTime(keys::be_u64(rest)?),
            current: false,
        })
    }
}

mod blocks_gc;
mod gc;
mod page;
mod setattr;
mod spans;
mod writes;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod tests;
