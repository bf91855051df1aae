//! RocksDB opened the same way by every server: small memory footprint, WAL on, no
//! compression (metadata values are tiny and CPU matters more than space here).

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
            write_buffer_bytes: 16 << 20,
            block_cache_bytes: 32 << 20,
        }
    }
}

pub fn open(path: &Path, cfg: &DbConfig) -> Result<rocksdb::DB, rocksdb::Error> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(cfg.write_buffer_bytes);
    opts.set_max_write_buffer_number(2);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(2);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let mut table = rocksdb::BlockBasedOptions::default();
    let cache = rocksdb::Cache::new_lru_cache(cfg.block_cache_bytes)?;
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    rocksdb::DB::open(&opts, path)
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
