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

/// Bumped whenever [`TxnRecord`] or [`Counters`] change shape. Version 2 gave
/// `MakeDirectoryReq` the new directory's attributes; records of version 1 still decode
/// ([`decode_txn`]), their directories made as root's with mode 0755.
pub const FORMAT_VERSION: u8 = 2;

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
    decode_body(body)
}

/// Decodes a transaction record of this version or of version 1.
pub fn decode_txn(bytes: &[u8]) -> Result<TxnRecord, RecordError> {
    match bytes.split_first() {
        Some((1, body)) => decode_body::<v1::TxnRecord>(body).map(v1::TxnRecord::upgrade),
        _ => decode_value(bytes),
    }
}

/// Counters did not change in version 2: both versions decode.
pub fn decode_counters(bytes: &[u8]) -> Result<Counters, RecordError> {
    match bytes.split_first() {
        Some((1, body)) => decode_body(body),
        _ => decode_value(bytes),
    }
}

fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T, RecordError> {
    let (value, used) =
        bincode::decode_from_slice(body, cfg()).map_err(|e| RecordError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(RecordError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Records of format version 1, as they were written before directories had attributes.
mod v1 {
    use super::TxnState;
    use bincode::{Decode, Encode};
    use eggs_protocol::cdc::{self, CdcReq};
    use eggs_protocol::{DirectoryInfo, EggsTime, InodeAttrs, InodeId, Name, RequestHeader};

    #[derive(Decode, Encode)]
    pub struct MakeDirectoryReq {
        owner_id: InodeId,
        name: Name,
        info: DirectoryInfo,
    }

    /// `CdcReq` with the old `MakeDirectoryReq`; the variants' order is the wire's.
    #[derive(Decode, Encode)]
    pub enum Req {
        MakeDirectory(MakeDirectoryReq),
        RenameFile(cdc::RenameFileReq),
        RenameDirectory(cdc::RenameDirectoryReq),
        RemoveDirectory(cdc::RemoveDirectoryReq),
        UndeleteDirectory(cdc::UndeleteDirectoryReq),
    }

    #[derive(Decode, Encode)]
    pub struct TxnRecord {
        id: u64,
        header: RequestHeader,
        req: Req,
        arrived_at: EggsTime,
        state: TxnState,
    }

    impl TxnRecord {
        pub fn upgrade(self) -> super::TxnRecord {
            let req = match self.req {
                Req::MakeDirectory(r) => CdcReq::MakeDirectory(cdc::MakeDirectoryReq {
                    owner_id: r.owner_id,
                    name: r.name,
                    info: r.info,
                    attrs: InodeAttrs::ROOT_DIR,
                }),
                Req::RenameFile(r) => CdcReq::RenameFile(r),
                Req::RenameDirectory(r) => CdcReq::RenameDirectory(r),
                Req::RemoveDirectory(r) => CdcReq::RemoveDirectory(r),
                Req::UndeleteDirectory(r) => CdcReq::UndeleteDirectory(r),
            };
            super::TxnRecord {
                id: self.id,
                header: self.header,
                req,
                arrived_at: self.arrived_at,
                state: self.state,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::cdc::{MakeDirectoryReq, MakeDirectoryResp, RenameFileReq};
    use eggs_protocol::{DirectoryInfo, InodeAttrs, InodeType, Name, ShardId};

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
                attrs: InodeAttrs {
                    mode: eggs_protocol::posix::S_IFDIR | 0o750,
                    uid: 1000,
                    gid: 100,
                },
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

    /// A record as version 1 wrote it, built field by field (the old `MakeDirectoryReq` had
    /// no attributes; `CdcReq` encodes its kind as a u32), independently of `v1`.
    fn v1_make_directory(r: &TxnRecord) -> Vec<u8> {
        let CdcReq::MakeDirectory(m) = &r.req else {
            panic!("not a mkdir: {r:?}");
        };
        let old = (
            r.id,
            r.header,
            0u32,
            (m.owner_id, m.name.clone(), m.info.clone()),
            r.arrived_at,
            r.state.clone(),
        );
        let mut bytes = vec![1u8];
        bincode::encode_into_std_write(&old, &mut bytes, cfg()).unwrap();
        bytes
    }

    #[test]
    fn version_1_records_decode_with_root_directories() {
        let running = sample(TxnState::Running(Progress {
            step: Step::CreateDirectoryInode,
            new_dir_id: InodeId::new(InodeType::Directory, ShardId(3), 9),
            creation_time: EggsTime(0),
            failure: None,
        }));
        let done = sample(TxnState::Done {
            result: Ok(CdcResp::MakeDirectory(MakeDirectoryResp {
                id: InodeId::new(InodeType::Directory, ShardId(3), 9),
                creation_time: EggsTime(3),
            })),
            finished_at: EggsTime(4),
        });
        for r in [running, done] {
            let old = v1_make_directory(&r);
            // Exactly the new encoding without the attributes: nothing else moved.
            let new = encode_value(&r);
            assert_eq!(new[0], 2);
            assert_eq!(old.len() + 3 * 4, new.len(), "mode, uid, gid");
            assert!(matches!(
                decode_value::<TxnRecord>(&old),
                Err(RecordError::Version(1))
            ));
            let decoded = decode_txn(&old).unwrap();
            let mut want = r.clone();
            let CdcReq::MakeDirectory(m) = &mut want.req else {
                unreachable!()
            };
            m.attrs = InodeAttrs::ROOT_DIR;
            assert_eq!(decoded, want);
            // Version 2 round-trips, attributes included.
            assert_eq!(decode_txn(&new).unwrap(), r);
            // Trailing bytes are refused in version 1 as in 2.
            let mut long = old.clone();
            long.push(0);
            assert!(matches!(decode_txn(&long), Err(RecordError::Trailing(1))));
        }

        // The other requests did not change: a version 1 rename reads as it was.
        let rename = TxnRecord {
            req: CdcReq::RenameFile(RenameFileReq {
                target_id: InodeId::new(InodeType::File, ShardId(1), 4),
                old_owner_id: InodeId::ROOT,
                old_name: Name::new("a").unwrap(),
                old_creation_time: EggsTime(11),
                new_owner_id: InodeId::new(InodeType::Directory, ShardId(2), 5),
                new_name: Name::new("b").unwrap(),
            }),
            ..sample(TxnState::Running(Progress {
                step: Step::LockOldEdge,
                new_dir_id: InodeId::NULL,
                creation_time: EggsTime(0),
                failure: None,
            }))
        };
        let mut old = encode_value(&rename);
        old[0] = 1;
        assert_eq!(decode_txn(&old).unwrap(), rename);

        // Counters are the same in both versions.
        let c = Counters {
            next_txn_id: 17,
            next_dir_counter: 33,
        };
        let mut old = encode_value(&c);
        assert_eq!(decode_counters(&old).unwrap(), c);
        old[0] = 1;
        assert_eq!(decode_counters(&old).unwrap(), c);
    }

    #[test]
    fn unknown_record_versions_are_errors() {
        let r = sample(TxnState::Running(Progress {
            step: Step::CreateDirectoryInode,
            new_dir_id: InodeId::ROOT,
            creation_time: EggsTime(0),
            failure: None,
        }));
        for version in [0u8, 3, 99] {
            let mut bytes = encode_value(&r);
            bytes[0] = version;
            assert!(
                matches!(decode_txn(&bytes), Err(RecordError::Version(v)) if v == version),
                "version {version}"
            );
            let mut c = encode_value(&Counters::default());
            c[0] = version;
            assert!(matches!(
                decode_counters(&c),
                Err(RecordError::Version(v)) if v == version
            ));
        }
        assert!(matches!(decode_txn(&[]), Err(RecordError::Empty)));
        assert!(matches!(decode_counters(&[]), Err(RecordError::Empty)));
    }
}
