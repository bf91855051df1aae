//! Metadata shards on RocksDB.
