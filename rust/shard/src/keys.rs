//! RocksDB key layout. Every key starts with the shard id, so a shard's data is one
//! contiguous key range that can be copied or moved on its own. Integers are big-endian so
//! that byte order is numeric order.
//!
//! | key                                              | value               |
//! |--------------------------------------------------|---------------------|
//! | shard, META, field (1 file counter, 2 last time, 3 block counter) | u64 |
//! | shard, DIR, dir id                               | `DirectoryBody`     |
//! | shard, CURRENT, dir id, name hash, name, 0       | `CurrentEdgeBody`   |
//! | shard, SNAPSHOT, dir id, name hash, name, 0, ctime | `SnapshotEdgeBody` |
//! | shard, FILE, file id                             | `FileBody`          |
//! | shard, TRANSIENT, file id                        | `TransientFileBody` |
//! | shard, SPAN, file id, byte offset                | `SpanValue`         |
//! | shard, DEDUP, client id, request id (dedup CF)   | `DedupBody`         |
//! | shard, RELEASED, file id (of another shard)     | u64 time of release |
//! | shard, BS_FILES, block service id, file id, byte offset | u8: blocks of that span on that service |
//! | shard, BLOCK_REPLACE, file id, byte offset, block index | `PendingReplaceBody` |
//! | shard, CDC_FENCE, dir id                         | u64 BE + done byte: last CDC transaction on the directory's edges |
//! | shard, CDC_INODE_FENCE, dir id                   | u64 BE + done byte: last CDC transaction on the directory inode |
//! | (the empty key: outside every shard's range)    | u32 BE format version of the database (`kv::FORMAT_VERSION`) |
//!
//! Names never contain NUL, so terminating them with 0 keeps `(hash, name)` order and makes
//! no name key a prefix of another.

use eggs_protocol::{BlockServiceId, EggsTime, InodeId, Name, ShardId};

pub const META: u8 = 0;
pub const DIR: u8 = 1;
pub const CURRENT: u8 = 2;
pub const SNAPSHOT: u8 = 3;
pub const FILE: u8 = 4;
pub const TRANSIENT: u8 = 5;
pub const SPAN: u8 = 6;
pub const DEDUP: u8 = 7;
/// Index block service -> spans, kept by `ShardCore::put_span`/`delete_span`. Numbered
/// apart from the tables above so that tables added meanwhile by other work do not collide.
pub const BS_FILES: u8 = 20;
/// Block replacements in progress (scrubbing, migration).
pub const BLOCK_REPLACE: u8 = 21;
/// Files of other shards whose last owning edge this shard removed, until the GC has made
/// them transient on their own shard (garbage collection; see `core::gc`).
pub const RELEASED: u8 = 30;
/// Per directory, the last CDC transaction that changed its edges and whether it is done with
/// them: late copies of edge steps of it (once done) or of an earlier one are refused (see
/// `core::writes`).
pub const CDC_FENCE: u8 = 31;
/// Per directory inode, the same for the inode (its owner, its existence). Kept when the GC destroys the directory, so that a late CreateDirectoryInode
/// cannot bring it back.
pub const CDC_INODE_FENCE: u8 = 32;

/// The database's format version record: the empty key sorts before, and is part of no
/// shard's range, so moving a shard's keys never carries it along.
pub const FORMAT_VERSION_KEY: &[u8] = b"";

pub const META_NEXT_FILE_COUNTER: u8 = 1;
pub const META_LAST_TIME: u8 = 2;
pub const META_NEXT_BLOCK_COUNTER: u8 = 3;

pub fn meta(shard: ShardId, field: u8) -> Vec<u8> {
    vec![shard.0, META, field]
}

fn with_id(shard: ShardId, table: u8, id: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 8 + 8 + 257 + 8);
    k.push(shard.0);
    k.push(table);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

pub fn dir(id: InodeId) -> Vec<u8> {
    with_id(id.shard(), DIR, id)
}

pub fn file(id: InodeId) -> Vec<u8> {
    with_id(id.shard(), FILE, id)
}

pub fn cdc_fence(dir: InodeId) -> Vec<u8> {
    with_id(dir.shard(), CDC_FENCE, dir)
}

pub fn cdc_inode_fence(dir: InodeId) -> Vec<u8> {
    with_id(dir.shard(), CDC_INODE_FENCE, dir)
}

pub fn transient(id: InodeId) -> Vec<u8> {
    with_id(id.shard(), TRANSIENT, id)
}

/// All current edges of a directory start with this.
pub fn current_prefix(dir: InodeId) -> Vec<u8> {
    with_id(dir.shard(), CURRENT, dir)
}

/// All snapshot edges of a directory start with this.
pub fn snapshot_prefix(dir: InodeId) -> Vec<u8> {
    with_id(dir.shard(), SNAPSHOT, dir)
}

