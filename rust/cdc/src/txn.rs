//! The transactions as pure functions: validation, lock sets, the shard request of each
//! step, and the transition a step's outcome causes.
//!
//! Every transaction has the same shape: zero or more read-only checks, fallible steps that
//! can still be undone, then (past the commit point) steps that must complete. A failure in
//! the fallible part undoes the one step with an effect (the edge lock, or the new directory
//! inode) and reports the error.

use crate::locks::LockKey;
use crate::record::{Progress, Step, TxnId};
use eggs_protocol::cdc::{
    CdcReq, CdcResp, MakeDirectoryResp, RemoveDirectoryResp, RenameDirectoryResp, RenameFileResp,
    UndeleteDirectoryResp,
};
use eggs_protocol::shard::{
    CreateCurrentEdgeReq, CreateDirectoryInodeReq, LockCurrentEdgeReq, ReattachDirectoryReq,
    RemoveDirectoryInodeReq, RemoveDirectoryOwnerReq, SetDirectoryOwnerReq, ShardReq, ShardResp,
    StatDirectoryReq, UnlockCurrentEdgeReq,
};
use eggs_protocol::{EggsError, EggsTime, InodeId, Name, ShardId};

/// A directory chain longer than this is taken to be corrupt (it would otherwise make the
/// loop check walk forever).
pub const MAX_LOOP_CHECK_HOPS: u32 = 4096;

/// Rejects requests that no shard state could make succeed.
pub fn validate(req: &CdcReq) -> Result<(), EggsError> {
    match req {
        CdcReq::MakeDirectory(r) => expect_dir(r.owner_id),
        CdcReq::RenameFile(r) => {
            expect_valid(r.target_id)?;
            if r.target_id.is_dir() {
                return Err(EggsError::IsADirectory);
            }
            expect_two_dirs(r.old_owner_id, r.new_owner_id)
        }
        CdcReq::RenameDirectory(r) => {
            expect_movable_dir(r.target_id)?;
            expect_two_dirs(r.old_owner_id, r.new_owner_id)?;
            if r.new_owner_id == r.target_id {
                return Err(EggsError::LoopInDirectoryRename);
            }
            Ok(())
        }
        CdcReq::RemoveDirectory(r) => {
            expect_movable_dir(r.target_id)?;
            expect_dir(r.owner_id)
        }
        CdcReq::UndeleteDirectory(r) => {
            expect_movable_dir(r.target_id)?;
            expect_dir(r.owner_id)?;
            if r.owner_id == r.target_id {
                return Err(EggsError::LoopInDirectoryRename);
            }
            Ok(())
        }
    }
}

fn expect_valid(id: InodeId) -> Result<(), EggsError> {
    // An id with no type (such as NULL) cannot name anything: the request is broken.
    id.typ().map(|_| ()).ok_or(EggsError::MalformedRequest)
}

fn expect_dir(id: InodeId) -> Result<(), EggsError> {
    expect_valid(id)?;
    if id.is_dir() {
        Ok(())
    } else {
        Err(EggsError::NotADirectory)
    }
}

fn expect_movable_dir(id: InodeId) -> Result<(), EggsError> {
    expect_dir(id)?;
    if id == InodeId::ROOT {
        return Err(EggsError::CannotRemoveRoot);
    }
    Ok(())
}

fn expect_two_dirs(old: InodeId, new: InodeId) -> Result<(), EggsError> {
    expect_dir(old)?;
    expect_dir(new)?;
    if old == new {
        // Same-directory renames are a single shard request; the CDC is not needed.
        return Err(EggsError::SameDirectories);
    }
    Ok(())
}

/// The locks a transaction holds for its whole run (duplicates are harmless: the lock table
/// deduplicates them). Every directory a step of the transaction touches (its edges or its
/// inode) is among them, so that the transactions touching one directory run one after the
/// other in id order: the shards' fences of CDC steps rely on it. `new_dir_id` is the
/// directory a MakeDirectory creates (its lock is free: the id is new).
pub fn lock_set(req: &CdcReq, new_dir_id: InodeId) -> Vec<LockKey> {
    match req {
        CdcReq::MakeDirectory(r) => {
            assert!(
                new_dir_id.is_dir(),
                "a MakeDirectory without its directory id"
            );
            vec![LockKey::Dir(r.owner_id), LockKey::Dir(new_dir_id)]
        }
        CdcReq::RenameFile(r) => vec![LockKey::Dir(r.old_owner_id), LockKey::Dir(r.new_owner_id)],
        CdcReq::RemoveDirectory(r) => vec![LockKey::Dir(r.owner_id), LockKey::Dir(r.target_id)],
        CdcReq::UndeleteDirectory(r) => {
            vec![LockKey::Dir(r.owner_id), LockKey::Dir(r.target_id)]
        }
        // The global lock keeps loop checks from racing with other directory moves.
        CdcReq::RenameDirectory(r) => vec![
            LockKey::Dir(r.old_owner_id),
            LockKey::Dir(r.new_owner_id),
            LockKey::Dir(r.target_id),
            LockKey::DirectoryMoves,
        ],
    }
}

