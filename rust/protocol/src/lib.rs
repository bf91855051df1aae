//! The EggsFS wire protocol.
//!
//! Every message exchanged between clients, shuckle, shards, the CDC and block services is
//! defined in this crate and nowhere else. Messages are encoded with `bincode` 2 in a fixed
//! configuration (little-endian, fixed-width integers, bounded size; see [`codec`]) so that
//! other implementations (the kernel module's C codec) can follow `docs/PROTOCOL.md` exactly.

// The derive names paths as `::eggs_protocol::...`, here as in other crates.
extern crate self as eggs_protocol;

pub mod blocks;
pub mod cdc;
pub mod codec;
pub mod conv;
mod encoded_len;
pub mod error;
pub mod ids;
pub mod policy;
pub mod posix;
pub mod shard;
pub mod shuckle;

pub use codec::{decode, encode, encode_into, message_len, DecodeError, EncodedLen, Message};
pub use eggs_protocol_derive::EncodedLen;
pub use error::EggsError;
pub use ids::{
    Addr, BlockId, BlockServiceId, EggsTime, FileKind, InodeId, InodeType, Name, NameError,
    ShardId, NUM_SHARDS,
};
pub use policy::DirectoryInfo;
pub use posix::{AttrChange, Caller, InodeAttrs, SetTime};

/// Default largest UDP payload a client asks for, the Ethernet MTU minus IP and UDP headers.
pub const DEFAULT_UDP_MTU: u16 = 1472;
/// Largest UDP payload anybody sends or accepts (jumbo frames minus headers).
pub const MAX_UDP_MTU: u16 = 8972;
/// Largest TCP-framed message body (block data travels after the header, not inside it).
pub const MAX_TCP_MESSAGE: u32 = 1 << 20;
/// Largest inline span: small file contents are stored in the shard's metadata.
pub const MAX_INLINE_SPAN: usize = 4096;

// A client's default datagram is never above what servers accept, and the largest inline
// span with its request's fixed part fits the largest datagram.
const _: () = assert!(DEFAULT_UDP_MTU <= MAX_UDP_MTU);
const _: () = assert!(MAX_INLINE_SPAN + 512 <= MAX_UDP_MTU as usize);

/// Identifies a request for retries: servers deduplicate on `(client_id, request_id)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, bincode::Encode, bincode::Decode, EncodedLen)]
pub struct RequestHeader {
    /// Comes first so that [`codec::peek_request_id`] finds it at a fixed offset.
    pub request_id: u64,
    /// Random per client process.
    pub client_id: u64,
}
