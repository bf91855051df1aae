// Test code: casts of test patterns and sizes need no checking.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::*;
use crate::kv::MemKv;
use eggs_protocol::codec::RequestBody;
use eggs_protocol::{EncodedLen, RequestHeader, MAX_INLINE_SPAN};

struct T {
    core: ShardCore<MemKv>,
    next_id: u64,
    now: u64,
    /// CDC transaction ids for the steps the helpers send (tests that pick their own use
    /// larger ones).
    next_txn: u64,
}

const ALL: fn() -> Vec<ShardId> = || (0..=255).map(ShardId).collect();

impl T {
    fn new() -> T {
        let core = ShardCore::open(
            MemKv::default(),
            &ALL(),
            ShardOptions::default(),
            EggsTime(1000),
        )
        .unwrap();
        T {
            core,
            next_id: 1,
            now: 1_000_000,
            next_txn: 1,
        }
    }

    /// A new CDC transaction id (ids grow, as the CDC's do).
    fn txn(&mut self) -> u64 {
        self.next_txn += 1;
        assert!(
            self.next_txn < 100,
            "helper transaction ids stay below the tests' own"
        );
        self.next_txn
    }

    fn send_with(
        &mut self,
        shard: ShardId,
        header: RequestHeader,
        body: ShardReq,
    ) -> Result<ShardResp, EggsError> {
        self.now += 1000;
        let req = ShardRequest {
            header,
            shard,
            body,
        };
        self.core.handle(&req, EggsTime(self.now)).unwrap().result
    }

    /// Drops every deduplication entry, as their expiry does: copies of earlier requests
    /// run again.
    fn forget_dedup(&mut self) {
        let later = EggsTime(self.now + ShardOptions::default().dedup_keep_ns + 1);
        self.core.expire_dedup(later).unwrap();
    }

    fn header(&mut self) -> RequestHeader {
        self.next_id += 1;
        RequestHeader {
            request_id: self.next_id,
            client_id: 42,
        }
    }

