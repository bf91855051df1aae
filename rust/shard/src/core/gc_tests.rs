//! Garbage collection and undelete in the shard core: expiry rules, ownership across
//! renames, destruction steps, idempotence.

// Test code: casts of test patterns and sizes need no checking.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::gc::expired_edges;
use super::*;
use crate::kv::MemKv;
use eggs_protocol::codec::RequestBody;
use eggs_protocol::policy::SnapshotPolicy;
use eggs_protocol::RequestHeader;

struct T {
    core: ShardCore<MemKv>,
    next_id: u64,
    now: u64,
}

impl T {
    fn new() -> T {
        let all: Vec<ShardId> = (0..=255).map(ShardId).collect();
        let opts = ShardOptions {
            transient_deadline_ns: 1_000_000_000,
            ..Default::default()
        };
        let core = ShardCore::open(MemKv::default(), &all, opts, EggsTime(1000)).unwrap();
        T {
            core,
            next_id: 1,
            now: 1_000_000,
        }
    }

    fn req<B: RequestBody<Req = ShardReq, Resp = ShardResp>>(
        &mut self,
        shard: ShardId,
        b: B,
    ) -> Result<B::RespBody, EggsError> {
        self.now += 1000;
        self.next_id += 1;
        let req = ShardRequest {
            header: RequestHeader {
                request_id: self.next_id,
                client_id: 7,
            },
            shard,
            body: b.into_req(),
        };
        let resp = self.core.handle(&req, EggsTime(self.now)).unwrap().result;
        resp.map(|r| B::from_resp(r).expect("response kind matches"))
    }

    fn mkdir(&mut self, owner: InodeId, name: &str, shard: u8, counter: u64) -> InodeId {
        let id = InodeId::new(InodeType::Directory, ShardId(shard), counter);
        let info = DirectoryInfo::default();
        // A transaction id of its own (any increasing number does).
        let txn = self.next_id;
        self.req(
            ShardId(shard),
            CreateDirectoryInodeReq {
                id,
                owner_id: owner,
                info,
                txn_id: txn,
                attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
            },
        )
        .unwrap();
        let c = self
            .req(
                owner.shard(),
                CreateCurrentEdgeReq {
                    dir_id: owner,
                    name: n(name),
                    target_id: id,
                    overwrite_files: false,
                    txn_id: txn,
                },
            )
            .unwrap();
        // The edge is created locked; the CDC's last step unlocks it.
        self.req(
            owner.shard(),
            UnlockCurrentEdgeReq {
                dir_id: owner,
                name: n(name),
                target_id: id,
                creation_time: c.creation_time,
                was_moved: false,
                txn_id: txn,
                new_edge: true,
            },
        )
        .unwrap();
        id
    }

