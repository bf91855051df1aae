//! What the CDC persists: one record per transaction plus the id counters.
//!
//! Records are encoded with bincode (little-endian, fixed-width integers, the protocol's own
//! configuration) behind a one-byte format version, so that a future format change is
//! detected instead of misread.

use bincode::{Decode, Encode};
use eggs_protocol::cdc::{CdcReq, CdcResp};
use eggs_protocol::{EggsError, EggsTime, InodeId, RequestHeader};

/// Transaction ids are allocated in arrival order and never reused, so sorting by id
/// reproduces the order in which transactions queued for their locks.
pub type TxnId = u64;

/// Bumped whenever [`TxnRecord`] or [`Counters`] change shape.
pub const FORMAT_VERSION: u8 = 1;

/// One transaction: what was asked, by whom, and how far it got.
#[derive(Clone, PartialEq, Debug, Encode, Decode)]
pub struct TxnRecord {
    pub id: TxnId,
    /// The client's header: retries of the same request carry it again.
    pub header: RequestHeader,
    pub req: CdcReq,
    pub arrived_at: EggsTime,
    pub state: TxnState,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode)]
pub enum TxnState {
    Running(Progress),
    /// The result the client gets, kept for retries until the record expires.
    Done {
        result: Result<CdcResp, EggsError>,
        finished_at: EggsTime,
    },
}

/// Where a running transaction is, plus the values earlier steps produced that later steps
/// and the reply need.
#[derive(Clone, PartialEq, Debug, Encode, Decode)]
pub struct Progress {
    /// The step to send (or resend, after a restart) next.
    pub step: Step,
    /// MakeDirectory: the id chosen for the new directory at arrival. NULL otherwise.
    pub new_dir_id: InodeId,
    /// Creation time of the edge created by `CreateNewEdge`, once it succeeded.
    pub creation_time: EggsTime,
    /// Set while rolling back: the error the client will get once the rollback completes.
    pub failure: Option<EggsError>,
}

/// A step of a transaction, named after the shard request it sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode)]
pub enum Step {
    /// MakeDirectory: CreateDirectoryInode for the new id.
    CreateDirectoryInode,
    /// RenameDirectory: StatDirectory of `cursor`, one hop of the walk from the new owner up
    /// to the root; `hops` bounds the walk in case of a corrupt owner chain.
    CheckLoop { cursor: InodeId, hops: u32 },
    /// LockCurrentEdge on the edge the request names (renames, RemoveDirectory).
    LockOldEdge,
    /// CreateCurrentEdge in the destination directory (MakeDirectory, renames, undelete); the
    /// edge is created locked.
    CreateNewEdge,
    /// RenameDirectory: SetDirectoryOwner(target, new owner).
    SetDirectoryOwner,
    /// RemoveDirectory: RemoveDirectoryOwner(target).
    RemoveDirectoryOwner,
    /// UnlockCurrentEdge on the old edge: `moved` after success, not moved as a rollback.
    UnlockOldEdge { moved: bool },
    /// MakeDirectory rollback: RemoveDirectoryInode of the new id.
    RemoveDirectoryInode,
    /// UndeleteDirectory: ReattachDirectory(target, owner).
    ReattachDirectory,
    /// UndeleteDirectory rollback: RemoveDirectoryOwner(target) again.
    DetachDirectory,
    /// The last step of every transaction that created an edge (MakeDirectory, renames,
    /// UndeleteDirectory): UnlockCurrentEdge on the edge `CreateNewEdge` created locked, so
    /// that a late copy of that step can never create it again. Appended last: the records of
    /// older builds still decode.
    UnlockNewEdge,
    /// RemoveDirectory rollback: SetDirectoryOwner(target, owner), before the old edge's
    /// unlock. It fences the target's inode, so that a late copy of the failed
    /// RemoveDirectoryOwner can never detach it afterwards (and undoes one that got in
    /// before). Appended last, as above.
    RestoreDirectoryOwner,
}

impl Step {
    /// Steps that cannot fail for a reason the client should hear about: they run after the
    /// transaction's commit point or as its rollback, so errors are retried until they pass.
    pub fn must_complete(self) -> bool {
        matches!(
            self,
            Step::SetDirectoryOwner
                | Step::UnlockOldEdge { .. }
                | Step::RemoveDirectoryInode
                | Step::DetachDirectory
                | Step::UnlockNewEdge
                | Step::RestoreDirectoryOwner
        )
    }
}

/// Persisted id allocators.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode)]
pub struct Counters {
    pub next_txn_id: TxnId,
    /// Counter part of the next directory id; 0 is the root's.
    pub next_dir_counter: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            next_txn_id: 1,
            next_dir_counter: 1,
        }
    }
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty value")]
    Empty,
    #[error("format version {0}, this build reads {FORMAT_VERSION}")]
    Version(u8),
    #[error("{0}")]
    Decode(String),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 20 }>()
}

/// Encodes a value behind the format version byte.
pub fn encode_value<T: Encode>(value: &T) -> Vec<u8> {
    let mut buf = vec![FORMAT_VERSION];
    // Encoding into a Vec cannot fail for these plain types.
    if let Err(e) = bincode::encode_into_std_write(value, &mut buf, cfg()) {
        unreachable!("encoding a record into a Vec failed: {e}");
    }
    buf
}

pub fn decode_value<T: Decode<()>>(bytes: &[u8]) -> Result<T, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(RecordError::Version(version));
    }
    let (value, used) =
        bincode::decode_from_slice(body, cfg()).map_err(|e| RecordError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(RecordError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::cdc::{MakeDirectoryReq, MakeDirectoryResp};
    use eggs_protocol::{DirectoryInfo, Name};

    fn sample(state: TxnState) -> TxnRecord {
        TxnRecord {
            id: 7,
            header: RequestHeader {
                request_id: 1,
                client_id: 2,
            },
            req: CdcReq::MakeDirectory(MakeDirectoryReq {
                owner_id: InodeId::ROOT,
                name: Name::new("d").unwrap(),
                info: DirectoryInfo::default(),
            }),
            arrived_at: EggsTime(5),
            state,
        }
    }

    #[test]
    fn records_round_trip() {
        let running = sample(TxnState::Running(Progress {
            step: Step::CheckLoop {
                cursor: InodeId::ROOT,
                hops: 3,
            },
            new_dir_id: InodeId::ROOT,
            creation_time: EggsTime(9),
            failure: Some(EggsError::NameExists),
        }));
        let done = sample(TxnState::Done {
            result: Ok(CdcResp::MakeDirectory(MakeDirectoryResp {
                id: InodeId::ROOT,
                creation_time: EggsTime(3),
            })),
            finished_at: EggsTime(4),
        });
        for r in [running, done] {
            assert_eq!(decode_value::<TxnRecord>(&encode_value(&r)).unwrap(), r);
        }
        let c = Counters::default();
        assert_eq!(decode_value::<Counters>(&encode_value(&c)).unwrap(), c);
    }

    #[test]
    fn bad_values_are_errors() {
        let bytes = encode_value(&Counters::default());
        assert!(matches!(
            decode_value::<Counters>(&[]),
            Err(RecordError::Empty)
        ));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 99;
        assert!(matches!(
            decode_value::<Counters>(&wrong_version),
            Err(RecordError::Version(99))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_value::<Counters>(&long),
            Err(RecordError::Trailing(1))
        ));
        assert!(decode_value::<Counters>(&bytes[..bytes.len() - 1]).is_err());
    }
}
