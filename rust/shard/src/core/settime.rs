//! `SetTime`: the times of a linked file or symlink (FUSE setattr, `touch`, `tar`, `rsync`).

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
        let dir = SetTimeReq {
            id: InodeId::ROOT,
            mtime: None,
            atime: None,
        };
        assert!(send(&mut core, 9, dir).is_err());
    }
}
