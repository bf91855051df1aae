//! Identifiers and small value types shared by every message.

use bincode::de::read::Reader;
use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError as BinDecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};
use std::fmt;

/// Number of logical metadata shards. An inode's shard is the low byte of its id.
pub const NUM_SHARDS: usize = 256;

/// A logical metadata shard, 0..=255.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Encode, Decode)]
pub struct ShardId(pub u8);

impl ShardId {
    /// Every shard, in order.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..=u8::MAX).map(ShardId)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// Shard ids as compact ranges in the syntax `--shards` takes: `[9, 3, 7, 8, 255]` ->
/// `"3,7..=9,255"` (sorted, duplicates dropped), so a 256-shard process is one short string.
pub fn compact_shard_ranges(ids: &[u8]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        while i + 1 < ids.len() && u16::from(ids[i + 1]) == u16::from(ids[i]) + 1 {
            i += 1;
        }
        parts.push(if start == ids[i] {
            start.to_string()
        } else {
            format!("{start}..={}", ids[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// The kind of object an inode id names; stored in the id's top two bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub enum InodeType {
    Directory,
    File,
    Symlink,
}

impl InodeType {
    fn bits(self) -> u64 {
        match self {
            InodeType::Directory => 1,
            InodeType::File => 2,
            InodeType::Symlink => 3,
        }
    }
}

/// What a file inode (type `File`) holds. It is in the top [`InodeId::FILE_KIND_BITS`] bits of
/// the id's counter, so that a listing, which carries only ids, tells FIFOs, sockets and
/// devices from regular files (`d_type`) without asking for each one's mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FileKind {
    Regular,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn bits(self) -> u64 {
        match self {
            FileKind::Regular => 0,
            FileKind::Fifo => 1,
            FileKind::Socket => 2,
            FileKind::CharDevice => 3,
            FileKind::BlockDevice => 4,
        }
    }

    /// The kind of a file inode with mode `mode` (`st_mode` type bits; anything else is
    /// regular).
    pub fn of_mode(mode: u32) -> FileKind {
        use crate::posix::{S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFSOCK};
        match mode & S_IFMT {
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }
}

/// A 64-bit inode id: `type (2 bits) | counter (54 bits) | shard (8 bits)`; a file's counter
/// is `kind (3 bits) | sequence (51 bits)` ([`FileKind`]).
///
/// Keeping the type and shard in the id lets anybody route a request and know what it points
/// to without a lookup.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct InodeId(pub u64);

impl InodeId {
    /// The null inode: "no owner" for a removed directory, "no target" for deletion markers.
    pub const NULL: InodeId = InodeId(0);
    /// The root directory, on shard 0 with counter 0.
    pub const ROOT: InodeId = InodeId(1 << Self::TYPE_SHIFT);
    /// Bits of the type, at the top.
    pub const TYPE_BITS: u32 = 2;
    /// Bits of the counter, between the type and the shard.
    pub const COUNTER_BITS: u32 = 54;
    /// Bits of the shard, at the bottom.
    pub const SHARD_BITS: u32 = 8;
    const TYPE_SHIFT: u32 = Self::COUNTER_BITS + Self::SHARD_BITS;
    /// Largest counter that fits.
    pub const MAX_COUNTER: u64 = (1 << Self::COUNTER_BITS) - 1;
    /// Bits of a file's counter that say its [`FileKind`], at the counter's top.
    pub const FILE_KIND_BITS: u32 = 3;
    /// Largest sequence number of a file or symlink (the rest of the counter): file and
    /// symlink counters of a shard come from one sequence, which stays below this.
    pub const MAX_FILE_SEQ: u64 = (1 << (Self::COUNTER_BITS - Self::FILE_KIND_BITS)) - 1;

    /// Panics on a counter that does not fit (callers allocate counters and must stop
    /// before [`Self::MAX_COUNTER`]): a truncated counter would name another inode.
    pub fn new(typ: InodeType, shard: ShardId, counter: u64) -> InodeId {
        assert!(
            counter <= Self::MAX_COUNTER,
            "inode counter {counter} overflows"
        );
        InodeId((typ.bits() << Self::TYPE_SHIFT) | (counter << Self::SHARD_BITS) | shard.0 as u64)
    }
    /// A file inode of `kind` with sequence number `seq` (panics above [`Self::MAX_FILE_SEQ`],
    /// as [`Self::new`] does).
    pub fn new_file(shard: ShardId, kind: FileKind, seq: u64) -> InodeId {
        assert!(seq <= Self::MAX_FILE_SEQ, "file sequence {seq} overflows");
        let kind = kind.bits() << (Self::COUNTER_BITS - Self::FILE_KIND_BITS);
        Self::new(InodeType::File, shard, kind | seq)
    }

    /// What a file inode holds; `None` for other types and unknown kind bits.
    pub fn file_kind(self) -> Option<FileKind> {
        if self.typ() != Some(InodeType::File) {
            return None;
        }
        match self.counter() >> (Self::COUNTER_BITS - Self::FILE_KIND_BITS) {
            0 => Some(FileKind::Regular),
            1 => Some(FileKind::Fifo),
            2 => Some(FileKind::Socket),
            3 => Some(FileKind::CharDevice),
            4 => Some(FileKind::BlockDevice),
            _ => None,
        }
    }

    /// The type encoded in the id, or `None` for the null id and other invalid ids.
    pub fn typ(self) -> Option<InodeType> {
        match self.0 >> Self::TYPE_SHIFT {
            1 => Some(InodeType::Directory),
            2 => Some(InodeType::File),
            3 => Some(InodeType::Symlink),
            _ => None,
        }
    }
    pub fn shard(self) -> ShardId {
        ShardId(crate::conv::low_byte(self.0))
    }
    pub fn counter(self) -> u64 {
        (self.0 >> Self::SHARD_BITS) & Self::MAX_COUNTER
    }
    pub fn is_dir(self) -> bool {
        self.typ() == Some(InodeType::Directory)
    }
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

// The id layout: type | counter | shard fill exactly 64 bits, the shard field holds every
// shard, the largest type tag (3) fits its field, and the root is directory 0 of shard 0.
const _: () = assert!(InodeId::TYPE_BITS + InodeId::COUNTER_BITS + InodeId::SHARD_BITS == 64);
const _: () = assert!(1usize << InodeId::SHARD_BITS == NUM_SHARDS);
const _: () = assert!(3 >> InodeId::TYPE_BITS == 0);
const _: () = assert!(InodeId::ROOT.0 >> InodeId::TYPE_SHIFT == 1);
const _: () = assert!(InodeId::ROOT.0 & ((1 << InodeId::TYPE_SHIFT) - 1) == 0);

/// Nanoseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Encode, Decode)]
pub struct EggsTime(pub u64);

impl EggsTime {
    pub fn now() -> EggsTime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EggsTime(crate::conv::nanos_of(d))
    }
}

impl fmt::Display for EggsTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        // Civil date from days since epoch (proleptic Gregorian), to avoid a time crate.
        // At most 2^64 / 86400 / 10^9 days: fits an i64.
        let days = crate::conv::fit::<i64, u64>(secs / 86400);
        let rem = secs % 86400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60,
            nanos
        )
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Day of month 1..=31 and month 1..=12 by construction.
    let d = crate::conv::fit::<u32, i64>(doy - (153 * mp + 2) / 5 + 1);
    let m = crate::conv::fit::<u32, i64>(if mp < 10 { mp + 3 } else { mp - 9 });
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Encode, Decode)]
pub struct BlockServiceId(pub u64);

/// A 64-bit block id: `counter (56 bits) | shard (8 bits)`, the counter being the allocating
/// shard's own, so that ids are unique across shards without coordination.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Encode, Decode)]
pub struct BlockId(pub u64);

impl BlockId {
    /// Bits of the allocating shard, at the bottom.
    pub const SHARD_BITS: u32 = 8;
    /// Bits of the counter, above the shard.
    pub const COUNTER_BITS: u32 = 56;
    /// Largest counter that fits.
    pub const MAX_COUNTER: u64 = (1 << Self::COUNTER_BITS) - 1;
    /// Bits of a file's counter that say its [`FileKind`], at the counter's top.
    pub const FILE_KIND_BITS: u32 = 3;
    /// Largest sequence number of a file or symlink (the rest of the counter): file and
    /// symlink counters of a shard come from one sequence, which stays below this.
    pub const MAX_FILE_SEQ: u64 = (1 << (Self::COUNTER_BITS - Self::FILE_KIND_BITS)) - 1;

    /// Panics on a counter that does not fit (the allocating shard must stop before
    /// [`Self::MAX_COUNTER`]): a truncated counter would reuse another block's id.
    pub fn new(shard: ShardId, counter: u64) -> BlockId {
        assert!(
            counter <= Self::MAX_COUNTER,
            "block counter {counter} overflows"
        );
        BlockId((counter << Self::SHARD_BITS) | shard.0 as u64)
    }
}

// The block id layout fills exactly 64 bits and its shard field holds every shard.
const _: () = assert!(BlockId::COUNTER_BITS + BlockId::SHARD_BITS == 64);
const _: () = assert!(1usize << BlockId::SHARD_BITS == NUM_SHARDS);

/// An IPv4 socket address (all EggsFS services are reached over IPv4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Encode, Decode)]
pub struct Addr {
    pub ip: [u8; 4],
    pub port: u16,
}

impl Addr {
    pub fn to_socket_addr(self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.ip, self.port))
    }
    /// `None` for IPv6 addresses, which the protocol cannot carry.
    pub fn from_socket_addr(a: std::net::SocketAddr) -> Option<Addr> {
        match a {
            std::net::SocketAddr::V4(v4) => Some(Addr {
                ip: v4.ip().octets(),
                port: v4.port(),
            }),
            std::net::SocketAddr::V6(_) => None,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_socket_addr())
    }
}

