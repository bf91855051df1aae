//! Garbage collection (requests sent by `eggsgc`) and undelete.
//!
//! Ownership: every edge pointing at a file either owns it or not. A current edge always
//! owns its file. A snapshot edge owns it when it was retired by an unlink or an overwrite;
//! it does not when the file got a new edge elsewhere (a rename within the directory, or a
//! cross-directory rename whose destination edge owns it now). So a file has one owning
//! edge (two, briefly, during a cross-directory rename, both locked by it), and expiring
//! an owning snapshot edge is what makes a file unreachable: the file is then released. If
//! it lives on this shard it becomes transient (deadline now) in the same write; otherwise a
//! release record is written in the same write, and the GC makes the file transient on its
//! own shard (`MakeFileTransient`) before dropping the record (`ForgetReleasedFile`), so
//! a crash in between is repaired by the next pass. Expiring a non-owning edge never touches
//! its target.
//!
//! Destruction: a transient file past its deadline gets a fresh cookie (a late writer can no
//! longer change it), then each span is removed only with an erase proof for every block
//! (a block on a decommissioned service needs none), and the file goes when no span is left.
//! Every request is idempotent and decided by the shard's own state and time, so two GC
//! processes, retries and restarts are all safe.

use super::page::{self, Page};
use super::{ShardCore, Tx, R};
use crate::error::ShardError;
use crate::keys;
use crate::kv::Kv;
use crate::values::{
    self, CurrentEdgeBody, DirectoryBody, FileBody, SnapshotEdgeBody, SpanStorage, SpanValue,
    TransientFileBody,
};
use eggs_common::crypto;
use eggs_protocol::policy::SnapshotPolicy;
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::flags;
use eggs_protocol::{EggsError, EggsTime, EncodedLen, InodeId, Name, ShardId};
use rand::Rng;

/// Most snapshot edges one `CollectDirectory` looks at (it stops at the next name after
/// this many), so that a huge directory does not hold up the shard's other requests.
const COLLECT_MAX_EDGES: usize = 2048;

/// A snapshot edge as the collector sees it: creation time, target, owning.
type SnapEdge = (EggsTime, InodeId, bool);

impl<K: Kv> ShardCore<K> {
    // ---- reads ----

    pub(super) fn visit_directories(
        &self,
        shard: ShardId,
        r: &VisitDirectoriesReq,
    ) -> R<VisitDirectoriesResp> {
        let empty = ShardResp::VisitDirectories(VisitDirectoriesResp {
            next_id: Some(InodeId::NULL),
            dirs: Vec::new(),
        });
        let (next_id, dirs) =
            self.visit_ids(shard, keys::DIR, r.start_id, r.mtu, empty, |id, k, v| {
                let d: DirectoryBody = values::decode(k, v).ok()?;
                Some(VisitedDirectory {
                    id,
                    owner_id: d.owner_id,
                    mtime: d.mtime,
                    snapshot: d.info.snapshot,
                })
            })?;
        Ok(VisitDirectoriesResp { next_id, dirs })
    }

    pub(super) fn visit_transient_files(
        &self,
        shard: ShardId,
        r: &VisitTransientFilesReq,
    ) -> R<VisitTransientFilesResp> {
        let empty = ShardResp::VisitTransientFiles(VisitTransientFilesResp {
            next_id: Some(InodeId::NULL),
            files: Vec::new(),
        });
        let (next_id, files) = self.visit_ids(
            shard,
            keys::TRANSIENT,
            r.start_id,
            r.mtu,
            empty,
            |id, k, v| {
                let t: TransientFileBody = values::decode(k, v).ok()?;
                Some(TransientFileEntry {
                    id,
                    size: t.size,
                    deadline: t.deadline,
                })
            },
        )?;
        Ok(VisitTransientFilesResp { next_id, files })
    }

    pub(super) fn visit_released_files(
        &self,
        shard: ShardId,
        r: &VisitReleasedFilesReq,
    ) -> R<VisitReleasedFilesResp> {
        let empty = ShardResp::VisitReleasedFiles(VisitReleasedFilesResp {
            next_id: Some(InodeId::NULL),
            file_ids: Vec::new(),
        });
        let (next_id, file_ids) = self.visit_ids(
            shard,
            keys::RELEASED,
            r.start_id,
            r.mtu,
            empty,
            |id, _, _| Some(id),
        )?;
        Ok(VisitReleasedFilesResp { next_id, file_ids })
    }

