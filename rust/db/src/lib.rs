//! RocksDB opened the same way by every server: small memory footprint, WAL on, no
//! compression (metadata values are tiny and CPU matters more than space here).
//!
//! A crate of its own, apart from `eggs-common`, so that only the servers that keep a
//! database (shards, CDC, shuckle) compile and link RocksDB; the client, CLI and FUSE do not.

use eggs_common::format_version::{self, FormatError, FormatVersion};
use std::path::Path;

/// Memory budget knobs; the defaults keep a whole 256-shard process at a few tens of MiB.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub write_buffer_bytes: usize,
    pub block_cache_bytes: usize,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            // Small memtables: a skiplist insert or search costs a cache miss per level, and
            // the metadata writes' profile was dominated by them with 16 MiB memtables
            // (same-directory renames 19k/s with 16 MiB, 29k/s with 2 MiB, fresh cluster).
            write_buffer_bytes: 2 << 20,
            block_cache_bytes: 32 << 20,
        }
    }
}

pub fn open(path: &Path, cfg: &DbConfig) -> Result<rocksdb::DB, rocksdb::Error> {
    rocksdb::DB::open(&options(cfg)?, path)
}

/// The options [`open`] uses, for processes that add column families of their own.
pub fn options(cfg: &DbConfig) -> Result<rocksdb::Options, rocksdb::Error> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(cfg.write_buffer_bytes);
    opts.set_max_write_buffer_number(2);
    // A small first level in small files. Writes hit every shard, so each level-0 file spans
    // the whole key space and a level-0 compaction rewrites every level-1 file it overlaps:
    // all of them. With RocksDB's default 256 MiB level 1 in 64 MiB files, that rewrite grew
    // with the database (1.2M records, a second of CPU, every 2 s of renames). A level 1
    // of 8 memtables keeps it bounded; further levels compact file by file.
    let base_bytes = (cfg.write_buffer_bytes as u64 * 8).max(8 << 20);
    opts.set_max_bytes_for_level_base(base_bytes);
    opts.set_target_file_size_base((base_bytes / 4).max(2 << 20));
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(2);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    // A bloom filter over whole keys in each memtable: most point reads that miss (a new
    // request's deduplication key, a name about to be created) then cost a few hashes instead
    // of a full skiplist search. About 2% of the write buffer.
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts.set_memtable_whole_key_filtering(true);
    let mut table = rocksdb::BlockBasedOptions::default();
    let cache = rocksdb::Cache::new_lru_cache(cfg.block_cache_bytes)?;
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks stay in the table readers, outside the block cache: a filter
    // of a large SST is bigger than one LRU cache shard, so from the cache it would be read
    // from disk on every point lookup (seen in profiles as most of a shard's CPU time).
    table.set_cache_index_and_filter_blocks(false);
    opts.set_block_based_table_factory(&table);
    Ok(opts)
}

/// Write options for a write that must be durable before anybody is told about it.
pub fn sync_write() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    w
}

/// Write options for a write whose durability a later synced write in the same WAL provides.
pub fn unsynced_write() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(false);
    w
}

/// Whether the database holds any key at all.
pub fn has_data(db: &rocksdb::DB) -> Result<bool, rocksdb::Error> {
    match db.iterator(rocksdb::IteratorMode::Start).next() {
        Some(entry) => entry.map(|_| true),
        None => Ok(false),
    }
}

/// Refuses a database of another format version than `current`, naming it as `what` (kind
/// and path); records the version under `key` (synced, before anything else is written) in a
/// new database and in one made before versions were recorded. Every store calls it on open.
pub fn ensure_format_version<E>(
    db: &rocksdb::DB,
    what: &str,
    key: &[u8],
    current: FormatVersion,
) -> Result<(), E>
where
    E: From<rocksdb::Error> + From<FormatError>,
{
    format_version::ensure(
        what,
        current,
        db.get(key)?,
        || Ok(has_data(db)?),
        |v| Ok(db.put_opt(key, v, &sync_write())?),
    )
}