    fn req<B: RequestBody<Req = ShardReq, Resp = ShardResp>>(
        &mut self,
        shard: ShardId,
        b: B,
    ) -> Result<B::RespBody, EggsError> {
        let h = self.header();
        self.send_with(shard, h, b.into_req())
            .map(|r| B::from_resp(r).expect("response kind matches"))
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
        for (i, c) in data.chunks(MAX_INLINE_SPAN).enumerate() {
            self.req(
                s,
                AddInlineSpanReq {
                    file_id: f.id,
                    cookie: f.cookie,
                    byte_offset: (i * MAX_INLINE_SPAN) as u64,
                    data: c.to_vec(),
                    crc: crc32c::crc32c(c),
                },
            )
            .unwrap();
        }
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

    fn mkdir(&mut self, parent: InodeId, name: &str, counter: u64, shard: u8) -> InodeId {
        let id = InodeId::new(InodeType::Directory, ShardId(shard), counter);
        let txn = self.txn();
        self.req(
            ShardId(shard),
            CreateDirectoryInodeReq {
                id,
                owner_id: parent,
                info: Default::default(),
                txn_id: txn,
                attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
            },
        )
        .unwrap();
        let c = self
            .req(
                parent.shard(),
                CreateCurrentEdgeReq {
                    dir_id: parent,
                    name: n(name),
                    target_id: id,
                    overwrite_files: false,
                    txn_id: txn,
                },
            )
            .unwrap();
        // The edge is created locked; the CDC's last step unlocks it.
        self.req(
            parent.shard(),
            UnlockCurrentEdgeReq {
                dir_id: parent,
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

    fn names(&mut self, dir: InodeId) -> Vec<String> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .req(
                    dir.shard(),
                    ReadDirReq {
                        dir_id: dir,
                        start,
                        mtu: 1472,
                    },
                )
                .unwrap();
            out.extend(r.entries.iter().map(|e| e.name.to_string()));
            match r.next {
                Some(c) => start = Some(c),
                None => return out,
            }
        }
    }

    fn full(&mut self, dir: InodeId) -> Vec<Edge> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .req(
                    dir.shard(),
                    FullReadDirReq {
                        dir_id: dir,
                        start,
                        mtu: 1472,
                    },
                )
                .unwrap();
            out.extend(r.entries);
            match r.next {
                Some(c) => start = Some(c),
                None => return out,
            }
        }
    }
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

const ROOT: InodeId = InodeId::ROOT;
const S0: ShardId = ShardId(0);

#[test]
fn root_exists_with_complete_policies() {
    let mut t = T::new();
    let r = t.req(S0, StatDirectoryReq { id: ROOT }).unwrap();
    assert!(r.owner_id.is_null());
    assert!(r.info.is_complete());
    assert_eq!(
        t.req(
            S0,
            LookupReq {
                dir_id: ROOT,
                name: n("x")
            }
        ),
        Err(EggsError::NameNotFound)
    );
}

#[test]
fn small_file_round_trip() {
    let mut t = T::new();
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let (id, ctime) = t.mkfile(ROOT, "f", &data);
    let l = t
        .req(
            S0,
            LookupReq {
                dir_id: ROOT,
                name: n("f"),
            },
        )
        .unwrap();
    assert_eq!((l.target_id, l.creation_time), (id, ctime));
    assert_eq!(t.req(S0, StatFileReq { id }).unwrap().size, 10_000);
    let mut read = Vec::new();
    let mut off = Some(0);
    while let Some(o) = off {
        let r = t
            .req(
                S0,
                FileSpansReq {
                    file_id: id,
                    byte_offset: o,
                    mtu: 8972,
                },
            )
            .unwrap();
        for s in r.spans {
            let SpanBody::Inline(d) = s.body else {
                panic!("inline span")
            };
            assert_eq!(s.byte_offset as usize, read.len());
            read.extend(d);
        }
        off = r.next_offset;
    }
    assert_eq!(read, data);
}

#[test]
fn transient_file_checks() {
    let mut t = T::new();
    let f = t
        .req(
            S0,
            ConstructFileReq {
                typ: InodeType::File,
                attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                rdev: 0,
            },
        )
        .unwrap();
    let span = |off: u64, cookie: u64, data: &[u8], crc: u32| AddInlineSpanReq {
        file_id: f.id,
        cookie,
        byte_offset: off,
        data: data.to_vec(),
        crc,
    };
    let crc = crc32c::crc32c(b"abc");
    assert_eq!(
        t.req(S0, span(0, f.cookie ^ 1, b"abc", crc)),
        Err(EggsError::BadCookie)
    );
    assert_eq!(
        t.req(S0, span(1, f.cookie, b"abc", crc)),
        Err(EggsError::BadSpanOffset)
    );
    assert_eq!(
        t.req(S0, span(0, f.cookie, b"abc", crc ^ 1)),
        Err(EggsError::BadSpanCrc)
    );
    t.req(S0, span(0, f.cookie, b"abc", crc)).unwrap();
    let st = t.req(S0, StatTransientFileReq { id: f.id }).unwrap();
    assert_eq!(st.size, 3);
    assert!(st.deadline.0 > st.mtime.0);
    // Not visible to readers of the namespace, and not stat-able as a linked file.
    assert_eq!(
        t.req(S0, StatFileReq { id: f.id }),
        Err(EggsError::FileNotFound)
    );
    assert_eq!(
        t.req(
            S0,
            ConstructFileReq {
                typ: InodeType::Directory,
                attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
                rdev: 0,
            }
        ),
        Err(EggsError::TypeMismatch)
    );
}

#[test]
fn overwrite_leaves_snapshot() {
    let mut t = T::new();
    let (a, at) = t.mkfile(ROOT, "f", b"one");
    let (b, bt) = t.mkfile(ROOT, "f", b"two");
    assert_eq!(t.names(ROOT), ["f"]);
    let edges = t.full(ROOT);
    assert_eq!(edges.len(), 2);
    assert_eq!(
        (edges[0].target_id, edges[0].creation_time, edges[0].current),
        (a, at, false)
    );
    assert_eq!(
        (edges[1].target_id, edges[1].creation_time, edges[1].current),
        (b, bt, true)
    );
}

#[test]
fn rename_and_unlink_leave_history() {
    let mut t = T::new();
    let (a, at) = t.mkfile(ROOT, "a", b"x");
    let r = t
        .req(
            S0,
            SameDirectoryRenameReq {
                dir_id: ROOT,
                target_id: a,
                old_name: n("a"),
                old_creation_time: at,
                new_name: n("b"),
            },
        )
        .unwrap();
    assert_eq!(t.names(ROOT), ["b"]);
    // Stale creation time is refused.
    assert_eq!(
        t.req(
            S0,
            SoftUnlinkFileReq {
                dir_id: ROOT,
                target_id: a,
                name: n("b"),
                creation_time: at
            }
        ),
        Err(EggsError::MismatchingCreationTime)
    );
    t.req(
        S0,
        SoftUnlinkFileReq {
            dir_id: ROOT,
            target_id: a,
            name: n("b"),
            creation_time: r.new_creation_time,
        },
    )
    .unwrap();
    assert!(t.names(ROOT).is_empty());
    let edges = t.full(ROOT);
    // a: snapshot + deletion marker; b: snapshot + deletion marker.
    assert_eq!(edges.len(), 4);
    assert!(edges.iter().all(|e| !e.current));
    assert_eq!(edges.iter().filter(|e| e.target_id.is_null()).count(), 2);
}

#[test]
fn rename_cannot_replace_directory() {
    let mut t = T::new();
    let (f, ft) = t.mkfile(ROOT, "f", b"x");
    t.mkdir(ROOT, "d", 1, 7);
    assert_eq!(
        t.req(
            S0,
            SameDirectoryRenameReq {
                dir_id: ROOT,
                target_id: f,
                old_name: n("f"),
                old_creation_time: ft,
                new_name: n("d"),
            }
        ),
        Err(EggsError::CannotOverrideDirectory)
    );
}

#[test]
fn retried_request_is_not_applied_twice() {
    let mut t = T::new();
    let (a, at) = t.mkfile(ROOT, "a", b"x");
    let h = t.header();
    let body = ShardReq::SameDirectoryRename(SameDirectoryRenameReq {
        dir_id: ROOT,
        target_id: a,
        old_name: n("a"),
        old_creation_time: at,
        new_name: n("b"),
    });
    let first = t.send_with(S0, h, body.clone()).unwrap();
    let again = t.send_with(S0, h, body.clone()).unwrap();
    assert_eq!(first, again);
    // A different request id is a new request, which now fails.
    let h2 = t.header();
    assert_eq!(t.send_with(S0, h2, body), Err(EggsError::NameNotFound));
    // Once the window passes, entries are forgotten.
    let later = EggsTime(t.now + ShardOptions::default().dedup_keep_ns + 1);
    assert!(t.core.expire_dedup(later).unwrap() > 0);
}

#[test]
fn readdir_pages_cover_everything_once_in_order() {
    let mut t = T::new();
    let dir = t.mkdir(ROOT, "big", 1, 3);
    let mut expected = Vec::new();
    for i in 0..700 {
        let name = format!("file-{i:04}-{}", "x".repeat(i % 50));
        t.mkfile(dir, &name, b"");
        expected.push(name);
    }
    let got = t.names(dir);
    assert_eq!(got.len(), 700);
    let mut sorted = got.clone();
    sorted.sort_by_key(|s| (Name::new(s.as_str()).unwrap().hash64(), s.clone()));
    assert_eq!(got, sorted, "listing is in (hash, name) order");
    let mut e = expected.clone();
    e.sort();
    let mut g = got;
    g.sort();
    assert_eq!(g, e);
    // Full listing with history pages correctly too: overwrite every tenth name.
    for i in (0..700).step_by(10) {
        t.mkfile(dir, &expected[i], b"again");
    }
    let full = t.full(dir);
    assert_eq!(full.len(), 770);
    assert_eq!(full.iter().filter(|e| e.current).count(), 700);
}

#[test]
fn cdc_steps_are_idempotent_and_locks_block_clients() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let (f, ft) = t.mkfile(ROOT, "f", b"x");
    let lock = LockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        txn_id: 105,
    };
    t.req(S0, lock.clone()).unwrap();
    t.req(S0, lock.clone()).unwrap();
    assert_eq!(
        t.req(
            S0,
            SoftUnlinkFileReq {
                dir_id: ROOT,
                target_id: f,
                name: n("f"),
                creation_time: ft
            }
        ),
        Err(EggsError::EdgeLocked)
    );
    let create = CreateCurrentEdgeReq {
        dir_id: d1,
        name: n("g"),
        target_id: f,
        overwrite_files: true,
        txn_id: 101,
    };
    let h = t.header();
    let c1 = t.send_with(ShardId(1), h, create.clone().into_req());
    let c2 = t.send_with(ShardId(1), h, create.clone().into_req());
    assert_eq!(c1, c2);
    // Even once its deduplication entry expired, a copy of the step finds its own edge.
    t.forget_dedup();
    let c3 = t.send_with(ShardId(1), h, create.clone().into_req());
    assert_eq!(c1, c3);
    // Another transaction cannot claim it.
    let other = CreateCurrentEdgeReq {
        txn_id: 102,
        ..create
    };
    assert_eq!(t.req(ShardId(1), other), Err(EggsError::MismatchingTarget));
    let unlock = UnlockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        was_moved: true,
        txn_id: 105,
        new_edge: false,
    };
    t.req(S0, unlock.clone()).unwrap();
    t.req(S0, unlock).unwrap();
    assert_eq!(t.names(ROOT), ["d1"]);
    assert_eq!(t.names(d1), ["g"]);
}

