//! The storage a shard core reads and writes: RocksDB in production, an in-memory map in
//! unit tests and simulations.

use crate::error::ShardError;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Changes produced by one request, applied atomically.
#[derive(Default, Debug)]
pub struct Changes {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Changes {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }
    pub fn delete(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub trait Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError>;
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

impl RocksKv {
    pub fn new(db: rocksdb::DB) -> RocksKv {
        RocksKv { db }
    }
}

impl Kv for RocksKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.db.get(key)?)
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
        for (k, v) in changes.ops {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
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
}

impl MemKv {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.map().get(key).cloned())
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
        let mut map = self.map();
        for (k, v) in changes.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        Ok(())
    }
}