/// The progress a new transaction starts with. `new_dir_id` is the id allocated for a
/// MakeDirectory (ignored by the other kinds).
pub fn initial_progress(req: &CdcReq, new_dir_id: InodeId) -> Progress {
    let (step, new_dir_id) = match req {
        CdcReq::MakeDirectory(_) => (Step::CreateDirectoryInode, new_dir_id),
        CdcReq::UndeleteDirectory(_) => (Step::ReattachDirectory, InodeId::NULL),
        CdcReq::RenameDirectory(r) if r.new_owner_id != InodeId::ROOT => (
            Step::CheckLoop {
                cursor: r.new_owner_id,
                hops: 0,
            },
            InodeId::NULL,
        ),
        _ => (Step::LockOldEdge, InodeId::NULL),
    };
    Progress {
        step,
        new_dir_id,
        creation_time: EggsTime(0),
        failure: None,
    }
}

/// The edge a rename or a RemoveDirectory starts from, as the client saw it.
struct OldEdge<'a> {
    dir_id: InodeId,
    name: &'a Name,
    target_id: InodeId,
    creation_time: EggsTime,
}

fn old_edge(req: &CdcReq) -> Option<OldEdge<'_>> {
    match req {
        CdcReq::MakeDirectory(_) | CdcReq::UndeleteDirectory(_) => None,
        CdcReq::RenameFile(r) => Some(OldEdge {
            dir_id: r.old_owner_id,
            name: &r.old_name,
            target_id: r.target_id,
            creation_time: r.old_creation_time,
        }),
        CdcReq::RenameDirectory(r) => Some(OldEdge {
            dir_id: r.old_owner_id,
            name: &r.old_name,
            target_id: r.target_id,
            creation_time: r.old_creation_time,
        }),
        CdcReq::RemoveDirectory(r) => Some(OldEdge {
            dir_id: r.owner_id,
            name: &r.name,
            target_id: r.target_id,
            creation_time: r.creation_time,
        }),
    }
}

fn new_edge(req: &CdcReq, p: &Progress, txn_id: TxnId) -> Option<CreateCurrentEdgeReq> {
    let (dir_id, name, target_id, overwrite_files) = match req {
        CdcReq::MakeDirectory(r) => (r.owner_id, &r.name, p.new_dir_id, false),
        CdcReq::RenameFile(r) => (r.new_owner_id, &r.new_name, r.target_id, true),
        CdcReq::RenameDirectory(r) => (r.new_owner_id, &r.new_name, r.target_id, false),
        CdcReq::UndeleteDirectory(r) => (r.owner_id, &r.name, r.target_id, false),
        CdcReq::RemoveDirectory(_) => return None,
    };
    Some(CreateCurrentEdgeReq {
        dir_id,
        name: name.clone(),
        target_id,
        overwrite_files,
        txn_id,
    })
}

/// A step that makes no sense for the transaction's kind: only a corrupt record or a bug
/// can produce one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {step:?} does not apply to a {kind} transaction")]
pub struct BadStep {
    pub step: Step,
    pub kind: &'static str,
}