    /// Pages through the keys `shard, table, id` from `start` in id order until the reply
    /// (`empty` with its entries) is full.
    fn visit_ids<T: EncodedLen>(
        &self,
        shard: ShardId,
        table: u8,
        start: InodeId,
        mtu: u16,
        empty: ShardResp,
        mut entry: impl FnMut(InodeId, &[u8], &[u8]) -> Option<T>,
    ) -> R<(Option<InodeId>, Vec<T>)> {
        let prefix = vec![shard.0, table];
        let start_id = start;
        let start = keys::table_from(shard, table, start);
        let mut page = Page::new(page::listing_limit(mtu), empty);
        let mut out = Vec::new();
        let mut next = None;
        let mut bad = None;
        self.kv.scan(&prefix, &start, &mut |k, v| {
            let Some(id) = keys::be_u64(&k[prefix.len()..]).map(InodeId) else {
                bad = Some(k.to_vec());
                return false;
            };
            let Some(e) = entry(id, k, v) else {
                bad = Some(k.to_vec());
                return false;
            };
            if !page.take(&e) {
                next = Some(id);
                return false;
            }
            out.push(e);
            true
        })?;
        // The GC continues from `next`: a cursor going back would make it loop forever.
        assert!(next.is_none_or(|n| n >= start_id), "visit cursor went back");
        match bad {
            Some(k) => Err(super::corrupt(k, "bad key or value in a GC visit").into()),
            None => Ok((next, out)),
        }
    }

    // ---- directory collection ----

    pub(super) fn collect_directory(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &CollectDirectoryReq,
    ) -> R<CollectDirectoryResp> {
        // Removed directories too: their snapshot edges expire like any others.
        self.get_dir(shard, r.dir_id)?;
        let (names, next) = self.snapshot_names(r.dir_id, r.start.as_ref())?;
        let mut resp = CollectDirectoryResp {
            next,
            removed_edges: 0,
            released_files: 0,
        };
        for (hash, name, edges) in names {
            let name = Name::new(name.clone()).map_err(|_| {
                super::corrupt(
                    keys::snapshot_name_prefix(r.dir_id, hash, &name),
                    "bad name",
                )
            })?;
            let current = self.get_current_edge(r.dir_id, &name)?;
            let gone = expired_edges(&edges, current.map(|c| c.creation_time), &r.policy, tx.now);
            assert_eq!(gone.len(), edges.len(), "a verdict per edge");
            for ((ctime, target, owned), _) in edges.iter().zip(&gone).filter(|(_, &g)| g) {
                tx.changes
                    .delete(keys::snapshot_edge(r.dir_id, &name, *ctime));
                resp.removed_edges += 1;
                if *owned && !target.is_null() && !target.is_dir() {
                    self.release_file(shard, tx, *target)?;
                    resp.released_files += 1;
                }
            }
        }
        Ok(resp)
    }

    /// The snapshot edges of `dir` from `start`, grouped by name, about
    /// `COLLECT_MAX_EDGES` of them; and the name to continue from.
    #[allow(clippy::type_complexity)]
    fn snapshot_names(
        &self,
        dir: InodeId,
        start: Option<&DirCursor>,
    ) -> R<(Vec<(u64, Vec<u8>, Vec<SnapEdge>)>, Option<DirCursor>)> {
        let prefix = keys::snapshot_prefix(dir);
        let start_key = match start {
            Some(c) => keys::snapshot_name_prefix(dir, c.name_hash, c.name.as_bytes()),
            None => prefix.clone(),
        };
        let mut names: Vec<(u64, Vec<u8>, Vec<SnapEdge>)> = Vec::new();
        let mut seen = 0;
        let mut next = None;
        let mut bad = None;
        self.kv.scan(&prefix, &start_key, &mut |k, v| {
            let parsed = keys::parse_edge_suffix(&k[prefix.len()..]).and_then(|(h, n, rest)| {
                let body: SnapshotEdgeBody = values::decode(k, v).ok()?;
                Some((h, n, EggsTime(keys::be_u64(rest)?), body))
            });
            let Some((hash, name, ctime, body)) = parsed else {
                bad = Some(k.to_vec());
                return false;
            };
            let same = names
                .last()
                .is_some_and(|(h, n, _)| *h == hash && n.as_slice() == name);
            if !same {
                if seen >= COLLECT_MAX_EDGES {
                    next = Name::new(name).ok().map(|name| DirCursor {
                        name_hash: hash,
                        name,
                    });
                    if next.is_none() {
                        bad = Some(k.to_vec());
                    }
                    return false;
                }
                names.push((hash, name.to_vec(), Vec::new()));
            }
            if let Some((_, _, edges)) = names.last_mut() {
                edges.push((ctime, body.target_id, body.owned));
            }
            seen += 1;
            true
        })?;
        match bad {
            Some(k) => Err(super::corrupt(k, "bad snapshot edge").into()),
            None => Ok((names, next)),
        }
    }

