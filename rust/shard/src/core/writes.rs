//! Requests that change state. Each one reads what it needs, fails without side effects, or
//! records all its changes in the transaction.

use super::{Fail, ShardCore, Tx, R};
use crate::keys;
use crate::kv::Kv;
use crate::values::{
    CurrentEdgeBody, DirectoryBody, FileBody, SnapshotEdgeBody, SpanStorage, SpanValue,
    TransientFileBody,
};
use eggs_protocol::shard::*;
use eggs_protocol::{EggsError, EggsTime, InodeId, InodeType, Name, ShardId, MAX_INLINE_SPAN};

impl<K: Kv> ShardCore<K> {
    pub(super) fn write(&mut self, shard: ShardId, tx: &mut Tx, body: &ShardReq) -> R<ShardResp> {
        if let Some(fence) = step_fence(body) {
            return self.cdc_step(shard, tx, body, fence);
        }
        Ok(match body {
            ShardReq::SameDirectoryRename(r) => {
                ShardResp::SameDirectoryRename(self.same_dir_rename(shard, tx, r)?)
            }
            ShardReq::SoftUnlinkFile(r) => {
                ShardResp::SoftUnlinkFile(self.soft_unlink(shard, tx, r)?)
            }
            ShardReq::SetDirectoryInfo(r) => {
                ShardResp::SetDirectoryInfo(self.set_dir_info(shard, tx, r)?)
            }
            ShardReq::ConstructFile(r) => {
                ShardResp::ConstructFile(self.construct_file(shard, tx, r)?)
            }
            ShardReq::AddInlineSpan(r) => {
                ShardResp::AddInlineSpan(self.add_inline_span(shard, tx, r)?)
            }
            ShardReq::LinkFile(r) => ShardResp::LinkFile(self.link_file(shard, tx, r)?),
            ShardReq::AddSpanInitiate(r) => {
                ShardResp::AddSpanInitiate(self.add_span_initiate(shard, tx, r)?)
            }
            ShardReq::AddSpanCertify(r) => {
                ShardResp::AddSpanCertify(self.add_span_certify(shard, tx, r)?)
            }
            ShardReq::RemoveSpan(r) => ShardResp::RemoveSpan(self.remove_span(shard, tx, r)?),
            ShardReq::CollectDirectory(r) => {
                ShardResp::CollectDirectory(self.collect_directory(shard, tx, r)?)
            }
            ShardReq::MakeFileTransient(r) => {
                ShardResp::MakeFileTransient(self.make_file_transient(shard, tx, r)?)
            }
            ShardReq::ForgetReleasedFile(r) => {
                ShardResp::ForgetReleasedFile(self.forget_released_file(shard, tx, r)?)
            }
            ShardReq::DestroyDirectory(r) => {
                ShardResp::DestroyDirectory(self.destroy_directory(shard, tx, r)?)
            }
            ShardReq::PrepareSpanErasure(r) => {
                ShardResp::PrepareSpanErasure(self.prepare_span_erasure(shard, tx, r)?)
            }
            ShardReq::RemoveErasedSpan(r) => {
                ShardResp::RemoveErasedSpan(self.remove_erased_span(shard, tx, r)?)
            }
            ShardReq::RemoveTransientFile(r) => {
                ShardResp::RemoveTransientFile(self.remove_transient_file(shard, tx, r)?)
            }
            ShardReq::RestoreSnapshotEdge(r) => {
                ShardResp::RestoreSnapshotEdge(self.restore_snapshot_edge(shard, tx, r)?)
            }
            ShardReq::ReplaceBlockInitiate(r) => {
                ShardResp::ReplaceBlockInitiate(self.replace_block_initiate(shard, tx, r)?)
            }
            ShardReq::ReplaceBlockCertify(r) => {
                ShardResp::ReplaceBlockCertify(self.replace_block_certify(shard, tx, r)?)
            }
            // `handle` sends reads to `read` and SetAttr to `set_attr`.
            r => unreachable!("{} on the write path", r.kind()),
        })
    }

    // ---- edge helpers ----

