//! Framing and the fixed bincode configuration.
//!
//! Every message starts with a 4-byte magic: three ASCII letters naming the service and a
//! version byte whose top bit is set for responses. The rest is bincode 2 with little-endian,
//! fixed-width integers (enum tags are `u32`, sequence lengths `u64`, `Option` tags `u8`).
//! Decoding is bounded ([`MAX_DECODE_BYTES`]), rejects unknown tags and trailing bytes, and
//! never panics.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use bincode::{Decode, Encode};

pub use crate::encoded_len::EncodedLen;

/// No single message may make the decoder claim more than this many bytes.
pub const MAX_DECODE_BYTES: usize = 1 << 20;

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_DECODE_BYTES>>;

fn cfg() -> Config {
    config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DECODE_BYTES>()
}

/// A top-level message: one UDP datagram or one TCP frame body.
pub trait Message: Encode + Decode<()> + Sized {
    const MAGIC: [u8; 4];
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than its magic")]
    Short(usize),
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Appends the magic and the encoded message to `buf`.
pub fn encode_into<M: Message>(m: &M, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&M::MAGIC);
    // Writing into a Vec cannot fail and every type we encode is infallible to encode.
    if let Err(e) = bincode::encode_into_std_write(m, buf, cfg()) {
        unreachable!("encoding into a Vec failed: {e}");
    }
}

pub fn encode<M: Message>(m: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    encode_into(m, &mut buf);
    buf
}

/// The length of [`encode`]'s output (magic included), without encoding.
pub fn message_len<M: Message + EncodedLen>(m: &M) -> usize {
    M::MAGIC.len() + m.encoded_len()
}

/// Encodes a message its sender built to fit in `limit` bytes (a reply sized for a datagram).
/// A larger encoding is a bug in how the sender budgets, not something the peer did, so it
/// stops the process rather than send a datagram the peer may not receive.
pub fn encode_within<M: Message>(m: &M, limit: usize) -> Vec<u8> {
    let bytes = encode(m);
    assert!(
        bytes.len() <= limit,
        "{} of {} bytes built for a limit of {limit} bytes",
        std::any::type_name::<M>(),
        bytes.len()
    );
    bytes
}

/// Decodes a whole message (magic included); the slice must contain exactly one message.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Short(bytes.len()));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != M::MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let body = &bytes[4..];
    let (m, used): (M, usize) = bincode::decode_from_slice(body, cfg())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Trailing(body.len() - used));
    }
    Ok(m)
}

/// Reads only the magic and the request id that follows it, so that a server can answer a
/// request it cannot decode with an error the client can match to its request.
pub fn peek_request_id(bytes: &[u8]) -> Option<u64> {
    let id = bytes.get(4..12)?;
    Some(u64::from_le_bytes(id.try_into().ok()?))
}

/// The body of one request kind, tied to its enum variant and its response type.
pub trait RequestBody: Sized {
    type Req;
    type Resp;
    type RespBody;
    fn into_req(self) -> Self::Req;
    fn from_resp(resp: Self::Resp) -> Option<Self::RespBody>;
}

/// Whether a request kind may change the server's state. Declared with each kind in
/// [`messages!`]; servers send writes through their durable path and answer reads at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Read,
    Write,
}

/// One message kind as its definition declares it: its stable number on the wire (the `u32`
/// tag of the request and of the response), its name and, for requests, its access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KindInfo {
    pub number: u32,
    pub name: &'static str,
    pub access: Access,
}

/// Whether no number appears twice; evaluated at compile time for every message enum.
pub const fn distinct_kinds(numbers: &[u32]) -> bool {
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i + 1;
        while j < numbers.len() {
            if numbers[i] == numbers[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// Encodes/decodes an enum whose variants each hold one value: the variant's kind number as a
/// `u32`, then the value (the layout bincode's derive uses, with explicit numbers instead of
/// positions; written out because the derive does not work inside `macro_rules!`). Also
/// derives its [`EncodedLen`], and refuses to compile if two variants share a number.
macro_rules! tagged_enum_codec {
    ($name:ident; $($kind:literal => $variant:ident,)*) => {
        const _: () = assert!(
            $crate::codec::distinct_kinds(&[$($kind),*]),
            concat!("two kinds of ", stringify!($name), " have the same number")
        );

        impl bincode::Encode for $name {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                encoder: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                match self {
                    $($name::$variant(x) => {
                        bincode::Encode::encode(&($kind as u32), encoder)?;
                        bincode::Encode::encode(x, encoder)
                    })*
                }
            }
        }

        impl<Ctx> bincode::Decode<Ctx> for $name {
            fn decode<D: bincode::de::Decoder<Context = Ctx>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                let found: u32 = bincode::Decode::decode(decoder)?;
                match found {
                    $($kind => Ok($name::$variant(bincode::Decode::decode(decoder)?)),)*
                    _ => Err(bincode::error::DecodeError::OtherString(format!(
                        "unknown {} kind {found}",
                        stringify!($name)
                    ))),
                }
            }
        }

        impl<'de, Ctx> bincode::BorrowDecode<'de, Ctx> for $name {
            fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Ctx>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                bincode::Decode::decode(decoder)
            }
        }

        impl $crate::codec::EncodedLen for $name {
            fn encoded_len(&self) -> usize {
                ::std::mem::size_of::<u32>()
                    + match self {
                        $($name::$variant(x) => $crate::codec::EncodedLen::encoded_len(x),)*
                    }
            }
        }

        impl $name {
            /// The kind's number on the wire.
            pub fn kind_number(&self) -> u32 {
                match self { $($name::$variant(_) => $kind,)* }
            }

            pub fn kind(&self) -> &'static str {
                match self { $($name::$variant(_) => stringify!($variant),)* }
            }
        }
    };
}
pub(crate) use tagged_enum_codec;

