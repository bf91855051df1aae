//! Shuckle requests (TCP): the registry of shards, the CDC and block services.
//!
//! A TCP frame is the 4-byte magic, a little-endian `u32` body length, then the body.

use crate::codec::{messages, Message};
use crate::policy::StorageClass;
use crate::EncodedLen;
use crate::{Addr, BlockServiceId, EggsError, EggsTime, ShardId};
use bincode::{Decode, Encode};

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShuckleRequest {
    pub body: ShuckleReq,
}

impl Message for ShuckleRequest {
    const MAGIC: [u8; 4] = *b"SHU\x01";
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShuckleResponse {
    pub result: Result<ShuckleResp, EggsError>,
}

impl Message for ShuckleResponse {
    const MAGIC: [u8; 4] = *b"SHU\x81";
}

messages! { ShuckleReq, ShuckleResp;
     0 write RegisterShards(RegisterShardsReq) -> RegisterShardsResp,
     1 write RegisterCdc(RegisterCdcReq) -> RegisterCdcResp,
     2 write RegisterBlockServices(RegisterBlockServicesReq) -> RegisterBlockServicesResp,
     3 read  Shards(ShardsReq) -> ShardsResp,
     4 read  Cdc(CdcReq) -> CdcResp,
     5 read  BlockServices(BlockServicesReq) -> BlockServicesResp,
     6 write SetBlockServiceFlags(SetBlockServiceFlagsReq) -> SetBlockServiceFlagsResp,
     7 read  ShardBlockServices(ShardBlockServicesReq) -> ShardBlockServicesResp,
     8 write ForgetBlockService(ForgetBlockServiceReq) -> ForgetBlockServiceResp,
}

/// Registers (or refreshes, as a heartbeat) the address serving `shards`.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterShardsReq {
    pub shards: Vec<ShardId>,
    pub addr: Addr,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterShardsResp {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterCdcReq {
    pub addr: Addr,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterCdcResp {}

/// Block-service flags (a bit set).
pub mod flags {
    /// The shard places no new blocks here.
    pub const NO_WRITE: u8 = 1;
    /// Blocks here must not be read (the disk is suspect).
    pub const NO_READ: u8 = 2;
    /// Being emptied; GC migrates its blocks elsewhere.
    pub const DECOMMISSIONED: u8 = 4;
    /// Set by shuckle when it has not heard from the service for a while.
    pub const STALE: u8 = 8;
    /// Read-only: no new blocks, and no erasures.
    pub const READ_ONLY: u8 = 16;
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceRegistration {
    pub id: BlockServiceId,
    pub addr: Addr,
    pub storage_class: StorageClass,
    pub failure_domain: [u8; 16],
    pub secret_key: [u8; 16],
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub blocks: u64,
    pub path: String,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterBlockServicesReq {
    pub services: Vec<BlockServiceRegistration>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct RegisterBlockServicesResp {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardsReq {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardInfo {
    /// Zero address when the shard has never registered.
    pub addr: Addr,
    pub last_seen: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardsResp {
    /// Exactly [`crate::NUM_SHARDS`] entries, indexed by shard id.
    pub shards: Vec<ShardInfo>,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CdcReq {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CdcResp {
    pub addr: Addr,
    pub last_seen: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServicesReq {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceInfo {
    pub id: BlockServiceId,
    pub addr: Addr,
    pub storage_class: StorageClass,
    pub failure_domain: [u8; 16],
    pub flags: u8,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub blocks: u64,
    pub path: String,
    pub last_seen: EggsTime,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServicesResp {
    pub services: Vec<BlockServiceInfo>,
}

/// Sets the bits of `mask` in the service's flags to those of `flags`.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetBlockServiceFlagsReq {
    pub id: BlockServiceId,
    pub flags: u8,
    pub mask: u8,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct SetBlockServiceFlagsResp {}

/// For shards only: every block service with its secret key, which shards need to sign block
/// writes and erasures and to check proofs. (Like TernFS, this trusts the network the cluster
/// runs on; it is not for clients.)
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardBlockServicesReq {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceWithKey {
    pub info: BlockServiceInfo,
    pub secret_key: [u8; 16],
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ShardBlockServicesResp {
    pub services: Vec<BlockServiceWithKey>,
}

/// Removes a block service from the registry for good: only one flagged decommissioned that
/// shuckle has not heard from for a while (stale), i.e. emptied by migration and shut down.
/// Whether files still refer to it is for the caller to check first (`BlockServiceFiles` on
/// every shard): shuckle does not know.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ForgetBlockServiceReq {
    pub id: BlockServiceId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct ForgetBlockServiceResp {}