    fn touch_dir(&self, tx: &mut Tx, dir_id: InodeId, mut d: DirectoryBody) {
        assert!(dir_id.is_dir(), "touching {dir_id} as a directory");
        d.mtime = tx.now;
        d.ctime = tx.now;
        tx.put(keys::dir(dir_id), &d);
    }

    /// A rename or unlink changes its file's ctime, when the file lives on this shard (as it
    /// does unless a cross-directory rename brought it here: then its ctime stays, which
    /// POSIX allows for renames).
    fn touch_file_ctime(&self, shard: ShardId, tx: &mut Tx, id: InodeId) -> R<()> {
        if id.is_dir() || id.shard() != shard {
            return Ok(());
        }
        let key = keys::file(id);
        let Some(v) = self.kv.get(&key)? else {
            return Ok(());
        };
        let mut f: FileBody = crate::values::decode(&key, &v)?;
        f.ctime = tx.now;
        tx.put(key, &f);
        Ok(())
    }

    fn put_current(&self, tx: &mut Tx, dir: InodeId, name: &Name, target: InodeId) {
        assert!(dir.is_dir(), "edge {dir}/{name} in a file");
        let body = CurrentEdgeBody {
            target_id: target,
            creation_time: tx.now,
            locked: false,
            created_by: 0,
        };
        tx.put(keys::current_edge(dir, name), &body);
    }

    /// The fence stored at `key`: the last CDC transaction that changed what it fences, and
    /// whether that transaction is done there. A value of 8 bytes (written by older
    /// versions, which fenced only at a transaction's end) is a done transaction.
    fn read_fence(&self, key: &[u8]) -> R<Fence> {
        let Some(v) = self.kv.get(key)? else {
            return Ok(Fence::default());
        };
        let bad = || super::corrupt(key.to_vec(), "fence");
        let txn_id = keys::be_u64(&v).ok_or_else(bad)?;
        let done = match v.get(8..) {
            Some([]) => true,
            Some([flag]) => *flag != 0,
            _ => return Err(bad().into()),
        };
        Ok(Fence { txn_id, done })
    }

    /// Runs a CDC step behind its fence. The transactions touching a directory (its edges or
    /// its inode) all hold its lock in the CDC, so they run one after the other in id order.
    /// Every step that succeeds records its transaction in the fence, and a transaction's
    /// last step there marks it done. A step of a transaction below the fence, or of the
    /// fence's own transaction once it is done, therefore comes from a transaction that is
    /// over there: a late copy (its deduplication entry expired, or it outlived a CDC
    /// restart). A copy of a last step is a no-op success (it may be the CDC resending it
    /// after a restart); any other step is refused, so that it never acts on what changed
    /// since.
    fn cdc_step(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        body: &ShardReq,
        step: StepFence,
    ) -> R<ShardResp> {
        if step.txn_id == 0 {
            return Err(EggsError::MalformedRequest.into());
        }
        Self::check_owned(shard, step.inode, Some(true))?;
        let key = step.key();
        let fence = self.read_fence(&key)?;
        if fence.is_over(step.txn_id) {
            if !step.last {
                return Err(step.late().into());
            }
            return match done_response(body) {
                Some(resp) => Ok(resp),
                None => unreachable!("{} is a last step without a response", body.kind()),
            };
        }
        let resp = self.apply_cdc_step(shard, tx, body)?;
        let now = Fence {
            txn_id: step.txn_id,
            done: step.last,
        };
        // A destroyed directory has no edges left to protect (the GC deleted that fence with
        // it), while its inode fence must outlive it (see keys::CDC_INODE_FENCE).
        let exists = || -> R<bool> { Ok(self.kv.get(&keys::dir(step.inode))?.is_some()) };
        if now != fence && (step.inode_side || exists()?) {
            tx.changes.put(key, now.encode());
        }
        Ok(resp)
    }