/// The shard request that performs the transaction's current step, and where it goes.
pub fn step_request(
    req: &CdcReq,
    p: &Progress,
    txn_id: TxnId,
) -> Result<(ShardId, ShardReq), BadStep> {
    let bad = || BadStep {
        step: p.step,
        kind: req.kind(),
    };
    assert!(txn_id != 0, "transaction ids start at 1");
    let body = match (p.step, req) {
        (Step::CreateDirectoryInode, CdcReq::MakeDirectory(r)) => {
            ShardReq::CreateDirectoryInode(CreateDirectoryInodeReq {
                id: p.new_dir_id,
                owner_id: r.owner_id,
                info: r.info.clone(),
                txn_id,
                attrs: r.attrs,
            })
        }
        (Step::RemoveDirectoryInode, CdcReq::MakeDirectory(r)) => {
            ShardReq::RemoveDirectoryInode(RemoveDirectoryInodeReq {
                id: p.new_dir_id,
                owner_id: r.owner_id,
                txn_id,
            })
        }
        (Step::CheckLoop { cursor, .. }, CdcReq::RenameDirectory(_)) => {
            ShardReq::StatDirectory(StatDirectoryReq { id: cursor })
        }
        (Step::SetDirectoryOwner, CdcReq::RenameDirectory(r)) => {
            ShardReq::SetDirectoryOwner(SetDirectoryOwnerReq {
                dir_id: r.target_id,
                owner_id: r.new_owner_id,
                txn_id,
            })
        }
        (Step::RemoveDirectoryOwner, CdcReq::RemoveDirectory(r)) => {
            ShardReq::RemoveDirectoryOwner(RemoveDirectoryOwnerReq {
                dir_id: r.target_id,
                txn_id,
                rollback: false,
            })
        }
        (Step::RestoreDirectoryOwner, CdcReq::RemoveDirectory(r)) => {
            ShardReq::SetDirectoryOwner(SetDirectoryOwnerReq {
                dir_id: r.target_id,
                owner_id: r.owner_id,
                txn_id,
            })
        }
        (Step::ReattachDirectory, CdcReq::UndeleteDirectory(r)) => {
            ShardReq::ReattachDirectory(ReattachDirectoryReq {
                dir_id: r.target_id,
                owner_id: r.owner_id,
                txn_id,
            })
        }
        (Step::DetachDirectory, CdcReq::UndeleteDirectory(r)) => {
            ShardReq::RemoveDirectoryOwner(RemoveDirectoryOwnerReq {
                dir_id: r.target_id,
                txn_id,
                rollback: true,
            })
        }
        (Step::CreateNewEdge, _) => {
            ShardReq::CreateCurrentEdge(new_edge(req, p, txn_id).ok_or_else(bad)?)
        }
        (Step::UnlockNewEdge, _) => {
            let e = new_edge(req, p, txn_id).ok_or_else(bad)?;
            ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
                dir_id: e.dir_id,
                name: e.name,
                target_id: e.target_id,
                // 0 (unknown) if the create failed: then the step removes what a late copy
                // of the create may have made.
                creation_time: p.creation_time,
                was_moved: false,
                txn_id,
                new_edge: true,
            })
        }
        (Step::LockOldEdge, _) => {
            let e = old_edge(req).ok_or_else(bad)?;
            ShardReq::LockCurrentEdge(LockCurrentEdgeReq {
                dir_id: e.dir_id,
                name: e.name.clone(),
                target_id: e.target_id,
                creation_time: e.creation_time,
                txn_id,
            })
        }
        (Step::UnlockOldEdge { moved }, _) => {
            let e = old_edge(req).ok_or_else(bad)?;
            ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
                dir_id: e.dir_id,
                name: e.name.clone(),
                target_id: e.target_id,
                creation_time: e.creation_time,
                was_moved: moved,
                txn_id,
                new_edge: false,
            })
        }
        _ => return Err(bad()),
    };
    Ok((shard_of(&body), body))
}

/// Every CDC step concerns one inode, whose shard owns the request.
fn shard_of(body: &ShardReq) -> ShardId {
    let id = match body {
        ShardReq::CreateDirectoryInode(r) => r.id,
        ShardReq::RemoveDirectoryInode(r) => r.id,
        ShardReq::StatDirectory(r) => r.id,
        ShardReq::SetDirectoryOwner(r) => r.dir_id,
        ShardReq::RemoveDirectoryOwner(r) => r.dir_id,
        ShardReq::CreateCurrentEdge(r) => r.dir_id,
        ShardReq::LockCurrentEdge(r) => r.dir_id,
        ShardReq::UnlockCurrentEdge(r) => r.dir_id,
        ShardReq::ReattachDirectory(r) => r.dir_id,
        // step_request builds only the kinds above.
        _ => InodeId::ROOT,
    };
    id.shard()
}

/// What a step's outcome does to its transaction.
#[derive(Clone, PartialEq, Debug)]
pub enum Transition {
    /// Go on with the given progress.
    Next(Progress),
    /// A step that must complete failed: send it again (after a back-off).
    Retry(EggsError),
    /// Done: this is what the client gets.
    Finish(Result<CdcResp, EggsError>),
}