    fn mkfile(&mut self, dir: InodeId, name: &str, data: &[u8]) -> (InodeId, EggsTime) {
        let s = dir.shard();
        let f = self
            .req(
                s,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        self.req(
            s,
            AddInlineSpanReq {
                file_id: f.id,
                cookie: f.cookie,
                byte_offset: 0,
                data: data.to_vec(),
                crc: crc32c::crc32c(data),
            },
        )
        .unwrap();
        let l = self
            .req(
                s,
                LinkFileReq {
                    file_id: f.id,
                    cookie: f.cookie,
                    owner_id: dir,
                    name: n(name),
                },
            )
            .unwrap();
        (f.id, l.creation_time)
    }

    fn unlink(&mut self, dir: InodeId, name: &str, file: InodeId, ctime: EggsTime) {
        self.req(
            dir.shard(),
            SoftUnlinkFileReq {
                dir_id: dir,
                target_id: file,
                name: n(name),
                creation_time: ctime,
            },
        )
        .unwrap();
    }

    /// Collects the whole directory with `policy`; returns (edges removed, files released).
    fn collect(&mut self, dir: InodeId, policy: SnapshotPolicy) -> (u32, u32) {
        let mut start = None;
        let (mut removed, mut released) = (0, 0);
        loop {
            let r = self
                .req(
                    dir.shard(),
                    CollectDirectoryReq {
                        dir_id: dir,
                        policy: policy.clone(),
                        start,
                    },
                )
                .unwrap();
            removed += r.removed_edges;
            released += r.released_files;
            match r.next {
                Some(c) => start = Some(c),
                None => return (removed, released),
            }
        }
    }

    /// Runs the destruction steps on a transient file with inline spans only.
    fn destroy(&mut self, file: InodeId) -> Result<(), EggsError> {
        loop {
            let p = self.req(file.shard(), PrepareSpanErasureReq { file_id: file })?;
            let Some(off) = p.byte_offset else { break };
            assert!(p.blocks.is_empty(), "inline spans have no blocks");
            self.req(
                file.shard(),
                RemoveErasedSpanReq {
                    file_id: file,
                    byte_offset: off,
                    proofs: vec![],
                },
            )?;
        }
        self.req(file.shard(), RemoveTransientFileReq { file_id: file })?;
        Ok(())
    }

    fn stat(&mut self, file: InodeId) -> Result<StatFileResp, EggsError> {
        self.req(file.shard(), StatFileReq { id: file })
    }

    fn is_transient(&mut self, file: InodeId) -> bool {
        self.req(file.shard(), StatTransientFileReq { id: file })
            .is_ok()
    }

    fn snapshots(&mut self, dir: InodeId) -> Vec<Edge> {
        let r = self
            .req(
                dir.shard(),
                FullReadDirReq {
                    dir_id: dir,
                    start: None,
                    mtu: eggs_protocol::MAX_UDP_MTU,
                },
            )
            .unwrap();
        r.entries.into_iter().filter(|e| !e.current).collect()
    }
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

const NOW_EXPIRES: SnapshotPolicy = SnapshotPolicy {
    delete_after_ns: 1,
    delete_after_versions: 0,
};

const KEEP_LONG: SnapshotPolicy = SnapshotPolicy {
    delete_after_ns: 3600 * 1_000_000_000,
    delete_after_versions: 0,
};

fn edge(t: u64, target: u64, owned: bool) -> (EggsTime, InodeId, bool) {
    (EggsTime(t), InodeId(target), owned)
}

#[test]
fn expiry_by_age_versions_and_lone_markers() {
    let age = SnapshotPolicy {
        delete_after_ns: 100,
        delete_after_versions: 0,
    };
    // v1 at 10, overwritten by v2 at 20, deleted at 30; no current edge.
    let edges = [edge(10, 5, true), edge(20, 6, true), edge(30, 0, false)];
    assert_eq!(
        expired_edges(&edges, None, &age, EggsTime(115)),
        [false, false, false]
    );
    assert_eq!(
        expired_edges(&edges, None, &age, EggsTime(120)),
        [true, false, false]
    );
    // v2 expired too: the marker now marks nothing and goes with it.
    assert_eq!(
        expired_edges(&edges, None, &age, EggsTime(130)),
        [true, true, true]
    );
    // A snapshot edge ends when the current edge starts.
    let edges = [edge(10, 5, true)];
    assert_eq!(
        expired_edges(&edges, Some(EggsTime(50)), &age, EggsTime(149)),
        [false]
    );
    assert_eq!(
        expired_edges(&edges, Some(EggsTime(50)), &age, EggsTime(150)),
        [true]
    );
    // Versions: keep the newest two snapshot versions, markers do not count.
    let versions = SnapshotPolicy {
        delete_after_ns: 0,
        delete_after_versions: 2,
    };
    let edges = [
        edge(10, 5, true),
        edge(20, 6, true),
        edge(25, 0, false),
        edge(30, 7, true),
    ];
    assert_eq!(
        expired_edges(&edges, Some(EggsTime(40)), &versions, EggsTime(u64::MAX)),
        [true, false, false, false]
    );
    // No policy: nothing expires, but a marker with nothing before it goes.
    let none = SnapshotPolicy {
        delete_after_ns: 0,
        delete_after_versions: 0,
    };
    let edges = [edge(10, 0, false), edge(20, 6, true)];
    assert_eq!(
        expired_edges(&edges, None, &none, EggsTime(u64::MAX)),
        [true, false]
    );
}

#[test]
fn deleted_file_is_released_destroyed_and_its_metadata_gone() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 3, 1);
    let (f, ct) = t.mkfile(d, "a", b"hello");
    let (keep, _) = t.mkfile(d, "b", b"stays");
    t.unlink(d, "a", f, ct);
    // A long policy keeps it (and undelete stays possible).
    assert_eq!(t.collect(d, KEEP_LONG), (0, 0));
    assert!(t.stat(f).is_ok());
    // The transient file is not destroyable before it is released.
    assert_eq!(t.destroy(f), Err(EggsError::FileNotTransient));
    assert_eq!(t.collect(d, NOW_EXPIRES), (2, 1));
    assert!(t.snapshots(d).is_empty());
    assert_eq!(t.stat(f), Err(EggsError::FileNotFound));
    assert!(t.is_transient(f));
    t.destroy(f).unwrap();
    assert!(!t.is_transient(f));
    let spans = t.req(
        f.shard(),
        FileSpansReq {
            file_id: f,
            byte_offset: 0,
            mtu: 1472,
        },
    );
    assert_eq!(spans, Err(EggsError::FileNotFound));
    // Everything is idempotent: a second GC finds nothing to do and nothing fails.
    assert_eq!(t.collect(d, NOW_EXPIRES), (0, 0));
    t.destroy(f).unwrap();
    t.req(f.shard(), MakeFileTransientReq { file_id: f })
        .unwrap();
    assert!(!t.is_transient(f));
    // The current file was never touched.
    assert_eq!(t.stat(keep).unwrap().size, 5);
}

