//! Property tests of the wire codec, and checks that `docs/PROTOCOL.md` describes it exactly.
//!
//! * Every message kind of every service is generated (strategies below), wrapped in its
//!   envelope, and must survive encode/decode; every strict prefix and every one-byte extension
//!   of a valid encoding must be rejected; `encoded_len()` must be the encoding's length.
//! * Random bytes and random mutations of valid encodings must never make the decoder panic,
//!   and whatever it accepts must re-encode to exactly the same bytes.
//! * `docs/PROTOCOL.md` is parsed: its tables (constants, scalar types, structures, enums,
//!   envelopes, one table per request and response enum, error codes, block-service flags)
//!   drive a second, independent decoder ([`Doc::render_message`]) that renders what it reads
//!   in Rust's `Debug` syntax. For every generated message it must produce exactly
//!   `format!("{:?}", message)`, and for mutated bytes it must accept exactly what the real
//!   decoder accepts. The hex examples in the document are compared with real encodings.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_protocol::blocks::*;
use eggs_protocol::cdc::{self, CdcRequest, CdcResponse};
use eggs_protocol::codec::MAX_DECODE_BYTES;
use eggs_protocol::ids::name_hash;
use eggs_protocol::policy::*;
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::{self, ShuckleRequest, ShuckleResponse};
use eggs_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::LazyLock;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: small values.

fn name() -> impl Strategy<Value = Name> {
    // Any byte but NUL and '/'.
    let byte = prop_oneof![1u8..b'/', (b'/' + 1)..=u8::MAX];
    prop_oneof![
        6 => vec(byte.clone(), 1..=12),
        2 => vec(byte, 1..=Name::MAX_LEN),
        1 => select(vec![
            b"...".to_vec(),
            b".a".to_vec(),
            b"a.".to_vec(),
            "h\u{e9}llo w\u{f6}rld".as_bytes().to_vec(),
            vec![0xff, 0xfe],
            vec![b'x'; Name::MAX_LEN],
        ]),
    ]
    // Only "." and ".." remain to be excluded.
    .prop_filter_map("'.' and '..' are not names", |b| Name::new(b).ok())
}

fn inode_type() -> impl Strategy<Value = InodeType> {
    prop_oneof![
        Just(InodeType::Directory),
        Just(InodeType::File),
        Just(InodeType::Symlink)
    ]
}

fn shard_id() -> impl Strategy<Value = ShardId> {
    any::<u8>().prop_map(ShardId)
}

fn inode_id() -> impl Strategy<Value = InodeId> {
    prop_oneof![
        3 => (inode_type(), shard_id(), 0..=InodeId::MAX_COUNTER)
            .prop_map(|(t, s, c)| InodeId::new(t, s, c)),
        1 => any::<u64>().prop_map(InodeId),
        1 => Just(InodeId::ROOT),
        1 => Just(InodeId::NULL),
    ]
}

fn eggs_time() -> impl Strategy<Value = EggsTime> {
    any::<u64>().prop_map(EggsTime)
}

fn inode_attrs() -> impl Strategy<Value = eggs_protocol::InodeAttrs> {
    (any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(mode, uid, gid)| eggs_protocol::InodeAttrs { mode, uid, gid })
}

fn caller() -> impl Strategy<Value = eggs_protocol::Caller> {
    (any::<u32>(), any::<u32>(), vec(any::<u32>(), 0..4))
        .prop_map(|(uid, gid, groups)| eggs_protocol::Caller { uid, gid, groups })
}

fn set_time() -> impl Strategy<Value = eggs_protocol::SetTime> {
    prop_oneof![
        Just(eggs_protocol::SetTime::Now),
        eggs_time().prop_map(eggs_protocol::SetTime::At),
    ]
}

fn attr_change() -> impl Strategy<Value = eggs_protocol::AttrChange> {
    (
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(set_time()),
        option::of(set_time()),
    )
        .prop_map(|(mode, uid, gid, atime, mtime)| eggs_protocol::AttrChange {
            mode,
            uid,
            gid,
            atime,
            mtime,
        })
}

fn eggs_error() -> impl Strategy<Value = EggsError> {
    select(EggsError::ALL)
}

fn header() -> impl Strategy<Value = RequestHeader> {
    (any::<u64>(), any::<u64>()).prop_map(|(request_id, client_id)| RequestHeader {
        request_id,
        client_id,
    })
}

fn addr() -> impl Strategy<Value = Addr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Addr { ip, port })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn block_service_id() -> impl Strategy<Value = BlockServiceId> {
    any::<u64>().prop_map(BlockServiceId)
}

fn block_id() -> impl Strategy<Value = BlockId> {
    any::<u64>().prop_map(BlockId)
}

fn storage_class() -> impl Strategy<Value = StorageClass> {
    prop_oneof![
        Just(StorageClass::Inline),
        Just(StorageClass::Flash),
        Just(StorageClass::Hdd)
    ]
}

fn path() -> impl Strategy<Value = String> {
    // Any Unicode, including multi-byte characters.
    "\\PC{0,24}"
}

fn parity() -> impl Strategy<Value = Parity> {
    (any::<u8>(), any::<u8>()).prop_map(|(data, parity)| Parity { data, parity })
}

fn snapshot_policy() -> impl Strategy<Value = SnapshotPolicy> {
    (any::<u64>(), any::<u16>()).prop_map(|(ns, versions)| SnapshotPolicy {
        delete_after_ns: ns,
        delete_after_versions: versions,
    })
}

fn directory_info() -> impl Strategy<Value = DirectoryInfo> {
    // The wire carries any policy; `DirectoryInfo::validate` is the servers' business.
    let snapshot = (any::<u64>(), any::<u16>()).prop_map(|(ns, versions)| SnapshotPolicy {
        delete_after_ns: ns,
        delete_after_versions: versions,
    });
    let span = vec(
        (any::<u32>(), parity()).prop_map(|(max_span_size, parity)| SpanPolicyEntry {
            max_span_size,
            parity,
        }),
        0..4,
    )
    .prop_map(|entries| SpanPolicy { entries });
    let block = vec(
        (any::<u32>(), storage_class()).prop_map(|(min_size, storage_class)| BlockPolicyEntry {
            min_size,
            storage_class,
        }),
        0..4,
    )
    .prop_map(|entries| BlockPolicy { entries });
    let stripe = any::<u32>().prop_map(|target_stripe_size| StripePolicy { target_stripe_size });
    (
        option::of(snapshot),
        option::of(span),
        option::of(block),
        option::of(stripe),
    )
        .prop_map(|(snapshot, span, block, stripe)| DirectoryInfo {
            snapshot,
            span,
            block,
            stripe,
        })
}

fn dir_cursor() -> impl Strategy<Value = DirCursor> {
    (any::<u64>(), name()).prop_map(|(name_hash, name)| DirCursor { name_hash, name })
}

fn full_dir_cursor() -> impl Strategy<Value = FullDirCursor> {
    (any::<u64>(), name(), eggs_time()).prop_map(|(name_hash, name, creation_time)| FullDirCursor {
        name_hash,
        name,
        creation_time,
    })
}

fn current_edge() -> impl Strategy<Value = CurrentEdge> {
    (any::<u64>(), name(), inode_id(), eggs_time()).prop_map(
        |(name_hash, name, target_id, creation_time)| CurrentEdge {
            name_hash,
            name,
            target_id,
            creation_time,
        },
    )
}

fn edge() -> impl Strategy<Value = Edge> {
    (any::<u64>(), name(), inode_id(), eggs_time(), any::<bool>()).prop_map(
        |(name_hash, name, target_id, creation_time, current)| Edge {
            name_hash,
            name,
            target_id,
            creation_time,
            current,
        },
    )
}

fn fetched_block() -> impl Strategy<Value = FetchedBlock> {
    (block_service_id(), addr(), block_id(), any::<u32>()).prop_map(
        |(block_service_id, addr, block_id, crc)| FetchedBlock {
            block_service_id,
            addr,
            block_id,
            crc,
        },
    )
}

fn blocks_span() -> impl Strategy<Value = BlocksSpan> {
    (
        parity(),
        storage_class(),
        any::<u8>(),
        any::<u32>(),
        vec(fetched_block(), 0..6),
    )
        .prop_map(
            |(parity, storage_class, stripes, cell_size, blocks)| BlocksSpan {
                parity,
                storage_class,
                stripes,
                cell_size,
                blocks,
            },
        )
}

fn span_body() -> impl Strategy<Value = SpanBody> {
    prop_oneof![
        bytes(64).prop_map(SpanBody::Inline),
        blocks_span().prop_map(SpanBody::Blocks),
    ]
}

fn fetched_span() -> impl Strategy<Value = FetchedSpan> {
    (any::<u64>(), any::<u32>(), any::<u32>(), span_body()).prop_map(
        |(byte_offset, size, crc, body)| FetchedSpan {
            byte_offset,
            size,
            crc,
            body,
        },
    )
}

fn block_write_target() -> impl Strategy<Value = BlockWriteTarget> {
    (block_service_id(), addr(), block_id(), any::<[u8; 8]>()).prop_map(
        |(block_service_id, addr, block_id, certificate)| BlockWriteTarget {
            block_service_id,
            addr,
            block_id,
            certificate,
        },
    )
}