/// Why a byte string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} bytes, longer than 255")]
    TooLong(usize),
    #[error("name contains '/' or NUL")]
    BadByte,
    #[error("'.' and '..' are not names")]
    Dots,
}

/// A directory entry name: 1..=255 bytes, without `/` or NUL, and not `.` or `..`.
///
/// Validated on construction and on decoding, so every `Name` in the system is valid.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Vec<u8>);

impl Name {
    pub const MAX_LEN: usize = 255;

    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Name, NameError> {
        let bytes = bytes.into();
        Self::check(&bytes)?;
        Ok(Name(bytes))
    }
    pub fn check(bytes: &[u8]) -> Result<(), NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(NameError::TooLong(bytes.len()));
        }
        if bytes.iter().any(|&b| b == b'/' || b == 0) {
            return Err(NameError::BadByte);
        }
        if bytes == b"." || bytes == b".." {
            return Err(NameError::Dots);
        }
        Ok(())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    /// The stable 64-bit hash that orders directory listings (FNV-1a).
    pub fn hash64(&self) -> u64 {
        name_hash(&self.0)
    }
}

/// FNV-1a over the name bytes: stable across versions and trivial to reimplement in C.
pub fn name_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        Name::new(s.as_bytes())
    }
}

impl Encode for Name {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        // One length byte: names are at most 255 bytes.
        crate::conv::fit::<u8, usize>(self.0.len()).encode(encoder)?;
        for b in &self.0 {
            b.encode(encoder)?;
        }
        Ok(())
    }
}

