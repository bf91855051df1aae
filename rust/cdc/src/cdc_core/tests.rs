//! Whole transactions driven through [`CdcCore`] with scripted shard replies.

use super::*;
use crate::record::Step;
use eggs_protocol::cdc::{
    MakeDirectoryReq, MakeDirectoryResp, RemoveDirectoryReq, RemoveDirectoryResp,
    RenameDirectoryReq, RenameDirectoryResp, RenameFileReq, RenameFileResp,
};
use eggs_protocol::shard::{
    CreateCurrentEdgeReq, CreateCurrentEdgeResp, CreateDirectoryInodeReq, CreateDirectoryInodeResp,
    LockCurrentEdgeReq, LockCurrentEdgeResp, RemoveDirectoryInodeReq, RemoveDirectoryInodeResp,
    RemoveDirectoryOwnerReq, RemoveDirectoryOwnerResp, SetDirectoryOwnerReq, SetDirectoryOwnerResp,
    StatDirectoryReq, StatDirectoryResp, UnlockCurrentEdgeReq, UnlockCurrentEdgeResp,
};
use eggs_protocol::NUM_SHARDS;
use eggs_protocol::{DirectoryInfo, InodeAttrs, Name};
use std::collections::BTreeMap;

// ---- fixtures ----

fn dir(n: u64) -> InodeId {
    InodeId::new(
        InodeType::Directory,
        ShardId(u8::try_from(n % 256).unwrap()),
        1_000 + n,
    )
}
fn file(n: u64) -> InodeId {
    InodeId::new(
        InodeType::File,
        ShardId(u8::try_from(n % 256).unwrap()),
        1_000 + n,
    )
}
fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}
fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + n))
}
fn header(client_id: u64, request_id: u64) -> RequestHeader {
    RequestHeader {
        request_id,
        client_id,
    }
}
const T0: EggsTime = EggsTime(1_000_000_000_000);
const CT: EggsTime = EggsTime(777);
const OLD_CT: EggsTime = EggsTime(5);
/// What the tests' mkdirs ask for: not the default, so that the steps show they pass it on.
const MKDIR_ATTRS: InodeAttrs = InodeAttrs {
    mode: eggs_protocol::posix::S_IFDIR | 0o750,
    uid: 1000,
    gid: 100,
};

fn mkdir(owner: InodeId, n: &str) -> CdcReq {
    CdcReq::MakeDirectory(MakeDirectoryReq {
        owner_id: owner,
        name: name(n),
        info: DirectoryInfo::default(),
        attrs: MKDIR_ATTRS,
    })
}
fn rename_file(target: InodeId, old: InodeId, new: InodeId) -> CdcReq {
    CdcReq::RenameFile(RenameFileReq {
        target_id: target,
        old_owner_id: old,
        old_name: name("old"),
        old_creation_time: OLD_CT,
        new_owner_id: new,
        new_name: name("new"),
    })
}
fn rename_dir(target: InodeId, old: InodeId, new: InodeId) -> CdcReq {
    CdcReq::RenameDirectory(RenameDirectoryReq {
        target_id: target,
        old_owner_id: old,
        old_name: name("old"),
        old_creation_time: OLD_CT,
        new_owner_id: new,
        new_name: name("new"),
    })
}
fn rmdir(owner: InodeId, target: InodeId) -> CdcReq {
    CdcReq::RemoveDirectory(RemoveDirectoryReq {
        owner_id: owner,
        target_id: target,
        name: name("gone"),
        creation_time: OLD_CT,
    })
}

// Successful shard responses.
fn created_inode() -> ShardResp {
    ShardResp::CreateDirectoryInode(CreateDirectoryInodeResp { mtime: CT })
}
fn created_edge() -> ShardResp {
    ShardResp::CreateCurrentEdge(CreateCurrentEdgeResp { creation_time: CT })
}
fn locked() -> ShardResp {
    ShardResp::LockCurrentEdge(LockCurrentEdgeResp {})
}
fn unlocked() -> ShardResp {
    ShardResp::UnlockCurrentEdge(UnlockCurrentEdgeResp {})
}
fn owner_set() -> ShardResp {
    ShardResp::SetDirectoryOwner(SetDirectoryOwnerResp {})
}
fn owner_removed() -> ShardResp {
    ShardResp::RemoveDirectoryOwner(RemoveDirectoryOwnerResp {})
}
fn inode_removed() -> ShardResp {
    ShardResp::RemoveDirectoryInode(RemoveDirectoryInodeResp {})
}
fn stat(owner: InodeId) -> ShardResp {
    ShardResp::StatDirectory(StatDirectoryResp {
        owner_id: owner,
        mtime: CT,
        info: DirectoryInfo::default(),
        atime: CT,
        ctime: CT,
        attrs: InodeAttrs::ROOT_DIR,
    })
}

/// A core plus a stand-in for the disk: every output's writes are applied to `disk`, so that
/// a "restart" can load exactly what a real store would hold.
struct Harness {
    core: CdcCore,
    cfg: CoreConfig,
    now: EggsTime,
    disk: BTreeMap<TxnId, TxnRecord>,
    disk_counters: Counters,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(CoreConfig::default())
    }

    fn with_config(cfg: CoreConfig) -> Harness {
        Harness {
            core: CdcCore::new(cfg.clone(), Loaded::default(), T0),
            cfg,
            now: T0,
            disk: BTreeMap::new(),
            disk_counters: Counters::default(),
        }
    }

    fn flush(&mut self) -> Output {
        let out = self.core.take_output();
        for w in &out.writes {
            match w {
                Write::Put(r) => {
                    self.disk.insert(r.id, r.clone());
                }
                Write::Delete { id, .. } => {
                    self.disk.remove(id);
                }
            }
        }
        if let Some(c) = out.counters {
            self.disk_counters = c;
        }
        out
    }

    fn request(&mut self, from: u16, h: RequestHeader, body: CdcReq) -> (Admission, Output) {
        let a = self
            .core
            .on_request(self.now, addr(from), CdcRequest { header: h, body });
        (a, self.flush())
    }

    fn reply(&mut self, send: &ShardSend, result: Result<ShardResp, EggsError>) -> Output {
        self.core.on_shard_reply(
            self.now,
            StepReply {
                txn: send.txn,
                step: send.step,
                result,
            },
        );
        self.flush()
    }

    fn tick(&mut self, now: EggsTime) -> Output {
        self.now = now;
        self.core.on_tick(now);
        self.flush()
    }

    /// Simulates a crash: a new core built from what the disk holds.
    fn restart(&mut self) -> Output {
        let loaded = Loaded {
            counters: self.disk_counters,
            records: self.disk.values().cloned().collect(),
            client_id: 0,
        };
        self.core = CdcCore::new(self.cfg.clone(), loaded, self.now);
        self.flush()
    }
}