fn add_span_initiate_req() -> impl Strategy<Value = AddSpanInitiateReq> {
    (
        (
            inode_id(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (storage_class(), parity(), any::<u8>(), any::<u32>()),
        (vec(any::<u32>(), 0..20), vec(block_service_id(), 0..4)),
    )
        .prop_map(
            |(
                (file_id, cookie, byte_offset, size, crc),
                (storage_class, parity, stripes, cell_size),
                (block_crcs, blacklist),
            )| AddSpanInitiateReq {
                file_id,
                cookie,
                byte_offset,
                size,
                crc,
                storage_class,
                parity,
                stripes,
                cell_size,
                block_crcs,
                blacklist,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Strategies: shard messages.

fn shard_req() -> impl Strategy<Value = ShardReq> {
    prop_oneof![
        (inode_id(), name())
            .prop_map(|(dir_id, name)| ShardReq::Lookup(LookupReq { dir_id, name })),
        inode_id().prop_map(|id| ShardReq::StatFile(StatFileReq { id })),
        inode_id().prop_map(|id| ShardReq::StatDirectory(StatDirectoryReq { id })),
        (inode_id(), option::of(dir_cursor()), any::<u16>()).prop_map(|(dir_id, start, mtu)| {
            ShardReq::ReadDir(ReadDirReq { dir_id, start, mtu })
        }),
        (inode_id(), option::of(full_dir_cursor()), any::<u16>()).prop_map(
            |(dir_id, start, mtu)| ShardReq::FullReadDir(FullReadDirReq { dir_id, start, mtu })
        ),
        (inode_id(), inode_id(), name(), eggs_time(), name()).prop_map(
            |(dir_id, target_id, old_name, old_creation_time, new_name)| {
                ShardReq::SameDirectoryRename(SameDirectoryRenameReq {
                    dir_id,
                    target_id,
                    old_name,
                    old_creation_time,
                    new_name,
                })
            }
        ),
        (inode_id(), inode_id(), name(), eggs_time()).prop_map(
            |(dir_id, target_id, name, creation_time)| {
                ShardReq::SoftUnlinkFile(SoftUnlinkFileReq {
                    dir_id,
                    target_id,
                    name,
                    creation_time,
                })
            }
        ),
        (inode_id(), directory_info())
            .prop_map(|(id, info)| ShardReq::SetDirectoryInfo(SetDirectoryInfoReq { id, info })),
        (inode_type(), inode_attrs(), any::<u64>()).prop_map(|(typ, attrs, rdev)| {
            ShardReq::ConstructFile(ConstructFileReq { typ, attrs, rdev })
        }),
        (
            inode_id(),
            any::<u64>(),
            any::<u64>(),
            bytes(MAX_INLINE_SPAN / 16),
            any::<u32>()
        )
            .prop_map(|(file_id, cookie, byte_offset, data, crc)| {
                ShardReq::AddInlineSpan(AddInlineSpanReq {
                    file_id,
                    cookie,
                    byte_offset,
                    data,
                    crc,
                })
            }),
        (inode_id(), any::<u64>(), inode_id(), name()).prop_map(
            |(file_id, cookie, owner_id, name)| {
                ShardReq::LinkFile(LinkFileReq {
                    file_id,
                    cookie,
                    owner_id,
                    name,
                })
            }
        ),
        (inode_id(), any::<u64>(), any::<u16>()).prop_map(|(file_id, byte_offset, mtu)| {
            ShardReq::FileSpans(FileSpansReq {
                file_id,
                byte_offset,
                mtu,
            })
        }),
        inode_id().prop_map(|id| ShardReq::StatTransientFile(StatTransientFileReq { id })),
        (
            inode_id(),
            inode_id(),
            directory_info(),
            any::<u64>(),
            inode_attrs()
        )
            .prop_map(|(id, owner_id, info, txn_id, attrs)| {
                ShardReq::CreateDirectoryInode(CreateDirectoryInodeReq {
                    id,
                    owner_id,
                    info,
                    txn_id,
                    attrs,
                })
            }),
        (inode_id(), name(), inode_id(), any::<bool>(), any::<u64>()).prop_map(
            |(dir_id, name, target_id, overwrite_files, txn_id)| {
                ShardReq::CreateCurrentEdge(CreateCurrentEdgeReq {
                    dir_id,
                    name,
                    target_id,
                    overwrite_files,
                    txn_id,
                })
            }
        ),
        (inode_id(), name(), inode_id(), eggs_time(), any::<u64>()).prop_map(
            |(dir_id, name, target_id, creation_time, txn_id)| {
                ShardReq::LockCurrentEdge(LockCurrentEdgeReq {
                    dir_id,
                    name,
                    target_id,
                    creation_time,
                    txn_id,
                })
            }
        ),
        (
            inode_id(),
            name(),
            inode_id(),
            eggs_time(),
            any::<bool>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(dir_id, name, target_id, creation_time, was_moved, txn_id, new_edge)| {
                    ShardReq::UnlockCurrentEdge(UnlockCurrentEdgeReq {
                        dir_id,
                        name,
                        target_id,
                        creation_time,
                        was_moved,
                        txn_id,
                        new_edge,
                    })
                },
            ),
        (inode_id(), inode_id(), any::<u64>()).prop_map(|(dir_id, owner_id, txn_id)| {
            ShardReq::SetDirectoryOwner(SetDirectoryOwnerReq {
                dir_id,
                owner_id,
                txn_id,
            })
        }),
        (inode_id(), any::<u64>(), any::<bool>()).prop_map(|(dir_id, txn_id, rollback)| {
            ShardReq::RemoveDirectoryOwner(RemoveDirectoryOwnerReq {
                dir_id,
                txn_id,
                rollback,
            })
        }),
        (inode_id(), inode_id(), any::<u64>()).prop_map(|(id, owner_id, txn_id)| {
            ShardReq::RemoveDirectoryInode(RemoveDirectoryInodeReq {
                id,
                owner_id,
                txn_id,
            })
        }),
        add_span_initiate_req().prop_map(ShardReq::AddSpanInitiate),
        (
            inode_id(),
            any::<u64>(),
            any::<u64>(),
            vec(any::<[u8; 8]>(), 0..20)
        )
            .prop_map(|(file_id, cookie, byte_offset, proofs)| {
                ShardReq::AddSpanCertify(AddSpanCertifyReq {
                    file_id,
                    cookie,
                    byte_offset,
                    proofs,
                })
            }),
        (inode_id(), any::<u64>(), any::<u64>()).prop_map(|(file_id, cookie, byte_offset)| {
            ShardReq::RemoveSpan(RemoveSpanReq {
                file_id,
                cookie,
                byte_offset,
            })
        }),
        (block_service_id(), inode_id(), any::<u16>()).prop_map(
            |(block_service_id, start_file_id, mtu)| {
                ShardReq::BlockServiceFiles(BlockServiceFilesReq {
                    block_service_id,
                    start_file_id,
                    mtu,
                })
            }
        ),
        (inode_id(), any::<u16>()).prop_map(|(start_file_id, mtu)| {
            ShardReq::VisitFiles(VisitFilesReq { start_file_id, mtu })
        }),
        (
            inode_id(),
            any::<u64>(),
            any::<u8>(),
            block_id(),
            vec(block_service_id(), 0..4)
        )
            .prop_map(
                |(file_id, byte_offset, block_index, old_block_id, blacklist)| {
                    ShardReq::ReplaceBlockInitiate(ReplaceBlockInitiateReq {
                        file_id,
                        byte_offset,
                        block_index,
                        old_block_id,
                        blacklist,
                    })
                }
            ),
        (
            inode_id(),
            any::<u64>(),
            any::<u8>(),
            block_id(),
            block_id(),
            any::<[u8; 8]>()
        )
            .prop_map(
                |(file_id, byte_offset, block_index, old_block_id, new_block_id, proof)| {
                    ShardReq::ReplaceBlockCertify(ReplaceBlockCertifyReq {
                        file_id,
                        byte_offset,
                        block_index,
                        old_block_id,
                        new_block_id,
                        proof,
                    })
                }
            ),
        // Garbage collection and undelete.
        (inode_id(), any::<u16>()).prop_map(|(start_id, mtu)| {
            ShardReq::VisitDirectories(VisitDirectoriesReq { start_id, mtu })
        }),
        (inode_id(), snapshot_policy(), option::of(dir_cursor())).prop_map(
            |(dir_id, policy, start)| {
                ShardReq::CollectDirectory(CollectDirectoryReq {
                    dir_id,
                    policy,
                    start,
                })
            }
        ),
        (inode_id(), any::<u16>()).prop_map(|(start_id, mtu)| {
            ShardReq::VisitReleasedFiles(VisitReleasedFilesReq { start_id, mtu })
        }),
        inode_id()
            .prop_map(|file_id| ShardReq::MakeFileTransient(MakeFileTransientReq { file_id })),
        inode_id()
            .prop_map(|file_id| ShardReq::ForgetReleasedFile(ForgetReleasedFileReq { file_id })),
        (inode_id(), any::<u64>()).prop_map(|(dir_id, delete_after_ns)| {
            ShardReq::DestroyDirectory(DestroyDirectoryReq {
                dir_id,
                delete_after_ns,
            })
        }),
        (inode_id(), any::<u16>()).prop_map(|(start_id, mtu)| {
            ShardReq::VisitTransientFiles(VisitTransientFilesReq { start_id, mtu })
        }),
        inode_id()
            .prop_map(|file_id| ShardReq::PrepareSpanErasure(PrepareSpanErasureReq { file_id })),
        (inode_id(), any::<u64>(), vec(any::<[u8; 8]>(), 0..20)).prop_map(
            |(file_id, byte_offset, proofs)| {
                ShardReq::RemoveErasedSpan(RemoveErasedSpanReq {
                    file_id,
                    byte_offset,
                    proofs,
                })
            }
        ),
        inode_id().prop_map(|file_id| {
            ShardReq::RemoveTransientFile(RemoveTransientFileReq { file_id })
        }),
        (inode_id(), name(), eggs_time()).prop_map(|(dir_id, name, creation_time)| {
            ShardReq::RestoreSnapshotEdge(RestoreSnapshotEdgeReq {
                dir_id,
                name,
                creation_time,
            })
        }),
        (
            inode_id(),
            option::of(any::<u64>()),
            caller(),
            attr_change()
        )
            .prop_map(|(id, cookie, caller, change)| {
                ShardReq::SetAttr(SetAttrReq {
                    id,
                    cookie,
                    caller,
                    change,
                })
            }),
        (inode_id(), inode_id(), any::<u64>()).prop_map(|(dir_id, owner_id, txn_id)| {
            ShardReq::ReattachDirectory(ReattachDirectoryReq {
                dir_id,
                owner_id,
                txn_id,
            })
        }),
    ]
}

fn shard_resp() -> impl Strategy<Value = ShardResp> {
    prop_oneof![
        (inode_id(), eggs_time()).prop_map(|(target_id, creation_time)| {
            ShardResp::Lookup(LookupResp {
                target_id,
                creation_time,
            })
        }),
        (
            eggs_time(),
            eggs_time(),
            any::<u64>(),
            eggs_time(),
            inode_attrs(),
            any::<u64>()
        )
            .prop_map(|(mtime, atime, size, ctime, attrs, rdev)| {
                ShardResp::StatFile(StatFileResp {
                    mtime,
                    atime,
                    size,
                    ctime,
                    attrs,
                    rdev,
                })
            }),
        (
            inode_id(),
            eggs_time(),
            directory_info(),
            eggs_time(),
            eggs_time(),
            inode_attrs()
        )
            .prop_map(|(owner_id, mtime, info, atime, ctime, attrs)| {
                ShardResp::StatDirectory(StatDirectoryResp {
                    owner_id,
                    mtime,
                    info,
                    atime,
                    ctime,
                    attrs,
                })
            }),
        (option::of(dir_cursor()), vec(current_edge(), 0..6))
            .prop_map(|(next, entries)| ShardResp::ReadDir(ReadDirResp { next, entries })),
        (option::of(full_dir_cursor()), vec(edge(), 0..6)).prop_map(|(next, entries)| {
            ShardResp::FullReadDir(FullReadDirResp { next, entries })
        }),
        eggs_time().prop_map(|new_creation_time| {
            ShardResp::SameDirectoryRename(SameDirectoryRenameResp { new_creation_time })
        }),
        eggs_time().prop_map(|delete_creation_time| {
            ShardResp::SoftUnlinkFile(SoftUnlinkFileResp {
                delete_creation_time,
            })
        }),
        Just(ShardResp::SetDirectoryInfo(SetDirectoryInfoResp {})),
        (inode_id(), any::<u64>())
            .prop_map(|(id, cookie)| ShardResp::ConstructFile(ConstructFileResp { id, cookie })),
        Just(ShardResp::AddInlineSpan(AddInlineSpanResp {})),
        eggs_time().prop_map(|creation_time| ShardResp::LinkFile(LinkFileResp { creation_time })),
        (option::of(any::<u64>()), vec(fetched_span(), 0..4)).prop_map(|(next_offset, spans)| {
            ShardResp::FileSpans(FileSpansResp { next_offset, spans })
        }),
        (any::<u64>(), eggs_time(), eggs_time(), inode_attrs()).prop_map(
            |(size, mtime, deadline, attrs)| {
                ShardResp::StatTransientFile(StatTransientFileResp {
                    size,
                    mtime,
                    deadline,
                    attrs,
                })
            }
        ),
        eggs_time().prop_map(|mtime| {
            ShardResp::CreateDirectoryInode(CreateDirectoryInodeResp { mtime })
        }),
        eggs_time().prop_map(|creation_time| {
            ShardResp::CreateCurrentEdge(CreateCurrentEdgeResp { creation_time })
        }),
        Just(ShardResp::LockCurrentEdge(LockCurrentEdgeResp {})),
        Just(ShardResp::UnlockCurrentEdge(UnlockCurrentEdgeResp {})),
        Just(ShardResp::SetDirectoryOwner(SetDirectoryOwnerResp {})),
        Just(ShardResp::RemoveDirectoryOwner(RemoveDirectoryOwnerResp {})),
        Just(ShardResp::RemoveDirectoryInode(RemoveDirectoryInodeResp {})),
        vec(block_write_target(), 0..20)
            .prop_map(|blocks| ShardResp::AddSpanInitiate(AddSpanInitiateResp { blocks })),
        Just(ShardResp::AddSpanCertify(AddSpanCertifyResp {})),
        vec(block_write_target(), 0..20)
            .prop_map(|blocks| ShardResp::RemoveSpan(RemoveSpanResp { blocks })),
        (option::of(inode_id()), vec(inode_id(), 0..20)).prop_map(|(next_file_id, file_ids)| {
            ShardResp::BlockServiceFiles(BlockServiceFilesResp {
                next_file_id,
                file_ids,
            })
        }),
        (option::of(inode_id()), vec(inode_id(), 0..20)).prop_map(|(next_file_id, file_ids)| {
            ShardResp::VisitFiles(VisitFilesResp {
                next_file_id,
                file_ids,
            })
        }),
        (block_write_target(), any::<u32>(), any::<u32>()).prop_map(|(target, size, crc)| {
            ShardResp::ReplaceBlockInitiate(ReplaceBlockInitiateResp { target, size, crc })
        }),
        vec(block_write_target(), 0..20)
            .prop_map(|erase| ShardResp::ReplaceBlockCertify(ReplaceBlockCertifyResp { erase })),
        // Garbage collection and undelete.
        (
            option::of(inode_id()),
            vec(
                (
                    inode_id(),
                    inode_id(),
                    eggs_time(),
                    option::of(snapshot_policy())
                )
                    .prop_map(|(id, owner_id, mtime, snapshot)| VisitedDirectory {
                        id,
                        owner_id,
                        mtime,
                        snapshot,
                    }),
                0..10
            )
        )
            .prop_map(|(next_id, dirs)| {
                ShardResp::VisitDirectories(VisitDirectoriesResp { next_id, dirs })
            }),
        (option::of(dir_cursor()), any::<u32>(), any::<u32>()).prop_map(
            |(next, removed_edges, released_files)| {
                ShardResp::CollectDirectory(CollectDirectoryResp {
                    next,
                    removed_edges,
                    released_files,
                })
            }
        ),
        (option::of(inode_id()), vec(inode_id(), 0..20)).prop_map(|(next_id, file_ids)| {
            ShardResp::VisitReleasedFiles(VisitReleasedFilesResp { next_id, file_ids })
        }),
        Just(ShardResp::MakeFileTransient(MakeFileTransientResp {})),
        Just(ShardResp::ForgetReleasedFile(ForgetReleasedFileResp {})),
        Just(ShardResp::DestroyDirectory(DestroyDirectoryResp {})),
        (
            option::of(inode_id()),
            vec(
                (inode_id(), any::<u64>(), eggs_time())
                    .prop_map(|(id, size, deadline)| TransientFileEntry { id, size, deadline }),
                0..10
            )
        )
            .prop_map(|(next_id, files)| {
                ShardResp::VisitTransientFiles(VisitTransientFilesResp { next_id, files })
            }),
        (option::of(any::<u64>()), vec(block_write_target(), 0..20)).prop_map(
            |(byte_offset, blocks)| {
                ShardResp::PrepareSpanErasure(PrepareSpanErasureResp {
                    byte_offset,
                    blocks,
                })
            }
        ),
        Just(ShardResp::RemoveErasedSpan(RemoveErasedSpanResp {})),
        Just(ShardResp::RemoveTransientFile(RemoveTransientFileResp {})),
        (inode_id(), eggs_time()).prop_map(|(target_id, creation_time)| {
            ShardResp::RestoreSnapshotEdge(RestoreSnapshotEdgeResp {
                target_id,
                creation_time,
            })
        }),
        (inode_attrs(), eggs_time(), eggs_time(), eggs_time()).prop_map(
            |(attrs, mtime, atime, ctime)| {
                ShardResp::SetAttr(SetAttrResp {
                    attrs,
                    mtime,
                    atime,
                    ctime,
                })
            }
        ),
        Just(ShardResp::ReattachDirectory(ReattachDirectoryResp {})),
    ]
}

/// `Ok` three times out of four.
fn result<T: Debug + Clone + 'static>(
    ok: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Result<T, EggsError>> {
    prop_oneof![3 => ok.prop_map(Ok), 1 => eggs_error().prop_map(Err)]
}

fn shard_request() -> impl Strategy<Value = ShardRequest> {
    (header(), shard_id(), shard_req()).prop_map(|(header, shard, body)| ShardRequest {
        header,
        shard,
        body,
    })
}

fn shard_response() -> impl Strategy<Value = ShardResponse> {
    (any::<u64>(), result(shard_resp()))
        .prop_map(|(request_id, result)| ShardResponse { request_id, result })
}

// ---------------------------------------------------------------------------------------------
// Strategies: CDC messages.

fn cdc_req() -> impl Strategy<Value = cdc::CdcReq> {
    use cdc::*;
    prop_oneof![
        (inode_id(), name(), directory_info(), inode_attrs()).prop_map(
            |(owner_id, name, info, attrs)| {
                CdcReq::MakeDirectory(MakeDirectoryReq {
                    owner_id,
                    name,
                    info,
                    attrs,
                })
            }
        ),
        (
            inode_id(),
            inode_id(),
            name(),
            eggs_time(),
            inode_id(),
            name()
        )
            .prop_map(
                |(target_id, old_owner_id, old_name, old_creation_time, new_owner_id, new_name)| {
                    CdcReq::RenameFile(RenameFileReq {
                        target_id,
                        old_owner_id,
                        old_name,
                        old_creation_time,
                        new_owner_id,
                        new_name,
                    })
                }
            ),
        (
            inode_id(),
            inode_id(),
            name(),
            eggs_time(),
            inode_id(),
            name()
        )
            .prop_map(
                |(target_id, old_owner_id, old_name, old_creation_time, new_owner_id, new_name)| {
                    CdcReq::RenameDirectory(RenameDirectoryReq {
                        target_id,
                        old_owner_id,
                        old_name,
                        old_creation_time,
                        new_owner_id,
                        new_name,
                    })
                }
            ),
        (inode_id(), inode_id(), name(), eggs_time()).prop_map(
            |(owner_id, target_id, name, creation_time)| {
                CdcReq::RemoveDirectory(RemoveDirectoryReq {
                    owner_id,
                    target_id,
                    name,
                    creation_time,
                })
            }
        ),
        (inode_id(), name(), inode_id()).prop_map(|(owner_id, name, target_id)| {
            CdcReq::UndeleteDirectory(UndeleteDirectoryReq {
                owner_id,
                name,
                target_id,
            })
        }),
    ]
}

fn cdc_resp() -> impl Strategy<Value = cdc::CdcResp> {
    use cdc::*;
    prop_oneof![
        (inode_id(), eggs_time()).prop_map(|(id, creation_time)| {
            CdcResp::MakeDirectory(MakeDirectoryResp { id, creation_time })
        }),
        eggs_time().prop_map(|creation_time| CdcResp::RenameFile(RenameFileResp { creation_time })),
        eggs_time().prop_map(|creation_time| {
            CdcResp::RenameDirectory(RenameDirectoryResp { creation_time })
        }),
        Just(CdcResp::RemoveDirectory(RemoveDirectoryResp {})),
        eggs_time().prop_map(|creation_time| {
            CdcResp::UndeleteDirectory(UndeleteDirectoryResp { creation_time })
        }),
    ]
}

fn cdc_request() -> impl Strategy<Value = CdcRequest> {
    (header(), cdc_req()).prop_map(|(header, body)| CdcRequest { header, body })
}

fn cdc_response() -> impl Strategy<Value = CdcResponse> {
    (any::<u64>(), result(cdc_resp()))
        .prop_map(|(request_id, result)| CdcResponse { request_id, result })
}

// ---------------------------------------------------------------------------------------------
// Strategies: shuckle messages.

fn block_service_registration() -> impl Strategy<Value = shuckle::BlockServiceRegistration> {
    (
        block_service_id(),
        addr(),
        storage_class(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        path(),
    )
        .prop_map(
            |(
                id,
                addr,
                storage_class,
                failure_domain,
                secret_key,
                capacity_bytes,
                available_bytes,
                blocks,
                path,
            )| shuckle::BlockServiceRegistration {
                id,
                addr,
                storage_class,
                failure_domain,
                secret_key,
                capacity_bytes,
                available_bytes,
                blocks,
                path,
            },
        )
}

fn block_service_info() -> impl Strategy<Value = shuckle::BlockServiceInfo> {
    (
        block_service_id(),
        addr(),
        storage_class(),
        any::<[u8; 16]>(),
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        path(),
        eggs_time(),
    )
        .prop_map(
            |(
                id,
                addr,
                storage_class,
                failure_domain,
                flags,
                capacity_bytes,
                available_bytes,
                blocks,
                path,
                last_seen,
            )| shuckle::BlockServiceInfo {
                id,
                addr,
                storage_class,
                failure_domain,
                flags,
                capacity_bytes,
                available_bytes,
                blocks,
                path,
                last_seen,
            },
        )
}

fn shuckle_req() -> impl Strategy<Value = shuckle::ShuckleReq> {
    use shuckle::*;
    prop_oneof![
        (vec(shard_id(), 0..8), addr()).prop_map(|(shards, addr)| {
            ShuckleReq::RegisterShards(RegisterShardsReq { shards, addr })
        }),
        addr().prop_map(|addr| ShuckleReq::RegisterCdc(RegisterCdcReq { addr })),
        vec(block_service_registration(), 0..4).prop_map(|services| {
            ShuckleReq::RegisterBlockServices(RegisterBlockServicesReq { services })
        }),
        Just(ShuckleReq::Shards(ShardsReq {})),
        Just(ShuckleReq::Cdc(CdcReq {})),
        Just(ShuckleReq::BlockServices(BlockServicesReq {})),
        (block_service_id(), any::<u8>(), any::<u8>()).prop_map(|(id, flags, mask)| {
            ShuckleReq::SetBlockServiceFlags(SetBlockServiceFlagsReq { id, flags, mask })
        }),
        Just(ShuckleReq::ShardBlockServices(ShardBlockServicesReq {})),
        block_service_id()
            .prop_map(|id| ShuckleReq::ForgetBlockService(ForgetBlockServiceReq { id })),
    ]
}

fn shuckle_resp() -> impl Strategy<Value = shuckle::ShuckleResp> {
    use shuckle::*;
    prop_oneof![
        Just(ShuckleResp::RegisterShards(RegisterShardsResp {})),
        Just(ShuckleResp::RegisterCdc(RegisterCdcResp {})),
        Just(ShuckleResp::RegisterBlockServices(
            RegisterBlockServicesResp {}
        )),
        // Real responses have NUM_SHARDS entries; the codec takes any number.
        vec(
            (addr(), eggs_time()).prop_map(|(addr, last_seen)| ShardInfo { addr, last_seen }),
            0..8
        )
        .prop_map(|shards| ShuckleResp::Shards(ShardsResp { shards })),
        (addr(), eggs_time())
            .prop_map(|(addr, last_seen)| ShuckleResp::Cdc(CdcResp { addr, last_seen })),
        vec(block_service_info(), 0..4)
            .prop_map(|services| ShuckleResp::BlockServices(BlockServicesResp { services })),
        Just(ShuckleResp::SetBlockServiceFlags(
            SetBlockServiceFlagsResp {}
        )),
        vec(
            (block_service_info(), any::<[u8; 16]>())
                .prop_map(|(info, secret_key)| BlockServiceWithKey { info, secret_key }),
            0..4
        )
        .prop_map(|services| {
            ShuckleResp::ShardBlockServices(ShardBlockServicesResp { services })
        }),
        Just(ShuckleResp::ForgetBlockService(ForgetBlockServiceResp {})),
    ]
}

fn shuckle_request() -> impl Strategy<Value = ShuckleRequest> {
    shuckle_req().prop_map(|body| ShuckleRequest { body })
}

fn shuckle_response() -> impl Strategy<Value = ShuckleResponse> {
    result(shuckle_resp()).prop_map(|result| ShuckleResponse { result })
}

// ---------------------------------------------------------------------------------------------
// Strategies: block-service messages.

fn blocks_req() -> impl Strategy<Value = BlocksReq> {
    prop_oneof![
        (
            block_service_id(),
            block_id(),
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 8]>()
        )
            .prop_map(|(block_service_id, block_id, crc, size, certificate)| {
                BlocksReq::WriteBlock(WriteBlockReq {
                    block_service_id,
                    block_id,
                    crc,
                    size,
                    certificate,
                })
            }),
        (block_service_id(), block_id(), any::<u32>(), any::<u32>()).prop_map(
            |(block_service_id, block_id, offset, count)| {
                BlocksReq::FetchBlock(FetchBlockReq {
                    block_service_id,
                    block_id,
                    offset,
                    count,
                })
            }
        ),
        (block_service_id(), block_id(), any::<[u8; 8]>()).prop_map(
            |(block_service_id, block_id, certificate)| {
                BlocksReq::EraseBlock(EraseBlockReq {
                    block_service_id,
                    block_id,
                    certificate,
                })
            }
        ),
        (block_service_id(), block_id(), any::<u32>(), any::<u32>()).prop_map(
            |(block_service_id, block_id, size, crc)| {
                BlocksReq::CheckBlock(CheckBlockReq {
                    block_service_id,
                    block_id,
                    size,
                    crc,
                })
            }
        ),
        block_service_id().prop_map(|block_service_id| {
            BlocksReq::BlockServiceStats(BlockServiceStatsReq { block_service_id })
        }),
    ]
}

fn blocks_resp() -> impl Strategy<Value = BlocksResp> {
    prop_oneof![
        any::<[u8; 8]>().prop_map(|proof| BlocksResp::WriteBlock(WriteBlockResp { proof })),
        any::<u32>().prop_map(|count| BlocksResp::FetchBlock(FetchBlockResp { count })),
        any::<[u8; 8]>().prop_map(|proof| BlocksResp::EraseBlock(EraseBlockResp { proof })),
        Just(BlocksResp::CheckBlock(CheckBlockResp {})),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(capacity_bytes, available_bytes, blocks)| {
                BlocksResp::BlockServiceStats(BlockServiceStatsResp {
                    capacity_bytes,
                    available_bytes,
                    blocks,
                })
            }
        ),
    ]
}

fn blocks_request() -> impl Strategy<Value = BlocksRequest> {
    blocks_req().prop_map(|body| BlocksRequest { body })
}

fn blocks_response() -> impl Strategy<Value = BlocksResponse> {
    result(blocks_resp()).prop_map(|result| BlocksResponse { result })
}

/// Exhaustive matches without wildcards: adding a message kind to the protocol makes this
/// file fail to compile until the kind has a strategy above and a row in `docs/PROTOCOL.md`.
/// Returns the names that the coverage test expects the strategies to produce.
mod exhaustive {
    use super::*;

    pub fn shard(r: &ShardReq) -> &'static str {
        use ShardReq::*;
        match r {
            Lookup(_)
            | StatFile(_)
            | StatDirectory(_)
            | ReadDir(_)
            | FullReadDir(_)
            | SameDirectoryRename(_)
            | SoftUnlinkFile(_)
            | SetDirectoryInfo(_)
            | ConstructFile(_)
            | AddInlineSpan(_)
            | LinkFile(_)
            | FileSpans(_)
            | StatTransientFile(_)
            | CreateDirectoryInode(_)
            | CreateCurrentEdge(_)
            | LockCurrentEdge(_)
            | UnlockCurrentEdge(_)
            | SetDirectoryOwner(_)
            | RemoveDirectoryOwner(_)
            | RemoveDirectoryInode(_)
            | AddSpanInitiate(_)
            | AddSpanCertify(_)
            | RemoveSpan(_)
            | BlockServiceFiles(_)
            | VisitFiles(_)
            | ReplaceBlockInitiate(_)
            | ReplaceBlockCertify(_)
            | VisitDirectories(_)
            | CollectDirectory(_)
            | VisitReleasedFiles(_)
            | MakeFileTransient(_)
            | ForgetReleasedFile(_)
            | DestroyDirectory(_)
            | VisitTransientFiles(_)
            | PrepareSpanErasure(_)
            | RemoveErasedSpan(_)
            | RemoveTransientFile(_)
            | RestoreSnapshotEdge(_)
            | SetAttr(_)
            | ReattachDirectory(_) => r.kind(),
        }
    }

    pub fn cdc(r: &cdc::CdcReq) -> &'static str {
        use cdc::CdcReq::*;
        match r {
            MakeDirectory(_) | RenameFile(_) | RenameDirectory(_) | RemoveDirectory(_)
            | UndeleteDirectory(_) => r.kind(),
        }
    }

    pub fn shuckle(r: &shuckle::ShuckleReq) -> &'static str {
        use shuckle::ShuckleReq::*;
        match r {
            RegisterShards(_)
            | RegisterCdc(_)
            | RegisterBlockServices(_)
            | Shards(_)
            | Cdc(_)
            | BlockServices(_)
            | SetBlockServiceFlags(_)
            | ShardBlockServices(_)
            | ForgetBlockService(_) => r.kind(),
        }
    }

    pub fn blocks(r: &BlocksReq) -> &'static str {
        use BlocksReq::*;
        match r {
            WriteBlock(_) | FetchBlock(_) | EraseBlock(_) | CheckBlock(_)
            | BlockServiceStats(_) => r.kind(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every envelope type.

fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Encode/decode identity, rejection of prefixes and of a trailing byte, and agreement with
/// the document's description.
fn check_valid<M: Message + EncodedLen + PartialEq + Debug>(m: &M) -> Result<(), TestCaseError> {
    let bytes = encode(m);
    prop_assert_eq!(&bytes[..4], &M::MAGIC[..]);
    prop_assert_eq!(message_len(m), bytes.len(), "encoded_len() of {:?}", m);
    match decode::<M>(&bytes) {
        Ok(back) => prop_assert_eq!(&back, m),
        Err(e) => return Err(TestCaseError::fail(format!("{m:?} does not decode: {e}"))),
    }
    for n in 0..bytes.len() {
        prop_assert!(
            decode::<M>(&bytes[..n]).is_err(),
            "prefix of {} of {} bytes decodes",
            n,
            bytes.len()
        );
    }
    for extra in [0u8, 0xff] {
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(decode::<M>(&longer), Err(DecodeError::Trailing(1)));
    }
    let by_doc = DOC.render_message(short_type_name::<M>(), &bytes);
    prop_assert_eq!(by_doc, Ok(format!("{m:?}")), "docs/PROTOCOL.md disagrees");
    Ok(())
}

/// For bytes of unknown validity: decoding must not panic, whatever decodes must re-encode to
/// the same bytes, and the document must accept exactly what the decoder accepts.
fn check_arbitrary<M: Message + EncodedLen + PartialEq + Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let decoded = decode::<M>(bytes);
    let by_doc = DOC.render_message(short_type_name::<M>(), bytes);
    match decoded {
        Ok(m) => {
            prop_assert_eq!(encode(&m), bytes, "non-canonical encoding accepted");
            prop_assert_eq!(message_len(&m), bytes.len(), "encoded_len() of {:?}", m);
            prop_assert_eq!(by_doc, Ok(format!("{m:?}")), "docs/PROTOCOL.md disagrees");
        }
        Err(e) => prop_assert!(
            by_doc.is_err(),
            "the decoder rejects {:02x?} ({}) but docs/PROTOCOL.md reads {:?}",
            bytes,
            e,
            by_doc
        ),
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Xor(Index, u8),
    /// Writes a small little-endian `u32`: lands on enum tags, option tags and lengths.
    SmallU32(Index, u32),
    Truncate(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<Index>(), 1..=u8::MAX).prop_map(|(i, x)| Mutation::Xor(i, x)),
        2 => (any::<Index>(), 0u32..40).prop_map(|(i, x)| Mutation::SmallU32(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ];
    vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::Xor(i, x) => bytes[i.index(len)] ^= x,
            Mutation::SmallU32(i, x) => {
                let at = i.index(len);
                for (k, b) in x.to_le_bytes().into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = b;
                    }
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Remove(i) => {
                bytes.remove(i.index(len));
            }
        }
    }
    bytes
}

/// Every decoder on the same bytes: a message of one type must be rejected, without panicking,
/// by the others (the magics differ).
fn check_all_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_arbitrary::<ShardRequest>(bytes)?;
    check_arbitrary::<ShardResponse>(bytes)?;
    check_arbitrary::<CdcRequest>(bytes)?;
    check_arbitrary::<CdcResponse>(bytes)?;
    check_arbitrary::<ShuckleRequest>(bytes)?;
    check_arbitrary::<ShuckleResponse>(bytes)?;
    check_arbitrary::<BlocksRequest>(bytes)?;
    check_arbitrary::<BlocksResponse>(bytes)?;
    Ok(())
}

macro_rules! envelope_properties {
    ($module:ident, $ty:ty, $strategy:expr) => {
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn round_trip_prefixes_and_doc(m in $strategy) {
                    check_valid(&m)?;
                }

                #[test]
                fn mutated_encodings_never_panic(m in $strategy, muts in mutations()) {
                    let bytes = mutate(encode(&m), &muts);
                    check_arbitrary::<$ty>(&bytes)?;
                }

                #[test]
                fn random_bytes_never_panic(with_magic in any::<bool>(), tail in bytes(96)) {
                    let mut bytes = Vec::new();
                    if with_magic {
                        bytes.extend_from_slice(&<$ty as Message>::MAGIC);
                    }
                    bytes.extend_from_slice(&tail);
                    check_arbitrary::<$ty>(&bytes)?;
                }

                #[test]
                fn other_decoders_reject(m in $strategy) {
                    check_all_decoders(&encode(&m))?;
                }
            }
        }
    };
}