    fn apply_cdc_step(&mut self, shard: ShardId, tx: &mut Tx, body: &ShardReq) -> R<ShardResp> {
        Ok(match body {
            ShardReq::CreateDirectoryInode(r) => {
                ShardResp::CreateDirectoryInode(self.create_dir_inode(shard, tx, r)?)
            }
            ShardReq::CreateCurrentEdge(r) => {
                ShardResp::CreateCurrentEdge(self.create_current_edge(shard, tx, r)?)
            }
            ShardReq::LockCurrentEdge(r) => {
                ShardResp::LockCurrentEdge(self.lock_edge(shard, tx, r)?)
            }
            ShardReq::UnlockCurrentEdge(r) if r.new_edge => {
                ShardResp::UnlockCurrentEdge(self.unlock_new_edge(shard, tx, r)?)
            }
            ShardReq::UnlockCurrentEdge(r) => {
                ShardResp::UnlockCurrentEdge(self.unlock_edge(shard, tx, r)?)
            }
            ShardReq::SetDirectoryOwner(r) => {
                ShardResp::SetDirectoryOwner(self.set_dir_owner(shard, tx, r)?)
            }
            ShardReq::RemoveDirectoryOwner(r) => {
                ShardResp::RemoveDirectoryOwner(self.remove_dir_owner(shard, tx, r)?)
            }
            ShardReq::RemoveDirectoryInode(r) => {
                ShardResp::RemoveDirectoryInode(self.remove_dir_inode(shard, tx, r)?)
            }
            ShardReq::ReattachDirectory(r) => {
                ShardResp::ReattachDirectory(self.reattach_directory(shard, tx, r)?)
            }
            other => unreachable!("{} is not a fenced CDC step", other.kind()),
        })
    }

    /// Turns a current edge into a snapshot edge; with `deleted`, also records that the name
    /// stopped existing now.
    fn retire_edge(
        &self,
        tx: &mut Tx,
        dir: InodeId,
        name: &Name,
        e: &CurrentEdgeBody,
        deleted: bool,
    ) {
        // Times are strictly increasing per shard, so the snapshot edge and the deletion
        // marker (at now) are distinct keys: equal times would make one overwrite the other.
        assert!(
            e.creation_time < tx.now,
            "edge {dir}/{name} from the future"
        );
        tx.changes.delete(keys::current_edge(dir, name));
        let snap = SnapshotEdgeBody {
            target_id: e.target_id,
            owned: true,
        };
        tx.put(keys::snapshot_edge(dir, name, e.creation_time), &snap);
        if deleted {
            let marker = SnapshotEdgeBody {
                target_id: InodeId::NULL,
                owned: false,
            };
            tx.put(keys::snapshot_edge(dir, name, tx.now), &marker);
        }
    }

    /// Makes room for a new current edge at `name`: nothing there, or an unlocked file edge
    /// that becomes a snapshot edge. `new_target` is what will be linked there.
    fn clear_for_new_edge(
        &self,
        tx: &mut Tx,
        dir: InodeId,
        name: &Name,
        new_target: InodeId,
    ) -> R<()> {
        let Some(old) = self.get_current_edge(dir, name)? else {
            return Ok(());
        };
        if old.locked {
            return Err(EggsError::EdgeLocked.into());
        }
        if old.target_id.is_dir() || new_target.is_dir() {
            return Err(EggsError::CannotOverrideDirectory.into());
        }
        self.retire_edge(tx, dir, name, &old, false);
        Ok(())
    }

    /// The current edge `name` must point at `target` with `creation_time`.
    fn expect_edge(
        &self,
        dir: InodeId,
        name: &Name,
        target: InodeId,
        ctime: EggsTime,
    ) -> R<CurrentEdgeBody> {
        let e = self
            .get_current_edge(dir, name)?
            .ok_or(EggsError::NameNotFound)?;
        if e.target_id != target {
            return Err(EggsError::MismatchingTarget.into());
        }
        if e.creation_time != ctime {
            return Err(EggsError::MismatchingCreationTime.into());
        }
        Ok(e)
    }