/// The only send of an output.
fn one_send(out: &Output) -> ShardSend {
    assert_eq!(out.sends.len(), 1, "expected one send: {:?}", out.sends);
    out.sends[0].clone()
}

/// The only reply of an output, checking that its result was made durable in the same output.
fn one_reply(out: &Output) -> Reply {
    assert_eq!(
        out.replies.len(),
        1,
        "expected one reply: {:?}",
        out.replies
    );
    out.replies[0].clone()
}

/// The last step of a transaction that created an edge: unlocking it (created locked so that
/// a late copy of CreateCurrentEdge cannot make it again). Answers it; returns the output.
fn unlock_new_edge(
    h: &mut Harness,
    out: &Output,
    dir_id: InodeId,
    n: &str,
    target: InodeId,
) -> Output {
    assert!(
        out.replies.is_empty(),
        "no reply while the new edge is locked"
    );
    let s = one_send(out);
    assert_eq!(s.shard, dir_id.shard());
    assert_eq!(
        s.req,
        ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
            dir_id,
            name: name(n),
            target_id: target,
            creation_time: CT,
            was_moved: false,
            txn_id: s.txn,
            new_edge: true,
        })
    );
    h.reply(&s, Ok(unlocked()))
}

/// The two final steps of a rename, sent together: the old edge's unlock (as moved) and the
/// new edge's. Checks them and returns (old, new).
fn final_unlocks(out: &Output, old_dir: InodeId, new_dir: InodeId) -> (ShardSend, ShardSend) {
    assert!(out.replies.is_empty(), "no reply before both unlocks");
    assert_eq!(out.sends.len(), 2, "both unlocks at once: {:?}", out.sends);
    let (old, new) = (out.sends[0].clone(), out.sends[1].clone());
    assert!(matches!(&old.req, ShardReq::UnlockCurrentEdge(u)
        if u.dir_id == old_dir && u.was_moved && u.txn_id == old.txn && !u.new_edge));
    assert_eq!(old.shard, old_dir.shard());
    assert!(matches!(&new.req, ShardReq::UnlockCurrentEdge(u)
        if u.dir_id == new_dir && !u.was_moved && u.txn_id == new.txn && u.new_edge
            && u.creation_time == CT));
    assert_eq!(new.shard, new_dir.shard());
    (old, new)
}

/// The first step of a rollback after a failed CreateCurrentEdge: the transaction's last
/// step in the destination directory (creation time 0: the CDC never learned of an edge),
/// which fences it against late copies of the create. Answers it; returns the output.
fn fence_new_edge(
    h: &mut Harness,
    out: &Output,
    dir_id: InodeId,
    n: &str,
    target: InodeId,
) -> Output {
    assert!(out.sync, "entering a rollback is synced");
    assert!(
        out.replies.is_empty(),
        "no reply before the rollback completes"
    );
    let s = one_send(out);
    assert_eq!(
        s.req,
        ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
            dir_id,
            name: name(n),
            target_id: target,
            creation_time: EggsTime(0),
            was_moved: false,
            txn_id: s.txn,
            new_edge: true,
        })
    );
    h.reply(&s, Ok(unlocked()))
}

fn assert_final(out: &Output, to: u16, request_id: u64, result: Result<CdcResp, EggsError>) {
    let r = one_reply(out);
    assert_eq!(r.to, addr(to));
    assert_eq!(
        r.resp,
        CdcResponse {
            request_id,
            result: result.clone()
        }
    );
    assert!(out.sync, "a result is synced before its reply");
    assert!(out.writes.iter().any(|w| matches!(w,
        Write::Put(TxnRecord { state: TxnState::Done { result: r, .. }, .. }) if *r == result)));
    assert!(out.sends.is_empty());
}

fn started(a: Admission) -> TxnId {
    match a {
        Admission::Started(id) => id,
        other => panic!("expected a started transaction, got {other:?}"),
    }
}

fn queued(a: Admission) -> TxnId {
    match a {
        Admission::Queued(id) => id,
        other => panic!("expected a queued transaction, got {other:?}"),
    }
}

/// Answers every step of the transaction whose step `out` carries successfully until it
/// finishes; returns the output that finished it (which may start other transactions).
/// StatDirectory says every directory hangs off the root.
fn complete(h: &mut Harness, out: Output) -> Output {
    let first = one_send(&out);
    let txn = first.txn;
    let mut queue = std::collections::VecDeque::from([first]);
    for _ in 0..32 {
        let Some(send) = queue.pop_front() else {
            panic!("transaction {txn} waits for nothing");
        };
        let resp = match &send.req {
            ShardReq::CreateDirectoryInode(_) => created_inode(),
            ShardReq::CreateCurrentEdge(_) => created_edge(),
            ShardReq::LockCurrentEdge(_) => locked(),
            ShardReq::UnlockCurrentEdge(_) => unlocked(),
            ShardReq::SetDirectoryOwner(_) => owner_set(),
            ShardReq::RemoveDirectoryOwner(_) => owner_removed(),
            ShardReq::RemoveDirectoryInode(_) => inode_removed(),
            ShardReq::StatDirectory(_) => stat(InodeId::ROOT),
            other => panic!("unexpected step {other:?}"),
        };
        let out = h.reply(&send, Ok(resp));
        queue.extend(out.sends.iter().filter(|s| s.txn == txn).cloned());
        if !h.core.is_running(txn) {
            return out;
        }
    }
    panic!("transaction {txn} did not finish");
}