/// The transition caused by the outcome of the current step. An `Ok` response of the wrong
/// kind counts as `InternalError`: the shard misbehaved.
pub fn advance(req: &CdcReq, p: &Progress, outcome: Result<ShardResp, EggsError>) -> Transition {
    let outcome = outcome.and_then(|r| {
        if response_fits(p.step, &r) {
            Ok(r)
        } else {
            Err(EggsError::InternalError)
        }
    });
    if p.step.must_complete() {
        return match outcome {
            Ok(_) => after_must_complete_step(req, p),
            Err(e) => Transition::Retry(e),
        };
    }
    match (p.step, outcome) {
        // These steps come after the edge lock or the new inode, which must be undone.
        (Step::CreateNewEdge | Step::RemoveDirectoryOwner, Err(e)) => roll_back(req, p, e),
        // Nothing has been changed yet (locking is the first change of its transaction).
        (_, Err(e)) => Transition::Finish(Err(e)),
        (Step::CreateDirectoryInode | Step::ReattachDirectory, Ok(_)) => {
            next(p, Step::CreateNewEdge)
        }
        (Step::CheckLoop { hops, .. }, Ok(ShardResp::StatDirectory(s))) => {
            loop_check_hop(req, p, s.owner_id, hops)
        }
        (Step::LockOldEdge, Ok(_)) => next(p, after_lock(req)),
        (Step::CreateNewEdge, Ok(ShardResp::CreateCurrentEdge(r))) => {
            after_new_edge(req, p, r.creation_time)
        }
        (Step::RemoveDirectoryOwner, Ok(_)) => next(p, Step::UnlockOldEdge { moved: true }),
        // response_fits admitted only the kinds matched above.
        (_, Ok(_)) => Transition::Finish(Err(EggsError::InternalError)),
    }
}

/// Whether `resp` is the response kind of the request `step` sends.
fn response_fits(step: Step, resp: &ShardResp) -> bool {
    matches!(
        (step, resp),
        (
            Step::CreateDirectoryInode,
            ShardResp::CreateDirectoryInode(_)
        ) | (Step::CheckLoop { .. }, ShardResp::StatDirectory(_))
            | (Step::LockOldEdge, ShardResp::LockCurrentEdge(_))
            | (Step::CreateNewEdge, ShardResp::CreateCurrentEdge(_))
            | (Step::SetDirectoryOwner, ShardResp::SetDirectoryOwner(_))
            | (
                Step::RemoveDirectoryOwner,
                ShardResp::RemoveDirectoryOwner(_)
            )
            | (Step::UnlockOldEdge { .. }, ShardResp::UnlockCurrentEdge(_))
            | (
                Step::RemoveDirectoryInode,
                ShardResp::RemoveDirectoryInode(_)
            )
            | (Step::ReattachDirectory, ShardResp::ReattachDirectory(_))
            | (Step::DetachDirectory, ShardResp::RemoveDirectoryOwner(_))
            | (Step::UnlockNewEdge, ShardResp::UnlockCurrentEdge(_))
            | (Step::RestoreDirectoryOwner, ShardResp::SetDirectoryOwner(_))
    )
}

fn next(p: &Progress, step: Step) -> Transition {
    Transition::Next(Progress { step, ..p.clone() })
}

fn after_lock(req: &CdcReq) -> Step {
    match req {
        CdcReq::RemoveDirectory(_) => Step::RemoveDirectoryOwner,
        _ => Step::CreateNewEdge,
    }
}

/// One hop of the walk from the new owner up to the root: moving the target below itself
/// would detach a cycle from the tree.
fn loop_check_hop(req: &CdcReq, p: &Progress, owner: InodeId, hops: u32) -> Transition {
    let CdcReq::RenameDirectory(r) = req else {
        return Transition::Finish(Err(EggsError::InternalError));
    };
    if owner.is_null() {
        // An ancestor of the destination (or the destination itself) was removed.
        return Transition::Finish(Err(EggsError::DirectoryRemoved));
    }
    if owner == r.target_id {
        return Transition::Finish(Err(EggsError::LoopInDirectoryRename));
    }
    if owner == InodeId::ROOT {
        return next(p, Step::LockOldEdge);
    }
    if hops + 1 >= MAX_LOOP_CHECK_HOPS {
        tracing::error!(
            "directory chain above {} is longer than {MAX_LOOP_CHECK_HOPS}",
            r.new_owner_id
        );
        return Transition::Finish(Err(EggsError::InternalError));
    }
    next(
        p,
        Step::CheckLoop {
            cursor: owner,
            hops: hops + 1,
        },
    )
}