    /// The file's last owning edge is gone: make it transient here, or record the release
    /// for the GC to complete on the file's own shard.
    fn release_file(&mut self, shard: ShardId, tx: &mut Tx, file: InodeId) -> R<()> {
        // Directories are never released: they go by `DestroyDirectory`.
        assert!(!file.is_dir() && !file.is_null(), "releasing {file}");
        if file.shard() == shard {
            self.make_transient_now(tx, file)?;
        } else {
            tx.changes
                .put(keys::released(shard, file), tx.now.0.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// A linked file becomes transient with its deadline now and a cookie nobody knows.
    fn make_transient_now(&mut self, tx: &mut Tx, file: InodeId) -> R<()> {
        assert!(!file.is_dir(), "directory {file} made transient");
        let key = keys::file(file);
        let Some(v) = self.kv.get(&key)? else {
            return Ok(()); // already transient or destroyed
        };
        let f: FileBody = values::decode(&key, &v)?;
        tx.changes.delete(key);
        let t = TransientFileBody {
            size: f.size,
            mtime: tx.now,
            deadline: tx.now,
            cookie: self.rng.gen(),
            uncertified_span: None,
            attrs: f.attrs,
            rdev: f.rdev,
            set_atime: None,
            set_mtime: None,
        };
        tx.put(keys::transient(file), &t);
        Ok(())
    }

    pub(super) fn make_file_transient(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &MakeFileTransientReq,
    ) -> R<MakeFileTransientResp> {
        Self::check_owned(shard, r.file_id, Some(false))?;
        self.make_transient_now(tx, r.file_id)?;
        Ok(MakeFileTransientResp {})
    }

    pub(super) fn forget_released_file(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &ForgetReleasedFileReq,
    ) -> R<ForgetReleasedFileResp> {
        tx.changes.delete(keys::released(shard, r.file_id));
        Ok(ForgetReleasedFileResp {})
    }

    pub(super) fn destroy_directory(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &DestroyDirectoryReq,
    ) -> R<DestroyDirectoryResp> {
        Self::check_owned(shard, r.dir_id, Some(true))?;
        if r.dir_id == InodeId::ROOT {
            return Err(EggsError::CannotRemoveRoot.into());
        }
        let key = keys::dir(r.dir_id);
        let Some(v) = self.kv.get(&key)? else {
            return Ok(DestroyDirectoryResp {});
        };
        let d: DirectoryBody = values::decode(&key, &v)?;
        if !d.owner_id.is_null() {
            return Err(EggsError::DirectoryNotRemoved.into());
        }
        if self.any_key(&keys::current_prefix(r.dir_id))?
            || self.any_key(&keys::snapshot_prefix(r.dir_id))?
        {
            return Err(EggsError::DirectoryNotEmpty.into());
        }
        // The removal set `mtime`, and nothing changes a removed directory afterwards.
        if r.delete_after_ns == 0 || tx.now.0 < d.mtime.0.saturating_add(r.delete_after_ns) {
            return Err(EggsError::NotExpiredYet.into());
        }
        assert!(
            d.owner_id.is_null() && r.dir_id != InodeId::ROOT,
            "destroying a live dir"
        );
        tx.changes.delete(key);
        // Its CDC fence too: no transaction can create an edge in a destroyed directory.
        tx.changes.delete(keys::cdc_fence(r.dir_id));
        Ok(DestroyDirectoryResp {})
    }

    fn any_key(&self, prefix: &[u8]) -> Result<bool, ShardError> {
        let mut any = false;
        self.kv.scan(prefix, prefix, &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    // ---- file destruction ----

    /// The transient file `id` if it is past its deadline; `None` if it is gone.
    fn expired_transient(
        &self,
        shard: ShardId,
        id: InodeId,
        now: EggsTime,
    ) -> R<Option<TransientFileBody>> {
        Self::check_owned(shard, id, Some(false))?;
        let t = match self.get_transient(id) {
            Ok(t) => t,
            Err(super::Fail::Eggs(EggsError::FileNotFound)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if now < t.deadline {
            return Err(EggsError::NotExpiredYet.into());
        }
        assert!(!id.is_dir(), "directory {id} as a transient file");
        Ok(Some(t))
    }

    fn first_span(&self, file: InodeId) -> R<Option<(u64, SpanValue)>> {
        let prefix = keys::span_prefix(file);
        let mut first = None;
        let mut bad = None;
        self.kv.scan(&prefix, &prefix, &mut |k, v| {
            match (
                keys::be_u64(&k[prefix.len()..]),
                values::decode::<SpanValue>(k, v),
            ) {
                (Some(off), Ok(s)) => first = Some((off, s)),
                _ => bad = Some(k.to_vec()),
            }
            false
        })?;
        match bad {
            Some(k) => Err(super::corrupt(k, "bad span").into()),
            None => Ok(first),
        }
    }

    pub(super) fn prepare_span_erasure(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &PrepareSpanErasureReq,
    ) -> R<PrepareSpanErasureResp> {
        let none = PrepareSpanErasureResp {
            byte_offset: None,
            blocks: Vec::new(),
        };
        let Some(mut t) = self.expired_transient(shard, r.file_id, tx.now)? else {
            return Ok(none);
        };
        // A writer that comes back after its deadline must not add to a file being erased.
        t.cookie = self.rng.gen();
        tx.put(keys::transient(r.file_id), &t);
        let Some((offset, span)) = self.first_span(r.file_id)? else {
            return Ok(none);
        };
        let mut blocks = Vec::new();
        if let SpanStorage::Blocks(b) = &span.storage {
            for blk in &b.blocks {
                blocks.push(self.erase_target(blk)?);
            }
        }
        Ok(PrepareSpanErasureResp {
            byte_offset: Some(offset),
            blocks,
        })
    }

    pub(super) fn remove_erased_span(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RemoveErasedSpanReq,
    ) -> R<RemoveErasedSpanResp> {
        let Some(mut t) = self.expired_transient(shard, r.file_id, tx.now)? else {
            return Ok(RemoveErasedSpanResp {});
        };
        let span = match self.get_span(r.file_id, r.byte_offset) {
            Ok((_, span)) => span,
            Err(super::Fail::Eggs(EggsError::BadSpanOffset)) => {
                return Ok(RemoveErasedSpanResp {}); // removed by an earlier attempt
            }
            Err(e) => return Err(e),
        };
        if let SpanStorage::Blocks(b) = &span.storage {
            if r.proofs.len() != b.blocks.len() {
                return Err(EggsError::BadCertificate.into());
            }
            for (blk, proof) in b.blocks.iter().zip(&r.proofs) {
                let service = self.service(blk.block_service_id)?;
                // A decommissioned disk is gone: its blocks cannot (and need not) be erased.
                if service.info.flags & flags::DECOMMISSIONED != 0 {
                    continue;
                }
                let expected =
                    crypto::erase_proof(&service.secret_key, blk.block_service_id, blk.block_id);
                if !crypto::verify(&expected, proof) {
                    return Err(EggsError::BadCertificate.into());
                }
            }
        }
        self.delete_span(tx, r.file_id, r.byte_offset, &span)?;
        // Erasure goes from the first span; a file's spans fit in its size.
        assert!(t.size >= span.size as u64, "span larger than its file");
        t.size = t.size.saturating_sub(span.size as u64);
        if t.uncertified_span == Some(r.byte_offset) {
            t.uncertified_span = None;
        }
        tx.put(keys::transient(r.file_id), &t);
        Ok(RemoveErasedSpanResp {})
    }

    pub(super) fn remove_transient_file(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RemoveTransientFileReq,
    ) -> R<RemoveTransientFileResp> {
        if self.expired_transient(shard, r.file_id, tx.now)?.is_none() {
            return Ok(RemoveTransientFileResp {});
        }
        if self.any_key(&keys::span_prefix(r.file_id))? {
            return Err(EggsError::FileHasSpans.into());
        }
        tx.changes.delete(keys::transient(r.file_id));
        Ok(RemoveTransientFileResp {})
    }

    // ---- undelete ----

    pub(super) fn restore_snapshot_edge(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RestoreSnapshotEdgeReq,
    ) -> R<RestoreSnapshotEdgeResp> {
        let mut dir = self.get_live_dir(shard, r.dir_id)?;
        if self.get_current_edge(r.dir_id, &r.name)?.is_some() {
            return Err(EggsError::NameExists.into());
        }
        let key = keys::snapshot_edge(r.dir_id, &r.name, r.creation_time);
        let Some(v) = self.kv.get(&key)? else {
            return Err(EggsError::SnapshotNotFound.into());
        };
        let s: SnapshotEdgeBody = values::decode(&key, &v)?;
        if s.target_id.is_null() {
            return Err(EggsError::SnapshotNotFound.into());
        }
        if s.target_id.is_dir() {
            return Err(EggsError::IsADirectory.into());
        }
        if !s.owned {
            return Err(EggsError::EdgeNotOwned.into());
        }
        // On another shard the file exists: its owning edge (this one) was never removed.
        if s.target_id.shard() == shard && self.kv.get(&keys::file(s.target_id))?.is_none() {
            return Err(EggsError::SnapshotNotFound.into());
        }
        // Ownership moves from the snapshot edge to the new current edge.
        assert!(r.creation_time < tx.now, "snapshot edge from the future");
        tx.changes.delete(key);
        let e = CurrentEdgeBody {
            target_id: s.target_id,
            creation_time: tx.now,
            locked: false,
            created_by: 0,
        };
        tx.put(keys::current_edge(r.dir_id, &r.name), &e);
        dir.mtime = tx.now;
        dir.ctime = tx.now;
        tx.put(keys::dir(r.dir_id), &dir);
        Ok(RestoreSnapshotEdgeResp {
            target_id: s.target_id,
            creation_time: tx.now,
        })
    }

    /// Undelete of a directory (a CDC step): the removed directory gets its owner back.
    pub(super) fn reattach_directory(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &ReattachDirectoryReq,
    ) -> R<ReattachDirectoryResp> {
        if r.dir_id == InodeId::ROOT {
            return Err(EggsError::CannotRemoveRoot.into());
        }
        if !r.owner_id.is_dir() {
            return Err(EggsError::NotADirectory.into());
        }
        let mut d = match self.get_dir(shard, r.dir_id) {
            Ok(d) => d,
            // Deleted by the GC: nothing left to bring back.
            Err(super::Fail::Eggs(EggsError::DirectoryNotFound)) => {
                return Err(EggsError::SnapshotNotFound.into())
            }
            Err(e) => return Err(e),
        };
        if d.owner_id == r.owner_id {
            return Ok(ReattachDirectoryResp {});
        }
        if !d.owner_id.is_null() {
            return Err(EggsError::DirectoryNotRemoved.into());
        }
        assert!(
            d.owner_id.is_null() && !r.owner_id.is_null(),
            "reattaching a live dir"
        );
        d.owner_id = r.owner_id;
        d.mtime = tx.now;
        d.ctime = tx.now;
        tx.put(keys::dir(r.dir_id), &d);
        Ok(ReattachDirectoryResp {})
    }

    /// Marks the snapshot edge `(name, ctime)` just written as not owning its target, whose
    /// new edge (same directory renamed, or moved elsewhere) owns it now.
    pub(super) fn disown_snapshot(
        &self,
        tx: &mut Tx,
        dir: InodeId,
        name: &Name,
        ctime: EggsTime,
        target: InodeId,
    ) {
        assert!(dir.is_dir(), "snapshot edge {dir}/{name} in a file");
        let body = SnapshotEdgeBody {
            target_id: target,
            owned: false,
        };
        tx.put(keys::snapshot_edge(dir, name, ctime), &body);
    }
}

/// Which of a name's snapshot edges (oldest first) `policy` expires at `now`. An edge stops
/// being current when the next edge of the name (or the current edge) is created, and
/// expires `delete_after_ns` later; beyond the newest `delete_after_versions` snapshot
/// versions it expires at once. A deletion marker with nothing older left marks nothing and
/// goes too.
pub(crate) fn expired_edges(
    edges: &[SnapEdge],
    current: Option<EggsTime>,
    policy: &SnapshotPolicy,
    now: EggsTime,
) -> Vec<bool> {
    // Oldest first (the scan's key order): each edge ends when the next one begins.
    assert!(
        edges.windows(2).all(|w| w[0].0 < w[1].0),
        "snapshot edges out of order"
    );
    let n = edges.len();
    let mut gone = vec![false; n];
    if policy.delete_after_versions > 0 {
        let keep = policy.delete_after_versions as usize;
        let versions = (0..n).rev().filter(|&i| !edges[i].1.is_null());
        for i in versions.skip(keep) {
            gone[i] = true;
        }
    }
    if policy.delete_after_ns > 0 {
        for (i, g) in gone.iter_mut().enumerate() {
            let ended = edges.get(i + 1).map(|e| e.0).or(current);
            if ended.is_some_and(|t| now.0 >= t.0.saturating_add(policy.delete_after_ns)) {
                *g = true;
            }
        }
    }
    let mut all_older_gone = true;
    for (e, g) in edges.iter().zip(gone.iter_mut()) {
        if e.1.is_null() && all_older_gone {
            *g = true;
        }
        all_older_gone &= *g;
    }
    gone
}