envelope_properties!(shard_request, ShardRequest, shard_request());
envelope_properties!(shard_response, ShardResponse, shard_response());
envelope_properties!(cdc_request, CdcRequest, cdc_request());
envelope_properties!(cdc_response, CdcResponse, cdc_response());
envelope_properties!(shuckle_request, ShuckleRequest, shuckle_request());
envelope_properties!(shuckle_response, ShuckleResponse, shuckle_response());
envelope_properties!(blocks_request, BlocksRequest, blocks_request());
envelope_properties!(blocks_response, BlocksResponse, blocks_response());

/// Draws values until every kind has been seen, and compares the kinds with the document.
fn kinds_seen<T: Debug>(
    strategy: impl Strategy<Value = T>,
    kind: impl Fn(&T) -> Option<&'static str>,
) -> BTreeSet<String> {
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..4000 {
        let v = strategy.new_tree(&mut runner).unwrap().current();
        if let Some(k) = kind(&v) {
            seen.insert(k.to_string());
        }
    }
    seen
}

#[test]
fn strategies_cover_every_kind_and_the_doc_lists_exactly_them() {
    let doc_kinds =
        |e: &str| -> BTreeSet<String> { DOC.enums[e].iter().map(|v| v.name.clone()).collect() };
    let checks: Vec<(&str, BTreeSet<String>)> = vec![
        (
            "ShardReq",
            kinds_seen(shard_req(), |r| Some(exhaustive::shard(r))),
        ),
        ("ShardResp", kinds_seen(shard_resp(), |r| Some(r.kind()))),
        (
            "CdcReq",
            kinds_seen(cdc_req(), |r| Some(exhaustive::cdc(r))),
        ),
        ("CdcResp", kinds_seen(cdc_resp(), |r| Some(r.kind()))),
        (
            "ShuckleReq",
            kinds_seen(shuckle_req(), |r| Some(exhaustive::shuckle(r))),
        ),
        (
            "ShuckleResp",
            kinds_seen(shuckle_resp(), |r| Some(r.kind())),
        ),
        (
            "BlocksReq",
            kinds_seen(blocks_req(), |r| Some(exhaustive::blocks(r))),
        ),
        ("BlocksResp", kinds_seen(blocks_resp(), |r| Some(r.kind()))),
    ];
    for (e, seen) in checks {
        assert_eq!(
            seen,
            doc_kinds(e),
            "kinds of {e}: strategies vs docs/PROTOCOL.md"
        );
    }
    // Responses: one kind per request kind, with the same tag.
    for (req, resp) in [
        ("ShardReq", "ShardResp"),
        ("CdcReq", "CdcResp"),
        ("ShuckleReq", "ShuckleResp"),
        ("BlocksReq", "BlocksResp"),
    ] {
        let tags = |e: &str| -> Vec<(u32, String)> {
            DOC.enums[e]
                .iter()
                .map(|v| (v.tag, v.name.clone()))
                .collect()
        };
        assert_eq!(tags(req), tags(resp));
    }
}

