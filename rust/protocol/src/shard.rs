//! Shard requests (UDP). Clients send the public ones; the CDC alone sends the ones marked
//! "CDC only", which implement the steps of cross-directory transactions.

use crate::codec::{messages, Message};
use crate::policy::{DirectoryInfo, Parity, SnapshotPolicy, StorageClass};
use crate::posix::{AttrChange, Caller, InodeAttrs};
use crate::EncodedLen;
use crate::{
    Addr, BlockId, BlockServiceId, EggsError, EggsTime, InodeId, InodeType, Name, RequestHeader,
    ShardId,
};
use bincode::{Decode, Encode};

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardRequest {
    pub header: RequestHeader,
    pub shard: ShardId,
    pub body: ShardReq,
}

impl Message for ShardRequest {
    const MAGIC: [u8; 4] = *b"SHA\x01";
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardResponse {
    pub request_id: u64,
    pub result: Result<ShardResp, EggsError>,
}

impl Message for ShardResponse {
    const MAGIC: [u8; 4] = *b"SHA\x81";
}

// Kind numbers are the wire tags (docs/PROTOCOL.md section 7); `read` kinds change nothing
// and skip the shard's durable write path.
messages! { ShardReq, ShardResp;
     0 read  Lookup(LookupReq) -> LookupResp,
     1 read  StatFile(StatFileReq) -> StatFileResp,
     2 read  StatDirectory(StatDirectoryReq) -> StatDirectoryResp,
     3 read  ReadDir(ReadDirReq) -> ReadDirResp,
     4 read  FullReadDir(FullReadDirReq) -> FullReadDirResp,
     5 write SameDirectoryRename(SameDirectoryRenameReq) -> SameDirectoryRenameResp,
     6 write SoftUnlinkFile(SoftUnlinkFileReq) -> SoftUnlinkFileResp,
     7 write SetDirectoryInfo(SetDirectoryInfoReq) -> SetDirectoryInfoResp,
     8 write ConstructFile(ConstructFileReq) -> ConstructFileResp,
     9 write AddInlineSpan(AddInlineSpanReq) -> AddInlineSpanResp,
    10 write LinkFile(LinkFileReq) -> LinkFileResp,
    11 read  FileSpans(FileSpansReq) -> FileSpansResp,
    12 read  StatTransientFile(StatTransientFileReq) -> StatTransientFileResp,
    13 write CreateDirectoryInode(CreateDirectoryInodeReq) -> CreateDirectoryInodeResp,
    14 write CreateCurrentEdge(CreateCurrentEdgeReq) -> CreateCurrentEdgeResp,
    15 write LockCurrentEdge(LockCurrentEdgeReq) -> LockCurrentEdgeResp,
    16 write UnlockCurrentEdge(UnlockCurrentEdgeReq) -> UnlockCurrentEdgeResp,
    17 write SetDirectoryOwner(SetDirectoryOwnerReq) -> SetDirectoryOwnerResp,
    18 write RemoveDirectoryOwner(RemoveDirectoryOwnerReq) -> RemoveDirectoryOwnerResp,
    19 write RemoveDirectoryInode(RemoveDirectoryInodeReq) -> RemoveDirectoryInodeResp,
    20 write AddSpanInitiate(AddSpanInitiateReq) -> AddSpanInitiateResp,
    21 write AddSpanCertify(AddSpanCertifyReq) -> AddSpanCertifyResp,
    22 write RemoveSpan(RemoveSpanReq) -> RemoveSpanResp,
    23 read  BlockServiceFiles(BlockServiceFilesReq) -> BlockServiceFilesResp,
    24 read  VisitFiles(VisitFilesReq) -> VisitFilesResp,
    25 write ReplaceBlockInitiate(ReplaceBlockInitiateReq) -> ReplaceBlockInitiateResp,
    26 write ReplaceBlockCertify(ReplaceBlockCertifyReq) -> ReplaceBlockCertifyResp,
    27 read  VisitDirectories(VisitDirectoriesReq) -> VisitDirectoriesResp,
    28 write CollectDirectory(CollectDirectoryReq) -> CollectDirectoryResp,
    29 read  VisitReleasedFiles(VisitReleasedFilesReq) -> VisitReleasedFilesResp,
    30 write MakeFileTransient(MakeFileTransientReq) -> MakeFileTransientResp,
    31 write ForgetReleasedFile(ForgetReleasedFileReq) -> ForgetReleasedFileResp,
    32 write DestroyDirectory(DestroyDirectoryReq) -> DestroyDirectoryResp,
    33 read  VisitTransientFiles(VisitTransientFilesReq) -> VisitTransientFilesResp,
    34 write PrepareSpanErasure(PrepareSpanErasureReq) -> PrepareSpanErasureResp,
    35 write RemoveErasedSpan(RemoveErasedSpanReq) -> RemoveErasedSpanResp,
    36 write RemoveTransientFile(RemoveTransientFileReq) -> RemoveTransientFileResp,
    37 write RestoreSnapshotEdge(RestoreSnapshotEdgeReq) -> RestoreSnapshotEdgeResp,
    38 write SetAttr(SetAttrReq) -> SetAttrResp,
    39 write ReattachDirectory(ReattachDirectoryReq) -> ReattachDirectoryResp,
}

/// Resolves one name in a directory to its current target.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LookupReq {
    pub dir_id: InodeId,
    pub name: Name,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LookupResp {
    pub target_id: InodeId,
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatFileReq {
    pub id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatFileResp {
    pub mtime: EggsTime,
    pub atime: EggsTime,
    pub size: u64,
    /// Moves with every attribute or name change.
    pub ctime: EggsTime,
    pub attrs: InodeAttrs,
    /// Device number of a character or block device, else 0.
    pub rdev: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatDirectoryReq {
    pub id: InodeId,
}

/// A directory's own state. `info` holds only the policies it sets itself; clients resolve
/// inheritance by walking `owner_id` up to the root.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatDirectoryResp {
    /// `InodeId::NULL` once the directory has been removed.
    pub owner_id: InodeId,
    pub mtime: EggsTime,
    pub info: DirectoryInfo,
    pub atime: EggsTime,
    pub ctime: EggsTime,
    pub attrs: InodeAttrs,
}

/// Position in a listing: entries are ordered by `(name_hash, name)`.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct DirCursor {
    pub name_hash: u64,
    pub name: Name,
}

/// Lists current edges starting at `start` (inclusive), fitting the reply in `mtu` bytes.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReadDirReq {
    pub dir_id: InodeId,
    pub start: Option<DirCursor>,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct CurrentEdge {
    pub name_hash: u64,
    pub name: Name,
    pub target_id: InodeId,
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReadDirResp {
    /// Where the next page starts; `None` at the end of the directory.
    pub next: Option<DirCursor>,
    pub entries: Vec<CurrentEdge>,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct FullDirCursor {
    pub name_hash: u64,
    pub name: Name,
    pub creation_time: EggsTime,
}

/// Lists every edge, current and snapshot, ordered by `(name_hash, name, creation_time)`.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FullReadDirReq {
    pub dir_id: InodeId,
    pub start: Option<FullDirCursor>,
    pub mtu: u16,
}

/// One version of a name. A snapshot edge with a null target records that the name was
/// deleted at `creation_time`.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct Edge {
    pub name_hash: u64,
    pub name: Name,
    pub target_id: InodeId,
    pub creation_time: EggsTime,
    pub current: bool,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FullReadDirResp {
    pub next: Option<FullDirCursor>,
    pub entries: Vec<Edge>,
}

/// Renames within one directory. The old edge becomes a snapshot edge; an existing file at
/// `new_name` becomes a snapshot edge too.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SameDirectoryRenameReq {
    pub dir_id: InodeId,
    pub target_id: InodeId,
    pub old_name: Name,
    pub old_creation_time: EggsTime,
    pub new_name: Name,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SameDirectoryRenameResp {
    pub new_creation_time: EggsTime,
}

/// Unlinks a file or symlink: its edge becomes a snapshot edge plus a deletion marker.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SoftUnlinkFileReq {
    pub dir_id: InodeId,
    pub target_id: InodeId,
    pub name: Name,
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SoftUnlinkFileResp {
    pub delete_creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetDirectoryInfoReq {
    pub id: InodeId,
    pub info: DirectoryInfo,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetDirectoryInfoResp {}

/// Creates a transient file (or symlink, or special file) on this shard, to be linked into
/// a directory of the same shard. The cookie authorises later changes to it.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ConstructFileReq {
    pub typ: InodeType,
    /// Must fit `typ` (`InodeAttrs::fits`): a file inode may hold a FIFO, a socket or a
    /// device instead of a regular file.
    pub attrs: InodeAttrs,
    /// Device number; 0 unless `attrs` is a character or block device.
    pub rdev: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ConstructFileResp {
    pub id: InodeId,
    pub cookie: u64,
}

/// Appends small data stored in the metadata itself.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddInlineSpanReq {
    pub file_id: InodeId,
    pub cookie: u64,
    pub byte_offset: u64,
    pub data: Vec<u8>,
    /// CRC32C of `data`.
    pub crc: u32,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddInlineSpanResp {}

/// Makes a transient file visible under `name` in `owner_id`, atomically.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LinkFileReq {
    pub file_id: InodeId,
    pub cookie: u64,
    pub owner_id: InodeId,
    pub name: Name,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LinkFileResp {
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FileSpansReq {
    pub file_id: InodeId,
    pub byte_offset: u64,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub enum SpanBody {
    Inline(Vec<u8>),
    Blocks(BlocksSpan),
}

/// A span stored as `parity.data` data blocks plus `parity.parity` parity blocks. Each block
/// is `stripes * cell_size` bytes: stripe `s` of the span is cell `s` of every block, and the
/// parity cells of a stripe are the Reed-Solomon code of its data cells (copies when
/// `parity.data == 1`). The span's logical bytes are the data cells in stripe order, cut at
/// `FetchedSpan::size` (the rest is zero padding).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlocksSpan {
    pub parity: Parity,
    pub storage_class: StorageClass,
    pub stripes: u8,
    pub cell_size: u32,
    /// Data blocks first, then parity blocks.
    pub blocks: Vec<FetchedBlock>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FetchedBlock {
    pub block_service_id: BlockServiceId,
    /// Where the block service was last registered.
    pub addr: Addr,
    pub block_id: BlockId,
    /// CRC32C of the whole block.
    pub crc: u32,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FetchedSpan {
    pub byte_offset: u64,
    pub size: u32,
    pub crc: u32,
    pub body: SpanBody,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FileSpansResp {
    /// Offset of the next span to ask for; `None` when there are no more.
    pub next_offset: Option<u64>,
    pub spans: Vec<FetchedSpan>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatTransientFileReq {
    pub id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct StatTransientFileResp {
    pub size: u64,
    pub mtime: EggsTime,
    pub deadline: EggsTime,
    pub attrs: InodeAttrs,
}

/// CDC only: creates a directory inode (idempotent when it exists with the same owner).
/// Refused (`DirectoryRemoved`) once transaction `txn_id` is over on the inode (its rollback
/// removed it, or a later transaction changed it), so that a late copy never brings a
/// removed directory back.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CreateDirectoryInodeReq {
    pub id: InodeId,
    pub owner_id: InodeId,
    pub info: DirectoryInfo,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
    /// Its mode must be a directory's.
    pub attrs: InodeAttrs,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CreateDirectoryInodeResp {
    pub mtime: EggsTime,
}

/// CDC only: creates a current edge, locked until the transaction's last step in that
/// directory (an `UnlockCurrentEdge` with the same `txn_id`). Idempotent while the
/// transaction runs; refused (`EdgeNotLocked`) once that last step has fenced the directory,
/// so that a late copy never creates the edge again.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CreateCurrentEdgeReq {
    pub dir_id: InodeId,
    pub name: Name,
    pub target_id: InodeId,
    /// Whether an existing file edge may be replaced (turned into a snapshot edge).
    pub overwrite_files: bool,
    /// The CDC transaction (never 0). Ids grow, and the transactions touching one directory
    /// (its edges or its inode) run one after the other in id order, since they all lock it:
    /// so the shard can fence every CDC step by the last transaction that finished there.
    pub txn_id: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CreateCurrentEdgeResp {
    pub creation_time: EggsTime,
}

/// CDC only: locks a current edge so that nobody else changes it during a transaction.
/// Refused (`EdgeNotLocked`) once transaction `txn_id` is over in `dir_id`.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LockCurrentEdgeReq {
    pub dir_id: InodeId,
    pub name: Name,
    pub target_id: InodeId,
    pub creation_time: EggsTime,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct LockCurrentEdgeResp {}

/// CDC only: unlocks an edge; with `was_moved` the edge is turned into a snapshot edge plus a
/// deletion marker, since its target now lives elsewhere. It is always transaction
/// `txn_id`'s last step in `dir_id`: it fences the directory, so that late copies of that
/// transaction's (and earlier transactions') steps there are refused, and a copy of itself
/// is a no-op.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct UnlockCurrentEdgeReq {
    pub dir_id: InodeId,
    pub name: Name,
    pub target_id: InodeId,
    pub creation_time: EggsTime,
    pub was_moved: bool,
    /// The CDC transaction (never 0).
    pub txn_id: u64,
    /// The edge the transaction's `CreateCurrentEdge` made (creation time 0 if that step
    /// failed: then an edge a late copy of it made is removed), rather than the edge it
    /// locked with `LockCurrentEdge`.
    pub new_edge: bool,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct UnlockCurrentEdgeResp {}

/// CDC only: records a directory's new parent after a cross-directory rename (or restores it
/// when a RemoveDirectory rolls back). Transaction `txn_id`'s last step on the inode: it
/// fences it, and a copy of itself is a no-op.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetDirectoryOwnerReq {
    pub dir_id: InodeId,
    pub owner_id: InodeId,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetDirectoryOwnerResp {}

/// CDC only: detaches an empty directory from its parent (rmdir). Fails if it has current edges.
/// Refused (`DirectoryRemoved`) once transaction `txn_id` is over on the inode.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryOwnerReq {
    pub dir_id: InodeId,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
    /// Undoes the transaction's own `ReattachDirectory` (an UndeleteDirectory rolling back):
    /// then it is the transaction's last step on the inode, which it fences, and a copy of
    /// it is a no-op.
    pub rollback: bool,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryOwnerResp {}

/// CDC only: undoes `CreateDirectoryInode` when the mkdir could not link the new directory.
/// Transaction `txn_id`'s last step on the inode: it fences it, and a copy of itself is a
/// no-op.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryInodeReq {
    pub id: InodeId,
    pub owner_id: InodeId,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryInodeResp {}

/// Starts a span stored in blocks at the end of a transient file: the shard picks
/// `parity.data + parity.parity` block services of `storage_class` in distinct failure domains
/// (avoiding `blacklist`) and returns a write certificate for each block.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddSpanInitiateReq {
    pub file_id: InodeId,
    pub cookie: u64,
    pub byte_offset: u64,
    /// Logical bytes in the span.
    pub size: u32,
    /// CRC32C of the span's logical bytes.
    pub crc: u32,
    pub storage_class: StorageClass,
    pub parity: Parity,
    pub stripes: u8,
    pub cell_size: u32,
    /// CRC32C of each block, data blocks first.
    pub block_crcs: Vec<u32>,
    /// Block services not to use (e.g. ones that just failed for this client).
    pub blacklist: Vec<BlockServiceId>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockWriteTarget {
    pub block_service_id: BlockServiceId,
    pub addr: Addr,
    pub block_id: BlockId,
    pub certificate: [u8; 8],
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddSpanInitiateResp {
    /// One per block, in the request's block order.
    pub blocks: Vec<BlockWriteTarget>,
}

/// Completes the span started at `byte_offset` with the block services' write proofs.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddSpanCertifyReq {
    pub file_id: InodeId,
    pub cookie: u64,
    pub byte_offset: u64,
    /// One per block, in block order.
    pub proofs: Vec<[u8; 8]>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct AddSpanCertifyResp {}

/// Removes the last span of a transient file (to undo a span whose blocks could not be
/// written). Returns the blocks it had, each with an erase certificate, so that they can be
/// erased right away (GC erases whatever is left).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveSpanReq {
    pub file_id: InodeId,
    pub cookie: u64,
    pub byte_offset: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveSpanResp {
    pub blocks: Vec<BlockWriteTarget>,
}

/// Lists the files of this shard that have blocks on `block_service_id`, in file id order,
/// from `start_file_id` (inclusive). For migrating a block service's blocks elsewhere.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceFilesReq {
    pub block_service_id: BlockServiceId,
    pub start_file_id: InodeId,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceFilesResp {
    /// Where the next page starts; `None` when there are no more.
    pub next_file_id: Option<InodeId>,
    pub file_ids: Vec<InodeId>,
}

/// Lists the files of this shard that have spans (linked or transient), in file id order,
/// from `start_file_id` (inclusive). For the scrubber's walk over every block.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitFilesReq {
    pub start_file_id: InodeId,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitFilesResp {
    pub next_file_id: Option<InodeId>,
    pub file_ids: Vec<InodeId>,
}

/// Starts replacing block `block_index` of the (certified) span at `byte_offset`, which must
/// still be `old_block_id`: the shard picks a block service of the span's storage class in a
/// failure domain no other block of the span uses (avoiding `blacklist`), records the pending
/// replacement and returns a write certificate for the new block, which must hold the same
/// bytes (same size and CRC) as the old one. Asking again returns the same target unless its
/// service is blacklisted or no longer usable.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReplaceBlockInitiateReq {
    pub file_id: InodeId,
    pub byte_offset: u64,
    pub block_index: u8,
    pub old_block_id: BlockId,
    pub blacklist: Vec<BlockServiceId>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReplaceBlockInitiateResp {
    pub target: BlockWriteTarget,
    /// Size and CRC32C of the block to write (those of the old one).
    pub size: u32,
    pub crc: u32,
}

/// Completes a replacement with the new block service's write proof: the span then points at
/// the new block. Returns erase certificates for the old block and for any block an earlier,
/// abandoned attempt may have written. Answers success with no blocks if the span already
/// holds `new_block_id` (another GC, or an earlier attempt, finished it).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReplaceBlockCertifyReq {
    pub file_id: InodeId,
    pub byte_offset: u64,
    pub block_index: u8,
    pub old_block_id: BlockId,
    pub new_block_id: BlockId,
    pub proof: [u8; 8],
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReplaceBlockCertifyResp {
    pub erase: Vec<BlockWriteTarget>,
}

// ---- garbage collection (eggsgc) and undelete ----

/// GC: lists this shard's directories, in id order, from `start_id` (inclusive; any id, e.g.
/// the null id for the beginning), fitting the reply in `mtu` bytes.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitDirectoriesReq {
    pub start_id: InodeId,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitedDirectory {
    pub id: InodeId,
    /// Null for the root and for removed directories.
    pub owner_id: InodeId,
    pub mtime: EggsTime,
    /// The snapshot policy the directory sets itself (absent = inherited).
    pub snapshot: Option<SnapshotPolicy>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitDirectoriesResp {
    pub next_id: Option<InodeId>,
    pub dirs: Vec<VisitedDirectory>,
}

/// GC: removes the snapshot edges of `dir_id` that `policy` (the directory's effective
/// snapshot policy, resolved by the GC) says have expired at the shard's time, name by name
/// from `start` (inclusive), doing a bounded amount of work. A removed edge that owns its
/// file releases it: on this shard the file becomes transient at once, on another shard a
/// release record is kept until the GC has made it transient there.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CollectDirectoryReq {
    pub dir_id: InodeId,
    pub policy: SnapshotPolicy,
    pub start: Option<DirCursor>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CollectDirectoryResp {
    /// Where to continue; `None` when the directory's snapshot edges are all visited.
    pub next: Option<DirCursor>,
    pub removed_edges: u32,
    /// Files released (made transient here, or recorded for their own shard).
    pub released_files: u32,
}

/// GC: lists the files (of other shards) whose last owning edge this shard removed, in id
/// order from `start_id` (inclusive).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitReleasedFilesReq {
    pub start_id: InodeId,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitReleasedFilesResp {
    pub next_id: Option<InodeId>,
    pub file_ids: Vec<InodeId>,
}

/// GC only: turns a linked file whose last owning edge is gone into a transient file whose
/// deadline is now, so that file destruction takes it. Idempotent: a file already transient
/// or gone is left as it is.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct MakeFileTransientReq {
    pub file_id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct MakeFileTransientResp {}

/// GC: drops this shard's release record for `file_id` (after `MakeFileTransient` succeeded
/// on the file's shard). Idempotent.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ForgetReleasedFileReq {
    pub file_id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ForgetReleasedFileResp {}

/// GC: deletes a removed directory (null owner) that has no edges left, once
/// `delete_after_ns` (its effective snapshot policy's age; 0 = never) has passed since it was
/// removed. Idempotent.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct DestroyDirectoryReq {
    pub dir_id: InodeId,
    pub delete_after_ns: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct DestroyDirectoryResp {}

/// GC: lists this shard's transient files in id order from `start_id` (inclusive).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitTransientFilesReq {
    pub start_id: InodeId,
    pub mtu: u16,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct TransientFileEntry {
    pub id: InodeId,
    pub size: u64,
    pub deadline: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct VisitTransientFilesResp {
    pub next_id: Option<InodeId>,
    pub files: Vec<TransientFileEntry>,
}

/// GC: starts destroying a transient file past its deadline. Replaces its cookie (so that
/// a writer that comes back late can change nothing any more) and returns its first span
/// with an erase certificate for each block; `byte_offset` is absent when no span is left.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct PrepareSpanErasureReq {
    pub file_id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct PrepareSpanErasureResp {
    pub byte_offset: Option<u64>,
    pub blocks: Vec<BlockWriteTarget>,
}

/// GC: removes the span at `byte_offset` of a transient file past its deadline once every
/// block is erased: `proofs` holds one erase proof per block, in block order (any bytes for
/// a block whose service is decommissioned). Idempotent: a span already gone is success.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveErasedSpanReq {
    pub file_id: InodeId,
    pub byte_offset: u64,
    pub proofs: Vec<[u8; 8]>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveErasedSpanResp {}

/// GC: deletes a transient file past its deadline that has no spans left. Idempotent.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveTransientFileReq {
    pub file_id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveTransientFileResp {}

/// Undelete: makes the snapshot edge `(name, creation_time)` of `dir_id` current again. Fails
/// if the name has a current edge (`NameExists`), if the snapshot edge is gone or is a
/// deletion marker or its file is gone (`SnapshotNotFound`), if it points at a directory
/// (`IsADirectory`), or if its file was moved away (`EdgeNotOwned`).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RestoreSnapshotEdgeReq {
    pub dir_id: InodeId,
    pub name: Name,
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RestoreSnapshotEdgeResp {
    pub target_id: InodeId,
    pub creation_time: EggsTime,
}

/// Changes the mode, owner, group and times of an inode (FUSE `setattr`: `chmod`, `chown`,
/// `utimensat`, `touch`, `cp -p`, `tar`, `rsync -a`) by the rules of `posix::apply_change`,
/// checked against `caller`; `ctime` becomes now. A transient file (`cookie` given: the one
/// `ConstructFile` returned) keeps the change for when it is linked. A removed directory
/// refuses (`DirectoryRemoved`): its `mtime` records when it was removed.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetAttrReq {
    pub id: InodeId,
    pub cookie: Option<u64>,
    pub caller: Caller,
    pub change: AttrChange,
}

/// The inode's attributes after the change.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetAttrResp {
    pub attrs: InodeAttrs,
    pub mtime: EggsTime,
    pub atime: EggsTime,
    pub ctime: EggsTime,
}

/// CDC only (UndeleteDirectory): gives a removed directory the owner `owner_id` again.
/// Idempotent when it already has that owner; `SnapshotNotFound` if the GC deleted it,
/// `DirectoryNotRemoved` if it has another owner; `DirectoryRemoved` once transaction
/// `txn_id` is over on the inode (a late copy).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReattachDirectoryReq {
    pub dir_id: InodeId,
    pub owner_id: InodeId,
    /// The CDC transaction sending this step (never 0; see `CreateCurrentEdgeReq::txn_id`).
    pub txn_id: u64,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ReattachDirectoryResp {}