// ---- MakeDirectory ----

#[test]
fn make_directory_creates_inode_then_edge() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    started(a);
    assert!(out.sync, "the new record is synced before its first step");
    assert_eq!(out.counters.map(|c| c.next_dir_counter), Some(2));
    let new_id = InodeId::new(InodeType::Directory, ShardId(1), 1);
    let s = one_send(&out);
    assert_eq!(s.shard, ShardId(1));
    assert_eq!(
        s.req,
        ShardReq::CreateDirectoryInode(CreateDirectoryInodeReq {
            id: new_id,
            owner_id: dir(1),
            info: DirectoryInfo::default(),
            txn_id: s.txn,
            attrs: MKDIR_ATTRS,
        })
    );
    let out = h.reply(&s, Ok(created_inode()));
    assert!(!out.sync, "progress inside the fallible part is not synced");
    let s = one_send(&out);
    assert_eq!(s.shard, dir(1).shard());
    assert_eq!(
        s.req,
        ShardReq::CreateCurrentEdge(CreateCurrentEdgeReq {
            dir_id: dir(1),
            name: name("d"),
            target_id: new_id,
            overwrite_files: false,
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(created_edge()));
    assert!(out.sync, "passing the commit point is synced");
    let out = unlock_new_edge(&mut h, &out, dir(1), "d", new_id);
    let resp = CdcResp::MakeDirectory(MakeDirectoryResp {
        id: new_id,
        creation_time: CT,
    });
    assert_final(&out, 1, 1, Ok(resp));
    assert_eq!(h.core.live_txns(), 0);
}

#[test]
fn make_directory_rolls_back_the_inode_when_the_name_exists() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    let out = h.reply(&one_send(&out), Ok(created_inode()));
    let out = h.reply(&one_send(&out), Err(EggsError::NameExists));
    let new_id = InodeId::new(InodeType::Directory, ShardId(1), 1);
    let out = fence_new_edge(&mut h, &out, dir(1), "d", new_id);
    let s = one_send(&out);
    assert_eq!(
        s.req,
        ShardReq::RemoveDirectoryInode(RemoveDirectoryInodeReq {
            id: new_id,
            owner_id: dir(1),
            txn_id: s.txn,
        })
    );
    assert!(
        out.replies.is_empty(),
        "no reply before the rollback completes"
    );
    let out = h.reply(&s, Ok(inode_removed()));
    assert_final(&out, 1, 1, Err(EggsError::NameExists));
}

#[test]
fn make_directory_fails_without_rollback_when_the_inode_cannot_be_created() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    let out = h.reply(&one_send(&out), Err(EggsError::TypeMismatch));
    assert_final(&out, 1, 1, Err(EggsError::TypeMismatch));
}

#[test]
fn make_directory_into_a_file_is_refused_without_a_transaction() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), mkdir(file(1), "d"));
    assert_eq!(a, Admission::Rejected(EggsError::NotADirectory));
    assert!(!out.has_writes() && out.sends.is_empty());
    assert_eq!(one_reply(&out).resp.result, Err(EggsError::NotADirectory));
}

#[test]
fn new_directories_spread_over_all_shards_with_unique_ids() {
    let mut h = Harness::new();
    let mut shards = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for i in 0..NUM_SHARDS as u64 {
        // Distinct owners, so that every one starts at once.
        let (_, out) = h.request(1, header(9, i), mkdir(dir(i), "d"));
        let ShardReq::CreateDirectoryInode(r) = one_send(&out).req else {
            panic!("expected CreateDirectoryInode");
        };
        assert_ne!(r.id, InodeId::ROOT);
        assert!(r.id.is_dir());
        shards.insert(r.id.shard());
        ids.insert(r.id);
    }
    assert_eq!(shards.len(), NUM_SHARDS);
    assert_eq!(ids.len(), NUM_SHARDS);
}

// ---- RenameFile ----

#[test]
fn rename_file_locks_creates_then_unlocks_as_moved() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let s = one_send(&out);
    assert_eq!(s.shard, dir(1).shard());
    assert_eq!(
        s.req,
        ShardReq::LockCurrentEdge(LockCurrentEdgeReq {
            dir_id: dir(1),
            name: name("old"),
            target_id: file(7),
            creation_time: OLD_CT,
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(locked()));
    let s = one_send(&out);
    assert_eq!(s.shard, dir(2).shard());
    assert_eq!(
        s.req,
        ShardReq::CreateCurrentEdge(CreateCurrentEdgeReq {
            dir_id: dir(2),
            name: name("new"),
            target_id: file(7),
            overwrite_files: true,
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(created_edge()));
    assert!(out.sync, "passing the commit point is synced");
    let (old, new) = final_unlocks(&out, dir(1), dir(2));
    assert_eq!(
        old.req,
        ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
            dir_id: dir(1),
            name: name("old"),
            target_id: file(7),
            creation_time: OLD_CT,
            was_moved: true,
            txn_id: s.txn,
            new_edge: false,
        })
    );
    // The new edge's unlock answers first: kept until its turn.
    let out = h.reply(&new, Ok(unlocked()));
    assert!(out.sends.is_empty() && out.replies.is_empty() && out.writes.is_empty());
    let out = h.reply(&old, Ok(unlocked()));
    let resp = CdcResp::RenameFile(RenameFileResp { creation_time: CT });
    assert_final(&out, 1, 1, Ok(resp));
}

#[test]
fn rename_file_unlocks_without_moving_when_the_destination_is_taken() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Err(EggsError::CannotOverrideDirectory));
    let out = fence_new_edge(&mut h, &out, dir(2), "new", file(7));
    let s = one_send(&out);
    assert!(matches!(&s.req,
        ShardReq::UnlockCurrentEdge(u) if !u.was_moved && u.dir_id == dir(1)));
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(&out, 1, 1, Err(EggsError::CannotOverrideDirectory));
}