/// The kind numbers and the read/write marks the document lists are those of the
/// definitions (`KINDS`, generated by `messages!`).
#[test]
fn doc_kind_numbers_and_access_match_the_definitions() {
    use eggs_protocol::codec::{Access, KindInfo};
    let checks: [(&str, &[KindInfo]); 4] = [
        ("ShardReq", ShardReq::KINDS),
        ("CdcReq", cdc::CdcReq::KINDS),
        ("ShuckleReq", shuckle::ShuckleReq::KINDS),
        ("BlocksReq", BlocksReq::KINDS),
    ];
    for (e, kinds) in checks {
        let defined: Vec<(u32, String)> = kinds
            .iter()
            .map(|k| (k.number, k.name.to_string()))
            .collect();
        let documented: Vec<(u32, String)> = DOC.enums[e]
            .iter()
            .map(|v| (v.tag, v.name.clone()))
            .collect();
        assert_eq!(documented, defined, "{e}: kind numbers in docs/PROTOCOL.md");
        let reads: BTreeSet<String> = kinds
            .iter()
            .filter(|k| k.access == Access::Read)
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(DOC.reads[e], reads, "{e}: read kinds in docs/PROTOCOL.md");
    }
    assert_eq!(DOC.reads.len(), 4, "one access row per request enum");
}