#[test]
fn transient_files_wait_for_their_deadline_and_lose_their_cookie() {
    let mut t = T::new();
    let s = ShardId(9);
    let f = t
        .req(
            s,
            ConstructFileReq {
                typ: InodeType::File,
                attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                rdev: 0,
            },
        )
        .unwrap();
    t.req(
        s,
        AddInlineSpanReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 0,
            data: b"abandoned".to_vec(),
            crc: crc32c::crc32c(b"abandoned"),
        },
    )
    .unwrap();
    assert_eq!(
        t.req(s, PrepareSpanErasureReq { file_id: f.id })
            .unwrap_err(),
        EggsError::NotExpiredYet
    );
    assert_eq!(
        t.req(s, RemoveTransientFileReq { file_id: f.id })
            .unwrap_err(),
        EggsError::NotExpiredYet
    );
    let listed = t
        .req(
            s,
            VisitTransientFilesReq {
                start_id: InodeId::NULL,
                mtu: 1472,
            },
        )
        .unwrap();
    assert_eq!(listed.files.len(), 1);
    assert_eq!(listed.files[0].id, f.id);
    t.now += 2_000_000_000; // past the deadline
    let p = t.req(s, PrepareSpanErasureReq { file_id: f.id }).unwrap();
    assert_eq!(p.byte_offset, Some(0));
    // The writer that comes back late can change nothing any more.
    let late = t.req(
        s,
        LinkFileReq {
            file_id: f.id,
            cookie: f.cookie,
            owner_id: InodeId::new(InodeType::Directory, s, 1),
            name: n("late"),
        },
    );
    assert_eq!(late.unwrap_err(), EggsError::BadCookie);
    assert_eq!(
        t.req(s, RemoveTransientFileReq { file_id: f.id })
            .unwrap_err(),
        EggsError::FileHasSpans
    );
    t.destroy(f.id).unwrap();
    let listed = t
        .req(
            s,
            VisitTransientFilesReq {
                start_id: InodeId::NULL,
                mtu: 1472,
            },
        )
        .unwrap();
    assert!(listed.files.is_empty());
}

/// The CDC's RemoveDirectoryOwner step, as a transaction of its own.
fn remove_owner(t: &mut T, d: InodeId) {
    let txn_id = t.next_id;
    t.req(
        d.shard(),
        RemoveDirectoryOwnerReq {
            dir_id: d,
            txn_id,
            rollback: false,
        },
    )
    .unwrap();
}

/// The CDC's cross-directory rename, step by step.
fn move_file(
    t: &mut T,
    from: InodeId,
    to: InodeId,
    name: &str,
    f: InodeId,
    ct: EggsTime,
) -> EggsTime {
    let txn = t.next_id;
    t.req(
        from.shard(),
        LockCurrentEdgeReq {
            dir_id: from,
            name: n(name),
            target_id: f,
            creation_time: ct,
            txn_id: txn,
        },
    )
    .unwrap();
    let c = t
        .req(
            to.shard(),
            CreateCurrentEdgeReq {
                dir_id: to,
                name: n(name),
                target_id: f,
                overwrite_files: true,
                txn_id: txn,
            },
        )
        .unwrap();
    t.req(
        from.shard(),
        UnlockCurrentEdgeReq {
            dir_id: from,
            name: n(name),
            target_id: f,
            creation_time: ct,
            was_moved: true,
            txn_id: txn,
            new_edge: false,
        },
    )
    .unwrap();
    t.req(
        to.shard(),
        UnlockCurrentEdgeReq {
            dir_id: to,
            name: n(name),
            target_id: f,
            creation_time: c.creation_time,
            was_moved: false,
            txn_id: txn,
            new_edge: true,
        },
    )
    .unwrap();
    c.creation_time
}