#[test]
fn rename_file_that_cannot_be_locked_fails_at_once() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Err(EggsError::MismatchingCreationTime));
    assert_final(&out, 1, 1, Err(EggsError::MismatchingCreationTime));
}

#[test]
fn rename_file_request_checks() {
    let mut h = Harness::new();
    let (a, _) = h.request(1, header(9, 1), rename_file(dir(7), dir(1), dir(2)));
    assert_eq!(a, Admission::Rejected(EggsError::IsADirectory));
    let (a, _) = h.request(1, header(9, 2), rename_file(file(7), dir(1), dir(1)));
    assert_eq!(a, Admission::Rejected(EggsError::SameDirectories));
}

// ---- RenameDirectory ----

#[test]
fn rename_directory_walks_to_the_root_then_moves() {
    let mut h = Harness::new();
    // dir(2) -> dir(3) -> root.
    let (_, out) = h.request(1, header(9, 1), rename_dir(dir(7), dir(1), dir(2)));
    let s = one_send(&out);
    assert_eq!(
        s.req,
        ShardReq::StatDirectory(StatDirectoryReq { id: dir(2) })
    );
    assert_eq!(s.shard, dir(2).shard());
    let out = h.reply(&s, Ok(stat(dir(3))));
    let s = one_send(&out);
    assert_eq!(
        s.req,
        ShardReq::StatDirectory(StatDirectoryReq { id: dir(3) })
    );
    let out = h.reply(&s, Ok(stat(InodeId::ROOT)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::CreateCurrentEdge(c)
        if c.dir_id == dir(2) && c.target_id == dir(7) && !c.overwrite_files));
    let out = h.reply(&s, Ok(created_edge()));
    assert!(out.sync);
    let s = one_send(&out);
    assert_eq!(s.shard, dir(7).shard());
    assert_eq!(
        s.req,
        ShardReq::SetDirectoryOwner(SetDirectoryOwnerReq {
            dir_id: dir(7),
            owner_id: dir(2),
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(owner_set()));
    let (old, new) = final_unlocks(&out, dir(1), dir(2));
    // In its turn order this time: the old edge's unlock answers first.
    let out = h.reply(&old, Ok(unlocked()));
    assert!(
        out.sends.is_empty() && out.replies.is_empty(),
        "waits for the new edge's"
    );
    assert!(!out.sync, "only the commit point's progress is synced");
    let out = h.reply(&new, Ok(unlocked()));
    let resp = CdcResp::RenameDirectory(RenameDirectoryResp { creation_time: CT });
    assert_final(&out, 1, 1, Ok(resp));
}

#[test]
fn rename_directory_below_itself_is_a_loop() {
    let mut h = Harness::new();
    // dir(2) -> dir(7) (the target): moving dir(7) into dir(2) would detach a cycle.
    let (_, out) = h.request(1, header(9, 1), rename_dir(dir(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(stat(dir(7))));
    assert_final(&out, 1, 1, Err(EggsError::LoopInDirectoryRename));
}

#[test]
fn rename_directory_into_a_removed_directory_fails() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_dir(dir(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(stat(InodeId::NULL)));
    assert_final(&out, 1, 1, Err(EggsError::DirectoryRemoved));
}

#[test]
fn rename_directory_rolls_back_when_the_name_exists() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_dir(dir(7), dir(1), InodeId::ROOT));
    let s = one_send(&out);
    assert!(
        matches!(s.req, ShardReq::LockCurrentEdge(_)),
        "moving into the root needs no loop check"
    );
    let out = h.reply(&s, Ok(locked()));
    let out = h.reply(&one_send(&out), Err(EggsError::NameExists));
    let out = fence_new_edge(&mut h, &out, InodeId::ROOT, "new", dir(7));
    let s = one_send(&out);
    assert!(
        matches!(&s.req, ShardReq::UnlockCurrentEdge(u) if !u.was_moved && u.txn_id == s.txn && !u.new_edge)
    );
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(&out, 1, 1, Err(EggsError::NameExists));
}

#[test]
fn rename_directory_request_checks() {
    let mut h = Harness::new();
    let (a, _) = h.request(1, header(9, 1), rename_dir(InodeId::ROOT, dir(1), dir(2)));
    assert_eq!(a, Admission::Rejected(EggsError::CannotRemoveRoot));
    let (a, _) = h.request(1, header(9, 2), rename_dir(file(7), dir(1), dir(2)));
    assert_eq!(a, Admission::Rejected(EggsError::NotADirectory));
    let (a, _) = h.request(1, header(9, 3), rename_dir(dir(7), dir(1), dir(1)));
    assert_eq!(a, Admission::Rejected(EggsError::SameDirectories));
}

// ---- RemoveDirectory ----

#[test]
fn remove_directory_locks_detaches_then_unlocks_as_moved() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::LockCurrentEdge(l)
        if l.dir_id == dir(1) && l.target_id == dir(7) && l.name == name("gone")));
    let out = h.reply(&s, Ok(locked()));
    let s = one_send(&out);
    assert_eq!(s.shard, dir(7).shard());
    assert_eq!(
        s.req,
        ShardReq::RemoveDirectoryOwner(RemoveDirectoryOwnerReq {
            dir_id: dir(7),
            txn_id: s.txn,
            rollback: false,
        })
    );
    let out = h.reply(&s, Ok(owner_removed()));
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::UnlockCurrentEdge(u) if u.was_moved));
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(
        &out,
        1,
        1,
        Ok(CdcResp::RemoveDirectory(RemoveDirectoryResp {})),
    );
}

