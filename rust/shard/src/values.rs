//! Values stored in RocksDB, bincode-encoded with the protocol's fixed configuration.

use crate::error::ShardError;
use bincode::{Decode, Encode};
use eggs_protocol::policy::{DirectoryInfo, Parity, StorageClass};
use eggs_protocol::{BlockId, BlockServiceId, EggsTime, InodeAttrs, InodeId};

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 20 }>()
}

pub fn encode<T: Encode>(v: &T) -> Vec<u8> {
    match bincode::encode_to_vec(v, cfg()) {
        Ok(b) => b,
        Err(e) => unreachable!("encoding into a Vec failed: {e}"),
    }
}

pub fn decode<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<T, ShardError> {
    let (v, used) = bincode::decode_from_slice(bytes, cfg()).map_err(|e| ShardError::Corrupt {
        key: key.to_vec(),
        why: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(ShardError::Corrupt {
            key: key.to_vec(),
            why: "trailing bytes".into(),
        });
    }
    Ok(v)
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct DirectoryBody {
    /// NULL for the root, and for a removed directory.
    pub owner_id: InodeId,
    pub mtime: EggsTime,
    pub info: DirectoryInfo,
    pub atime: EggsTime,
    /// Moves with every change of the directory's entries or attributes.
    pub ctime: EggsTime,
    pub attrs: InodeAttrs,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct CurrentEdgeBody {
    pub target_id: InodeId,
    pub creation_time: EggsTime,
    /// Held by a CDC transaction: clients cannot rename or unlink it meanwhile.
    pub locked: bool,
    /// The CDC transaction whose CreateCurrentEdge made this edge (0 for client edges), so
    /// that the transaction's last step recognises it.
    pub created_by: u64,
}

/// A past version of a name; a NULL target marks a deletion.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SnapshotEdgeBody {
    pub target_id: InodeId,
    /// Whether this edge owns its file: true when it was retired by an unlink or an
    /// overwrite, false when the file was moved to another directory (whose edge owns it
    /// now) and for deletion markers. Expiring an owning edge releases the file.
    pub owned: bool,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct FileBody {
    pub size: u64,
    pub mtime: EggsTime,
    pub atime: EggsTime,
    pub ctime: EggsTime,
    pub attrs: InodeAttrs,
    /// Device number of a character or block device, else 0.
    pub rdev: u64,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TransientFileBody {
    pub size: u64,
    pub mtime: EggsTime,
    pub deadline: EggsTime,
    pub cookie: u64,
    /// Offset of the last span while its blocks are not certified: nothing may follow it,
    /// and the file cannot be linked.
    pub uncertified_span: Option<u64>,
    /// The attributes the file gets when it is linked (set at construction, changed by
    /// `SetAttr` with the cookie meanwhile).
    pub attrs: InodeAttrs,
    pub rdev: u64,
    /// Times a `SetAttr` asked for before the link, which then keeps them.
    pub set_atime: Option<EggsTime>,
    pub set_mtime: Option<EggsTime>,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SpanValue {
    pub size: u32,
    pub crc: u32,
    pub storage: SpanStorage,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum SpanStorage {
    Inline(Vec<u8>),
    Blocks(BlocksValue),
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct BlocksValue {
    pub parity: Parity,
    pub storage_class: StorageClass,
    pub stripes: u8,
    pub cell_size: u32,
    pub blocks: Vec<BlockValue>,
    pub certified: bool,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct BlockValue {
    pub block_service_id: BlockServiceId,
    pub block_id: BlockId,
    pub crc: u32,
}

/// A block replacement in progress: `new` is where the copy goes; `abandoned` are targets of
/// earlier attempts (their service failed or was blacklisted), which may hold a written copy
/// and are erased when the replacement completes.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct PendingReplaceBody {
    pub old_block_id: BlockId,
    pub new: BlockValue,
    pub abandoned: Vec<BlockValue>,
}

/// The encoded response to a request already applied, replayed to retries.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct DedupBody {
    pub time: EggsTime,
    pub response: Vec<u8>,
}

/// The bodies of format version 1, before inodes had attributes: what the migration to
/// version 2 reads (`kv::migrate_v1`).
pub mod v1 {
    use bincode::{Decode, Encode};
    use eggs_protocol::policy::DirectoryInfo;
    use eggs_protocol::{EggsTime, InodeId};

    #[derive(Clone, Debug, PartialEq, Encode, Decode)]
    pub struct DirectoryBody {
        pub owner_id: InodeId,
        pub mtime: EggsTime,
        pub info: DirectoryInfo,
    }

    #[derive(Clone, Debug, PartialEq, Encode, Decode)]
    pub struct FileBody {
        pub size: u64,
        pub mtime: EggsTime,
        pub atime: EggsTime,
    }

    #[derive(Clone, Debug, PartialEq, Encode, Decode)]
    pub struct TransientFileBody {
        pub size: u64,
        pub mtime: EggsTime,
        pub deadline: EggsTime,
        pub cookie: u64,
        pub uncertified_span: Option<u64>,
    }
}