#[test]
fn expiring_edges_of_moved_files_never_destroys_them() {
    let mut t = T::new();
    let a = t.mkdir(InodeId::ROOT, "a", 4, 1);
    let b = t.mkdir(InodeId::ROOT, "b", 5, 1);
    let (f, ct) = t.mkfile(a, "x", b"moved data");
    let ct_b = move_file(&mut t, a, b, "x", f, ct);
    // The moved-away edge and its marker expire; the file stays linked.
    assert_eq!(t.collect(a, NOW_EXPIRES), (2, 0));
    assert_eq!(t.stat(f).unwrap().size, 10);
    // Same-directory rename: the old name does not own the file either.
    let r = t
        .req(
            b.shard(),
            SameDirectoryRenameReq {
                dir_id: b,
                target_id: f,
                old_name: n("x"),
                old_creation_time: ct_b,
                new_name: n("y"),
            },
        )
        .unwrap();
    assert_eq!(t.collect(b, NOW_EXPIRES), (2, 0));
    assert_eq!(t.stat(f).unwrap().size, 10);
    // Deleting it in b (another shard than the file's) releases it through a record.
    t.unlink(b, "y", f, r.new_creation_time);
    assert_eq!(t.collect(b, NOW_EXPIRES), (2, 1));
    assert!(t.stat(f).is_ok(), "the file's own shard decides, later");
    let rel = t
        .req(
            b.shard(),
            VisitReleasedFilesReq {
                start_id: InodeId::NULL,
                mtu: 1472,
            },
        )
        .unwrap();
    assert_eq!(rel.file_ids, vec![f]);
    for _ in 0..2 {
        t.req(f.shard(), MakeFileTransientReq { file_id: f })
            .unwrap();
        t.req(b.shard(), ForgetReleasedFileReq { file_id: f })
            .unwrap();
    }
    assert!(t.is_transient(f));
    let rel = t
        .req(
            b.shard(),
            VisitReleasedFilesReq {
                start_id: InodeId::NULL,
                mtu: 1472,
            },
        )
        .unwrap();
    assert!(rel.file_ids.is_empty());
    t.destroy(f).unwrap();
}

#[test]
fn overwritten_version_is_released_but_the_new_one_is_not() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 6, 1);
    let (old, _) = t.mkfile(d, "v", b"one");
    let (new, _) = t.mkfile(d, "v", b"two!");
    let keep_one = SnapshotPolicy {
        delete_after_ns: 0,
        delete_after_versions: 1,
    };
    assert_eq!(t.collect(d, keep_one.clone()), (0, 0));
    let zero_versions_by_age = NOW_EXPIRES;
    assert_eq!(t.collect(d, zero_versions_by_age), (1, 1));
    assert!(t.is_transient(old));
    assert_eq!(t.stat(new).unwrap().size, 4);
}

#[test]
fn undelete_before_and_after_expiry() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 7, 1);
    let (f, ct) = t.mkfile(d, "a", b"precious");
    t.unlink(d, "a", f, ct);
    let restore = |t: &mut T, ct| {
        t.req(
            d.shard(),
            RestoreSnapshotEdgeReq {
                dir_id: d,
                name: n("a"),
                creation_time: ct,
            },
        )
    };
    let r = restore(&mut t, ct).unwrap();
    assert_eq!(r.target_id, f);
    let l = t
        .req(
            d.shard(),
            LookupReq {
                dir_id: d,
                name: n("a"),
            },
        )
        .unwrap();
    assert_eq!(l.target_id, f);
    // The name exists now: a second restore fails clearly.
    assert_eq!(restore(&mut t, ct).unwrap_err(), EggsError::NameExists);
    // The restored file is owned by its current edge: expiring the old marker is harmless.
    t.collect(d, NOW_EXPIRES);
    assert_eq!(t.stat(f).unwrap().size, 8);
    // Delete again, let it expire: the data is gone.
    t.unlink(d, "a", f, r.creation_time);
    t.collect(d, NOW_EXPIRES);
    assert_eq!(
        restore(&mut t, r.creation_time).unwrap_err(),
        EggsError::SnapshotNotFound
    );
}

#[test]
fn undelete_refuses_a_moved_away_version() {
    let mut t = T::new();
    let a = t.mkdir(InodeId::ROOT, "a", 8, 1);
    let b = t.mkdir(InodeId::ROOT, "b", 8, 2);
    let (f, ct) = t.mkfile(a, "x", b"data");
    move_file(&mut t, a, b, "x", f, ct);
    let r = t.req(
        a.shard(),
        RestoreSnapshotEdgeReq {
            dir_id: a,
            name: n("x"),
            creation_time: ct,
        },
    );
    assert_eq!(r.unwrap_err(), EggsError::EdgeNotOwned);
}

