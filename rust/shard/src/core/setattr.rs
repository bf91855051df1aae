//! `SetAttr`: mode, owner, group and times of a file, symlink, special file or live
//! directory (FUSE setattr: `chmod`, `chown`, `touch`, `tar`, `rsync -a`), by the rules of
//! `eggs_protocol::posix::apply_change`, and of a transient file (with its cookie), which
//! keeps them for its link.
//!
//! Every change sets ctime to now. A removed directory refuses (`DirectoryRemoved`): its
//! `mtime` records when it was removed, which `DestroyDirectory` measures the expiry from.

use super::{ShardCore, Tx, R};
use crate::keys;
use crate::kv::Kv;
use crate::values::{self, FileBody};
use eggs_protocol::posix::{apply_change, SetTime};
use eggs_protocol::shard::{SetAttrReq, SetAttrResp};
use eggs_protocol::{EggsError, EggsTime, ShardId};

impl<K: Kv> ShardCore<K> {
    pub(super) fn set_attr(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &SetAttrReq,
    ) -> R<SetAttrResp> {
        if r.id.is_dir() {
            return self.set_dir_attr(shard, tx, r);
        }
        Self::check_owned(shard, r.id, Some(false))?;
        let now = tx.now;
        let at = |t: SetTime| t.at(now);
        if let Some(cookie) = r.cookie {
            let mut t = self.transient_for_write(shard, r.id, cookie)?;
            t.attrs = apply_change(&t.attrs, &r.caller, &r.change)?;
            t.set_atime = r.change.atime.map(at).or(t.set_atime);
            t.set_mtime = r.change.mtime.map(at).or(t.set_mtime);
            tx.put(keys::transient(r.id), &t);
            return Ok(SetAttrResp {
                attrs: t.attrs,
                mtime: t.set_mtime.unwrap_or(t.mtime),
                atime: t.set_atime.unwrap_or(t.mtime),
                ctime: now,
            });
        }
        let key = keys::file(r.id);
        let mut f: FileBody = match self.kv.get(&key)? {
            Some(v) => values::decode(&key, &v)?,
            None if self.kv.get(&keys::transient(r.id))?.is_some() => {
                return Err(EggsError::BadCookie.into())
            }
            None => return Err(EggsError::FileNotFound.into()),
        };
        f.attrs = apply_change(&f.attrs, &r.caller, &r.change)?;
        f.atime = r.change.atime.map_or(f.atime, at);
        f.mtime = r.change.mtime.map_or(f.mtime, at);
        f.ctime = now;
        tx.put(key, &f);
        Ok(SetAttrResp {
            attrs: f.attrs,
            mtime: f.mtime,
            atime: f.atime,
            ctime: f.ctime,
        })
    }