#[test]
fn remove_directory_that_is_not_empty_rolls_back() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Err(EggsError::DirectoryNotEmpty));
    assert!(out.sync, "entering a rollback is synced");
    // First the target's owner, restored: that fences its inode against a late copy of the
    // failed RemoveDirectoryOwner (and undoes one that got in meanwhile).
    let s = one_send(&out);
    assert_eq!(s.shard, dir(7).shard());
    assert_eq!(
        s.req,
        ShardReq::SetDirectoryOwner(SetDirectoryOwnerReq {
            dir_id: dir(7),
            owner_id: dir(1),
            txn_id: s.txn,
        })
    );
    assert!(out.replies.is_empty());
    let out = h.reply(&s, Ok(owner_set()));
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::UnlockCurrentEdge(u) if !u.was_moved && !u.new_edge));
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(&out, 1, 1, Err(EggsError::DirectoryNotEmpty));
}

#[test]
fn remove_root_is_refused() {
    let mut h = Harness::new();
    let (a, _) = h.request(1, header(9, 1), rmdir(dir(1), InodeId::ROOT));
    assert_eq!(a, Admission::Rejected(EggsError::CannotRemoveRoot));
}

// ---- failures of steps that must complete, odd replies ----

#[test]
fn failing_must_complete_step_is_resent_with_back_off() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Ok(owner_removed()));
    let mut s = one_send(&out);
    assert_eq!(s.delay_ms, 0);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let out = h.reply(&s, Err(EggsError::EdgeNotLocked));
        assert!(out.replies.is_empty());
        let next = one_send(&out);
        assert_eq!(next.req, s.req, "the same step again");
        delays.push(next.delay_ms);
        s = next;
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(
        &out,
        1,
        1,
        Ok(CdcResp::RemoveDirectory(RemoveDirectoryResp {})),
    );
}

/// The back-off and the decision to resend are the core's: a step that gets no answer (the
/// driver reports `Timeout`) or a "not now" error is sent again with the same header (the
/// shard may have applied it), later each time, in the fallible part as in the part that
/// must complete, and the next definite answer moves on as usual.
#[test]
fn transient_failures_resend_the_same_request_with_back_off() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let mut s = one_send(&out);
    let first = s.clone();
    let mut delays = Vec::new();
    for err in [
        EggsError::Timeout,
        EggsError::InternalError,
        EggsError::ShardNotRegistered,
        EggsError::WrongShard,
        EggsError::Timeout,
        EggsError::Timeout,
        EggsError::Timeout,
        EggsError::Timeout,
    ] {
        let out = h.reply(&s, Err(err));
        assert!(
            out.replies.is_empty() && !out.has_writes(),
            "nothing decided"
        );
        let next = one_send(&out);
        assert_eq!((&next.req, next.header), (&first.req, first.header));
        assert_ne!(next.step, s.step, "the earlier send's outcome is stale now");
        delays.push(next.delay_ms);
        s = next;
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    // A late outcome of an earlier send changes nothing.
    let out = h.reply(&first, Ok(locked()));
    assert!(out.sends.is_empty() && !out.has_writes());
    // The definite answer moves on without delay, and the back-off starts over.
    let out = h.reply(&s, Ok(locked()));
    let create = one_send(&out);
    assert!(matches!(create.req, ShardReq::CreateCurrentEdge(_)));
    assert_eq!(create.delay_ms, 0);
    let out = h.reply(&create, Err(EggsError::Timeout));
    assert_eq!(one_send(&out).delay_ms, 100);
}

/// A MakeDirectory also holds the lock of the directory it creates, so that every
/// transaction touching that directory runs after it (the shards' fences rely on it): a
/// MakeDirectory inside the new directory, sent as soon as its edge can be seen, waits.
#[test]
fn make_directory_holds_the_new_directorys_lock() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), mkdir(dir(1), "a"));
    let t1 = started(a);
    let ShardReq::CreateDirectoryInode(c) = one_send(&out).req else {
        panic!("expected CreateDirectoryInode");
    };
    let (a, _) = h.request(2, header(9, 2), mkdir(c.id, "b"));
    let t2 = queued(a);
    let out = complete(&mut h, out);
    assert!(!h.core.is_running(t1));
    assert_eq!(one_send(&out).txn, t2);
}

#[test]
fn stale_and_unknown_replies_are_ignored() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let lock = one_send(&out);
    let out = h.reply(&lock, Ok(locked()));
    let remove = one_send(&out);
    // A duplicate of the first step's outcome changes nothing.
    let out = h.reply(&lock, Ok(locked()));
    assert!(out.sends.is_empty() && out.replies.is_empty() && !out.has_writes());
    let unknown = ShardSend {
        txn: 999,
        ..remove.clone()
    };
    let out = h.reply(&unknown, Ok(owner_removed()));
    assert!(out.sends.is_empty() && !out.has_writes());
    // The current step still completes normally.
    let out = h.reply(&remove, Ok(owner_removed()));
    assert!(matches!(one_send(&out).req, ShardReq::UnlockCurrentEdge(_)));
}

#[test]
fn response_of_the_wrong_kind_rolls_back_with_an_internal_error() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = fence_new_edge(&mut h, &out, dir(2), "new", file(7));
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::UnlockCurrentEdge(u) if !u.was_moved));
    let out = h.reply(&s, Ok(unlocked()));
    assert_final(&out, 1, 1, Err(EggsError::InternalError));
}

// ---- concurrency ----

#[test]
fn disjoint_transactions_run_concurrently() {
    let mut h = Harness::new();
    let (a, out_a) = h.request(1, header(9, 1), mkdir(dir(1), "a"));
    let ta = started(a);
    let (b, out_b) = h.request(2, header(9, 2), rename_file(file(7), dir(2), dir(3)));
    let tb = started(b);
    assert!(h.core.is_running(ta) && h.core.is_running(tb));
    // Interleave their steps.
    let out_b = h.reply(&one_send(&out_b), Ok(locked()));
    let out_a = h.reply(&one_send(&out_a), Ok(created_inode()));
    let out_b = h.reply(&one_send(&out_b), Ok(created_edge()));
    let out_a = h.reply(&one_send(&out_a), Ok(created_edge()));
    let (old_b, new_b) = final_unlocks(&out_b, dir(2), dir(3));
    h.reply(&old_b, Ok(unlocked()));
    let out_a = h.reply(&one_send(&out_a), Ok(unlocked()));
    assert_eq!(one_reply(&out_a).to, addr(1));
    let out_b = h.reply(&new_b, Ok(unlocked()));
    assert_eq!(one_reply(&out_b).to, addr(2));
    assert_eq!(h.core.live_txns(), 0);
}