fn push_name(k: &mut Vec<u8>, hash: u64, name: &[u8]) {
    k.extend_from_slice(&hash.to_be_bytes());
    k.extend_from_slice(name);
    k.push(0);
}

pub fn current_edge_at(dir: InodeId, hash: u64, name: &[u8]) -> Vec<u8> {
    let mut k = current_prefix(dir);
    push_name(&mut k, hash, name);
    k
}

pub fn current_edge(dir: InodeId, name: &Name) -> Vec<u8> {
    current_edge_at(dir, name.hash64(), name.as_bytes())
}

/// Start of the snapshot edges of `(hash, name)`, before any creation time.
pub fn snapshot_name_prefix(dir: InodeId, hash: u64, name: &[u8]) -> Vec<u8> {
    let mut k = snapshot_prefix(dir);
    push_name(&mut k, hash, name);
    k
}

pub fn snapshot_edge(dir: InodeId, name: &Name, creation_time: EggsTime) -> Vec<u8> {
    let mut k = snapshot_name_prefix(dir, name.hash64(), name.as_bytes());
    k.extend_from_slice(&creation_time.0.to_be_bytes());
    k
}

/// Splits the part of an edge key after the directory prefix into `(hash, name, rest)`.
pub fn parse_edge_suffix(suffix: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let hash = u64::from_be_bytes(suffix.get(..8)?.try_into().ok()?);
    let rest = &suffix[8..];
    let nul = rest.iter().position(|&b| b == 0)?;
    Some((hash, &rest[..nul], &rest[nul + 1..]))
}

pub fn span(file: InodeId, byte_offset: u64) -> Vec<u8> {
    let mut k = span_prefix(file);
    k.extend_from_slice(&byte_offset.to_be_bytes());
    k
}

pub fn span_prefix(file: InodeId) -> Vec<u8> {
    with_id(file.shard(), SPAN, file)
}

/// Every index entry of a block service on `shard` starts with this.
pub fn bs_files_prefix(shard: ShardId, service: BlockServiceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 8 + 8 + 8);
    k.push(shard.0);
    k.push(BS_FILES);
    k.extend_from_slice(&service.0.to_be_bytes());
    k
}

/// The index entry of the span at `byte_offset` of `file` for one block service.
pub fn bs_file_span(service: BlockServiceId, file: InodeId, byte_offset: u64) -> Vec<u8> {
    let mut k = bs_files_prefix(file.shard(), service);
    k.extend_from_slice(&file.0.to_be_bytes());
    k.extend_from_slice(&byte_offset.to_be_bytes());
    k
}

/// Every span key of `shard` starts with this.
pub fn spans_of_shard(shard: ShardId) -> Vec<u8> {
    vec![shard.0, SPAN]
}

/// All pending replacements of the blocks of one span start with this.
pub fn block_replace_prefix(file: InodeId, byte_offset: u64) -> Vec<u8> {
    let mut k = with_id(file.shard(), BLOCK_REPLACE, file);
    k.extend_from_slice(&byte_offset.to_be_bytes());
    k
}

pub fn block_replace(file: InodeId, byte_offset: u64, block_index: u8) -> Vec<u8> {
    let mut k = block_replace_prefix(file, byte_offset);
    k.push(block_index);
    k
}

/// The release record of `file` (of another shard) kept by `shard`.
pub fn released(shard: ShardId, file: InodeId) -> Vec<u8> {
    with_id(shard, RELEASED, file)
}

/// Start of `table` of `shard` at `id` (for visits in id order).
pub fn table_from(shard: ShardId, table: u8, id: InodeId) -> Vec<u8> {
    with_id(shard, table, id)
}

/// Length of a deduplication key's (shard, table, client) prefix.
pub const DEDUP_PREFIX_BYTES: usize = 10;

pub fn dedup(shard: ShardId, client_id: u64, request_id: u64) -> Vec<u8> {
    let mut k = vec![shard.0, DEDUP];
    k.extend_from_slice(&client_id.to_be_bytes());
    k.extend_from_slice(&request_id.to_be_bytes());
    k
}

pub fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_sort_by_hash_then_name() {
        let d = InodeId::ROOT;
        let a = current_edge_at(d, 5, b"a");
        let ab = current_edge_at(d, 5, b"ab");
        let b = current_edge_at(d, 5, b"b");
        let z = current_edge_at(d, 4, b"z");
        assert!(z < a && a < ab && ab < b);
        let (h, n, rest) = parse_edge_suffix(&ab[current_prefix(d).len()..]).unwrap();
        assert_eq!((h, n, rest), (5, &b"ab"[..], &b""[..]));
    }
}