/// A kind's number is what goes on the wire, and what is not a kind's number never decodes.
#[test]
fn kind_numbers_are_the_wire_tags() {
    let req = lookup_request();
    let bytes = encode(&req);
    // Magic, header (16 bytes), shard id (1 byte), then the kind tag.
    let tag = u32::from_le_bytes(bytes[21..25].try_into().unwrap());
    assert_eq!(tag, req.body.kind_number());
    assert!(!req.body.is_write());
    for unknown in [ShardReq::KINDS.len() as u32, 1000, u32::MAX] {
        assert!(ShardReq::KINDS.iter().all(|k| k.number != unknown));
        let mut b = bytes.clone();
        b[21..25].copy_from_slice(&unknown.to_le_bytes());
        match decode::<ShardRequest>(&b) {
            Err(DecodeError::Malformed(m)) => assert!(m.contains("unknown ShardReq kind"), "{m}"),
            other => panic!("kind {unknown} decoded as {other:?}"),
        }
    }
}

#[test]
fn error_sampling_covers_every_code() {
    let seen: BTreeSet<u16> = {
        let mut runner = TestRunner::deterministic();
        (0..2000)
            .map(|_| eggs_error().new_tree(&mut runner).unwrap().current().code())
            .collect()
    };
    assert_eq!(seen.len(), EggsError::ALL.len());
}