impl<Ctx> Decode<Ctx> for Name {
    fn decode<D: Decoder<Context = Ctx>>(decoder: &mut D) -> Result<Self, BinDecodeError> {
        let len = u8::decode(decoder)? as usize;
        decoder.claim_bytes_read(len)?;
        let mut bytes = vec![0u8; len];
        decoder.reader().read(&mut bytes)?;
        Name::check(&bytes).map_err(|e| BinDecodeError::OtherString(format!("bad name: {e}")))?;
        Ok(Name(bytes))
    }
}

impl<'de, Ctx> BorrowDecode<'de, Ctx> for Name {
    fn borrow_decode<D: BorrowDecoder<'de, Context = Ctx>>(
        decoder: &mut D,
    ) -> Result<Self, BinDecodeError> {
        Name::decode(decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_id_fields() {
        let id = InodeId::new(InodeType::File, ShardId(42), 12345);
        assert_eq!(id.typ(), Some(InodeType::File));
        assert_eq!(id.shard(), ShardId(42));
        assert_eq!(id.counter(), 12345);
        assert_eq!(InodeId::ROOT.typ(), Some(InodeType::Directory));
        assert_eq!(InodeId::ROOT.shard(), ShardId(0));
        assert_eq!(InodeId::NULL.typ(), None);
        let max = InodeId::new(InodeType::Symlink, ShardId(255), InodeId::MAX_COUNTER);
        assert_eq!(max, InodeId(u64::MAX));
        assert_eq!(BlockId::new(ShardId(7), 3), BlockId(3 << 8 | 7));
        assert_eq!(
            BlockId::new(ShardId(255), BlockId::MAX_COUNTER),
            BlockId(u64::MAX)
        );
    }

    #[test]
    #[should_panic(expected = "overflows")]
    fn inode_counter_overflow_stops() {
        InodeId::new(InodeType::File, ShardId(0), InodeId::MAX_COUNTER + 1);
    }

    #[test]
    #[should_panic(expected = "overflows")]
    fn block_counter_overflow_stops() {
        BlockId::new(ShardId(0), BlockId::MAX_COUNTER + 1);
    }

    #[test]
    fn shard_ranges() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(compact_shard_ranges(&all), "0..=255");
        assert_eq!(compact_shard_ranges(&[9, 3, 7, 8, 255, 3]), "3,7..=9,255");
        assert_eq!(compact_shard_ranges(&[4]), "4");
        assert_eq!(compact_shard_ranges(&[]), "");
    }

    #[test]
    fn names() {
        assert!(Name::new("a").is_ok());
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("a/b"), Err(NameError::BadByte));
        assert_eq!(Name::new(&b"a\0"[..]), Err(NameError::BadByte));
        assert_eq!(Name::new(".."), Err(NameError::Dots));
        assert_eq!(Name::new(vec![b'x'; 256]), Err(NameError::TooLong(256)));
        assert!(Name::new(vec![b'x'; 255]).is_ok());
    }

    #[test]
    fn time_display() {
        assert_eq!(EggsTime(0).to_string(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            EggsTime(1_700_000_000_123_456_789).to_string(),
            "2023-11-14T22:13:20.123456789Z"
        );
    }
}