#[test]
fn removed_empty_directory_is_destroyed_after_its_age() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 10, 1);
    let (f, ct) = t.mkfile(d, "a", b"x");
    let destroy = |t: &mut T, ns| {
        t.req(
            d.shard(),
            DestroyDirectoryReq {
                dir_id: d,
                delete_after_ns: ns,
            },
        )
    };
    assert_eq!(
        destroy(&mut t, 1).unwrap_err(),
        EggsError::DirectoryNotRemoved
    );
    t.unlink(d, "a", f, ct);
    remove_owner(&mut t, d);
    assert_eq!(
        destroy(&mut t, 1).unwrap_err(),
        EggsError::DirectoryNotEmpty
    );
    t.collect(d, NOW_EXPIRES);
    assert_eq!(destroy(&mut t, 0).unwrap_err(), EggsError::NotExpiredYet);
    assert_eq!(
        destroy(&mut t, 3600 * 1_000_000_000).unwrap_err(),
        EggsError::NotExpiredYet
    );
    destroy(&mut t, 1).unwrap();
    destroy(&mut t, 1).unwrap();
    let st = t.req(d.shard(), StatDirectoryReq { id: d });
    assert_eq!(st.unwrap_err(), EggsError::DirectoryNotFound);
    let dirs = t
        .req(
            d.shard(),
            VisitDirectoriesReq {
                start_id: InodeId::NULL,
                mtu: 1472,
            },
        )
        .unwrap();
    assert!(dirs.dirs.iter().all(|x| x.id != d));
    // A late copy of the MakeDirectory's CreateDirectoryInode (its transaction came before
    // the rmdir's) must not bring it back: the inode's fence outlives the directory.
    let late = CreateDirectoryInodeReq {
        id: d,
        owner_id: InodeId::ROOT,
        info: DirectoryInfo::default(),
        txn_id: 1,
        attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
    };
    assert_eq!(
        t.req(d.shard(), late).unwrap_err(),
        EggsError::DirectoryRemoved
    );
    let st = t.req(d.shard(), StatDirectoryReq { id: d });
    assert_eq!(st.unwrap_err(), EggsError::DirectoryNotFound);
}

#[test]
fn collection_pages_through_a_large_directory() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 11, 1);
    for i in 0..1500 {
        let name = format!("f{i}");
        let (f, ct) = t.mkfile(d, &name, b"z");
        t.unlink(d, &name, f, ct);
    }
    let mut pages = 0;
    let mut start = None;
    let mut released = 0;
    loop {
        let r = t
            .req(
                d.shard(),
                CollectDirectoryReq {
                    dir_id: d,
                    policy: NOW_EXPIRES,
                    start,
                },
            )
            .unwrap();
        pages += 1;
        released += r.released_files;
        match r.next {
            Some(c) => start = Some(c),
            None => break,
        }
    }
    assert!(pages >= 2, "bounded work per request");
    assert_eq!(released, 1500);
    assert!(t.snapshots(d).is_empty());
}

#[test]
fn reattach_brings_back_a_removed_directory_until_it_is_destroyed() {
    let mut t = T::new();
    let d = t.mkdir(InodeId::ROOT, "d", 12, 1);
    let reattach = |t: &mut T, owner| {
        t.req(
            d.shard(),
            ReattachDirectoryReq {
                dir_id: d,
                owner_id: owner,
                txn_id: t.next_id,
            },
        )
    };
    // Live with its owner: idempotent; with another: refused.
    reattach(&mut t, InodeId::ROOT).unwrap();
    let other = InodeId::new(InodeType::Directory, ShardId(13), 1);
    assert_eq!(
        reattach(&mut t, other).unwrap_err(),
        EggsError::DirectoryNotRemoved
    );
    remove_owner(&mut t, d);
    reattach(&mut t, InodeId::ROOT).unwrap();
    reattach(&mut t, InodeId::ROOT).unwrap();
    let st = t.req(d.shard(), StatDirectoryReq { id: d }).unwrap();
    assert_eq!(st.owner_id, InodeId::ROOT);
    // Re-attached, the GC cannot destroy it; removed again and destroyed, it is gone.
    assert_eq!(
        t.req(
            d.shard(),
            DestroyDirectoryReq {
                dir_id: d,
                delete_after_ns: 1
            }
        )
        .unwrap_err(),
        EggsError::DirectoryNotRemoved
    );
    remove_owner(&mut t, d);
    t.req(
        d.shard(),
        DestroyDirectoryReq {
            dir_id: d,
            delete_after_ns: 1,
        },
    )
    .unwrap();
    assert_eq!(
        reattach(&mut t, InodeId::ROOT).unwrap_err(),
        EggsError::SnapshotNotFound
    );
}