/// The edge CreateCurrentEdge makes is locked until the CDC's last step: visible to reads,
/// but clients cannot replace, unlink or rename it.
#[test]
fn a_created_edge_is_locked_until_unlocked() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let (f, _) = t.mkfile(ROOT, "f", b"x");
    let c = t
        .req(
            ShardId(1),
            CreateCurrentEdgeReq {
                dir_id: d1,
                name: n("g"),
                target_id: f,
                overwrite_files: true,
                txn_id: 7,
            },
        )
        .unwrap();
    assert_eq!(t.core.edge_locked(d1, &n("g")).unwrap(), Some(true));
    assert_eq!(t.names(d1), ["g"], "a locked edge is listed");
    let found = t
        .req(
            ShardId(1),
            LookupReq {
                dir_id: d1,
                name: n("g"),
            },
        )
        .unwrap();
    assert_eq!((found.target_id, found.creation_time), (f, c.creation_time));
    let unlink = SoftUnlinkFileReq {
        dir_id: d1,
        target_id: f,
        name: n("g"),
        creation_time: c.creation_time,
    };
    assert_eq!(
        t.req(ShardId(1), unlink.clone()),
        Err(EggsError::EdgeLocked)
    );
    let rename = SameDirectoryRenameReq {
        dir_id: d1,
        target_id: f,
        old_name: n("g"),
        old_creation_time: c.creation_time,
        new_name: n("h"),
    };
    assert_eq!(t.req(ShardId(1), rename), Err(EggsError::EdgeLocked));
    let g = t
        .req(
            ShardId(1),
            ConstructFileReq {
                typ: InodeType::File,
                attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                rdev: 0,
            },
        )
        .unwrap();
    let link = LinkFileReq {
        file_id: g.id,
        cookie: g.cookie,
        owner_id: d1,
        name: n("g"),
    };
    assert_eq!(t.req(ShardId(1), link), Err(EggsError::EdgeLocked));
    t.req(
        ShardId(1),
        UnlockCurrentEdgeReq {
            dir_id: d1,
            name: n("g"),
            target_id: f,
            creation_time: c.creation_time,
            was_moved: false,
            txn_id: 7,
            new_edge: true,
        },
    )
    .unwrap();
    t.req(ShardId(1), unlink).unwrap();
}

/// Bug D: a copy of CreateCurrentEdge that arrives after its transaction finished (its
/// deduplication entry expired) must not create the edge again, whatever clients did with
/// it since (found by the simulator).
#[test]
fn a_late_create_step_never_recreates_an_edge() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let (f, _) = t.mkfile(ROOT, "f", b"x");
    let create = |name: &str, target| {
        CreateCurrentEdgeReq {
            dir_id: d1,
            name: n(name),
            target_id: target,
            overwrite_files: true,
            txn_id: 7,
        }
        .into_req()
    };
    let s1 = ShardId(1);
    // The transaction: create locked, then unlock as its last step.
    let h = t.header();
    let Ok(ShardResp::CreateCurrentEdge(c)) = t.send_with(s1, h, create("g", f)) else {
        panic!("create failed");
    };
    let unlock = UnlockCurrentEdgeReq {
        dir_id: d1,
        name: n("g"),
        target_id: f,
        creation_time: c.creation_time,
        was_moved: false,
        txn_id: 7,
        new_edge: true,
    };
    t.req(s1, unlock).unwrap();
    // A late copy finds the edge unlocked: the transaction is over.
    t.forget_dedup();
    assert_eq!(
        t.send_with(s1, h, create("g", f)),
        Err(EggsError::EdgeNotLocked)
    );
    assert_eq!(t.core.edge_locked(d1, &n("g")).unwrap(), Some(false));
    // A client replaces the edge; a late copy must not put the old file back.
    let (g, gt) = t.mkfile(d1, "g", b"new");
    t.forget_dedup();
    assert_eq!(
        t.send_with(s1, h, create("g", f)),
        Err(EggsError::EdgeNotLocked)
    );
    let lookup = |t: &mut T| {
        t.req(
            s1,
            LookupReq {
                dir_id: d1,
                name: n("g"),
            },
        )
    };
    let found = lookup(&mut t).unwrap();
    assert_eq!((found.target_id, found.creation_time), (g, gt));
    // The client unlinks it; a late copy must not bring the old file back either.
    t.req(
        s1,
        SoftUnlinkFileReq {
            dir_id: d1,
            target_id: g,
            name: n("g"),
            creation_time: gt,
        },
    )
    .unwrap();
    t.forget_dedup();
    assert_eq!(
        t.send_with(s1, h, create("g", f)),
        Err(EggsError::EdgeNotLocked)
    );
    assert_eq!(lookup(&mut t), Err(EggsError::NameNotFound));
    assert_eq!(t.names(d1), Vec::<String>::new());
}

/// The same for a directory (MakeDirectory, RenameDirectory, UndeleteDirectory) renamed
/// within its new parent afterwards: a late copy must not link it a second time. Another
/// transaction moving it back under that name is no copy and succeeds.
#[test]
fn a_late_create_step_never_links_a_directory_twice() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let d5 = InodeId::new(InodeType::Directory, ShardId(5), 5);
    let s1 = ShardId(1);
    let create = CreateCurrentEdgeReq {
        dir_id: d1,
        name: n("a"),
        target_id: d5,
        overwrite_files: false,
        txn_id: 7,
    };
    let h = t.header();
    let Ok(ShardResp::CreateCurrentEdge(c)) = t.send_with(s1, h, create.clone().into_req()) else {
        panic!("create failed");
    };
    let unlock = |ct| UnlockCurrentEdgeReq {
        dir_id: d1,
        name: n("a"),
        target_id: d5,
        creation_time: ct,
        was_moved: false,
        txn_id: 7,
        new_edge: true,
    };
    t.req(s1, unlock(c.creation_time)).unwrap();
    let r = t
        .req(
            s1,
            SameDirectoryRenameReq {
                dir_id: d1,
                target_id: d5,
                old_name: n("a"),
                old_creation_time: c.creation_time,
                new_name: n("b"),
            },
        )
        .unwrap();
    t.forget_dedup();
    assert_eq!(
        t.send_with(s1, h, create.clone().into_req()),
        Err(EggsError::EdgeNotLocked)
    );
    assert_eq!(t.names(d1), ["b"]);
    assert_eq!(t.core.edge_locked(d1, &n("a")).unwrap(), None);
    // Moved away for real, then back by another transaction: that one is no late copy.
    t.req(
        s1,
        LockCurrentEdgeReq {
            dir_id: d1,
            name: n("b"),
            target_id: d5,
            creation_time: r.new_creation_time,
            txn_id: 8,
        },
    )
    .unwrap();
    t.req(
        s1,
        UnlockCurrentEdgeReq {
            dir_id: d1,
            name: n("b"),
            target_id: d5,
            creation_time: r.new_creation_time,
            was_moved: true,
            txn_id: 8,
            new_edge: false,
        },
    )
    .unwrap();
    assert_eq!(
        t.req(s1, create.clone()),
        Err(EggsError::EdgeNotLocked),
        "still a late copy"
    );
    let again = t
        .req(
            s1,
            CreateCurrentEdgeReq {
                txn_id: 9,
                ..create
            },
        )
        .unwrap();
    assert!(again.creation_time > c.creation_time);
    assert_eq!(t.core.edge_locked(d1, &n("a")).unwrap(), Some(true));
}