#[test]
fn conflicting_transactions_run_one_after_the_other_in_arrival_order() {
    let mut h = Harness::new();
    let (a, out1) = h.request(1, header(9, 1), mkdir(dir(1), "a"));
    let t1 = started(a);
    let (a, out2) = h.request(2, header(9, 2), mkdir(dir(1), "b"));
    let t2 = queued(a);
    assert!(out2.sends.is_empty());
    assert!(out2.sync, "a queued transaction is durable too");
    let (a, _) = h.request(3, header(9, 3), rmdir(dir(1), dir(5)));
    let t3 = queued(a);
    let out = complete(&mut h, out1);
    assert_eq!(one_reply(&out).to, addr(1));
    // t2 starts in the very output that finishes t1 (after t1's result is persisted).
    assert_eq!(one_send(&out).txn, t2);
    assert!(!h.core.is_running(t1) && h.core.is_running(t2) && !h.core.is_running(t3));
    let out = complete(&mut h, out);
    assert_eq!(one_reply(&out).to, addr(2));
    assert_eq!(one_send(&out).txn, t3);
    let out = complete(&mut h, out);
    assert_eq!(one_reply(&out).to, addr(3));
}

#[test]
fn a_waiting_transaction_is_not_overtaken_on_its_free_locks() {
    let mut h = Harness::new();
    // t1 holds dir1 and dir2; t2 needs dir2 and dir3; t3 needs only dir3, which is free, but
    // t2 queued for it first.
    let (a, out1) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    started(a);
    let (a, _) = h.request(2, header(9, 2), rename_file(file(8), dir(2), dir(3)));
    let t2 = queued(a);
    let (a, _) = h.request(3, header(9, 3), mkdir(dir(3), "x"));
    let t3 = queued(a);
    let out = complete(&mut h, out1);
    assert_eq!(one_send(&out).txn, t2);
    assert!(!h.core.is_running(t3));
    let out = complete(&mut h, out);
    assert_eq!(one_send(&out).txn, t3);
}

#[test]
fn directory_moves_are_serialized_even_when_disjoint() {
    let mut h = Harness::new();
    let (a, out1) = h.request(1, header(9, 1), rename_dir(dir(7), dir(1), dir(2)));
    started(a);
    let (a, _) = h.request(2, header(9, 2), rename_dir(dir(8), dir(3), dir(4)));
    let t2 = queued(a);
    // A file rename over the same directories is not held back by the global lock.
    let (a, _) = h.request(3, header(9, 3), rename_file(file(9), dir(5), dir(6)));
    started(a);
    let out = complete(&mut h, out1);
    assert_eq!(one_send(&out).txn, t2);
}

#[test]
fn requests_beyond_the_bound_are_dropped() {
    let mut h = Harness::with_config(CoreConfig {
        max_txns: 2,
        ..CoreConfig::default()
    });
    let (a, out1) = h.request(1, header(9, 1), mkdir(dir(1), "a"));
    let t1 = started(a);
    queued(h.request(1, header(9, 2), mkdir(dir(1), "b")).0);
    let (a, out) = h.request(1, header(9, 3), mkdir(dir(2), "c"));
    assert_eq!(a, Admission::Dropped);
    assert_eq!(out, Output::default(), "dropped without a trace");
    // Retries of admitted requests are still answered.
    assert_eq!(
        h.request(1, header(9, 1), mkdir(dir(1), "a")).0,
        Admission::Duplicate(t1)
    );
    complete(&mut h, out1);
    started(h.request(1, header(9, 3), mkdir(dir(2), "c")).0);
}

// ---- deduplication and retention ----

#[test]
fn a_retried_request_joins_or_reuses_its_transaction() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    let t = started(a);
    // A retry from another address while running: no second transaction, both get the reply.
    let (a, retry_out) = h.request(2, header(9, 1), mkdir(dir(1), "d"));
    assert_eq!(a, Admission::Duplicate(t));
    assert_eq!(retry_out, Output::default());
    let out = complete(&mut h, out);
    let to: Vec<_> = out.replies.iter().map(|r| r.to).collect();
    assert_eq!(to, [addr(1), addr(2)]);
    let result = out.replies[0].resp.clone();
    // A retry after the end gets the same result without any step or write.
    let (a, out) = h.request(3, header(9, 1), mkdir(dir(1), "d"));
    assert_eq!(a, Admission::Duplicate(t));
    assert!(out.sends.is_empty() && !out.has_writes());
    assert_eq!(one_reply(&out).resp, result);
    // The same request id from another client is another request.
    started(h.request(1, header(10, 1), mkdir(dir(1), "d")).0);
}

#[test]
fn finished_transactions_are_forgotten_after_the_retention_time() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    let t = started(a);
    complete(&mut h, out);
    let ttl = CoreConfig::default().finished_ttl_ns;
    let out = h.tick(EggsTime(T0.0 + ttl - 1));
    assert!(!out.has_writes());
    assert_eq!(h.core.finished_txns(), 1);
    let out = h.tick(EggsTime(T0.0 + ttl));
    assert_eq!(out.writes, [Write::Delete { id: t }]);
    assert!(!out.sync, "deletions need no sync");
    assert_eq!(h.core.finished_txns(), 0);
    assert!(h.disk.is_empty());
    // Now the same header is a new request.
    started(h.request(1, header(9, 1), mkdir(dir(1), "d")).0);
}

