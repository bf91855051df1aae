//! The storage a shard core reads and writes: RocksDB in production, an in-memory map in
//! unit tests and simulations.

use crate::error::ShardError;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Where a key lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Table {
    /// The metadata proper.
    Main,
    /// Responses remembered for deduplicating retries. Kept apart because it is write-only
    /// churn: in RocksDB it is a column family with FIFO compaction, which drops whole old
    /// files instead of rewriting them, so it costs no compaction work.
    Dedup,
}

/// Changes produced by one request, applied atomically.
#[derive(Default, Debug)]
pub struct Changes {
    pub ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Changes {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((Table::Main, k, Some(v)));
    }
    pub fn delete(&mut self, k: Vec<u8>) {
        self.ops.push((Table::Main, k, None));
    }
    pub fn put_dedup(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((Table::Dedup, k, Some(v)));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub trait Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError>;
    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError>;
    /// Drops deduplication entries for which `expired(value)` holds; returns how many. A
    /// store may also drop entries on its own (oldest first), never younger ones first.
    fn expire_dedup(&self, expired: &dyn Fn(&[u8]) -> bool) -> Result<usize, ShardError>;
    /// Visits keys `>= start` that begin with `prefix`, in order, while `f` returns true.
    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ShardError>;
    /// Applies `changes` atomically; they are visible at once but durable only after `sync`.
    fn apply(&self, changes: Changes) -> Result<(), ShardError>;
    /// Makes everything applied so far durable.
    fn sync(&self) -> Result<(), ShardError>;
}

pub struct RocksKv {
    db: rocksdb::DB,
}

const DEDUP_CF: &str = "dedup";

impl RocksKv {
    /// Opens (or creates) a shard database. The deduplication column family keeps at most
    /// `dedup_bytes` of entries, dropping the oldest files first.
    pub fn open(
        path: &std::path::Path,
        cfg: &eggs_common::db::DbConfig,
        dedup_bytes: u64,
    ) -> Result<RocksKv, ShardError> {
        let mut opts = eggs_common::db::options(cfg)?;
        opts.create_missing_column_families(true);
        let mut dedup = eggs_common::db::options(cfg)?;
        dedup.set_compaction_style(rocksdb::DBCompactionStyle::Fifo);
        let mut fifo = rocksdb::FifoCompactOptions::default();
        fifo.set_max_table_files_size(dedup_bytes);
        dedup.set_fifo_compaction_options(&fifo);
        let cfs = vec![
            rocksdb::ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            rocksdb::ColumnFamilyDescriptor::new(DEDUP_CF, dedup),
        ];
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(RocksKv { db })
    }

    fn dedup_cf(&self) -> Result<&rocksdb::ColumnFamily, ShardError> {
        self.db
            .cf_handle(DEDUP_CF)
            .ok_or_else(|| ShardError::Corrupt {
                key: DEDUP_CF.as_bytes().to_vec(),
                why: "column family missing".into(),
            })
    }
}

impl Kv for RocksKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.db.get(key)?)
    }

    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.db.get_cf(self.dedup_cf()?, key)?)
    }

    fn expire_dedup(&self, _expired: &dyn Fn(&[u8]) -> bool) -> Result<usize, ShardError> {
        // FIFO compaction bounds the column family; readers ignore entries past the window.
        Ok(0)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ShardError> {
        debug_assert!(start.starts_with(prefix));
        let mut it = self.db.raw_iterator();
        it.seek(start);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    fn apply(&self, changes: Changes) -> Result<(), ShardError> {
        let mut batch = rocksdb::WriteBatch::default();
        let dedup = self.dedup_cf()?;
        for (table, k, v) in changes.ops {
            match (table, v) {
                (Table::Main, Some(v)) => batch.put(k, v),
                (Table::Main, None) => batch.delete(k),
                (Table::Dedup, Some(v)) => batch.put_cf(dedup, k, v),
                (Table::Dedup, None) => batch.delete_cf(dedup, k),
            }
        }
        // Unsynced: the group's `sync` makes it durable before anybody hears of it.
        self.db
            .write_opt(batch, &eggs_common::db::unsynced_write())?;
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// In-memory storage for tests: durable "forever", and `sync` is free.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    dedup: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

type Map<'a> = std::sync::MutexGuard<'a, BTreeMap<Vec<u8>, Vec<u8>>>;

impl MemKv {
    fn map(&self) -> Map<'_> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn dedup(&self) -> Map<'_> {
        self.dedup.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.map().get(key).cloned())
    }

    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.dedup().get(key).cloned())
    }

    fn expire_dedup(&self, expired: &dyn Fn(&[u8]) -> bool) -> Result<usize, ShardError> {
        let mut d = self.dedup();
        let before = d.len();
        d.retain(|_, v| !expired(v));
        Ok(before - d.len())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ShardError> {
        let map = self.map();
        for (k, v) in map.range(start.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, changes: Changes) -> Result<(), ShardError> {
        let (mut map, mut dedup) = (self.map(), self.dedup());
        for (table, k, v) in changes.ops {
            let m = match table {
                Table::Main => &mut map,
                Table::Dedup => &mut dedup,
            };
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        Ok(())
    }
}