    fn has_current_edges(&self, dir: InodeId) -> R<bool> {
        let prefix = keys::current_prefix(dir);
        let mut any = false;
        self.kv.scan(&prefix, &prefix, &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    fn has_any_edges(&self, dir: InodeId) -> R<bool> {
        let prefix = keys::snapshot_prefix(dir);
        let mut any = false;
        self.kv.scan(&prefix, &prefix, &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any || self.has_current_edges(dir)?)
    }

    // ---- client requests ----

    fn same_dir_rename(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SameDirectoryRenameReq,
    ) -> R<SameDirectoryRenameResp> {
        let dir = self.get_live_dir(shard, r.dir_id)?;
        if r.old_name == r.new_name {
            return Err(EggsError::SameName.into());
        }
        let old = self.expect_edge(r.dir_id, &r.old_name, r.target_id, r.old_creation_time)?;
        if old.locked {
            return Err(EggsError::EdgeLocked.into());
        }
        self.clear_for_new_edge(tx, r.dir_id, &r.new_name, r.target_id)?;
        self.retire_edge(tx, r.dir_id, &r.old_name, &old, true);
        // The new name owns the file now (see core::gc).
        self.disown_snapshot(tx, r.dir_id, &r.old_name, old.creation_time, r.target_id);
        self.put_current(tx, r.dir_id, &r.new_name, r.target_id);
        self.touch_dir(tx, r.dir_id, dir);
        self.touch_file_ctime(shard, tx, r.target_id)?;
        Ok(SameDirectoryRenameResp {
            new_creation_time: tx.now,
        })
    }

    fn soft_unlink(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SoftUnlinkFileReq,
    ) -> R<SoftUnlinkFileResp> {
        let dir = self.get_dir(shard, r.dir_id)?;
        if r.target_id.is_dir() {
            return Err(EggsError::IsADirectory.into());
        }
        let e = self.expect_edge(r.dir_id, &r.name, r.target_id, r.creation_time)?;
        if e.locked {
            return Err(EggsError::EdgeLocked.into());
        }
        self.retire_edge(tx, r.dir_id, &r.name, &e, true);
        self.touch_dir(tx, r.dir_id, dir);
        self.touch_file_ctime(shard, tx, r.target_id)?;
        Ok(SoftUnlinkFileResp {
            delete_creation_time: tx.now,
        })
    }

    fn set_dir_info(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SetDirectoryInfoReq,
    ) -> R<SetDirectoryInfoResp> {
        let mut dir = self.get_live_dir(shard, r.id)?;
        r.info.validate().map_err(|_| EggsError::BadPolicy)?;
        // The root ends every inheritance chain, so it must set every policy.
        if r.id == InodeId::ROOT && !r.info.is_complete() {
            return Err(EggsError::BadPolicy.into());
        }
        assert!(
            r.id == InodeId::ROOT || !dir.owner_id.is_null(),
            "policy of a removed dir"
        );
        dir.info = r.info.clone();
        self.touch_dir(tx, r.id, dir);
        Ok(SetDirectoryInfoResp {})
    }

    fn construct_file(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &ConstructFileReq,
    ) -> R<ConstructFileResp> {
        if r.typ == InodeType::Directory {
            return Err(EggsError::TypeMismatch.into());
        }
        if !r.attrs.fits(r.typ) || (r.rdev != 0 && !r.attrs.is_device()) {
            return Err(EggsError::BadAttributes.into());
        }
        let counter = &mut self.next_file_counter[shard.0 as usize];
        // Asserts that the counter fits: 2^51 files per shard is never reached, and `open`
        // refuses a stored counter beyond it. A file's id says what kind of file it is.
        let id = match r.typ {
            InodeType::File => InodeId::new_file(
                shard,
                eggs_protocol::FileKind::of_mode(r.attrs.mode),
                *counter,
            ),
            typ => InodeId::new(typ, shard, *counter),
        };
        *counter += 1;
        tx.changes.put(
            keys::meta(shard, keys::META_NEXT_FILE_COUNTER),
            counter.to_be_bytes().to_vec(),
        );
        // From the core's generator, so that a seeded core (the simulator) replays exactly.
        let cookie = rand::Rng::gen::<u64>(&mut self.rng);
        let body = TransientFileBody {
            size: 0,
            mtime: tx.now,
            deadline: EggsTime(tx.now.0 + self.opts.transient_deadline_ns),
            cookie,
            uncertified_span: None,
            attrs: r.attrs,
            rdev: r.rdev,
            set_atime: None,
            set_mtime: None,
        };
        tx.put(keys::transient(id), &body);
        Ok(ConstructFileResp { id, cookie })
    }

    pub(super) fn transient_for_write(
        &self,
        shard: ShardId,
        id: InodeId,
        cookie: u64,
    ) -> R<TransientFileBody> {
        Self::check_owned(shard, id, Some(false))?;
        let t = self.get_transient(id)?;
        if t.cookie != cookie {
            return Err(EggsError::BadCookie.into());
        }
        Ok(t)
    }

    fn add_inline_span(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &AddInlineSpanReq,
    ) -> R<AddInlineSpanResp> {
        let mut t = self.transient_for_write(shard, r.file_id, r.cookie)?;
        if r.data.is_empty() || r.data.len() > MAX_INLINE_SPAN {
            return Err(EggsError::TooLarge.into());
        }
        if crc32c::crc32c(&r.data) != r.crc {
            return Err(EggsError::BadSpanCrc.into());
        }
        if r.byte_offset != t.size {
            return Err(EggsError::BadSpanOffset.into());
        }
        if t.uncertified_span.is_some() {
            return Err(EggsError::SpanNotCertified.into());
        }
        let span = SpanValue {
            // At most MAX_INLINE_SPAN, checked above.
            size: eggs_protocol::conv::fit::<u32, usize>(r.data.len()),
            crc: r.crc,
            storage: SpanStorage::Inline(r.data.clone()),
        };
        tx.put(keys::span(r.file_id, r.byte_offset), &span);
        // At most 4 KiB per request on a size that counts real spans: never near 2^64.
        let Some(size) = t.size.checked_add(r.data.len() as u64) else {
            panic!("file {} size {} + inline span overflows", r.file_id, t.size);
        };
        t.size = size;
        t.mtime = tx.now;
        t.deadline = EggsTime(tx.now.0 + self.opts.transient_deadline_ns);
        tx.put(keys::transient(r.file_id), &t);
        Ok(AddInlineSpanResp {})
    }

    fn link_file(&mut self, shard: ShardId, tx: &mut Tx, r: &LinkFileReq) -> R<LinkFileResp> {
        let t = self.transient_for_write(shard, r.file_id, r.cookie)?;
        if t.uncertified_span.is_some() {
            return Err(EggsError::SpanNotCertified.into());
        }
        let dir = self.get_live_dir(shard, r.owner_id)?;
        // Both checked to be on this shard: a file lives with the directory it is linked in.
        assert_eq!(
            r.file_id.shard(),
            r.owner_id.shard(),
            "linking across shards"
        );
        self.clear_for_new_edge(tx, r.owner_id, &r.name, r.file_id)?;
        tx.changes.delete(keys::transient(r.file_id));
        let f = FileBody {
            size: t.size,
            mtime: t.set_mtime.unwrap_or(tx.now),
            atime: t.set_atime.unwrap_or(tx.now),
            ctime: tx.now,
            attrs: t.attrs,
            rdev: t.rdev,
        };
        tx.put(keys::file(r.file_id), &f);
        self.put_current(tx, r.owner_id, &r.name, r.file_id);
        self.touch_dir(tx, r.owner_id, dir);
        Ok(LinkFileResp {
            creation_time: tx.now,
        })
    }

    // ---- CDC requests: each is idempotent, since the CDC resends steps after a crash ----

    fn create_dir_inode(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &CreateDirectoryInodeReq,
    ) -> R<CreateDirectoryInodeResp> {
        Self::check_owned(shard, r.id, Some(true))?;
        if let Some(existing) = self.kv.get(&keys::dir(r.id))? {
            let d: DirectoryBody = crate::values::decode(&keys::dir(r.id), &existing)?;
            if d.owner_id == r.owner_id {
                return Ok(CreateDirectoryInodeResp { mtime: d.mtime });
            }
            return Err(EggsError::MismatchingTarget.into());
        }
        r.info.validate().map_err(|_| EggsError::BadPolicy)?;
        if !r.attrs.fits(InodeType::Directory) {
            return Err(EggsError::BadAttributes.into());
        }
        let d = DirectoryBody {
            owner_id: r.owner_id,
            mtime: tx.now,
            info: r.info.clone(),
            atime: tx.now,
            ctime: tx.now,
            attrs: r.attrs,
        };
        tx.put(keys::dir(r.id), &d);
        Ok(CreateDirectoryInodeResp { mtime: tx.now })
    }

    /// Creates the destination edge of a transaction LOCKED: nobody can replace, unlink or
    /// rename it until the transaction's last step in this directory unlocks it and fences
    /// the directory (`unlock_new_edge`). A copy of this step that arrives late (its
    /// deduplication entry expired, or a CDC resumed after a long outage) therefore finds
    /// either its own locked edge (the transaction still runs: success) or the fence, and
    /// then fails (`EdgeNotLocked`, in `cdc_step`) without creating the edge again over what
    /// clients did since.
    fn create_current_edge(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &CreateCurrentEdgeReq,
    ) -> R<CreateCurrentEdgeResp> {
        let dir = self.get_live_dir(shard, r.dir_id)?;
        if let Some(old) = self.get_current_edge(r.dir_id, &r.name)? {
            // Our own edge (a resent copy while the transaction runs), or the target is
            // already linked here and nobody is moving it (undeleting a directory twice):
            // the state asked for holds. (A late copy after the transaction ended was
            // refused by the fence, see cdc_step.)
            let ours = old.created_by == r.txn_id && old.locked;
            if old.target_id == r.target_id && (ours || !old.locked) {
                return Ok(CreateCurrentEdgeResp {
                    creation_time: old.creation_time,
                });
            }
            if old.target_id == r.target_id {
                // Locked by another transaction that is moving this target.
                return Err(EggsError::MismatchingTarget.into());
            }
            if !r.overwrite_files {
                return Err(EggsError::NameExists.into());
            }
        }
        self.clear_for_new_edge(tx, r.dir_id, &r.name, r.target_id)?;
        let body = CurrentEdgeBody {
            target_id: r.target_id,
            creation_time: tx.now,
            locked: true,
            created_by: r.txn_id,
        };
        tx.put(keys::current_edge(r.dir_id, &r.name), &body);
        self.touch_dir(tx, r.dir_id, dir);
        Ok(CreateCurrentEdgeResp {
            creation_time: tx.now,
        })
    }

    /// The last step of transaction `r.txn_id` in `r.dir_id` (so `cdc_step` fences the
    /// directory after it): unlocks the edge its CreateCurrentEdge made. If the create
    /// failed (the CDC rolls back; `creation_time` 0), a late copy may still have made the
    /// edge in the meantime: it is removed, since the transaction never took effect.
    fn unlock_new_edge(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &UnlockCurrentEdgeReq,
    ) -> R<UnlockCurrentEdgeResp> {
        if r.was_moved {
            return Err(EggsError::MalformedRequest.into());
        }
        let dir = match self.get_dir(shard, r.dir_id) {
            Ok(d) => d,
            // Destroyed by the GC: no edge to unlock, and nothing can be created there.
            Err(Fail::Eggs(EggsError::DirectoryNotFound)) => return Ok(UnlockCurrentEdgeResp {}),
            Err(e) => return Err(e),
        };
        let Some(mut e) = self.get_current_edge(r.dir_id, &r.name)? else {
            return Ok(UnlockCurrentEdgeResp {});
        };
        if !e.locked || e.created_by != r.txn_id || e.target_id != r.target_id {
            // Unlocked by an earlier copy of this step (and maybe changed since), or never
            // made by this transaction.
            return Ok(UnlockCurrentEdgeResp {});
        }
        if e.creation_time == r.creation_time {
            e.locked = false;
            // The transaction's claim ends here: a late copy of this step must not take
            // for its own a lock that a later transaction puts on this edge.
            e.created_by = 0;
            tx.put(keys::current_edge(r.dir_id, &r.name), &e);
        } else {
            // Nobody could see it unlocked, and its target still lives where it was.
            tx.changes.delete(keys::current_edge(r.dir_id, &r.name));
            self.touch_dir(tx, r.dir_id, dir);
        }
        Ok(UnlockCurrentEdgeResp {})
    }

    fn lock_edge(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &LockCurrentEdgeReq,
    ) -> R<LockCurrentEdgeResp> {
        self.get_dir(shard, r.dir_id)?;
        let mut e = self.expect_edge(r.dir_id, &r.name, r.target_id, r.creation_time)?;
        if !e.locked {
            e.locked = true;
            tx.put(keys::current_edge(r.dir_id, &r.name), &e);
        }
        Ok(LockCurrentEdgeResp {})
    }

    fn unlock_edge(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &UnlockCurrentEdgeReq,
    ) -> R<UnlockCurrentEdgeResp> {
        let dir = self.get_dir(shard, r.dir_id)?;
        match self.expect_edge(r.dir_id, &r.name, r.target_id, r.creation_time) {
            Ok(mut e) if r.was_moved => {
                if !e.locked {
                    return Err(EggsError::EdgeNotLocked.into());
                }
                e.locked = false;
                self.retire_edge(tx, r.dir_id, &r.name, &e, true);
                // The target's new edge (in the destination) owns it now: expiring this one
                // must never release the file (see core::gc).
                self.disown_snapshot(tx, r.dir_id, &r.name, e.creation_time, e.target_id);
                self.touch_dir(tx, r.dir_id, dir);
            }
            Ok(mut e) => {
                if e.locked {
                    e.locked = false;
                    tx.put(keys::current_edge(r.dir_id, &r.name), &e);
                }
            }
            Err(Fail::Eggs(err)) if r.was_moved => {
                // Already moved by an earlier attempt: the snapshot edge is there.
                let key = keys::snapshot_edge(r.dir_id, &r.name, r.creation_time);
                match self.kv.get(&key)? {
                    Some(v) => {
                        let s: SnapshotEdgeBody = crate::values::decode(&key, &v)?;
                        if s.target_id != r.target_id {
                            return Err(err.into());
                        }
                    }
                    None => return Err(err.into()),
                }
            }
            // A rollback of an edge that no longer matches: a locked edge cannot change, so
            // the lock was already released (an earlier copy of this unlock whose reply was
            // lost) or never taken. Either way there is nothing to undo, and failing would
            // keep the CDC retrying a step that must complete.
            Err(Fail::Eggs(
                EggsError::NameNotFound
                | EggsError::MismatchingTarget
                | EggsError::MismatchingCreationTime,
            )) => {}
            Err(e) => return Err(e),
        }
        Ok(UnlockCurrentEdgeResp {})
    }

    fn set_dir_owner(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SetDirectoryOwnerReq,
    ) -> R<SetDirectoryOwnerResp> {
        let mut d = self.get_dir(shard, r.dir_id)?;
        if r.dir_id == InodeId::ROOT {
            return Err(EggsError::CannotRemoveRoot.into());
        }
        if !r.owner_id.is_dir() {
            return Err(EggsError::NotADirectory.into());
        }
        if d.owner_id != r.owner_id {
            d.owner_id = r.owner_id;
            self.touch_dir(tx, r.dir_id, d);
        }
        Ok(SetDirectoryOwnerResp {})
    }

    fn remove_dir_owner(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RemoveDirectoryOwnerReq,
    ) -> R<RemoveDirectoryOwnerResp> {
        if r.dir_id == InodeId::ROOT {
            return Err(EggsError::CannotRemoveRoot.into());
        }
        let mut d = self.get_dir(shard, r.dir_id)?;
        if d.owner_id.is_null() {
            return Ok(RemoveDirectoryOwnerResp {});
        }
        if self.has_current_edges(r.dir_id)? {
            return Err(EggsError::DirectoryNotEmpty.into());
        }
        d.owner_id = InodeId::NULL;
        self.touch_dir(tx, r.dir_id, d);
        Ok(RemoveDirectoryOwnerResp {})
    }

    fn remove_dir_inode(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RemoveDirectoryInodeReq,
    ) -> R<RemoveDirectoryInodeResp> {
        Self::check_owned(shard, r.id, Some(true))?;
        if r.id == InodeId::ROOT {
            return Err(EggsError::CannotRemoveRoot.into());
        }
        let key = keys::dir(r.id);
        let Some(v) = self.kv.get(&key)? else {
            return Ok(RemoveDirectoryInodeResp {});
        };
        let d: DirectoryBody = crate::values::decode(&key, &v)?;
        if d.owner_id != r.owner_id {
            return Err(EggsError::MismatchingTarget.into());
        }
        if self.has_any_edges(r.id)? {
            return Err(EggsError::DirectoryNotEmpty.into());
        }
        tx.changes.delete(key);
        Ok(RemoveDirectoryInodeResp {})
    }
}

/// What a fence key holds (see `ShardCore::cdc_step`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Fence {
    txn_id: u64,
    done: bool,
}

impl Fence {
    /// Whether transaction `txn_id` has finished with what this fences.
    fn is_over(self, txn_id: u64) -> bool {
        txn_id < self.txn_id || (txn_id == self.txn_id && self.done)
    }

