//! Encoded sizes, computed the way the codec encodes.
//!
//! [`EncodedLen`] is implemented here for the codec's building blocks (integers, arrays,
//! vectors, strings, options, results, names) and derived with `#[derive(EncodedLen)]`
//! (crate `eggs-protocol-derive`) for every structure and enum next to its `Encode` and
//! `Decode`, so that a wire type's size is the sum of its parts. Senders budget replies
//! with it instead of counting bytes; `tests/roundtrip.rs` checks it against the encoder for
//! every message kind.

use crate::ids::{Addr, BlockId, BlockServiceId, EggsTime, InodeId, InodeType, Name, ShardId};
use crate::EggsError;
use std::mem::size_of;

/// The number of bytes `bincode` writes for a value in the protocol's configuration.
pub trait EncodedLen {
    fn encoded_len(&self) -> usize;
}

/// Sequence lengths are `u64`.
const SEQ_LEN: usize = size_of::<u64>();
/// `Option` tags are one byte; `Result` and enum tags are `u32`.
const OPTION_TAG: usize = size_of::<u8>();
const ENUM_TAG: usize = size_of::<u32>();

macro_rules! fixed_width {
    ($($t:ty),*) => {
        $(impl EncodedLen for $t {
            fn encoded_len(&self) -> usize {
                size_of::<$t>()
            }
        })*
    };
}
fixed_width!(u8, u16, u32, u64, i8, i16, i32, i64);

impl EncodedLen for bool {
    fn encoded_len(&self) -> usize {
        1
    }
}

impl<T: EncodedLen, const N: usize> EncodedLen for [T; N] {
    /// Arrays have no length prefix.
    fn encoded_len(&self) -> usize {
        self.iter().map(EncodedLen::encoded_len).sum()
    }
}

impl<T: EncodedLen> EncodedLen for Vec<T> {
    fn encoded_len(&self) -> usize {
        SEQ_LEN + self.iter().map(EncodedLen::encoded_len).sum::<usize>()
    }
}

impl EncodedLen for String {
    fn encoded_len(&self) -> usize {
        SEQ_LEN + self.len()
    }
}

impl<T: EncodedLen> EncodedLen for Option<T> {
    fn encoded_len(&self) -> usize {
        OPTION_TAG + self.as_ref().map_or(0, EncodedLen::encoded_len)
    }
}

impl<T: EncodedLen, E: EncodedLen> EncodedLen for Result<T, E> {
    fn encoded_len(&self) -> usize {
        ENUM_TAG
            + match self {
                Ok(v) => v.encoded_len(),
                Err(e) => e.encoded_len(),
            }
    }
}

impl EncodedLen for EggsError {
    /// Its `u16` code.
    fn encoded_len(&self) -> usize {
        self.code().encoded_len()
    }
}

// The id types keep their own module free of codec concerns; their encodings are derived
// (`Encode`) from these fields, except `Name`'s (one length byte, then the bytes).

impl EncodedLen for Name {
    fn encoded_len(&self) -> usize {
        size_of::<u8>() + self.as_bytes().len()
    }
}

impl EncodedLen for InodeType {
    fn encoded_len(&self) -> usize {
        // Spelled out so that a variant with a payload cannot be added unnoticed.
        match self {
            InodeType::Directory | InodeType::File | InodeType::Symlink => ENUM_TAG,
        }
    }
}

impl EncodedLen for Addr {
    fn encoded_len(&self) -> usize {
        let Addr { ip, port } = self;
        ip.encoded_len() + port.encoded_len()
    }
}

macro_rules! newtype {
    ($($t:ident),*) => {
        $(impl EncodedLen for $t {
            fn encoded_len(&self) -> usize {
                self.0.encoded_len()
            }
        })*
    };
}
newtype!(ShardId, InodeId, EggsTime, BlockServiceId, BlockId);