    /// Unlike every other directory write, this does not set `mtime` to now: a given `mtime`
    /// is the point (`rsync -a` copies directory times after filling the directory).
    fn set_dir_attr(&mut self, shard: ShardId, tx: &mut Tx, r: &SetAttrReq) -> R<SetAttrResp> {
        let mut d = self.get_live_dir(shard, r.id)?;
        // `get_live_dir` refuses removed directories: their mtime is their removal time.
        assert!(r.id == eggs_protocol::InodeId::ROOT || !d.owner_id.is_null());
        if r.cookie.is_some() {
            return Err(EggsError::TypeMismatch.into());
        }
        let now: EggsTime = tx.now;
        let at = |t: SetTime| t.at(now);
        d.attrs = apply_change(&d.attrs, &r.caller, &r.change)?;
        d.atime = r.change.atime.map_or(d.atime, at);
        d.mtime = r.change.mtime.map_or(d.mtime, at);
        d.ctime = now;
        tx.put(keys::dir(r.id), &d);
        Ok(SetAttrResp {
            attrs: d.attrs,
            mtime: d.mtime,
            atime: d.atime,
            ctime: d.ctime,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{ShardCore, ShardOptions};
    use crate::kv::MemKv;
    use eggs_protocol::codec::RequestBody;
    use eggs_protocol::posix::{
        AttrChange, Caller, InodeAttrs, SetTime, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK,
        S_IFREG, S_IFSOCK, S_ISGID, S_ISUID,
    };
    use eggs_protocol::shard::*;
    use eggs_protocol::{EggsError, EggsTime, InodeId, InodeType, Name, RequestHeader, ShardId};

    const S0: ShardId = ShardId(0);

    struct T {
        core: ShardCore<MemKv>,
        next_id: u64,
        now: u64,
    }

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::new(uid, gid, groups)
    }

    fn attrs(mode: u32, uid: u32, gid: u32) -> InodeAttrs {
        InodeAttrs { mode, uid, gid }
    }

    fn chmod(mode: u32) -> AttrChange {
        AttrChange {
            mode: Some(mode),
            ..Default::default()
        }
    }

    fn chown(uid: Option<u32>, gid: Option<u32>) -> AttrChange {
        AttrChange {
            uid,
            gid,
            ..Default::default()
        }
    }

    fn times(atime: Option<SetTime>, mtime: Option<SetTime>) -> AttrChange {
        AttrChange {
            atime,
            mtime,
            ..Default::default()
        }
    }

    impl T {
        fn new() -> T {
            let shards: Vec<ShardId> = (0..=255).map(ShardId).collect();
            let core = ShardCore::open(
                MemKv::default(),
                &shards,
                ShardOptions::default(),
                EggsTime(1),
            )
            .unwrap();
            T {
                core,
                next_id: 0,
                now: 5_000_000,
            }
        }

        /// Sends `b` to shard 0, each request 1000 ns after the last.
        fn req<B: RequestBody<Req = ShardReq, Resp = ShardResp>>(
            &mut self,
            b: B,
        ) -> Result<B::RespBody, EggsError> {
            self.next_id += 1;
            self.now += 1000;
            let req = ShardRequest {
                header: RequestHeader {
                    request_id: self.next_id,
                    client_id: 7,
                },
                shard: S0,
                body: b.into_req(),
            };
            let resp = self.core.handle(&req, EggsTime(self.now)).unwrap();
            resp.result.map(|r| B::from_resp(r).expect("kind"))
        }

        /// A transient file (a symlink if `attrs` says so) on shard 0.
        fn construct(&mut self, attrs: InodeAttrs, rdev: u64) -> ConstructFileResp {
            let typ = if attrs.file_type() == S_IFLNK {
                InodeType::Symlink
            } else {
                InodeType::File
            };
            self.req(ConstructFileReq { typ, attrs, rdev }).unwrap()
        }

        fn link(&mut self, f: &ConstructFileResp, dir: InodeId, name: &str) -> EggsTime {
            let link = LinkFileReq {
                file_id: f.id,
                cookie: f.cookie,
                owner_id: dir,
                name: n(name),
            };
            self.req(link).unwrap().creation_time
        }

        /// A linked file in the root with `attrs`.
        fn file(&mut self, attrs: InodeAttrs, name: &str) -> InodeId {
            let f = self.construct(attrs, 0);
            self.link(&f, InodeId::ROOT, name);
            f.id
        }

        /// A directory inode owned by the root (no edge: these tests need only the inode).
        fn dir(&mut self, counter: u64, attrs: InodeAttrs) -> InodeId {
            let id = InodeId::new(InodeType::Directory, S0, counter);
            let create = CreateDirectoryInodeReq {
                id,
                owner_id: InodeId::ROOT,
                info: Default::default(),
                txn_id: counter,
                attrs,
            };
            self.req(create).unwrap();
            id
        }

        fn set(
            &mut self,
            id: InodeId,
            cookie: Option<u64>,
            caller: &Caller,
            change: AttrChange,
        ) -> Result<SetAttrResp, EggsError> {
            self.req(SetAttrReq {
                id,
                cookie,
                caller: caller.clone(),
                change,
            })
        }

        fn stat(&mut self, id: InodeId) -> StatFileResp {
            self.req(StatFileReq { id }).unwrap()
        }

        fn stat_dir(&mut self, id: InodeId) -> StatDirectoryResp {
            self.req(StatDirectoryReq { id }).unwrap()
        }
    }

    #[test]
    fn chmod_chown_and_chgrp_follow_ownership() {
        let mut t = T::new();
        let f = t.file(attrs(S_IFREG | 0o644, 1000, 100), "f");
        let owner = user(1000, 100, &[200]);
        let other = user(1001, 100, &[200]);
        let root = Caller::root();

        let r = t.set(f, None, &owner, chmod(0o600)).unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o600, 1000, 100));
        let st = t.stat(f);
        assert_eq!(st.attrs, r.attrs);
        assert_eq!(st.ctime, r.ctime);
        let ctime = st.ctime;

        // Refusals change nothing, ctime included.
        let refused = [
            (&other, chmod(0o777), EggsError::NotPermitted),
            (&owner, chown(Some(1001), None), EggsError::NotPermitted),
            (&other, chown(Some(1001), None), EggsError::NotPermitted),
            (&owner, chown(None, Some(300)), EggsError::NotPermitted),
            (&other, chown(None, Some(200)), EggsError::NotPermitted),
            (&owner, chmod(S_IFDIR | 0o755), EggsError::BadAttributes),
            // Given times are the owner's; now needs write permission (0600: none for
            // the group).
            (
                &other,
                times(None, Some(SetTime::At(EggsTime(3)))),
                EggsError::NotPermitted,
            ),
            (
                &other,
                times(Some(SetTime::Now), None),
                EggsError::AccessDenied,
            ),
        ];
        for (caller, change, e) in refused {
            assert_eq!(t.set(f, None, caller, change.clone()), Err(e), "{change:?}");
        }
        let st = t.stat(f);
        assert_eq!(
            (st.attrs, st.ctime),
            (attrs(S_IFREG | 0o600, 1000, 100), ctime)
        );

        // The owner "gives" the file to itself and picks one of its groups.
        let r = t
            .set(f, None, &owner, chown(Some(1000), Some(200)))
            .unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o600, 1000, 200));
        // Root gives it away.
        let r = t.set(f, None, &root, chown(Some(7), Some(8))).unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o600, 7, 8));
        assert_eq!(t.stat(f).attrs, r.attrs);
        // The old owner no longer may.
        assert_eq!(
            t.set(f, None, &owner, chmod(0o644)),
            Err(EggsError::NotPermitted)
        );
        // Root may do anything: chmod of someone else's file.
        let r = t.set(f, None, &root, chmod(0o640)).unwrap();
        assert_eq!(r.attrs.mode, S_IFREG | 0o640);

        // A symlink's mode never changes, but it has an owner.
        let l = t.file(InodeAttrs::ROOT_SYMLINK, "l");
        assert_eq!(
            t.set(l, None, &root, chmod(0o700)),
            Err(EggsError::NotPermitted)
        );
        let r = t.set(l, None, &root, chown(Some(1000), Some(100))).unwrap();
        assert_eq!(r.attrs, attrs(S_IFLNK | 0o777, 1000, 100));

        // Files that are not there, or not on this shard.
        let ghost = InodeId::new(InodeType::File, S0, 1 << 40);
        assert_eq!(
            t.set(ghost, None, &root, chmod(0o600)),
            Err(EggsError::FileNotFound)
        );
        let elsewhere = InodeId::new(InodeType::File, ShardId(3), 1);
        assert_eq!(
            t.set(elsewhere, None, &root, chmod(0o600)),
            Err(EggsError::WrongShard)
        );
    }

    #[test]
    fn chown_clears_setuid_and_setgid_of_files_not_directories() {
        let mut t = T::new();
        let f = t.file(attrs(S_IFREG | S_ISUID | S_ISGID | 0o755, 1000, 100), "f");
        let r = t
            .set(f, None, &Caller::root(), chown(Some(2000), None))
            .unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o755, 2000, 100));
        assert_eq!(t.stat(f).attrs, r.attrs);
        // The owner's chgrp clears them too.
        let g = t.file(attrs(S_IFREG | S_ISUID | S_ISGID | 0o750, 1000, 100), "g");
        let owner = user(1000, 100, &[200]);
        let r = t.set(g, None, &owner, chown(None, Some(200))).unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o750, 1000, 200));
        // Setgid without group execute (mandatory locking) stays; setuid goes.
        let h = t.file(attrs(S_IFREG | S_ISUID | S_ISGID | 0o644, 1000, 100), "h");
        let r = t.set(h, None, &owner, chown(None, Some(200))).unwrap();
        assert_eq!(r.attrs.mode, S_IFREG | S_ISGID | 0o644);
        // A directory keeps setgid (its new entries inherit the group).
        let d = t.dir(5, attrs(S_IFDIR | S_ISGID | 0o775, 1000, 100));
        let r = t
            .set(d, None, &Caller::root(), chown(Some(3), Some(4)))
            .unwrap();
        assert_eq!(r.attrs, attrs(S_IFDIR | S_ISGID | 0o775, 3, 4));
        assert_eq!(t.stat_dir(d).attrs, r.attrs);
    }

    #[test]
    fn transient_files_keep_their_attributes_for_the_link() {
        let mut t = T::new();
        let owner = user(1000, 100, &[]);
        let f = t.construct(attrs(S_IFREG | 0o644, 1000, 100), 0);
        // The cookie authorises changes to a transient file; without it, or with another,
        // nothing changes.
        let wrong = f.cookie.wrapping_add(1);
        assert_eq!(
            t.set(f.id, Some(wrong), &owner, chmod(0o600)),
            Err(EggsError::BadCookie)
        );
        assert_eq!(
            t.set(f.id, None, &owner, chmod(0o600)),
            Err(EggsError::BadCookie)
        );
        // ... and does not stand in for ownership.
        assert_eq!(
            t.set(f.id, Some(f.cookie), &user(1001, 100, &[]), chmod(0o600)),
            Err(EggsError::NotPermitted)
        );
        let st = t.req(StatTransientFileReq { id: f.id }).unwrap();
        assert_eq!(st.attrs, attrs(S_IFREG | 0o644, 1000, 100));

        let change = AttrChange {
            mode: Some(0o600),
            mtime: Some(SetTime::At(EggsTime(77))),
            ..Default::default()
        };
        let r = t.set(f.id, Some(f.cookie), &owner, change).unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o600, 1000, 100));
        assert_eq!(r.mtime, EggsTime(77));
        let r = t
            .set(
                f.id,
                Some(f.cookie),
                &Caller::root(),
                chown(Some(5), Some(6)),
            )
            .unwrap();
        assert_eq!(r.attrs, attrs(S_IFREG | 0o600, 5, 6));
        // A later change of other attributes keeps the time set before.
        assert_eq!(r.mtime, EggsTime(77));
        let st = t.req(StatTransientFileReq { id: f.id }).unwrap();
        assert_eq!(st.attrs, attrs(S_IFREG | 0o600, 5, 6));

        // Data written after the change, then the link: the file has the attributes and
        // the mtime it was given; atime and ctime are the link's.
        let data = b"hello".to_vec();
        let span = AddInlineSpanReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 0,
            crc: crc32c::crc32c(&data),
            data,
        };
        t.req(span).unwrap();
        let linked = t.link(&f, InodeId::ROOT, "f");
        let st = t.stat(f.id);
        assert_eq!(st.attrs, attrs(S_IFREG | 0o600, 5, 6));
        assert_eq!(st.size, 5);
        assert_eq!(st.mtime, EggsTime(77));
        assert_eq!((st.atime, st.ctime), (linked, linked));
        assert_eq!(st.rdev, 0);

        // Linked: the cookie no longer serves, and changes need none.
        assert_eq!(
            t.set(f.id, Some(f.cookie), &Caller::root(), chmod(0o644)),
            Err(EggsError::FileNotTransient)
        );
        let owner = user(5, 6, &[]);
        let r = t
            .set(
                f.id,
                None,
                &owner,
                AttrChange {
                    mode: Some(0o640),
                    atime: Some(SetTime::At(EggsTime(98))),
                    mtime: Some(SetTime::At(EggsTime(99))),
                    ..Default::default()
                },
            )
            .unwrap();
        let st = t.stat(f.id);
        assert_eq!(st.attrs, attrs(S_IFREG | 0o640, 5, 6));
        assert_eq!((st.atime, st.mtime), (EggsTime(98), EggsTime(99)));
        assert_eq!((r.atime, r.mtime, r.ctime), (st.atime, st.mtime, st.ctime));
        assert!(st.ctime > linked);
        // Now: the shard's time.
        let r = t
            .set(f.id, None, &owner, times(None, Some(SetTime::Now)))
            .unwrap();
        assert_eq!(r.mtime, EggsTime(t.now));
        assert_eq!(r.ctime, EggsTime(t.now));
        assert_eq!(r.atime, EggsTime(98));

        // A transient file linked without any SetAttr gets the link's times.
        let g = t.construct(InodeAttrs::ROOT_FILE, 0);
        let linked = t.link(&g, InodeId::ROOT, "g");
        let st = t.stat(g.id);
        assert_eq!((st.mtime, st.atime, st.ctime), (linked, linked, linked));
        assert_eq!(st.attrs, InodeAttrs::ROOT_FILE);
    }

    #[test]
    fn directories_change_mode_and_times_until_removed() {
        let mut t = T::new();
        let d = t.dir(5, attrs(S_IFDIR | 0o755, 1000, 100));
        let owner = user(1000, 1000, &[]);
        let created = t.stat_dir(d);
        assert_eq!(created.attrs, attrs(S_IFDIR | 0o755, 1000, 100));
        assert_eq!(
            (created.atime, created.ctime),
            (created.mtime, created.mtime)
        );

        // As for files, setgid goes when the owner is not in the directory's group (Linux's
        // setattr_prepare), and stays when it is.
        let r = t.set(d, None, &owner, chmod(S_ISGID | 0o770)).unwrap();
        assert_eq!(r.attrs, attrs(S_IFDIR | 0o770, 1000, 100));
        let member = user(1000, 1000, &[100]);
        let r = t.set(d, None, &member, chmod(S_ISGID | 0o770)).unwrap();
        assert_eq!(r.attrs, attrs(S_IFDIR | S_ISGID | 0o770, 1000, 100));
        let st = t.stat_dir(d);
        assert_eq!(st.attrs, r.attrs);
        // ctime moves, mtime does not: a SetAttr is no entry change.
        assert_eq!((st.mtime, st.ctime), (created.mtime, r.ctime));
        assert!(st.ctime > created.ctime);
        assert_eq!(
            t.set(d, None, &user(1001, 100, &[]), chmod(0o777)),
            Err(EggsError::NotPermitted)
        );

        // Given times are kept as given, not replaced by now (`rsync -a`).
        let r = t
            .set(
                d,
                None,
                &owner,
                times(
                    Some(SetTime::At(EggsTime(43))),
                    Some(SetTime::At(EggsTime(42))),
                ),
            )
            .unwrap();
        let st = t.stat_dir(d);
        assert_eq!((st.atime, st.mtime), (EggsTime(43), EggsTime(42)));
        assert_eq!(st.ctime, r.ctime);
        // Only the mtime: the atime stays.
        t.set(
            d,
            None,
            &owner,
            times(None, Some(SetTime::At(EggsTime(44)))),
        )
        .unwrap();
        let st = t.stat_dir(d);
        assert_eq!((st.atime, st.mtime), (EggsTime(43), EggsTime(44)));
        // A directory has no cookie.
        assert_eq!(
            t.set(d, Some(1), &owner, chmod(0o700)),
            Err(EggsError::TypeMismatch)
        );

        // The root has no owner but is live, and is root's.
        let r = t
            .set(
                InodeId::ROOT,
                None,
                &Caller::root(),
                times(None, Some(SetTime::At(EggsTime(45)))),
            )
            .unwrap();
        assert_eq!(r.attrs, InodeAttrs::ROOT_DIR);
        assert_eq!(t.stat_dir(InodeId::ROOT).mtime, EggsTime(45));
        assert_eq!(
            t.set(InodeId::ROOT, None, &owner, chmod(0o777)),
            Err(EggsError::NotPermitted)
        );

        // A removed directory's mtime is its removal time, which its expiry counts from.
        let remove = RemoveDirectoryOwnerReq {
            dir_id: d,
            txn_id: 6,
            rollback: false,
        };
        t.req(remove).unwrap();
        let removed = t.stat_dir(d);
        for change in [chmod(0o700), times(None, Some(SetTime::At(EggsTime(42))))] {
            assert_eq!(
                t.set(d, None, &Caller::root(), change),
                Err(EggsError::DirectoryRemoved)
            );
        }
        assert_eq!(t.stat_dir(d), removed);

        // Unknown directory, and one on another shard.
        let ghost = InodeId::new(InodeType::Directory, S0, 77);
        assert_eq!(
            t.set(ghost, None, &Caller::root(), chmod(0o700)),
            Err(EggsError::DirectoryNotFound)
        );
        let other = InodeId::new(InodeType::Directory, ShardId(3), 5);
        assert_eq!(
            t.set(other, None, &Caller::root(), chmod(0o700)),
            Err(EggsError::WrongShard)
        );
    }

    #[test]
    fn ctime_moves_with_attributes_and_names() {
        let mut t = T::new();
        let d = t.dir(5, InodeAttrs::ROOT_DIR);
        let f = t.construct(InodeAttrs::ROOT_FILE, 0);
        let linked = t.link(&f, d, "a");
        let st = t.stat(f.id);
        assert_eq!((st.mtime, st.ctime), (linked, linked));
        let sd = t.stat_dir(d);
        assert_eq!((sd.mtime, sd.ctime), (linked, linked));

        // SetAttr: the file's ctime, not its mtime, nor the directory's times.
        let r = t.set(f.id, None, &Caller::root(), chmod(0o600)).unwrap();
        let st = t.stat(f.id);
        assert_eq!((st.mtime, st.ctime), (linked, r.ctime));
        assert!(r.ctime > linked);
        assert_eq!(t.stat_dir(d), sd);

        // Same-directory rename: the file's ctime and the directory's mtime and ctime.
        let rename = SameDirectoryRenameReq {
            dir_id: d,
            target_id: f.id,
            old_name: n("a"),
            old_creation_time: linked,
            new_name: n("b"),
        };
        let renamed = t.req(rename).unwrap().new_creation_time;
        let st = t.stat(f.id);
        assert_eq!((st.mtime, st.ctime), (linked, renamed));
        let sd = t.stat_dir(d);
        assert_eq!((sd.mtime, sd.ctime), (renamed, renamed));

        // Unlink: the same (the file lives on until the GC collects it).
        let unlink = SoftUnlinkFileReq {
            dir_id: d,
            target_id: f.id,
            name: n("b"),
            creation_time: renamed,
        };
        let unlinked = t.req(unlink).unwrap().delete_creation_time;
        let st = t.stat(f.id);
        assert_eq!((st.mtime, st.ctime), (linked, unlinked));
        let sd = t.stat_dir(d);
        assert_eq!((sd.mtime, sd.ctime), (unlinked, unlinked));

        // An edge made by the CDC (here a subdirectory's): the directory's times move.
        let sub = InodeId::new(InodeType::Directory, S0, 9);
        let create = CreateDirectoryInodeReq {
            id: sub,
            owner_id: d,
            info: Default::default(),
            txn_id: 20,
            attrs: InodeAttrs::ROOT_DIR,
        };
        t.req(create).unwrap();
        let edge = CreateCurrentEdgeReq {
            dir_id: d,
            name: n("sub"),
            target_id: sub,
            overwrite_files: false,
            txn_id: 20,
        };
        let made = t.req(edge).unwrap().creation_time;
        let sd = t.stat_dir(d);
        assert_eq!((sd.mtime, sd.ctime), (made, made));

        // A directory's SetAttr sets a given mtime and moves ctime to now.
        let r = t
            .set(
                d,
                None,
                &Caller::root(),
                times(None, Some(SetTime::At(EggsTime(5)))),
            )
            .unwrap();
        let sd = t.stat_dir(d);
        assert_eq!((sd.mtime, sd.ctime), (EggsTime(5), r.ctime));
        assert!(r.ctime > made);
    }

    #[test]
    fn construct_file_refuses_attributes_that_do_not_fit() {
        let mut t = T::new();
        let first = t.construct(InodeAttrs::ROOT_FILE, 0);
        let bad = [
            (InodeType::File, S_IFDIR | 0o755, 0),
            (InodeType::File, S_IFLNK | 0o777, 0),
            (InodeType::File, 0o644, 0),
            (InodeType::File, S_IFREG | 0o1_0000_0644, 0),
            (InodeType::Symlink, S_IFREG | 0o644, 0),
            (InodeType::Symlink, S_IFIFO | 0o644, 0),
            // A device number only with a device.
            (InodeType::File, S_IFREG | 0o644, 0x103),
            (InodeType::File, S_IFIFO | 0o644, 1),
            (InodeType::File, S_IFSOCK | 0o644, 1),
            (InodeType::Symlink, S_IFLNK | 0o777, 1),
        ];
        for (typ, mode, rdev) in bad {
            let req = ConstructFileReq {
                typ,
                attrs: InodeAttrs::root(mode),
                rdev,
            };
            assert_eq!(
                t.req(req),
                Err(EggsError::BadAttributes),
                "{typ:?} {mode:o} {rdev}"
            );
        }
        let dir = ConstructFileReq {
            typ: InodeType::Directory,
            attrs: InodeAttrs::ROOT_DIR,
            rdev: 0,
        };
        assert_eq!(t.req(dir), Err(EggsError::TypeMismatch));
        // Nothing was made: the next file gets the next id.
        let f = t.construct(InodeAttrs::ROOT_FILE, 0);
        assert_eq!(f.id.counter(), first.id.counter() + 1);

        // A directory inode's mode must be a directory's.
        for mode in [S_IFREG | 0o755, 0o755, S_IFDIR | 0o1_0000_0755] {
            let create = CreateDirectoryInodeReq {
                id: InodeId::new(InodeType::Directory, S0, 5),
                owner_id: InodeId::ROOT,
                info: Default::default(),
                txn_id: 5,
                attrs: InodeAttrs::root(mode),
            };
            assert_eq!(t.req(create), Err(EggsError::BadAttributes), "{mode:o}");
        }
    }

    #[test]
    fn special_files_construct_link_and_stat_with_mode_and_rdev() {
        let mut t = T::new();
        let specials = [
            (attrs(S_IFIFO | 0o640, 1000, 100), 0),
            (attrs(S_IFSOCK | 0o755, 1000, 100), 0),
            (attrs(S_IFCHR | 0o620, 0, 5), (4 << 8) | 1),
            (attrs(S_IFBLK | 0o660, 0, 6), (8 << 8) | 16),
            // A device numbered 0 is a device too.
            (attrs(S_IFCHR | 0o600, 0, 0), 0),
        ];
        for (i, (a, rdev)) in specials.into_iter().enumerate() {
            let f = t.construct(a, rdev);
            assert_eq!(f.id.typ(), Some(InodeType::File));
            // The id says what kind of file it is (listings give d_type from ids alone).
            let kind = eggs_protocol::FileKind::of_mode(a.mode);
            assert_eq!(f.id.file_kind(), Some(kind));
            assert_ne!(kind, eggs_protocol::FileKind::Regular);
            let st = t.req(StatTransientFileReq { id: f.id }).unwrap();
            assert_eq!(st.attrs, a);
            let name = format!("special{i}");
            let linked = t.link(&f, InodeId::ROOT, &name);
            let st = t.stat(f.id);
            assert_eq!((st.attrs, st.rdev, st.size), (a, rdev, 0), "{name}");
            assert_eq!((st.mtime, st.ctime), (linked, linked));
            // chmod keeps the type, and the device number.
            let r = t.set(f.id, None, &Caller::root(), chmod(0o600)).unwrap();
            assert_eq!(r.attrs.mode, a.file_type() | 0o600);
            let st = t.stat(f.id);
            assert_eq!((st.attrs, st.rdev), (r.attrs, rdev));
            let lookup = t
                .req(LookupReq {
                    dir_id: InodeId::ROOT,
                    name: n(&name),
                })
                .unwrap();
            assert_eq!(lookup.target_id, f.id);
            // Deleted and undeleted like any file: the snapshot edge brings back the same
            // inode, type and device number.
            let unlink = SoftUnlinkFileReq {
                dir_id: InodeId::ROOT,
                target_id: f.id,
                name: n(&name),
                creation_time: lookup.creation_time,
            };
            t.req(unlink).unwrap();
            let restore = RestoreSnapshotEdgeReq {
                dir_id: InodeId::ROOT,
                name: n(&name),
                creation_time: lookup.creation_time,
            };
            assert_eq!(t.req(restore).unwrap().target_id, f.id);
            let st = t.stat(f.id);
            assert_eq!((st.attrs, st.rdev), (r.attrs, rdev));
        }
    }
}