fn after_new_edge(req: &CdcReq, p: &Progress, creation_time: EggsTime) -> Transition {
    let p = Progress {
        creation_time,
        ..p.clone()
    };
    match req {
        CdcReq::MakeDirectory(_) | CdcReq::UndeleteDirectory(_) => next(&p, Step::UnlockNewEdge),
        CdcReq::RenameDirectory(_) => next(&p, Step::SetDirectoryOwner),
        _ => next(&p, Step::UnlockOldEdge { moved: true }),
    }
}

/// Undoes the fallible part after `err`; the client gets `err` once the undo completes. A
/// failed create starts with its directory's fence (`UnlockNewEdge`), so that no late copy
/// of the create can take effect once the transaction is over; a failed RemoveDirectoryOwner
/// with its directory's (`RestoreDirectoryOwner`), for the same reason.
fn roll_back(req: &CdcReq, p: &Progress, err: EggsError) -> Transition {
    let step = match p.step {
        Step::CreateNewEdge => Step::UnlockNewEdge,
        Step::RemoveDirectoryOwner => Step::RestoreDirectoryOwner,
        _ => undo_step(req),
    };
    Transition::Next(Progress {
        step,
        failure: Some(err),
        ..p.clone()
    })
}

/// The step that undoes the one effect of the fallible part.
fn undo_step(req: &CdcReq) -> Step {
    match req {
        CdcReq::MakeDirectory(_) => Step::RemoveDirectoryInode,
        CdcReq::UndeleteDirectory(_) => Step::DetachDirectory,
        _ => Step::UnlockOldEdge { moved: false },
    }
}

/// The step after `p`'s that may be sent while `p`'s is still in flight, with the progress
/// it runs under: only a rename's two final unlocks qualify. Both must complete, they are
/// in different directories, and neither request depends on the other's outcome, so
/// running them together saves a round trip and leaves the same end state. (In between, the
/// new edge may be unlocked while the old one still exists, locked; a same-directory rename
/// or unlink of the new name then is as valid as right after the transaction.)
pub fn concurrent_successor(req: &CdcReq, p: &Progress) -> Option<Progress> {
    if p.step != (Step::UnlockOldEdge { moved: true }) || p.failure.is_some() {
        return None;
    }
    match after_must_complete_step(req, p) {
        Transition::Next(n) if n.step == Step::UnlockNewEdge => Some(n),
        _ => None,
    }
}

fn after_must_complete_step(req: &CdcReq, p: &Progress) -> Transition {
    match p.step {
        Step::SetDirectoryOwner => next(p, Step::UnlockOldEdge { moved: true }),
        Step::RestoreDirectoryOwner => next(p, Step::UnlockOldEdge { moved: false }),
        // A rename's new edge stays locked until its old edge is gone.
        Step::UnlockOldEdge { moved: true } if new_edge(req, p, 0).is_some() => {
            next(p, Step::UnlockNewEdge)
        }
        Step::UnlockNewEdge if p.failure.is_some() => next(p, undo_step(req)),
        // The last step of a success or of a rollback.
        _ => Transition::Finish(match p.failure {
            Some(e) => Err(e),
            None if p.step == Step::RemoveDirectoryInode => Err(EggsError::InternalError),
            None => Ok(success(req, p)),
        }),
    }
}