// ---------------------------------------------------------------------------------------------
// Hand-built encodings: the layouts described in docs/PROTOCOL.md, byte by byte.

fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn lookup_request() -> ShardRequest {
    ShardRequest {
        header: RequestHeader {
            request_id: 9,
            client_id: 7,
        },
        shard: ShardId(0),
        body: ShardReq::Lookup(LookupReq {
            dir_id: InodeId::ROOT,
            name: Name::new("hello").unwrap(),
        }),
    }
}

#[test]
fn lookup_request_layout() {
    let mut b = b"SHA\x01".to_vec();
    b.extend_from_slice(&le64(9)); // request_id
    b.extend_from_slice(&le64(7)); // client_id
    b.push(0); // shard
    b.extend_from_slice(&0u32.to_le_bytes()); // kind: Lookup
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x40]); // dir_id: root = 1 << 62
    b.push(5); // name length
    b.extend_from_slice(b"hello");
    assert_eq!(encode(&lookup_request()), b);
    assert_eq!(b.len(), 39);
    assert_eq!(codec::peek_request_id(&b), Some(9));
}

fn error_response() -> ShardResponse {
    ShardResponse {
        request_id: 9,
        result: Err(EggsError::NameNotFound),
    }
}

#[test]
fn error_response_layout() {
    let mut b = b"SHA\x81".to_vec();
    b.extend_from_slice(&le64(9));
    b.extend_from_slice(&1u32.to_le_bytes()); // Err
    b.extend_from_slice(&20u16.to_le_bytes()); // NameNotFound
    assert_eq!(encode(&error_response()), b);
    assert_eq!(codec::peek_request_id(&b), Some(9));
}

fn a_file() -> InodeId {
    InodeId::new(InodeType::File, ShardId(0), 1)
}

fn read_dir_response() -> ShardResponse {
    let a = Name::new("a").unwrap();
    let b = Name::new("b").unwrap();
    ShardResponse {
        request_id: 10,
        result: Ok(ShardResp::ReadDir(ReadDirResp {
            next: Some(DirCursor {
                name_hash: b.hash64(),
                name: b,
            }),
            entries: vec![CurrentEdge {
                name_hash: a.hash64(),
                name: a,
                target_id: a_file(),
                creation_time: EggsTime(1_700_000_000_000_000_000),
            }],
        })),
    }
}

#[test]
fn read_dir_response_layout() {
    let mut b = b"SHA\x81".to_vec();
    b.extend_from_slice(&le64(10));
    b.extend_from_slice(&0u32.to_le_bytes()); // Ok
    b.extend_from_slice(&3u32.to_le_bytes()); // kind: ReadDir
    b.push(1); // next: Some
    b.extend_from_slice(&le64(0xaf63_df4c_8601_f1a5)); // FNV-1a("b")
    b.extend_from_slice(&[1, b'b']);
    b.extend_from_slice(&le64(1)); // one entry
    b.extend_from_slice(&le64(0xaf63_dc4c_8601_ec8c)); // FNV-1a("a")
    b.extend_from_slice(&[1, b'a']);
    b.extend_from_slice(&le64((2 << 62) | (1 << 8))); // file, counter 1, shard 0
    b.extend_from_slice(&le64(1_700_000_000_000_000_000));
    assert_eq!(encode(&read_dir_response()), b);
}

fn construct_file_request() -> ShardRequest {
    ShardRequest {
        header: RequestHeader {
            request_id: 11,
            client_id: 7,
        },
        shard: ShardId(5),
        body: ShardReq::ConstructFile(ConstructFileReq {
            typ: InodeType::File,
            attrs: eggs_protocol::InodeAttrs {
                mode: 0o100_640,
                uid: 1000,
                gid: 100,
            },
            rdev: 0,
        }),
    }
}

#[test]
fn construct_file_request_layout() {
    let mut b = b"SHA\x01".to_vec();
    b.extend_from_slice(&le64(11));
    b.extend_from_slice(&le64(7));
    b.push(5);
    b.extend_from_slice(&8u32.to_le_bytes()); // kind: ConstructFile
    b.extend_from_slice(&1u32.to_le_bytes()); // File is variant 1 here (2 in inode ids)
    b.extend_from_slice(&0o100_640u32.to_le_bytes()); // mode: regular file, rw-r-----
    b.extend_from_slice(&1000u32.to_le_bytes()); // uid
    b.extend_from_slice(&100u32.to_le_bytes()); // gid
    b.extend_from_slice(&le64(0)); // rdev
    assert_eq!(encode(&construct_file_request()), b);
}

fn make_directory_request() -> CdcRequest {
    CdcRequest {
        header: RequestHeader {
            request_id: 12,
            client_id: 7,
        },
        body: cdc::CdcReq::MakeDirectory(cdc::MakeDirectoryReq {
            owner_id: InodeId::ROOT,
            name: Name::new("docs").unwrap(),
            info: DirectoryInfo {
                stripe: Some(StripePolicy {
                    target_stripe_size: 1 << 20,
                }),
                ..Default::default()
            },
            attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
        }),
    }
}

#[test]
fn make_directory_request_layout() {
    let mut b = b"CDC\x01".to_vec();
    b.extend_from_slice(&le64(12));
    b.extend_from_slice(&le64(7));
    b.extend_from_slice(&0u32.to_le_bytes()); // kind: MakeDirectory
    b.extend_from_slice(&le64(1 << 62)); // owner_id: root
    b.push(4);
    b.extend_from_slice(b"docs");
    b.extend_from_slice(&[0, 0, 0]); // snapshot, span, block: None
    b.push(1); // stripe: Some
    b.extend_from_slice(&(1u32 << 20).to_le_bytes());
    b.extend_from_slice(&0o40_755u32.to_le_bytes()); // mode: directory, rwxr-xr-x
    b.extend_from_slice(&[0; 8]); // uid, gid: root
    assert_eq!(encode(&make_directory_request()), b);
}

/// A TCP frame: magic, body length, body (the encoding without its magic).
fn frame<M: Message>(m: &M) -> Vec<u8> {
    let encoded = encode(m);
    let mut f = encoded[..4].to_vec();
    f.extend_from_slice(&(encoded.len() as u32 - 4).to_le_bytes());
    f.extend_from_slice(&encoded[4..]);
    f
}

fn shards_request() -> ShuckleRequest {
    ShuckleRequest {
        body: shuckle::ShuckleReq::Shards(shuckle::ShardsReq {}),
    }
}

fn cdc_address_response() -> ShuckleResponse {
    ShuckleResponse {
        result: Ok(shuckle::ShuckleResp::Cdc(shuckle::CdcResp {
            addr: Addr {
                ip: [127, 0, 0, 1],
                port: 22000,
            },
            last_seen: EggsTime(1_700_000_000_000_000_000),
        })),
    }
}

fn write_block_request() -> BlocksRequest {
    BlocksRequest {
        body: BlocksReq::WriteBlock(WriteBlockReq {
            block_service_id: BlockServiceId(0x0102_0304_0506_0708),
            block_id: BlockId(42),
            crc: 0xdead_beef,
            size: 4096,
            certificate: [1, 2, 3, 4, 5, 6, 7, 8],
        }),
    }
}