    fn encode(self) -> Vec<u8> {
        let mut v = self.txn_id.to_be_bytes().to_vec();
        v.push(u8::from(self.done));
        v
    }
}

/// How a CDC step is fenced (see `ShardCore::cdc_step`).
#[derive(Debug)]
struct StepFence {
    /// The directory whose edges, or whose inode, the step concerns.
    inode: InodeId,
    /// The inode (owner, existence) rather than the edges.
    inode_side: bool,
    txn_id: u64,
    /// The transaction's last step on what is fenced: it sets the fence.
    last: bool,
}

impl StepFence {
    fn key(&self) -> Vec<u8> {
        if self.inode_side {
            keys::cdc_inode_fence(self.inode)
        } else {
            keys::cdc_fence(self.inode)
        }
    }

    /// What a late copy of a step that is not a last step gets.
    fn late(&self) -> EggsError {
        if self.inode_side {
            EggsError::DirectoryRemoved
        } else {
            EggsError::EdgeNotLocked
        }
    }
}

/// The fence of a CDC step; `None` for every other request. Which steps are last follows
/// from the CDC's transactions (rust/cdc/src/txn.rs): the unlocks end every transaction's
/// work on a directory's edges; SetDirectoryOwner (a rename's, or a RemoveDirectory's
/// rollback), RemoveDirectoryInode (a MakeDirectory's rollback) and the RemoveDirectoryOwner
/// undoing a ReattachDirectory end it on a directory inode. CreateDirectoryInode,
/// ReattachDirectory, a RemoveDirectory's RemoveDirectoryOwner, LockCurrentEdge and
/// CreateCurrentEdge may be followed by more (a rollback), so on the success paths that
/// end with them the transaction stays the fence's, not done, until a later one comes.
fn step_fence(body: &ShardReq) -> Option<StepFence> {
    let (inode, inode_side, txn_id, last) = match body {
        ShardReq::CreateDirectoryInode(r) => (r.id, true, r.txn_id, false),
        ShardReq::ReattachDirectory(r) => (r.dir_id, true, r.txn_id, false),
        ShardReq::SetDirectoryOwner(r) => (r.dir_id, true, r.txn_id, true),
        ShardReq::RemoveDirectoryOwner(r) => (r.dir_id, true, r.txn_id, r.rollback),
        ShardReq::RemoveDirectoryInode(r) => (r.id, true, r.txn_id, true),
        ShardReq::LockCurrentEdge(r) => (r.dir_id, false, r.txn_id, false),
        ShardReq::CreateCurrentEdge(r) => (r.dir_id, false, r.txn_id, false),
        ShardReq::UnlockCurrentEdge(r) => (r.dir_id, false, r.txn_id, true),
        _ => return None,
    };
    Some(StepFence {
        inode,
        inode_side,
        txn_id,
        last,
    })
}

/// The response of a last step whose work is done (all of them are empty).
fn done_response(body: &ShardReq) -> Option<ShardResp> {
    Some(match body {
        ShardReq::UnlockCurrentEdge(_) => ShardResp::UnlockCurrentEdge(UnlockCurrentEdgeResp {}),
        ShardReq::SetDirectoryOwner(_) => ShardResp::SetDirectoryOwner(SetDirectoryOwnerResp {}),
        ShardReq::RemoveDirectoryOwner(_) => {
            ShardResp::RemoveDirectoryOwner(RemoveDirectoryOwnerResp {})
        }
        ShardReq::RemoveDirectoryInode(_) => {
            ShardResp::RemoveDirectoryInode(RemoveDirectoryInodeResp {})
        }
        _ => return None,
    })
}
