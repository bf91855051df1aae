//! CDC requests (UDP): operations that span directories, run as transactions over shards.

use crate::codec::{messages, Message};
use crate::policy::DirectoryInfo;
use crate::EncodedLen;
use crate::{EggsError, EggsTime, InodeId, Name, RequestHeader};
use bincode::{Decode, Encode};

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CdcRequest {
    pub header: RequestHeader,
    pub body: CdcReq,
}

impl Message for CdcRequest {
    const MAGIC: [u8; 4] = *b"CDC\x01";
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CdcResponse {
    pub request_id: u64,
    pub result: Result<CdcResp, EggsError>,
}

impl Message for CdcResponse {
    const MAGIC: [u8; 4] = *b"CDC\x81";
}

messages! { CdcReq, CdcResp;
     0 write MakeDirectory(MakeDirectoryReq) -> MakeDirectoryResp,
     1 write RenameFile(RenameFileReq) -> RenameFileResp,
     2 write RenameDirectory(RenameDirectoryReq) -> RenameDirectoryResp,
     3 write RemoveDirectory(RemoveDirectoryReq) -> RemoveDirectoryResp,
     4 write UndeleteDirectory(UndeleteDirectoryReq) -> UndeleteDirectoryResp,
}

/// Creates a directory named `name` in `owner_id`; `info` holds the policies it sets itself.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct MakeDirectoryReq {
    pub owner_id: InodeId,
    pub name: Name,
    pub info: DirectoryInfo,
    /// The new directory's mode (a directory's), owner and group
    /// (`posix::new_inode_attrs`).
    pub attrs: crate::InodeAttrs,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct MakeDirectoryResp {
    pub id: InodeId,
    pub creation_time: EggsTime,
}

/// Moves a file or symlink between two different directories (replacing a file at the
/// destination, which becomes a snapshot edge).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RenameFileReq {
    pub target_id: InodeId,
    pub old_owner_id: InodeId,
    pub old_name: Name,
    pub old_creation_time: EggsTime,
    pub new_owner_id: InodeId,
    pub new_name: Name,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RenameFileResp {
    pub creation_time: EggsTime,
}

/// Moves a directory under a different parent; refused if that would create a loop.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RenameDirectoryReq {
    pub target_id: InodeId,
    pub old_owner_id: InodeId,
    pub old_name: Name,
    pub old_creation_time: EggsTime,
    pub new_owner_id: InodeId,
    pub new_name: Name,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RenameDirectoryResp {
    pub creation_time: EggsTime,
}

/// Removes an empty directory (one with no current edges).
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryReq {
    pub owner_id: InodeId,
    pub target_id: InodeId,
    pub name: Name,
    pub creation_time: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RemoveDirectoryResp {}

/// Brings back a removed directory as `name` in `owner_id` (its parent's snapshot edge names
/// it), while the GC has not deleted it: re-attaches it to `owner_id`, then creates the
/// current edge; if the name is taken (or the parent removed) it is detached again.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct UndeleteDirectoryReq {
    pub owner_id: InodeId,
    pub name: Name,
    pub target_id: InodeId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct UndeleteDirectoryResp {
    pub creation_time: EggsTime,
}
