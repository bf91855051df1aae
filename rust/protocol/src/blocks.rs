//! Block-service requests (TCP). Block data travels right after a write request's frame and
//! right after a fetch response's frame, so it is never copied into a message.

use crate::codec::{messages, Message};
use crate::EncodedLen;
use crate::{BlockId, BlockServiceId, EggsError};
use bincode::{Decode, Encode};

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlocksRequest {
    pub body: BlocksReq,
}

impl Message for BlocksRequest {
    const MAGIC: [u8; 4] = *b"BLO\x01";
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlocksResponse {
    pub result: Result<BlocksResp, EggsError>,
}

impl Message for BlocksResponse {
    const MAGIC: [u8; 4] = *b"BLO\x81";
}

messages! { BlocksReq, BlocksResp;
     0 write WriteBlock(WriteBlockReq) -> WriteBlockResp,
     1 read  FetchBlock(FetchBlockReq) -> FetchBlockResp,
     2 write EraseBlock(EraseBlockReq) -> EraseBlockResp,
     3 read  CheckBlock(CheckBlockReq) -> CheckBlockResp,
     4 read  BlockServiceStats(BlockServiceStatsReq) -> BlockServiceStatsResp,
}

/// Writes a block; `size` bytes of data follow the frame. `certificate` is the shard's MAC
/// over `(block_service_id, block_id, crc, size)` with the service's secret key.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct WriteBlockReq {
    pub block_service_id: BlockServiceId,
    pub block_id: BlockId,
    pub crc: u32,
    pub size: u32,
    pub certificate: [u8; 8],
}

/// `proof` is a MAC the shard can check: the block is durably written.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct WriteBlockResp {
    pub proof: [u8; 8],
}

/// Reads `count` bytes at `offset`; they follow the response frame.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FetchBlockReq {
    pub block_service_id: BlockServiceId,
    pub block_id: BlockId,
    pub offset: u32,
    pub count: u32,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct FetchBlockResp {
    pub count: u32,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct EraseBlockReq {
    pub block_service_id: BlockServiceId,
    pub block_id: BlockId,
    pub certificate: [u8; 8],
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct EraseBlockResp {
    pub proof: [u8; 8],
}

/// Verifies the block's CRC on disk.
#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CheckBlockReq {
    pub block_service_id: BlockServiceId,
    pub block_id: BlockId,
    pub size: u32,
    pub crc: u32,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct CheckBlockResp {}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceStatsReq {
    pub block_service_id: BlockServiceId,
}

#[derive(Clone, PartialEq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockServiceStatsResp {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub blocks: u64,
}