#[test]
fn finished_transactions_beyond_the_cap_are_forgotten_oldest_first() {
    let mut h = Harness::with_config(CoreConfig {
        max_finished: 2,
        ..CoreConfig::default()
    });
    for i in 0..3 {
        let (_, out) = h.request(1, header(9, i), mkdir(dir(i), "d"));
        complete(&mut h, out);
    }
    assert_eq!(h.core.finished_txns(), 2);
    assert!(matches!(
        h.request(1, header(9, 0), mkdir(dir(0), "d")).0,
        Admission::Started(_)
    ));
    assert!(matches!(
        h.request(1, header(9, 2), mkdir(dir(2), "d")).0,
        Admission::Duplicate(_)
    ));
}

// ---- restart ----

#[test]
fn restart_resends_the_recorded_step_and_keeps_queued_order() {
    let mut h = Harness::new();
    let (a, out1) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let t1 = started(a);
    let (a, _) = h.request(2, header(9, 2), mkdir(dir(2), "x"));
    let t2 = queued(a);
    let out = h.reply(&one_send(&out1), Ok(locked()));
    let create = one_send(&out);
    // Crash while the CreateCurrentEdge is in flight.
    let out = h.restart();
    assert_eq!(h.core.live_txns(), 2);
    let resent = one_send(&out);
    assert_eq!((resent.txn, &resent.req), (t1, &create.req));
    assert!(!h.core.is_running(t2));
    // The client retries against the new process and joins the resumed transaction.
    assert_eq!(
        h.request(5, header(9, 1), rename_file(file(7), dir(1), dir(2)))
            .0,
        Admission::Duplicate(t1)
    );
    let out = complete(&mut h, out);
    assert_eq!(one_reply(&out).to, addr(5));
    assert_eq!(one_send(&out).txn, t2);
    let out = complete(&mut h, out);
    assert!(
        out.replies.is_empty(),
        "t2's client address was not persisted"
    );
    // The result survives another restart for its retries, and ids are not reused.
    h.restart();
    let (a, out) = h.request(2, header(9, 2), mkdir(dir(2), "x"));
    assert_eq!(a, Admission::Duplicate(t2));
    assert!(matches!(
        one_reply(&out).resp.result,
        Ok(CdcResp::MakeDirectory(_))
    ));
    let t3 = started(h.request(1, header(9, 3), mkdir(dir(3), "y")).0);
    assert!(t3 > t2);
}

#[test]
fn restart_keeps_the_chosen_directory_id() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), mkdir(dir(1), "d"));
    let ShardReq::CreateDirectoryInode(first) = one_send(&out).req else {
        panic!("expected CreateDirectoryInode");
    };
    // Lose the counter update, as if only the record had been written.
    h.disk_counters = Counters::default();
    let out = h.restart();
    assert_eq!(
        one_send(&out).req,
        ShardReq::CreateDirectoryInode(CreateDirectoryInodeReq {
            id: first.id,
            owner_id: dir(1),
            info: DirectoryInfo::default(),
            txn_id: first.txn_id,
            attrs: MKDIR_ATTRS,
        })
    );
    // A new mkdir does not get the resumed one's id.
    let (_, out) = h.request(1, header(9, 2), mkdir(dir(2), "e"));
    let ShardReq::CreateDirectoryInode(second) = one_send(&out).req else {
        panic!("expected CreateDirectoryInode");
    };
    assert_ne!(second.id, first.id);
}

#[test]
fn restart_during_rollback_finishes_the_rollback() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Err(EggsError::DirectoryNotEmpty));
    let restore = one_send(&out);
    let out = h.restart();
    assert_eq!(one_send(&out).req, restore.req);
    let out = h.reply(&one_send(&out), Ok(owner_set()));
    let out = h.reply(&one_send(&out), Ok(unlocked()));
    assert!(out.replies.is_empty());
    let (_, out) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    assert_eq!(
        one_reply(&out).resp.result,
        Err(EggsError::DirectoryNotEmpty)
    );
}

#[test]
fn a_corrupt_step_fails_its_transaction_instead_of_panicking() {
    let mut h = Harness::new();
    let (a, _) = h.request(1, header(9, 1), rmdir(dir(1), dir(7)));
    let t = started(a);
    if let Some(TxnRecord {
        state: TxnState::Running(p),
        ..
    }) = h.disk.get_mut(&t)
    {
        p.step = Step::SetDirectoryOwner;
    }
    let out = h.restart();
    assert!(out.sends.is_empty());
    assert!(matches!(
        &out.writes[..],
        [Write::Put(TxnRecord {
            state: TxnState::Done {
                result: Err(EggsError::InternalError),
                ..
            },
            ..
        })]
    ));
    assert_eq!(h.core.live_txns(), 0);
}

// ---- UndeleteDirectory ----

fn undelete_dir(owner: InodeId, target: InodeId) -> CdcReq {
    CdcReq::UndeleteDirectory(eggs_protocol::cdc::UndeleteDirectoryReq {
        owner_id: owner,
        name: name("d"),
        target_id: target,
    })
}

fn reattached() -> ShardResp {
    ShardResp::ReattachDirectory(eggs_protocol::shard::ReattachDirectoryResp {})
}