#[test]
fn tcp_frame_layouts() {
    let mut b = b"SHU\x01".to_vec();
    b.extend_from_slice(&4u32.to_le_bytes()); // body length
    b.extend_from_slice(&3u32.to_le_bytes()); // kind: Shards, no fields
    assert_eq!(frame(&shards_request()), b);

    let mut b = b"SHU\x81".to_vec();
    b.extend_from_slice(&22u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // Ok
    b.extend_from_slice(&4u32.to_le_bytes()); // kind: Cdc
    b.extend_from_slice(&[127, 0, 0, 1]); // ip, first octet first
    b.extend_from_slice(&22000u16.to_le_bytes()); // port, little-endian
    b.extend_from_slice(&le64(1_700_000_000_000_000_000));
    assert_eq!(frame(&cdc_address_response()), b);

    let mut b = b"BLO\x01".to_vec();
    b.extend_from_slice(&36u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // kind: WriteBlock
    b.extend_from_slice(&le64(0x0102_0304_0506_0708));
    b.extend_from_slice(&le64(42));
    b.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    b.extend_from_slice(&4096u32.to_le_bytes());
    b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // fixed array: no length
    assert_eq!(frame(&write_block_request()), b);
}

#[test]
fn strings_vecs_and_shuckle_registration_layout() {
    let m = ShuckleRequest {
        body: shuckle::ShuckleReq::RegisterBlockServices(shuckle::RegisterBlockServicesReq {
            services: vec![shuckle::BlockServiceRegistration {
                id: BlockServiceId(3),
                addr: Addr {
                    ip: [10, 1, 2, 3],
                    port: 0x1234,
                },
                storage_class: StorageClass::Hdd,
                failure_domain: [0xaa; 16],
                secret_key: [0xbb; 16],
                capacity_bytes: 1000,
                available_bytes: 500,
                blocks: 7,
                path: "/d\u{e9}".into(),
            }],
        }),
    };
    let mut b = b"SHU\x01".to_vec();
    b.extend_from_slice(&2u32.to_le_bytes()); // kind: RegisterBlockServices
    b.extend_from_slice(&le64(1)); // one service
    b.extend_from_slice(&le64(3));
    b.extend_from_slice(&[10, 1, 2, 3, 0x34, 0x12]);
    b.extend_from_slice(&2u32.to_le_bytes()); // Hdd
    b.extend_from_slice(&[0xaa; 16]);
    b.extend_from_slice(&[0xbb; 16]);
    b.extend_from_slice(&le64(1000));
    b.extend_from_slice(&le64(500));
    b.extend_from_slice(&le64(7));
    b.extend_from_slice(&le64(4)); // path: byte length (UTF-8, "\u{e9}" is 2 bytes)
    b.extend_from_slice("/d\u{e9}".as_bytes());
    assert_eq!(encode(&m), b);
}

#[test]
fn inode_id_layout_and_name_hash() {
    assert_eq!(InodeId::ROOT.0, 0x4000_0000_0000_0000);
    let id = InodeId::new(InodeType::Symlink, ShardId(0xab), 0x12_3456);
    assert_eq!(id.0, (3 << 62) | (0x12_3456 << 8) | 0xab);
    let id = InodeId::new(InodeType::Directory, ShardId(1), InodeId::MAX_COUNTER);
    assert_eq!(id.0, 0x7fff_ffff_ffff_ff01);
    // A file's kind is in bits 61..59 (the counter's top three), as the document says.
    let fifo = InodeId::new_file(ShardId(2), eggs_protocol::FileKind::Fifo, 5);
    assert_eq!(fifo.0, (2 << 62) | (1 << 59) | (5 << 8) | 2);
    let kinds = [
        (eggs_protocol::FileKind::Regular, 0u64),
        (eggs_protocol::FileKind::Fifo, 1),
        (eggs_protocol::FileKind::Socket, 2),
        (eggs_protocol::FileKind::CharDevice, 3),
        (eggs_protocol::FileKind::BlockDevice, 4),
    ];
    for (kind, bits) in kinds {
        let id = InodeId::new_file(ShardId(9), kind, InodeId::MAX_FILE_SEQ);
        assert_eq!(id.counter() >> 51, bits);
        assert_eq!(id.file_kind(), Some(kind));
    }
    // Files made before kinds existed have small counters: regular.
    let old = InodeId::new(InodeType::File, ShardId(0), 77);
    assert_eq!(old.file_kind(), Some(eggs_protocol::FileKind::Regular));
    assert_eq!(
        InodeId::new(InodeType::File, ShardId(0), 7 << 51).file_kind(),
        None
    );
    assert_eq!(InodeId::ROOT.file_kind(), None);
    // FNV-1a 64 test vectors, as given in the document.
    assert_eq!(name_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(name_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(name_hash(b"foobar"), 0x8594_4171_f739_67e8);
}

/// The hex examples in the document are the real encodings.
#[test]
fn doc_examples_match_encodings() {
    let mut expected: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    expected.insert("lookup_request", encode(&lookup_request()));
    expected.insert("error_response", encode(&error_response()));
    expected.insert("read_dir_response", encode(&read_dir_response()));
    expected.insert("construct_file_request", encode(&construct_file_request()));
    expected.insert("make_directory_request", encode(&make_directory_request()));
    expected.insert("shards_request_frame", frame(&shards_request()));
    expected.insert("cdc_response_frame", frame(&cdc_address_response()));
    expected.insert("write_block_request_frame", frame(&write_block_request()));
    let documented: BTreeSet<&str> = DOC.examples.keys().map(|k| k.as_str()).collect();
    let known: BTreeSet<&str> = expected.keys().copied().collect();
    assert_eq!(documented, known, "examples in docs/PROTOCOL.md");
    for (name, bytes) in &expected {
        assert_eq!(&DOC.examples[*name], bytes, "example {name}");
    }
}

#[test]
fn doc_tables_match_the_crate() {
    let constants: BTreeMap<String, u64> = [
        ("DEFAULT_UDP_MTU", DEFAULT_UDP_MTU as u64),
        ("MAX_UDP_MTU", MAX_UDP_MTU as u64),
        ("MAX_TCP_MESSAGE", MAX_TCP_MESSAGE as u64),
        ("MAX_DECODE_BYTES", MAX_DECODE_BYTES as u64),
        ("MAX_INLINE_SPAN", MAX_INLINE_SPAN as u64),
        ("NUM_SHARDS", NUM_SHARDS as u64),
        ("Name::MAX_LEN", Name::MAX_LEN as u64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(DOC.constants, constants);

    let errors: Vec<(u16, String)> = EggsError::ALL
        .iter()
        .map(|e| (e.code(), e.name().to_string()))
        .collect();
    assert_eq!(DOC.errors, errors);

    use shuckle::flags;
    let fl: Vec<(String, u64)> = [
        ("NO_WRITE", flags::NO_WRITE),
        ("NO_READ", flags::NO_READ),
        ("DECOMMISSIONED", flags::DECOMMISSIONED),
        ("STALE", flags::STALE),
        ("READ_ONLY", flags::READ_ONLY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v as u64))
    .collect();
    assert_eq!(DOC.flags, fl);

    let magics: BTreeMap<String, [u8; 4]> = [
        ("ShardRequest", ShardRequest::MAGIC),
        ("ShardResponse", ShardResponse::MAGIC),
        ("CdcRequest", CdcRequest::MAGIC),
        ("CdcResponse", CdcResponse::MAGIC),
        ("ShuckleRequest", ShuckleRequest::MAGIC),
        ("ShuckleResponse", ShuckleResponse::MAGIC),
        ("BlocksRequest", BlocksRequest::MAGIC),
        ("BlocksResponse", BlocksResponse::MAGIC),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let documented: BTreeMap<String, [u8; 4]> = DOC
        .envelopes
        .iter()
        .map(|(k, (magic, _))| (k.clone(), *magic))
        .collect();
    assert_eq!(documented, magics);
    for (name, magic) in &magics {
        assert!(magic[..3].iter().all(u8::is_ascii_uppercase), "{name}");
        assert_eq!(magic[3] & 0x80 != 0, name.ends_with("Response"), "{name}");
    }
}

#[test]
fn the_doc_reader_rejects_what_the_decoder_rejects() {
    // A few targeted invalid encodings, beyond the random ones.
    let good = encode(&lookup_request());
    let name_at = good.len() - 6;
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for bad_name in [&b""[..], b".", b"..", b"a/b", b"a\0", b"/", b"\0"] {
        let mut b = good[..name_at].to_vec();
        b.push(bad_name.len() as u8);
        b.extend_from_slice(bad_name);
        cases.push(b);
    }
    // Unknown kind, unknown Result tag, unknown error code, bad bool, bad option tag.
    let mut b = good.clone();
    b[21] = 20;
    cases.push(b);
    let mut b = encode(&error_response());
    b[12] = 2;
    cases.push(b);
    let mut b = encode(&error_response());
    b[16] = 0;
    cases.push(b);
    let mut m = lookup_request();
    m.body = ShardReq::CreateCurrentEdge(CreateCurrentEdgeReq {
        dir_id: InodeId::ROOT,
        name: Name::new("x").unwrap(),
        target_id: a_file(),
        overwrite_files: true,
        txn_id: 1,
    });
    let mut b = encode(&m);
    // The bool `overwrite_files`, before the fixed-width u64 `txn_id`.
    let at = b.len() - 9;
    assert_eq!(b[at], 1);
    b[at] = 2;
    cases.push(b);
    let mut b = encode(&read_dir_response());
    b[20] = 2;
    cases.push(b);
    // Invalid UTF-8 in a String.
    let m = ShuckleResponse {
        result: Ok(shuckle::ShuckleResp::BlockServices(
            shuckle::BlockServicesResp {
                services: vec![shuckle::BlockServiceInfo {
                    id: BlockServiceId(1),
                    addr: Addr::default(),
                    storage_class: StorageClass::Flash,
                    failure_domain: [0; 16],
                    flags: 0,
                    capacity_bytes: 0,
                    available_bytes: 0,
                    blocks: 0,
                    path: "x".into(),
                    last_seen: EggsTime(0),
                }],
            },
        )),
    };
    let mut b = encode(&m);
    let x_at = b.len() - 9;
    assert_eq!(b[x_at], b'x');
    b[x_at] = 0xff;
    assert!(decode::<ShuckleResponse>(&b).is_err());
    check_arbitrary::<ShuckleResponse>(&b).unwrap();
    // Names need not be UTF-8, and "..." is a name.
    for ok_name in [&b"\xff"[..], b"...", b".a"] {
        let mut b = good[..name_at].to_vec();
        b.push(ok_name.len() as u8);
        b.extend_from_slice(ok_name);
        assert!(decode::<ShardRequest>(&b).is_ok());
        check_all_decoders(&b).unwrap();
    }
    for case in cases {
        assert!(decode::<ShardRequest>(&case).is_err() && decode::<ShardResponse>(&case).is_err());
        check_all_decoders(&case).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// docs/PROTOCOL.md as a second decoder.

static DOC: LazyLock<Doc> = LazyLock::new(|| Doc::parse(include_str!("../../../docs/PROTOCOL.md")));

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
}

#[derive(Debug, Clone)]
enum Payload {
    Unit,
    /// A tuple variant holding one value of this type.
    Type(String),
    /// A message kind: a struct of this name with these fields.
    Struct(String, Vec<Field>),
}

#[derive(Debug, Clone)]
struct Variant {
    tag: u32,
    name: String,
    payload: Payload,
}

#[derive(Debug, Default)]
struct Doc {
    constants: BTreeMap<String, u64>,
    /// Named scalar type to the primitive it is encoded as.
    scalars: BTreeMap<String, String>,
    structs: BTreeMap<String, Vec<Field>>,
    /// Plain enums and the per-service message enums.
    enums: BTreeMap<String, Vec<Variant>>,
    envelopes: BTreeMap<String, ([u8; 4], Vec<Field>)>,
    errors: Vec<(u16, String)>,
    flags: Vec<(String, u64)>,
    /// Request enum to its read kinds (section 5.1).
    reads: BTreeMap<String, BTreeSet<String>>,
    examples: BTreeMap<String, Vec<u8>>,
}

/// The cells of the table rows following a `<!-- table: NAME -->` marker, header and separator
/// rows skipped, backticks removed.
fn table_rows(lines: &[&str], start: usize) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut i = start + 1;
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    let mut first = true;
    while i < lines.len() && lines[i].trim_start().starts_with('|') {
        let line = lines[i].trim();
        i += 1;
        if first {
            first = false; // header
            continue;
        }
        if line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.replace('`', "").trim().to_string())
            .collect();
        rows.push(cells);
    }
    assert!(!rows.is_empty(), "empty table after line {}", start + 1);
    rows
}

/// Splits at commas that are not inside `<>` or `[]`.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '<' | '[' => depth += 1,
            '>' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim().to_string());
    }
    parts
}

/// `a: T, b: U` (or `—` for none) into fields.
fn parse_fields(cell: &str) -> Vec<Field> {
    if cell == "—" || cell.is_empty() {
        return Vec::new();
    }
    split_top_level(cell)
        .into_iter()
        .map(|f| {
            let (name, ty) = f
                .split_once(':')
                .unwrap_or_else(|| panic!("field without a type: {f:?}"));
            Field {
                name: name.trim().to_string(),
                ty: ty.trim().to_string(),
            }
        })
        .collect()
}

fn parse_number(s: &str) -> u64 {
    let token = s.split_whitespace().next().unwrap_or("");
    let token = token.replace('_', "");
    match token.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => token.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

fn parse_hex_bytes(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|t| u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("not a hex byte: {t:?}")))
        .collect()
}

impl Doc {
    fn parse(text: &str) -> Doc {
        let lines: Vec<&str> = text.lines().collect();
        let mut doc = Doc::default();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("<!-- table: ")
                .and_then(|r| r.strip_suffix(" -->"))
            {
                doc.parse_table(name, table_rows(&lines, i));
            } else if let Some(name) = line
                .strip_prefix("<!-- example: ")
                .and_then(|r| r.strip_suffix(" -->"))
            {
                let mut j = i + 1;
                assert!(
                    lines[j].starts_with("```"),
                    "example {name} has no code block"
                );
                j += 1;
                let mut bytes = Vec::new();
                while !lines[j].starts_with("```") {
                    let data = lines[j].split('#').next().unwrap_or("");
                    bytes.extend(parse_hex_bytes(data));
                    j += 1;
                }
                doc.examples.insert(name.to_string(), bytes);
            }
        }
        doc
    }

    fn parse_table(&mut self, name: &str, rows: Vec<Vec<String>>) {
        match name {
            "constants" => {
                for r in rows {
                    self.constants.insert(r[0].clone(), parse_number(&r[1]));
                }
            }
            "scalars" => {
                for r in rows {
                    self.scalars.insert(r[0].clone(), r[1].clone());
                }
            }
            "structs" => {
                for r in rows {
                    self.structs.insert(r[0].clone(), parse_fields(&r[1]));
                }
            }
            "enums" => {
                for r in rows {
                    let payload = if r[3] == "—" {
                        Payload::Unit
                    } else {
                        Payload::Type(r[3].clone())
                    };
                    self.enums.entry(r[0].clone()).or_default().push(Variant {
                        tag: parse_number(&r[1]) as u32,
                        name: r[2].clone(),
                        payload,
                    });
                }
            }
            "envelopes" => {
                for r in rows {
                    let magic: [u8; 4] = parse_hex_bytes(&r[1])
                        .try_into()
                        .unwrap_or_else(|_| panic!("magic of {} is not 4 bytes", r[0]));
                    self.envelopes
                        .insert(r[0].clone(), (magic, parse_fields(&r[3])));
                }
            }
            "errors" => {
                for r in rows {
                    self.errors.push((parse_number(&r[0]) as u16, r[1].clone()));
                }
            }
            "flags" => {
                for r in rows {
                    self.flags.push((r[0].clone(), parse_number(&r[1])));
                }
            }
            "access" => {
                for r in rows {
                    let kinds = split_top_level(&r[1])
                        .into_iter()
                        .filter(|k| k != "—")
                        .collect();
                    self.reads.insert(r[0].clone(), kinds);
                }
            }
            // A message enum: `ShardReq`, `ShardResp`, ...; the payload of kind `K` is the
            // struct `K` + `Req` or `K` + `Resp`.
            _ => {
                let suffix = if name.ends_with("Req") { "Req" } else { "Resp" };
                assert!(name.ends_with(suffix), "unknown table {name}");
                let variants = rows
                    .into_iter()
                    .map(|r| Variant {
                        tag: parse_number(&r[0]) as u32,
                        name: r[1].clone(),
                        payload: Payload::Struct(format!("{}{suffix}", r[1]), parse_fields(&r[2])),
                    })
                    .collect();
                let old = self.enums.insert(name.to_string(), variants);
                assert!(old.is_none(), "table {name} twice");
            }
        }
    }

    /// Reads a whole message as the document describes it, and renders it the way Rust's
    /// `Debug` would print the decoded value.
    fn render_message(&self, envelope: &str, bytes: &[u8]) -> Result<String, String> {
        let (magic, fields) = self
            .envelopes
            .get(envelope)
            .ok_or_else(|| format!("{envelope} is not documented"))?;
        let mut r = Reader(bytes);
        if r.take(4)? != magic {
            return Err("bad magic".into());
        }
        let out = self.render_struct(envelope, fields, &mut r)?;
        if !r.0.is_empty() {
            return Err(format!("{} trailing bytes", r.0.len()));
        }
        Ok(out)
    }

    fn render_struct(
        &self,
        name: &str,
        fields: &[Field],
        r: &mut Reader,
    ) -> Result<String, String> {
        if fields.is_empty() {
            return Ok(name.to_string());
        }
        let mut parts = Vec::new();
        for f in fields {
            parts.push(format!("{}: {}", f.name, self.render(&f.ty, r)?));
        }
        Ok(format!("{name} {{ {} }}", parts.join(", ")))
    }

    fn render(&self, ty: &str, r: &mut Reader) -> Result<String, String> {
        if let Some(inner) = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
            return match r.uint(1)? {
                0 => Ok("None".into()),
                1 => Ok(format!("Some({})", self.render(inner, r)?)),
                t => Err(format!("option tag {t}")),
            };
        }
        if let Some(inner) = ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
            let len = r.uint(8)?;
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(self.render(inner, r)?);
            }
            return Ok(format!("[{}]", items.join(", ")));
        }
        if let Some(inner) = ty.strip_prefix("Result<").and_then(|t| t.strip_suffix('>')) {
            let parts = split_top_level(inner);
            let [ok, err] = &parts[..] else {
                return Err(format!("bad Result type {ty}"));
            };
            return match r.uint(4)? {
                0 => Ok(format!("Ok({})", self.render(ok, r)?)),
                1 => Ok(format!("Err({})", self.render(err, r)?)),
                t => Err(format!("result tag {t}")),
            };
        }
        if let Some(n) = ty.strip_prefix("[u8; ").and_then(|t| t.strip_suffix(']')) {
            let n: usize = n.parse().map_err(|_| format!("bad array {ty}"))?;
            return Ok(format!("{:?}", r.take(n)?));
        }
        match ty {
            "u8" => return Ok(r.uint(1)?.to_string()),
            "u16" => return Ok(r.uint(2)?.to_string()),
            "u32" => return Ok(r.uint(4)?.to_string()),
            "u64" => return Ok(r.uint(8)?.to_string()),
            "bool" => {
                return match r.uint(1)? {
                    0 => Ok("false".into()),
                    1 => Ok("true".into()),
                    b => Err(format!("bool {b}")),
                }
            }
            "Name" => {
                let len = r.uint(1)? as usize;
                let b = r.take(len)?;
                let valid = !b.is_empty()
                    && !b.iter().any(|&c| c == 0 || c == b'/')
                    && b != b"."
                    && b != b"..";
                if !valid {
                    return Err(format!("bad name {b:?}"));
                }
                return Ok(format!("{:?}", String::from_utf8_lossy(b)));
            }
            "String" => {
                let len = r.uint(8)?;
                let len = usize::try_from(len).map_err(|_| "string too long")?;
                let s = std::str::from_utf8(r.take(len)?).map_err(|e| e.to_string())?;
                return Ok(format!("{s:?}"));
            }
            _ => {}
        }
        if let Some(prim) = self.scalars.get(ty) {
            let v = self.render(prim, r)?;
            return match ty {
                "InodeId" => Ok(format!("0x{:016x}", v.parse::<u64>().unwrap())),
                "EggsError" => {
                    let code: u16 = v.parse().unwrap();
                    self.errors
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map(|(_, n)| n.clone())
                        .ok_or_else(|| format!("unknown error code {code}"))
                }
                _ => Ok(format!("{ty}({v})")),
            };
        }
        if let Some(fields) = self.structs.get(ty) {
            return self.render_struct(ty, fields, r);
        }
        if let Some(variants) = self.enums.get(ty) {
            let tag = r.uint(4)? as u32;
            let v = variants
                .iter()
                .find(|v| v.tag == tag)
                .ok_or_else(|| format!("unknown {ty} tag {tag}"))?;
            return match &v.payload {
                Payload::Unit => Ok(v.name.clone()),
                Payload::Type(t) => Ok(format!("{}({})", v.name, self.render(t, r)?)),
                Payload::Struct(s, fields) => {
                    Ok(format!("{}({})", v.name, self.render_struct(s, fields, r)?))
                }
            };
        }
        panic!("type {ty} is used but not defined in docs/PROTOCOL.md")
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("unexpected end".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A little-endian unsigned integer of `n` bytes.
    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }
}

