//! Errors that cross the wire, each with a stable numeric code.

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};

macro_rules! eggs_errors {
    ($($name:ident = $code:literal : $msg:literal,)*) => {
        /// An error a server reports to a client. Encoded as its `u16` code, which never changes
        /// meaning once assigned (new errors get new codes).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
        pub enum EggsError {
            $(#[error($msg)] $name,)*
        }

        impl EggsError {
            pub const ALL: &'static [EggsError] = &[$(EggsError::$name,)*];

            pub fn code(self) -> u16 {
                match self { $(EggsError::$name => $code,)* }
            }
            pub fn from_code(code: u16) -> Option<EggsError> {
                match code { $($code => Some(EggsError::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(EggsError::$name => stringify!($name),)* }
            }
        }
    };
}

eggs_errors! {
    InternalError = 10: "internal server error",
    MalformedRequest = 11: "malformed request",
    WrongShard = 12: "request sent to a shard that does not own the inode",
    Timeout = 13: "timed out",
    ShardNotRegistered = 14: "shard has not registered with shuckle",
    CdcNotRegistered = 15: "CDC has not registered with shuckle",
    BadName = 16: "invalid name",
    TooLarge = 17: "request or response does not fit in a datagram",
    NameNotFound = 20: "no such name",
    NameExists = 21: "name already exists",
    DirectoryNotFound = 22: "no such directory",
    FileNotFound = 23: "no such file",
    NotADirectory = 24: "not a directory",
    IsADirectory = 25: "is a directory",
    DirectoryNotEmpty = 26: "directory not empty",
    MismatchingTarget = 27: "edge points to a different inode than expected",
    MismatchingCreationTime = 28: "edge has a different creation time than expected",
    EdgeLocked = 29: "name is locked by a cross-directory transaction in progress",
    EdgeNotLocked = 30: "edge is not locked",
    LoopInDirectoryRename = 31: "cannot move a directory inside itself",
    CannotOverrideDirectory = 32: "cannot replace a directory with a rename",
    DirectoryRemoved = 33: "directory has been removed",
    CannotRemoveRoot = 34: "cannot remove or move the root directory",
    SameDirectories = 35: "source and destination directories are the same",
    SameName = 36: "source and destination are the same",
    BadCookie = 37: "bad file cookie",
    FileNotTransient = 38: "file is not transient (already linked or destroyed)",
    BadSpanOffset = 39: "span does not start at the end of the file",
    BadSpanCrc = 40: "span data does not match its CRC",
    TypeMismatch = 41: "inode has the wrong type for this request",
    BadPolicy = 42: "invalid directory policy",
    NotPermitted = 43: "operation not permitted: only the owner (or root) may do that",
    AccessDenied = 44: "permission denied",
    BadAttributes = 45: "invalid mode or device number for this inode type",
    BlockServiceNotFound = 50: "no such block service",
    BadCertificate = 51: "bad block certificate",
    BlockNotFound = 52: "no such block",
    BadBlockCrc = 53: "block contents do not match their CRC",
    BlockServiceReadOnly = 54: "block service does not accept writes",
    NotEnoughBlockServices = 55: "not enough block services in distinct failure domains",
    BlockIoError = 56: "block service I/O error",
    SpanNotCertified = 57: "the file has a span whose blocks are not certified yet",
    NotExpiredYet = 60: "not expired yet (deadline or snapshot policy age not reached)",
    FileHasSpans = 61: "the transient file still has spans",
    SnapshotNotFound = 62: "no such snapshot: it expired and its data is gone, or never existed",
    EdgeNotOwned = 63: "that version was moved away: the file lives under its new name",
    DirectoryNotRemoved = 64: "the directory has not been removed",
    BlockNotInSpan = 80: "the span does not hold that block (any more)",
    NoPendingReplacement = 81: "no block replacement in progress matches",
    BlockServiceNotForgettable = 82: "only a decommissioned block service that stopped registering can be forgotten",
}

impl Encode for EggsError {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.code().encode(encoder)
    }
}

impl<Ctx> Decode<Ctx> for EggsError {
    fn decode<D: Decoder<Context = Ctx>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let code = u16::decode(decoder)?;
        EggsError::from_code(code).ok_or(DecodeError::OtherString(format!(
            "unknown error code {code}"
        )))
    }
}

impl<'de, Ctx> BorrowDecode<'de, Ctx> for EggsError {
    fn borrow_decode<D: BorrowDecoder<'de, Context = Ctx>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        EggsError::decode(decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &e in EggsError::ALL {
            assert!(seen.insert(e.code()), "duplicate code {}", e.code());
            assert_eq!(EggsError::from_code(e.code()), Some(e));
        }
        assert_eq!(EggsError::from_code(0), None);
    }
}