#[test]
fn undelete_directory_reattaches_then_links() {
    let mut h = Harness::new();
    let (a, out) = h.request(1, header(9, 1), undelete_dir(dir(1), dir(2)));
    started(a);
    let s = one_send(&out);
    assert_eq!(s.shard, dir(2).shard());
    assert_eq!(
        s.req,
        ShardReq::ReattachDirectory(eggs_protocol::shard::ReattachDirectoryReq {
            dir_id: dir(2),
            owner_id: dir(1),
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(reattached()));
    let s = one_send(&out);
    assert_eq!(
        s.req,
        ShardReq::CreateCurrentEdge(CreateCurrentEdgeReq {
            dir_id: dir(1),
            name: name("d"),
            target_id: dir(2),
            overwrite_files: false,
            txn_id: s.txn,
        })
    );
    let out = h.reply(&s, Ok(created_edge()));
    let out = unlock_new_edge(&mut h, &out, dir(1), "d", dir(2));
    let resp =
        CdcResp::UndeleteDirectory(eggs_protocol::cdc::UndeleteDirectoryResp { creation_time: CT });
    assert_final(&out, 1, 1, Ok(resp));
}

#[test]
fn undelete_directory_detaches_again_when_the_name_is_taken() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), undelete_dir(dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(reattached()));
    let out = h.reply(&one_send(&out), Err(EggsError::NameExists));
    let out = fence_new_edge(&mut h, &out, dir(1), "d", dir(2));
    let s = one_send(&out);
    assert_eq!(
        s.req,
        ShardReq::RemoveDirectoryOwner(RemoveDirectoryOwnerReq {
            dir_id: dir(2),
            txn_id: s.txn,
            rollback: true,
        })
    );
    assert!(out.replies.is_empty());
    let out = h.reply(&s, Ok(owner_removed()));
    assert_final(&out, 1, 1, Err(EggsError::NameExists));
}

#[test]
fn undelete_of_a_collected_directory_fails_at_once() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), undelete_dir(dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Err(EggsError::SnapshotNotFound));
    assert_final(&out, 1, 1, Err(EggsError::SnapshotNotFound));
    let (a, _) = h.request(1, header(9, 2), undelete_dir(dir(1), InodeId::ROOT));
    assert_eq!(a, Admission::Rejected(EggsError::CannotRemoveRoot));
}

/// A step resent after a restart carries the header of its copy sent before the crash (so a
/// late copy of either is answered from the shard's dedup table), while each retry after a
/// failure gets a new one (the shard remembers failures too). Found by the simulator.
#[test]
fn a_resumed_step_keeps_its_header() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let create = one_send(&out);
    let out = h.restart();
    let resent = one_send(&out);
    assert_eq!(resent.req, create.req);
    assert_eq!(resent.header, create.header);
    complete(&mut h, out);

    let (_, out) = h.request(1, header(9, 2), rmdir(dir(1), dir(8)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Ok(owner_removed()));
    let unlock = one_send(&out);
    let out = h.reply(&unlock, Err(EggsError::EdgeNotLocked));
    let retry = one_send(&out);
    assert_eq!(retry.req, unlock.req);
    assert_ne!(
        retry.header, unlock.header,
        "a retry after a failure is a new request"
    );
    let other_txn = [create.header, resent.header, unlock.header];
    assert!(other_txn
        .iter()
        .all(|h| h.request_id != retry.header.request_id));
}

/// Bug D: the edge CreateNewEdge makes is locked, and unlocking it (which also fences the
/// directory against late copies of the create) is a final step. In a rename it goes out
/// together with the old edge's unlock; after a crash both are resent with their headers (the
/// commit point is synced, so the create itself is never resent once it succeeded), and an
/// error is retried until it passes. A rollback after a failed create fences the directory
/// first too.
#[test]
fn the_final_unlocks_run_together_and_resume_with_their_headers() {
    let mut h = Harness::new();
    let (_, out) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    let out = h.reply(&one_send(&out), Ok(locked()));
    let out = h.reply(&one_send(&out), Ok(created_edge()));
    assert!(out.sync, "passing the commit point is synced");
    let synced = h.disk.clone();
    let (old, new) = final_unlocks(&out, dir(1), dir(2));
    let out = h.reply(&old, Ok(unlocked()));
    assert!(
        out.sends.is_empty(),
        "the new edge's unlock is already in flight"
    );
    // A crash that loses the unsynced progress resumes after the commit point: the create is
    // not sent again; both unlocks are, each with the header it had (so the shards answer
    // them from their dedup tables).
    h.disk = synced;
    let out = h.restart();
    let (old2, new2) = final_unlocks(&out, dir(1), dir(2));
    assert_eq!((&old2.req, old2.header), (&old.req, old.header));
    assert_eq!((&new2.req, new2.header), (&new.req, new.header));
    // The client retries against the new process and joins the resumed transaction.
    let (a, _) = h.request(1, header(9, 1), rename_file(file(7), dir(1), dir(2)));
    assert!(matches!(a, Admission::Duplicate(_)));
    // The early unlock fails: dropped, and sent again in its turn, where a must-complete
    // step's error is retried with back-off rather than reported.
    let out = h.reply(&new2, Err(EggsError::DirectoryNotFound));
    assert!(out.sends.is_empty() && out.replies.is_empty());
    let out = h.reply(&old2, Ok(unlocked()));
    let s = one_send(&out);
    assert_eq!(
        (&s.req, s.header),
        (&new.req, new.header),
        "its turn: attempt 0"
    );
    let out = h.reply(&s, Err(EggsError::DirectoryNotFound));
    assert!(out.replies.is_empty());
    let s = one_send(&out);
    assert!(s.delay_ms > 0, "retried after a back-off");
    assert_eq!(s.req, new.req);
    assert_ne!(s.header, new.header, "a new attempt, a new request id");
    let out = h.reply(&s, Ok(unlocked()));
    let resp = CdcResp::RenameFile(RenameFileResp { creation_time: CT });
    assert_final(&out, 1, 1, Ok(resp));

    // Rollback: the directory is fenced first, then the inode goes.
    let (_, out) = h.request(1, header(9, 2), mkdir(dir(3), "x"));
    let out = h.reply(&one_send(&out), Ok(created_inode()));
    let out = h.reply(&one_send(&out), Err(EggsError::NameExists));
    let new_id = InodeId::new(InodeType::Directory, ShardId(1), 1);
    let out = fence_new_edge(&mut h, &out, dir(3), "x", new_id);
    let s = one_send(&out);
    assert!(matches!(&s.req, ShardReq::RemoveDirectoryInode(_)));
    let out = h.reply(&s, Ok(inode_removed()));
    assert_final(&out, 1, 2, Err(EggsError::NameExists));
}