/// A create that failed, so that its transaction rolled back: the transaction's fence
/// (creation time 0) removes an edge that a late copy of the create made once the name was
/// free, and later copies are refused.
#[test]
fn a_rolled_back_create_stays_undone() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let (f, _) = t.mkfile(ROOT, "f", b"x");
    let (g, gt) = t.mkfile(d1, "g", b"y");
    let s1 = ShardId(1);
    let create = |txn_id| CreateCurrentEdgeReq {
        dir_id: d1,
        name: n("g"),
        target_id: f,
        overwrite_files: false,
        txn_id,
    };
    assert_eq!(t.req(s1, create(7)), Err(EggsError::NameExists));
    t.req(
        s1,
        SoftUnlinkFileReq {
            dir_id: d1,
            target_id: g,
            name: n("g"),
            creation_time: gt,
        },
    )
    .unwrap();
    // A late copy, before the fence: it takes effect, but only locked.
    t.req(s1, create(7)).unwrap();
    assert_eq!(t.core.edge_locked(d1, &n("g")).unwrap(), Some(true));
    let fence = UnlockCurrentEdgeReq {
        dir_id: d1,
        name: n("g"),
        target_id: f,
        creation_time: EggsTime(0),
        was_moved: false,
        txn_id: 7,
        new_edge: true,
    };
    t.req(s1, fence.clone()).unwrap();
    assert_eq!(t.core.edge_locked(d1, &n("g")).unwrap(), None);
    t.req(s1, fence).unwrap();
    assert_eq!(t.req(s1, create(7)), Err(EggsError::EdgeNotLocked));
    assert_eq!(t.req(s1, create(6)), Err(EggsError::EdgeNotLocked));
    assert_eq!(t.names(d1), Vec::<String>::new());
    // A later transaction is no late copy.
    t.req(s1, create(8)).unwrap();
    assert_eq!(t.names(d1), ["g"]);
}

/// A late copy of a transaction's unlock must not release the lock that a later
/// transaction (here a rename away) holds on the same edge (found by the simulator).
#[test]
fn a_late_fence_never_releases_another_lock() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let (f, _) = t.mkfile(ROOT, "f", b"x");
    let s1 = ShardId(1);
    let c = t
        .req(
            s1,
            CreateCurrentEdgeReq {
                dir_id: d1,
                name: n("g"),
                target_id: f,
                overwrite_files: true,
                txn_id: 7,
            },
        )
        .unwrap();
    let unlock = UnlockCurrentEdgeReq {
        dir_id: d1,
        name: n("g"),
        target_id: f,
        creation_time: c.creation_time,
        was_moved: false,
        txn_id: 7,
        new_edge: true,
    };
    t.req(s1, unlock.clone()).unwrap();
    t.req(
        s1,
        LockCurrentEdgeReq {
            dir_id: d1,
            name: n("g"),
            target_id: f,
            creation_time: c.creation_time,
            txn_id: 8,
        },
    )
    .unwrap();
    t.req(s1, unlock).unwrap();
    assert_eq!(t.core.edge_locked(d1, &n("g")).unwrap(), Some(true));
}

#[test]
fn directory_removal_rules() {
    let mut t = T::new();
    let d = t.mkdir(ROOT, "d", 5, 9);
    t.mkfile(d, "f", b"x");
    let remove = |txn_id| RemoveDirectoryOwnerReq {
        dir_id: d,
        txn_id,
        rollback: false,
    };
    assert_eq!(
        t.req(ShardId(9), remove(101)),
        Err(EggsError::DirectoryNotEmpty)
    );
    let e = t
        .req(
            ShardId(9),
            LookupReq {
                dir_id: d,
                name: n("f"),
            },
        )
        .unwrap();
    t.req(
        ShardId(9),
        SoftUnlinkFileReq {
            dir_id: d,
            target_id: e.target_id,
            name: n("f"),
            creation_time: e.creation_time,
        },
    )
    .unwrap();
    // Only snapshot edges left: that is empty.
    t.req(ShardId(9), remove(102)).unwrap();
    t.req(ShardId(9), remove(102)).unwrap();
    let f = t
        .req(
            ShardId(9),
            ConstructFileReq {
                typ: InodeType::File,
                attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                rdev: 0,
            },
        )
        .unwrap();
    assert_eq!(
        t.req(
            ShardId(9),
            LinkFileReq {
                file_id: f.id,
                cookie: f.cookie,
                owner_id: d,
                name: n("g")
            }
        ),
        Err(EggsError::DirectoryRemoved)
    );
    assert_eq!(
        t.req(
            S0,
            RemoveDirectoryOwnerReq {
                dir_id: ROOT,
                txn_id: 103,
                rollback: false
            }
        ),
        Err(EggsError::CannotRemoveRoot)
    );
    // Undoing a mkdir needs the directory to be untouched.
    let fresh = InodeId::new(InodeType::Directory, ShardId(9), 77);
    t.req(
        ShardId(9),
        CreateDirectoryInodeReq {
            id: fresh,
            owner_id: ROOT,
            info: Default::default(),
            txn_id: 104,
            attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
        },
    )
    .unwrap();
    t.req(
        ShardId(9),
        RemoveDirectoryInodeReq {
            id: fresh,
            owner_id: ROOT,
            txn_id: 104,
        },
    )
    .unwrap();
    t.req(
        ShardId(9),
        RemoveDirectoryInodeReq {
            id: fresh,
            owner_id: ROOT,
            txn_id: 104,
        },
    )
    .unwrap();
    assert_eq!(
        t.req(ShardId(9), StatDirectoryReq { id: fresh }),
        Err(EggsError::DirectoryNotFound)
    );
}