/// `read` or `write` in a [`messages!`] list.
macro_rules! access {
    (read) => {
        $crate::codec::Access::Read
    };
    (write) => {
        $crate::codec::Access::Write
    };
}
pub(crate) use access;

/// Defines a request enum and a response enum with one variant per kind, plus the
/// [`RequestBody`] impls pairing each request struct with its response struct. Each kind is
/// declared as `NUMBER ACCESS Kind(KindReq) -> KindResp`: `NUMBER` is its stable `u32` tag
/// on the wire (in both enums; never reused or renumbered), `ACCESS` is `read` or `write`.
macro_rules! messages {
    ($req:ident, $resp:ident;
     $($kind:literal $access:ident $variant:ident($reqty:ident) -> $respty:ident,)*) => {
        #[derive(Clone, PartialEq, Debug)]
        pub enum $req { $($variant($reqty),)* }

        #[derive(Clone, PartialEq, Debug)]
        pub enum $resp { $($variant($respty),)* }

        $crate::codec::tagged_enum_codec!($req; $($kind => $variant,)*);
        $crate::codec::tagged_enum_codec!($resp; $($kind => $variant,)*);

        impl $req {
            /// Every kind, in declaration order.
            pub const KINDS: &'static [$crate::codec::KindInfo] = &[$(
                $crate::codec::KindInfo {
                    number: $kind,
                    name: stringify!($variant),
                    access: $crate::codec::access!($access),
                },
            )*];

            pub fn access(&self) -> $crate::codec::Access {
                match self { $($req::$variant(_) => $crate::codec::access!($access),)* }
            }

            /// Whether the request may change state (and so goes through the durable path).
            pub fn is_write(&self) -> bool {
                self.access() == $crate::codec::Access::Write
            }
        }

        $(
            impl $crate::codec::RequestBody for $reqty {
                type Req = $req;
                type Resp = $resp;
                type RespBody = $respty;
                fn into_req(self) -> $req { $req::$variant(self) }
                fn from_resp(resp: $resp) -> Option<$respty> {
                    #[allow(unreachable_patterns)]
                    match resp { $resp::$variant(r) => Some(r), _ => None }
                }
            }

            impl From<$respty> for $resp {
                fn from(r: $respty) -> $resp { $resp::$variant(r) }
            }
        )*
    };
}
pub(crate) use messages;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::*;
    use crate::{InodeId, Name, ShardId};

    fn sample() -> ShardRequest {
        ShardRequest {
            header: crate::RequestHeader {
                request_id: 9,
                client_id: 7,
            },
            shard: ShardId(3),
            body: ShardReq::Lookup(LookupReq {
                dir_id: InodeId::ROOT,
                name: Name::new("hello").unwrap(),
            }),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let bytes = encode(&sample());
        assert_eq!(decode::<ShardRequest>(&bytes).unwrap(), sample());
        assert_eq!(peek_request_id(&bytes), Some(9));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode::<ShardRequest>(&trailing),
            Err(DecodeError::Trailing(1))
        );
        for n in 0..bytes.len() {
            assert!(decode::<ShardRequest>(&bytes[..n]).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode::<ShardRequest>(&bad),
            Err(DecodeError::BadMagic(_))
        ));
    }

    #[test]
    fn oversized_lengths_are_rejected_without_allocating() {
        // A ReadDir response claiming 2^60 entries.
        let mut bytes = ShardResponse::MAGIC.to_vec();
        bytes.extend_from_slice(&1u64.to_le_bytes()); // request id
        bytes.extend_from_slice(&0u32.to_le_bytes()); // Ok
        bytes.extend_from_slice(&3u32.to_le_bytes()); // ReadDir
        bytes.push(0); // next: None
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<ShardResponse>(&bytes).is_err());
    }
}
