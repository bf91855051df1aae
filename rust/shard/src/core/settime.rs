//! `SetTime`: the times of a linked file, symlink or live directory (FUSE setattr, `touch`,
//! `tar`, `rsync`).
//!
//! A directory only has an `mtime` (the one `StatDirectory` returns): its `atime` is ignored.
//! A removed directory refuses (`DirectoryRemoved`): its `mtime` records when it was removed,
//! which `DestroyDirectory` measures the expiry from. Setting given times is idempotent.

use super::{ShardCore, Tx, R};
use crate::keys;
use crate::kv::Kv;
use crate::values::{self, FileBody};
use eggs_protocol::shard::{SetTimeReq, SetTimeResp};
use eggs_protocol::{EggsError, ShardId};

impl<K: Kv> ShardCore<K> {
    pub(super) fn set_time(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SetTimeReq,
    ) -> R<SetTimeResp> {
        if r.id.is_dir() {
            return self.set_dir_time(shard, tx, r);
        }
        Self::check_owned(shard, r.id, Some(false))?;
        let key = keys::file(r.id);
        let mut f: FileBody = match self.kv.get(&key)? {
            Some(v) => values::decode(&key, &v)?,
            // Transient files get their times when linked.
            None => return Err(EggsError::FileNotFound.into()),
        };
        if let Some(t) = r.mtime {
            f.mtime = t;
        }
        if let Some(t) = r.atime {
            f.atime = t;
        }
        tx.put(key, &f);
        Ok(SetTimeResp {})
    }

    /// Unlike every other directory write, this does not set `mtime` to now: `r.mtime` is the
    /// point (`rsync -a` copies directory times after filling the directory).
    fn set_dir_time(&mut self, shard: ShardId, tx: &mut Tx, r: &SetTimeReq) -> R<SetTimeResp> {
        let mut d = self.get_live_dir(shard, r.id)?;
        // `get_live_dir` refuses removed directories: their mtime is their removal time.
        assert!(r.id == eggs_protocol::InodeId::ROOT || !d.owner_id.is_null());
        if let Some(t) = r.mtime {
            d.mtime = t;
            tx.put(keys::dir(r.id), &d);
        }
        Ok(SetTimeResp {})
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{ShardCore, ShardOptions};
    use crate::kv::MemKv;
    use eggs_protocol::codec::RequestBody;
    use eggs_protocol::shard::*;
    use eggs_protocol::{EggsError, EggsTime, InodeId, InodeType, Name, RequestHeader, ShardId};

    fn send<B: RequestBody<Req = ShardReq, Resp = ShardResp>>(
        core: &mut ShardCore<MemKv>,
        id: u64,
        b: B,
    ) -> Result<B::RespBody, EggsError> {
        let req = ShardRequest {
            header: RequestHeader {
                request_id: id,
                client_id: 7,
            },
            shard: ShardId(0),
            body: b.into_req(),
        };
        let resp = core.handle(&req, EggsTime(5_000_000 + id)).unwrap();
        resp.result.map(|r| B::from_resp(r).expect("kind"))
    }

    #[test]
    fn set_time_changes_only_the_given_times_of_linked_files() {
        let shards: Vec<ShardId> = (0..=255).map(ShardId).collect();
        let mut core = ShardCore::open(
            MemKv::default(),
            &shards,
            ShardOptions::default(),
            EggsTime(1),
        )
        .unwrap();
        let typ = InodeType::File;
        let f = send(&mut core, 1, ConstructFileReq { typ }).unwrap();
        let set = |mtime, atime| SetTimeReq {
            id: f.id,
            mtime,
            atime,
        };
        // Transient: not yet.
        let e = send(&mut core, 2, set(Some(EggsTime(7)), None)).unwrap_err();
        assert_eq!(e, EggsError::FileNotFound);
        let link = LinkFileReq {
            file_id: f.id,
            cookie: f.cookie,
            owner_id: InodeId::ROOT,
            name: Name::new("f").unwrap(),
        };
        send(&mut core, 3, link).unwrap();
        let before = send(&mut core, 4, StatFileReq { id: f.id }).unwrap();
        send(&mut core, 5, set(Some(EggsTime(7)), None)).unwrap();
        let st = send(&mut core, 6, StatFileReq { id: f.id }).unwrap();
        assert_eq!((st.mtime, st.atime), (EggsTime(7), before.atime));
        send(&mut core, 7, set(None, Some(EggsTime(9)))).unwrap();
        let st = send(&mut core, 8, StatFileReq { id: f.id }).unwrap();
        assert_eq!((st.mtime, st.atime), (EggsTime(7), EggsTime(9)));
    }

    #[test]
    fn set_time_sets_live_directory_mtime_and_ignores_atime() {
        let shards: Vec<ShardId> = (0..=255).map(ShardId).collect();
        let mut core = ShardCore::open(
            MemKv::default(),
            &shards,
            ShardOptions::default(),
            EggsTime(1),
        )
        .unwrap();
        let d = InodeId::new(InodeType::Directory, ShardId(0), 5);
        let create = CreateDirectoryInodeReq {
            id: d,
            owner_id: InodeId::ROOT,
            info: Default::default(),
            txn_id: 1,
        };
        send(&mut core, 1, create).unwrap();
        let set = |id, mtime, atime| SetTimeReq { id, mtime, atime };
        let stat = |core: &mut ShardCore<MemKv>, rid| {
            send(core, rid, StatDirectoryReq { id: d }).unwrap().mtime
        };
        let before = stat(&mut core, 2);
        // No mtime: nothing changes (atime does not exist for directories).
        send(&mut core, 3, set(d, None, Some(EggsTime(99)))).unwrap();
        assert_eq!(stat(&mut core, 4), before);
        // An mtime in the past is kept as given, not replaced by now.
        send(&mut core, 5, set(d, Some(EggsTime(42)), Some(EggsTime(99)))).unwrap();
        assert_eq!(stat(&mut core, 6), EggsTime(42));
        // Idempotent: the same request again leaves the same state.
        send(&mut core, 7, set(d, Some(EggsTime(42)), None)).unwrap();
        assert_eq!(stat(&mut core, 8), EggsTime(42));
        // The root has no owner but is live.
        send(&mut core, 9, set(InodeId::ROOT, Some(EggsTime(43)), None)).unwrap();
        let root = send(&mut core, 10, StatDirectoryReq { id: InodeId::ROOT }).unwrap();
        assert_eq!(root.mtime, EggsTime(43));
        // A removed directory's mtime is its removal time, which its expiry counts from.
        let remove = RemoveDirectoryOwnerReq {
            dir_id: d,
            txn_id: 2,
            rollback: false,
        };
        send(&mut core, 11, remove).unwrap();
        let removed = stat(&mut core, 12);
        let e = send(&mut core, 13, set(d, Some(EggsTime(42)), None)).unwrap_err();
        assert_eq!(e, EggsError::DirectoryRemoved);
        assert_eq!(stat(&mut core, 14), removed);
        // Unknown directory, and one on another shard.
        let ghost = InodeId::new(InodeType::Directory, ShardId(0), 77);
        let e = send(&mut core, 15, set(ghost, Some(EggsTime(1)), None)).unwrap_err();
        assert_eq!(e, EggsError::DirectoryNotFound);
        let other = InodeId::new(InodeType::Directory, ShardId(3), 5);
        let e = send(&mut core, 16, set(other, Some(EggsTime(1)), None)).unwrap_err();
        assert_eq!(e, EggsError::WrongShard);
    }
}