#[test]
fn wrong_shard_and_types() {
    let mut t = T::new();
    assert_eq!(
        t.req(
            ShardId(1),
            LookupReq {
                dir_id: ROOT,
                name: n("x")
            }
        ),
        Err(EggsError::WrongShard)
    );
    let (f, _) = t.mkfile(ROOT, "f", b"x");
    assert_eq!(
        t.req(
            S0,
            LookupReq {
                dir_id: f,
                name: n("x")
            }
        ),
        Err(EggsError::NotADirectory)
    );
    let core = ShardCore::open(
        MemKv::default(),
        &[ShardId(1)],
        ShardOptions::default(),
        EggsTime(1),
    )
    .unwrap();
    let mut only1 = T {
        core,
        next_id: 1,
        now: 5,
        next_txn: 1,
    };
    assert_eq!(
        only1.req(S0, StatDirectoryReq { id: ROOT }),
        Err(EggsError::WrongShard)
    );
}

#[test]
fn creation_times_increase_even_if_clock_steps_back() {
    let mut t = T::new();
    let (_, t1) = t.mkfile(ROOT, "a", b"");
    t.now -= 500_000;
    let (_, t2) = t.mkfile(ROOT, "b", b"");
    assert!(t2 > t1);
}

#[test]
fn policies() {
    let mut t = T::new();
    let d = t.mkdir(ROOT, "d", 1, 2);
    let mut info = DirectoryInfo {
        stripe: Some(eggs_protocol::policy::StripePolicy {
            target_stripe_size: 123,
        }),
        ..Default::default()
    };
    assert_eq!(
        t.req(
            ShardId(2),
            SetDirectoryInfoReq {
                id: d,
                info: info.clone()
            }
        ),
        Err(EggsError::BadPolicy)
    );
    info.stripe = Some(eggs_protocol::policy::StripePolicy {
        target_stripe_size: 8192,
    });
    t.req(
        ShardId(2),
        SetDirectoryInfoReq {
            id: d,
            info: info.clone(),
        },
    )
    .unwrap();
    assert_eq!(
        t.req(ShardId(2), StatDirectoryReq { id: d }).unwrap().info,
        info
    );
    assert_eq!(
        t.req(S0, SetDirectoryInfoReq { id: ROOT, info }),
        Err(EggsError::BadPolicy)
    );
}

mod spans {
    use super::*;
    use eggs_common::crypto;
    use eggs_protocol::policy::{Parity, StorageClass};
    use eggs_protocol::shuckle::{flags, BlockServiceInfo, BlockServiceWithKey};
    use eggs_protocol::{Addr, BlockServiceId};

    fn services(n: u64, domains: u64, flags_of: impl Fn(u64) -> u8) -> Vec<BlockServiceWithKey> {
        (0..n)
            .map(|i| BlockServiceWithKey {
                info: BlockServiceInfo {
                    id: BlockServiceId(100 + i),
                    addr: Addr {
                        ip: [127, 0, 0, 1],
                        port: 2000 + i as u16,
                    },
                    storage_class: StorageClass::Flash,
                    failure_domain: [(i % domains) as u8; 16],
                    flags: flags_of(i),
                    capacity_bytes: 1 << 30,
                    available_bytes: 1 << 29,
                    blocks: 0,
                    path: String::new(),
                    last_seen: EggsTime(1),
                },
                secret_key: [i as u8; 16],
            })
            .collect()
    }

    fn initiate(file: &ConstructFileResp, offset: u64) -> AddSpanInitiateReq {
        AddSpanInitiateReq {
            file_id: file.id,
            cookie: file.cookie,
            byte_offset: offset,
            size: 5 * 4096,
            crc: 1234,
            storage_class: StorageClass::Flash,
            parity: Parity { data: 4, parity: 2 },
            stripes: 2,
            cell_size: 4096,
            block_crcs: vec![1, 2, 3, 4, 5, 6],
            blacklist: vec![],
        }
    }

    fn key_of(svcs: &[BlockServiceWithKey], id: BlockServiceId) -> [u8; 16] {
        svcs.iter().find(|s| s.info.id == id).unwrap().secret_key
    }