/// Known limitation, reported rather than fixed here: the decoder's budget (MAX_DECODE_BYTES)
/// charges a list's in-memory size up front, so a shuckle response whose frame body is within
/// MAX_TCP_MESSAGE can still fail to decode. Run with `--ignored` to see it.
#[test]
#[ignore = "known bug: frames within MAX_TCP_MESSAGE can exceed the decode budget"]
fn large_block_services_response_within_frame_limit_decodes() {
    let info = shuckle::BlockServiceInfo {
        id: BlockServiceId(1),
        addr: Addr::default(),
        storage_class: StorageClass::Hdd,
        failure_domain: [0; 16],
        flags: 0,
        capacity_bytes: 0,
        available_bytes: 0,
        blocks: 0,
        path: "/d".into(),
        last_seen: EggsTime(0),
    };
    let m = ShuckleResponse {
        result: Ok(shuckle::ShuckleResp::BlockServices(
            shuckle::BlockServicesResp {
                services: vec![info; 12_000],
            },
        )),
    };
    let bytes = encode(&m);
    assert_eq!(bytes.len() - 4, 924_016);
    assert!(bytes.len() - 4 <= MAX_TCP_MESSAGE as usize);
    assert_eq!(decode::<ShuckleResponse>(&bytes), Ok(m));
}