fn success(req: &CdcReq, p: &Progress) -> CdcResp {
    match req {
        CdcReq::MakeDirectory(_) => CdcResp::MakeDirectory(MakeDirectoryResp {
            id: p.new_dir_id,
            creation_time: p.creation_time,
        }),
        CdcReq::RenameFile(_) => CdcResp::RenameFile(RenameFileResp {
            creation_time: p.creation_time,
        }),
        CdcReq::RenameDirectory(_) => CdcResp::RenameDirectory(RenameDirectoryResp {
            creation_time: p.creation_time,
        }),
        CdcReq::RemoveDirectory(_) => CdcResp::RemoveDirectory(RemoveDirectoryResp {}),
        CdcReq::UndeleteDirectory(_) => CdcResp::UndeleteDirectory(UndeleteDirectoryResp {
            creation_time: p.creation_time,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::cdc::{RemoveDirectoryReq, RenameDirectoryReq, RenameFileReq};
    use eggs_protocol::InodeType;

    fn dir(n: u64) -> InodeId {
        InodeId::new(
            InodeType::Directory,
            ShardId(u8::try_from(n % 256).unwrap()),
            n,
        )
    }
    fn file(n: u64) -> InodeId {
        InodeId::new(InodeType::File, ShardId(u8::try_from(n % 256).unwrap()), n)
    }
    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }
    fn rename_dir(target: InodeId, old: InodeId, new: InodeId) -> CdcReq {
        CdcReq::RenameDirectory(RenameDirectoryReq {
            target_id: target,
            old_owner_id: old,
            old_name: name("a"),
            old_creation_time: EggsTime(1),
            new_owner_id: new,
            new_name: name("b"),
        })
    }

    #[test]
    fn validation() {
        let rf = |target, old, new| {
            validate(&CdcReq::RenameFile(RenameFileReq {
                target_id: target,
                old_owner_id: old,
                old_name: name("a"),
                old_creation_time: EggsTime(1),
                new_owner_id: new,
                new_name: name("b"),
            }))
        };
        assert_eq!(rf(file(5), dir(1), dir(2)), Ok(()));
        assert_eq!(rf(dir(5), dir(1), dir(2)), Err(EggsError::IsADirectory));
        assert_eq!(rf(file(5), dir(1), dir(1)), Err(EggsError::SameDirectories));
        assert_eq!(rf(file(5), file(1), dir(2)), Err(EggsError::NotADirectory));
        assert_eq!(
            rf(InodeId::NULL, dir(1), dir(2)),
            Err(EggsError::MalformedRequest)
        );
        let rd = |t, o, n| validate(&rename_dir(t, o, n));
        assert_eq!(rd(dir(5), dir(1), dir(2)), Ok(()));
        assert_eq!(rd(file(5), dir(1), dir(2)), Err(EggsError::NotADirectory));
        assert_eq!(
            rd(InodeId::ROOT, dir(1), dir(2)),
            Err(EggsError::CannotRemoveRoot)
        );
        assert_eq!(rd(dir(5), dir(1), dir(1)), Err(EggsError::SameDirectories));
        assert_eq!(
            rd(dir(5), dir(1), dir(5)),
            Err(EggsError::LoopInDirectoryRename)
        );
        let rm = |owner, target| {
            validate(&CdcReq::RemoveDirectory(RemoveDirectoryReq {
                owner_id: owner,
                target_id: target,
                name: name("a"),
                creation_time: EggsTime(1),
            }))
        };
        assert_eq!(rm(dir(1), dir(2)), Ok(()));
        assert_eq!(rm(dir(1), file(2)), Err(EggsError::NotADirectory));
        assert_eq!(rm(dir(1), InodeId::ROOT), Err(EggsError::CannotRemoveRoot));
    }

    #[test]
    fn steps_that_do_not_apply_are_refused() {
        let req = rename_dir(dir(5), dir(1), dir(2));
        let mut p = initial_progress(&req, InodeId::NULL);
        p.step = Step::RemoveDirectoryInode;
        assert_eq!(
            step_request(&req, &p, 1),
            Err(BadStep {
                step: Step::RemoveDirectoryInode,
                kind: "RenameDirectory"
            })
        );
    }

    #[test]
    fn loop_check_walk() {
        let req = rename_dir(dir(5), dir(1), dir(2));
        let p = initial_progress(&req, InodeId::NULL);
        assert_eq!(
            p.step,
            Step::CheckLoop {
                cursor: dir(2),
                hops: 0
            }
        );
        assert_eq!(
            step_request(&req, &p, 1).unwrap().0,
            ShardId(2),
            "stat goes to the directory's shard"
        );
        let hop = |owner| loop_check_hop(&req, &p, owner, 0);
        assert_eq!(
            hop(dir(5)),
            Transition::Finish(Err(EggsError::LoopInDirectoryRename))
        );
        assert_eq!(
            hop(InodeId::NULL),
            Transition::Finish(Err(EggsError::DirectoryRemoved))
        );
        assert!(matches!(hop(InodeId::ROOT), Transition::Next(n) if n.step == Step::LockOldEdge));
        assert!(matches!(hop(dir(3)), Transition::Next(n)
            if n.step == Step::CheckLoop { cursor: dir(3), hops: 1 }));
        assert_eq!(
            loop_check_hop(&req, &p, dir(3), MAX_LOOP_CHECK_HOPS - 1),
            Transition::Finish(Err(EggsError::InternalError))
        );
        let from_root = rename_dir(dir(5), dir(1), InodeId::ROOT);
        assert_eq!(
            initial_progress(&from_root, InodeId::NULL).step,
            Step::LockOldEdge
        );
    }
}