    #[test]
    fn span_lifecycle_with_certificates_and_proofs() {
        let mut t = T::new();
        let svcs = services(8, 8, |i| if i == 0 { flags::NO_WRITE } else { 0 });
        t.core.set_block_services(svcs.clone());
        let f = t
            .req(
                S0,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        let r = t.req(S0, initiate(&f, 0)).unwrap();
        assert_eq!(r.blocks.len(), 6);
        let mut domains: Vec<_> = r.blocks.iter().map(|b| b.block_service_id.0 % 8).collect();
        domains.sort();
        domains.dedup();
        assert_eq!(domains.len(), 6, "distinct failure domains");
        assert!(
            r.blocks
                .iter()
                .all(|b| b.block_service_id != BlockServiceId(100)),
            "NO_WRITE skipped"
        );
        for (i, b) in r.blocks.iter().enumerate() {
            let key = key_of(&svcs, b.block_service_id);
            let cert =
                crypto::write_certificate(&key, b.block_service_id, b.block_id, i as u32 + 1, 8192);
            assert_eq!(cert, b.certificate);
        }
        // Nothing may follow or link an uncertified span.
        assert_eq!(
            t.req(S0, initiate(&f, 5 * 4096)),
            Err(EggsError::SpanNotCertified)
        );
        let link = LinkFileReq {
            file_id: f.id,
            cookie: f.cookie,
            owner_id: ROOT,
            name: n("big"),
        };
        assert_eq!(t.req(S0, link.clone()), Err(EggsError::SpanNotCertified));
        let mut proofs: Vec<[u8; 8]> = r
            .blocks
            .iter()
            .map(|b| {
                crypto::write_proof(
                    &key_of(&svcs, b.block_service_id),
                    b.block_service_id,
                    b.block_id,
                )
            })
            .collect();
        proofs[3][0] ^= 1;
        let certify = |proofs: Vec<[u8; 8]>| AddSpanCertifyReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 0,
            proofs,
        };
        assert_eq!(
            t.req(S0, certify(proofs.clone())),
            Err(EggsError::BadCertificate)
        );
        proofs[3][0] ^= 1;
        t.req(S0, certify(proofs)).unwrap();
        t.req(S0, link).unwrap();
        assert_eq!(t.req(S0, StatFileReq { id: f.id }).unwrap().size, 5 * 4096);
        let spans = t
            .req(
                S0,
                FileSpansReq {
                    file_id: f.id,
                    byte_offset: 0,
                    mtu: 1472,
                },
            )
            .unwrap();
        let SpanBody::Blocks(b) = &spans.spans[0].body else {
            panic!("block span")
        };
        assert_eq!(b.blocks.len(), 6);
        assert!(b.blocks.iter().all(|x| x.addr.port >= 2000));
        assert_eq!(
            b.blocks.iter().map(|x| x.crc).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
    }

    /// Spans with the most blocks a span may have fill `FileSpans` pages up to the reply
    /// limit: each encoded reply fits, and the next page's first span would not have.
    #[test]
    fn span_pages_fill_to_their_limit() {
        let mut t = T::new();
        let width = Parity::MAX_DATA + Parity::MAX_PARITY;
        let svcs = services(width as u64, width as u64, |_| 0);
        t.core.set_block_services(svcs.clone());
        let f = t
            .req(
                S0,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        let span_size = 4096 * Parity::MAX_DATA as u64;
        for i in 0..12 {
            let mut r = initiate(&f, i * span_size);
            r.size = span_size as u32;
            r.parity = Parity {
                data: Parity::MAX_DATA,
                parity: Parity::MAX_PARITY,
            };
            r.stripes = 1;
            r.block_crcs = vec![7; width as usize];
            let blocks = t.req(S0, r).unwrap().blocks;
            let proofs = blocks
                .iter()
                .map(|b| {
                    let key = key_of(&svcs, b.block_service_id);
                    crypto::write_proof(&key, b.block_service_id, b.block_id)
                })
                .collect();
            t.req(
                S0,
                AddSpanCertifyReq {
                    file_id: f.id,
                    cookie: f.cookie,
                    byte_offset: i * span_size,
                    proofs,
                },
            )
            .unwrap();
        }
        for mtu in [0, 1472, 6000, u16::MAX] {
            let pages = fill_pages(
                &mut t,
                |next| FileSpansReq {
                    file_id: f.id,
                    byte_offset: next.unwrap_or(0),
                    mtu,
                },
                |r| (r.next_offset, r.spans.first().map(|s| s.encoded_len())),
            );
            assert!(pages.len() > 1, "mtu {mtu}: {pages:?}");
        }
    }

    #[test]
    fn placement_needs_enough_failure_domains() {
        let mut t = T::new();
        t.core.set_block_services(services(10, 5, |_| 0));
        let f = t
            .req(
                S0,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        assert_eq!(
            t.req(S0, initiate(&f, 0)),
            Err(EggsError::NotEnoughBlockServices)
        );
        let mut req = initiate(&f, 0);
        req.parity = Parity { data: 3, parity: 2 };
        req.block_crcs.pop();
        req.size = 4 * 4096;
        t.req(S0, req).unwrap();
    }

    #[test]
    fn malformed_span_shapes_are_refused() {
        let mut t = T::new();
        t.core.set_block_services(services(8, 8, |_| 0));
        let f = t
            .req(
                S0,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        type Mutation = fn(&mut AddSpanInitiateReq);
        let bad: [Mutation; 6] = [
            |r| {
                r.block_crcs.pop();
            },
            |r| r.cell_size = 1000,
            |r| r.size = 9 * 4096,
            |r| r.size = 4096,
            |r| r.stripes = 0,
            |r| r.storage_class = StorageClass::Inline,
        ];
        for mutate in bad {
            let mut r = initiate(&f, 0);
            mutate(&mut r);
            assert_eq!(t.req(S0, r), Err(EggsError::MalformedRequest));
        }
    }

    #[test]
    fn removing_the_last_span_returns_erase_certificates() {
        let mut t = T::new();
        let svcs = services(6, 6, |_| 0);
        t.core.set_block_services(svcs.clone());
        let f = t
            .req(
                S0,
                ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            )
            .unwrap();
        let r = t.req(S0, initiate(&f, 0)).unwrap();
        let removed = t
            .req(
                S0,
                RemoveSpanReq {
                    file_id: f.id,
                    cookie: f.cookie,
                    byte_offset: 0,
                },
            )
            .unwrap();
        assert_eq!(removed.blocks.len(), 6);
        for (a, b) in r.blocks.iter().zip(&removed.blocks) {
            assert_eq!(a.block_id, b.block_id);
            let key = key_of(&svcs, b.block_service_id);
            assert_eq!(
                b.certificate,
                crypto::erase_certificate(&key, b.block_service_id, b.block_id)
            );
        }
        assert_eq!(
            t.req(S0, StatTransientFileReq { id: f.id }).unwrap().size,
            0
        );
        // The file can be written again from the start.
        t.req(S0, initiate(&f, 0)).unwrap();
    }
}

/// A duplicate of a request that failed must fail again, even after the state changed so
/// that a fresh run would succeed (found by the simulator, seed 131).
#[test]
fn failed_writes_are_remembered() {
    let mut t = T::new();
    let d = t.mkdir(ROOT, "d", 5, 0);
    let g = t
        .req(
            S0,
            ConstructFileReq {
                typ: InodeType::File,
                attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                rdev: 0,
            },
        )
        .unwrap();
    let h = t.header();
    let link = LinkFileReq {
        file_id: g.id,
        cookie: g.cookie,
        owner_id: ROOT,
        name: n("d"),
    };
    let first = t.send_with(S0, h, link.clone().into_req());
    assert_eq!(first, Err(EggsError::CannotOverrideDirectory));
    // The directory moves away (as a cross-directory rename's source step does): a re-run
    // of the link would now succeed.
    let dt = t
        .req(
            S0,
            LookupReq {
                dir_id: ROOT,
                name: n("d"),
            },
        )
        .unwrap()
        .creation_time;
    let edge = |was_moved| UnlockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("d"),
        target_id: d,
        creation_time: dt,
        was_moved,
        txn_id: 101,
        new_edge: false,
    };
    t.req(
        S0,
        LockCurrentEdgeReq {
            dir_id: ROOT,
            name: n("d"),
            target_id: d,
            creation_time: dt,
            txn_id: 101,
        },
    )
    .unwrap();
    t.req(S0, edge(true)).unwrap();
    assert!(t.names(ROOT).is_empty());
    let again = t.send_with(S0, h, link.into_req());
    assert_eq!(again, first);
    assert!(t.names(ROOT).is_empty());
}

/// Rolling back a lock whose unlock already happened (reply lost, then the edge changed)
/// succeeds instead of failing forever (simulator, seed 27).
#[test]
fn rollback_unlock_of_a_changed_edge_is_a_no_op() {
    let mut t = T::new();
    let (f, ft) = t.mkfile(ROOT, "f", b"x");
    let lock = LockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        txn_id: 101,
    };
    t.req(S0, lock).unwrap();
    let unlock = UnlockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        was_moved: false,
        txn_id: 101,
        new_edge: false,
    };
    t.req(S0, unlock.clone()).unwrap();
    // Someone renames the now unlocked edge; a fresh copy of the rollback still succeeds.
    t.req(
        S0,
        SameDirectoryRenameReq {
            dir_id: ROOT,
            target_id: f,
            old_name: n("f"),
            old_creation_time: ft,
            new_name: n("g"),
        },
    )
    .unwrap();
    t.req(S0, unlock).unwrap();
    assert_eq!(t.names(ROOT), ["g"]);
}

/// Sends `req(cursor)` page after page; checks that each encoded reply fits in its limit and
/// that the first entry of the next page would not have fitted in it. Returns the encoded
/// length of each page. `next` gives a reply's cursor and the encoded length of its first
/// entry.
fn fill_pages<B, C: Clone>(
    t: &mut T,
    req: impl Fn(Option<C>) -> B,
    next: impl Fn(&B::RespBody) -> (Option<C>, Option<usize>),
) -> Vec<usize>
where
    B: RequestBody<Req = ShardReq, Resp = ShardResp> + Clone,
    B::RespBody: Clone,
    ShardResp: From<B::RespBody>,
{
    let mut cursor = None;
    let mut previous: Option<(usize, usize)> = None;
    let mut pages = Vec::new();
    loop {
        let body = req(cursor.clone());
        let limit = reply_limit(&body.clone().into_req());
        let resp = t.req(S0, body).unwrap();
        let (after, first) = next(&resp);
        if let (Some((len, limit)), Some(first)) = (previous, first) {
            assert!(
                len + first > limit,
                "{len} + {first} bytes would have fitted in {limit}"
            );
        }
        let len = codec::message_len(&ShardResponse {
            request_id: 0,
            result: Ok(resp.into()),
        });
        assert!(
            len <= limit,
            "a reply of {len} bytes for a limit of {limit}"
        );
        pages.push(len);
        previous = Some((len, limit));
        match after {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
    }
}

/// Entries with names of the longest length fill `ReadDir` pages exactly: the fixed part is
/// budgeted for the longest cursor, which is then the real one.
#[test]
fn read_dir_pages_fill_to_their_limit() {
    let mut t = T::new();
    for i in 0..60 {
        let name = format!("{i:03}{}", "x".repeat(Name::MAX_LEN - 3));
        t.mkfile(ROOT, &name, b"a");
    }
    let entry_len = CurrentEdge {
        name_hash: 0,
        name: page::longest_dir_cursor().name,
        target_id: ROOT,
        creation_time: EggsTime(0),
    }
    .encoded_len();
    let fixed = codec::message_len(&ShardResponse {
        request_id: 0,
        result: Ok(ShardResp::ReadDir(ReadDirResp {
            next: Some(page::longest_dir_cursor()),
            entries: vec![],
        })),
    });
    // Room for exactly five entries: every page but the last is exactly that long.
    let exact = (fixed + 5 * entry_len) as u16;
    assert!(exact > eggs_protocol::DEFAULT_UDP_MTU, "not clamped");
    for mtu in [0, 1472, 3000, u16::MAX, exact] {
        let pages = fill_pages(
            &mut t,
            |start| ReadDirReq {
                dir_id: ROOT,
                start,
                mtu,
            },
            |r| (r.next.clone(), r.entries.first().map(|e| e.encoded_len())),
        );
        assert!(pages.len() > 1, "mtu {mtu}: {pages:?}");
        if mtu == exact {
            assert!(
                pages[..pages.len() - 1]
                    .iter()
                    .all(|&l| l == exact as usize),
                "{pages:?}"
            );
        }
    }
}

// ---- late copies of every CDC step: each is fenced by its transaction id ----
//
// A "late copy" here is the step sent again with a fresh request id, as when its
// deduplication entry expired (or an earlier CDC incarnation sent it): the shard runs it
// again unless the fence stops it. The CDC's transactions are in rust/cdc/src/txn.rs.

fn stat_owner(t: &mut T, d: InodeId) -> Result<InodeId, EggsError> {
    t.req(d.shard(), StatDirectoryReq { id: d })
        .map(|s| s.owner_id)
}

/// Bug C: a LockCurrentEdge arriving after its transaction rolled back and unlocked the
/// edge would leave it locked forever.
#[test]
fn a_late_lock_step_never_locks_an_edge_again() {
    let mut t = T::new();
    let (f, ft) = t.mkfile(ROOT, "f", b"x");
    let lock = |txn_id| LockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        txn_id,
    };
    let unlock = |txn_id| UnlockCurrentEdgeReq {
        dir_id: ROOT,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        was_moved: false,
        txn_id,
        new_edge: false,
    };
    t.req(S0, lock(100)).unwrap();
    t.req(S0, lock(100)).unwrap(); // a copy while the transaction runs: idempotent
    t.req(S0, unlock(100)).unwrap(); // its rollback
    assert_eq!(t.req(S0, lock(100)), Err(EggsError::EdgeNotLocked));
    assert_eq!(t.core.edge_locked(ROOT, &n("f")).unwrap(), Some(false));
    // A copy of the last step itself (the CDC resending it after a restart) succeeds.
    t.req(S0, unlock(100)).unwrap();
    // A later transaction locks the edge: copies of the older one's steps leave it locked.
    t.req(S0, lock(101)).unwrap();
    assert_eq!(t.req(S0, lock(100)), Err(EggsError::EdgeNotLocked));
    t.req(S0, unlock(100)).unwrap();
    assert_eq!(t.core.edge_locked(ROOT, &n("f")).unwrap(), Some(true));
    // And a client still cannot touch it.
    let unlink = SoftUnlinkFileReq {
        dir_id: ROOT,
        target_id: f,
        name: n("f"),
        creation_time: ft,
    };
    assert_eq!(t.req(S0, unlink), Err(EggsError::EdgeLocked));
}

/// Bug C again: a CreateDirectoryInode arriving after its MakeDirectory rolled back
/// (RemoveDirectoryInode) would create an orphan directory.
#[test]
fn a_late_create_inode_step_never_brings_a_directory_back() {
    let mut t = T::new();
    let s9 = ShardId(9);
    let d = InodeId::new(InodeType::Directory, s9, 50);
    let create = CreateDirectoryInodeReq {
        id: d,
        owner_id: ROOT,
        info: Default::default(),
        txn_id: 100,
        attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
    };
    let remove = RemoveDirectoryInodeReq {
        id: d,
        owner_id: ROOT,
        txn_id: 100,
    };
    t.req(s9, create.clone()).unwrap();
    t.req(s9, create.clone()).unwrap(); // idempotent while the transaction runs
    t.req(s9, remove.clone()).unwrap();
    assert_eq!(t.req(s9, create.clone()), Err(EggsError::DirectoryRemoved));
    assert_eq!(stat_owner(&mut t, d), Err(EggsError::DirectoryNotFound));
    t.req(s9, remove).unwrap(); // a copy of the last step: nothing left to do
    assert_eq!(stat_owner(&mut t, d), Err(EggsError::DirectoryNotFound));
}

/// A SetDirectoryOwner arriving after a later rename moved the directory again must not
/// move it back.
#[test]
fn a_late_set_owner_step_never_moves_a_directory_back() {
    let mut t = T::new();
    let s9 = ShardId(9);
    let d = t.mkdir(ROOT, "d", 5, 9);
    let a = t.mkdir(ROOT, "a", 6, 2);
    let b = t.mkdir(ROOT, "b", 7, 3);
    let set = |owner_id, txn_id| SetDirectoryOwnerReq {
        dir_id: d,
        owner_id,
        txn_id,
    };
    t.req(s9, set(a, 100)).unwrap();
    t.req(s9, set(a, 100)).unwrap();
    t.req(s9, set(b, 101)).unwrap();
    t.req(s9, set(a, 100)).unwrap(); // over: a no-op success
    assert_eq!(stat_owner(&mut t, d), Ok(b));
}

/// A RemoveDirectory whose RemoveDirectoryOwner failed (not empty) restores the owner as
/// its rollback, which fences the inode: a late copy of the failed step, arriving once the
/// directory is empty, must not detach it while it stays linked. A copy that got in before
/// the restore is undone by it.
#[test]
fn a_late_remove_owner_step_never_detaches_a_linked_directory() {
    let mut t = T::new();
    let s9 = ShardId(9);
    let d = t.mkdir(ROOT, "d", 5, 9);
    let remove = |txn_id| RemoveDirectoryOwnerReq {
        dir_id: d,
        txn_id,
        rollback: false,
    };
    let restore = |txn_id| SetDirectoryOwnerReq {
        dir_id: d,
        owner_id: ROOT,
        txn_id,
    };
    let unlink = |t: &mut T, f, ct| {
        t.req(
            s9,
            SoftUnlinkFileReq {
                dir_id: d,
                target_id: f,
                name: n("f"),
                creation_time: ct,
            },
        )
        .unwrap()
    };
    let (f, ft) = t.mkfile(d, "f", b"x");
    assert_eq!(t.req(s9, remove(100)), Err(EggsError::DirectoryNotEmpty));
    t.req(s9, restore(100)).unwrap();
    unlink(&mut t, f, ft);
    assert_eq!(t.req(s9, remove(100)), Err(EggsError::DirectoryRemoved));
    assert_eq!(stat_owner(&mut t, d), Ok(ROOT));
    // A copy that gets in before the rollback's restore.
    let (f, ft) = t.mkfile(d, "f", b"y");
    assert_eq!(t.req(s9, remove(101)), Err(EggsError::DirectoryNotEmpty));
    unlink(&mut t, f, ft);
    t.req(s9, remove(101)).unwrap();
    assert_eq!(stat_owner(&mut t, d), Ok(InodeId::NULL));
    t.req(s9, restore(101)).unwrap();
    assert_eq!(stat_owner(&mut t, d), Ok(ROOT));
    assert_eq!(t.req(s9, remove(101)), Err(EggsError::DirectoryRemoved));
    assert_eq!(stat_owner(&mut t, d), Ok(ROOT));
}

/// An UndeleteDirectory that rolled back (its RemoveDirectoryOwner with `rollback`) fences
/// the inode: a late ReattachDirectory must not give the directory its owner back.
#[test]
fn a_late_reattach_step_never_reattaches_after_a_rollback() {
    let mut t = T::new();
    let s9 = ShardId(9);
    let d = t.mkdir(ROOT, "d", 5, 9);
    let remove = |txn_id, rollback| RemoveDirectoryOwnerReq {
        dir_id: d,
        txn_id,
        rollback,
    };
    t.req(s9, remove(100, false)).unwrap(); // an rmdir
    let reattach = ReattachDirectoryReq {
        dir_id: d,
        owner_id: ROOT,
        txn_id: 101,
    };
    t.req(s9, reattach.clone()).unwrap();
    assert_eq!(stat_owner(&mut t, d), Ok(ROOT));
    t.req(s9, remove(101, true)).unwrap(); // its CreateCurrentEdge failed: detached again
    assert_eq!(t.req(s9, reattach), Err(EggsError::DirectoryRemoved));
    assert_eq!(stat_owner(&mut t, d), Ok(InodeId::NULL));
    t.req(s9, remove(101, true)).unwrap(); // a copy of the last step: no-op
                                           // A copy of the older rmdir is over too.
    assert_eq!(
        t.req(s9, remove(100, false)),
        Err(EggsError::DirectoryRemoved)
    );
}

/// The new edge's unlock and the old edge's unlock, copied after a later transaction
/// locked the edge, leave that lock alone; a create copied after the transaction is refused.
#[test]
fn late_unlock_steps_never_release_a_later_lock() {
    let mut t = T::new();
    let d1 = t.mkdir(ROOT, "d1", 1, 1);
    let d2 = t.mkdir(ROOT, "d2", 2, 2);
    let (f, ft) = t.mkfile(d1, "f", b"x");
    let (s1, s2) = (ShardId(1), ShardId(2));
    // Transaction 100 renames d1/f to d2/g.
    let lock_old = LockCurrentEdgeReq {
        dir_id: d1,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        txn_id: 100,
    };
    t.req(s1, lock_old).unwrap();
    let create = CreateCurrentEdgeReq {
        dir_id: d2,
        name: n("g"),
        target_id: f,
        overwrite_files: false,
        txn_id: 100,
    };
    let c = t.req(s2, create.clone()).unwrap();
    let unlock_old = UnlockCurrentEdgeReq {
        dir_id: d1,
        name: n("f"),
        target_id: f,
        creation_time: ft,
        was_moved: true,
        txn_id: 100,
        new_edge: false,
    };
    let unlock_new = UnlockCurrentEdgeReq {
        dir_id: d2,
        name: n("g"),
        target_id: f,
        creation_time: c.creation_time,
        was_moved: false,
        txn_id: 100,
        new_edge: true,
    };
    t.req(s1, unlock_old.clone()).unwrap();
    t.req(s2, unlock_new.clone()).unwrap();
    // Transaction 101 locks the new edge to move it on.
    t.req(
        s2,
        LockCurrentEdgeReq {
            dir_id: d2,
            name: n("g"),
            target_id: f,
            creation_time: c.creation_time,
            txn_id: 101,
        },
    )
    .unwrap();
    t.req(s2, unlock_new).unwrap();
    t.req(s1, unlock_old).unwrap();
    assert_eq!(t.req(s2, create), Err(EggsError::EdgeNotLocked));
    assert_eq!(t.core.edge_locked(d2, &n("g")).unwrap(), Some(true));
    assert_eq!(t.names(d1), Vec::<String>::new());
    assert_eq!(t.names(d2), ["g"]);
}

#[test]
fn a_cdc_step_without_a_transaction_is_malformed() {
    let mut t = T::new();
    let d = t.mkdir(ROOT, "d", 5, 9);
    let remove = RemoveDirectoryOwnerReq {
        dir_id: d,
        txn_id: 0,
        rollback: false,
    };
    assert_eq!(t.req(ShardId(9), remove), Err(EggsError::MalformedRequest));
    assert_eq!(stat_owner(&mut t, d), Ok(ROOT));
}
