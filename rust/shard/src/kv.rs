//! The storage a shard core reads and writes: RocksDB in production, an in-memory map
//! ([`MemKv`]) in unit tests and in the simulator.

use crate::error::ShardError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// The keys of the deduplication entries among the changes.
    pub fn dedup_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.ops
            .iter()
            .filter(|(t, _, _)| *t == Table::Dedup)
            .map(|(_, k, _)| k.as_slice())
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
    /// How many times [`Kv::apply`] has been called on this handle, for the core's checks
    /// that reads change nothing (`None`: the store does not count, and is not checked).
    fn applied_count(&self) -> Option<u64> {
        None
    }
}

/// RocksDB with a write-back overlay: changes applied since the last `sync` live in memory
/// (visible to reads at once) and reach RocksDB as one synced write batch at `sync`. A group
/// of requests therefore costs one WAL append and one fsync, not one append per request, and
/// only the final value of a key rewritten within the group is written.
pub struct RocksKv {
    db: std::sync::Arc<rocksdb::DB>,
    pending: std::cell::RefCell<Pending>,
    /// Recently read or written main-table values (and absences). Coherent because every
    /// write to this handle's keys goes through `sync` (each core thread owns its shards).
    cache: std::cell::RefCell<ReadCache>,
    /// Reused: `DB::get` would create and destroy a C++ ReadOptions on every call.
    read_opts: rocksdb::ReadOptions,
    /// Calls of `apply` (see [`Kv::applied_count`]).
    applied: std::cell::Cell<u64>,
}

#[derive(Default)]
struct Pending {
    main: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    dedup: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

const DEDUP_CF: &str = "dedup";

impl RocksKv {
    /// Opens (or creates) a shard database. The deduplication column family keeps at most
    /// `dedup_bytes` of entries, dropping the oldest files first.
    pub fn open(
        path: &std::path::Path,
        cfg: &eggs_db::DbConfig,
        dedup_bytes: u64,
    ) -> Result<RocksKv, ShardError> {
        let mut opts = eggs_db::options(cfg)?;
        opts.create_missing_column_families(true);
        let mut dedup = eggs_db::options(cfg)?;
        // Every write misses in this column family first (a new request id), and with FIFO
        // compaction every file stays in level 0 where each is consulted: few, large files
        // keep that cheap. Its keys arrive nearly in order (request ids count up per client),
        // so the large memtable costs inserts little.
        dedup.set_write_buffer_size(DEDUP_WRITE_BUFFER_BYTES);
        // A hash of skiplists, one per (shard, client): keys of different shards and clients
        // arrive interleaved, which in one big skiplist made every insert a full search
        // from the top. Only point lookups read this column family.
        dedup.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
            crate::keys::DEDUP_PREFIX_BYTES,
        ));
        dedup.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
            bucket_count: DEDUP_MEMTABLE_BUCKETS,
            height: 12,
            branching_factor: 4,
        });
        // The hashed memtable takes one writer at a time.
        opts.set_allow_concurrent_memtable_write(false);
        dedup.set_allow_concurrent_memtable_write(false);
        dedup.set_compaction_style(rocksdb::DBCompactionStyle::Fifo);
        let mut fifo = rocksdb::FifoCompactOptions::default();
        fifo.set_max_table_files_size(dedup_bytes);
        dedup.set_fifo_compaction_options(&fifo);
        let cfs = vec![
            rocksdb::ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            rocksdb::ColumnFamilyDescriptor::new(DEDUP_CF, dedup),
        ];
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs)?;
        check_format_version(&db, path)?;
        Ok(RocksKv {
            db: std::sync::Arc::new(db),
            pending: Default::default(),
            cache: std::cell::RefCell::new(ReadCache::new(READ_CACHE_ENTRIES)),
            read_opts: rocksdb::ReadOptions::default(),
            applied: Default::default(),
        })
    }

    /// Another handle on the same database with an overlay of its own, for a core thread
    /// serving other shards (their keys never overlap, so the overlays cannot conflict).
    pub fn sibling(&self) -> RocksKv {
        RocksKv {
            db: self.db.clone(),
            pending: Default::default(),
            cache: std::cell::RefCell::new(ReadCache::new(READ_CACHE_ENTRIES)),
            read_opts: rocksdb::ReadOptions::default(),
            applied: Default::default(),
        }
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

/// The version of the layout in `keys` and `values` (and the dedup column family). Version 2
/// added POSIX attributes to inodes; a version 1 database (including one made before versions
/// were recorded) is migrated when opened (`crate::migrate`).
pub const FORMAT_VERSION: eggs_common::format_version::FormatVersion = 2;

/// Refuses a database of another format version; records the version in a new one (and in
/// one made before versions were recorded), synced before anything else is written.
fn check_format_version(db: &rocksdb::DB, path: &std::path::Path) -> Result<(), ShardError> {
    crate::migrate::upgrade(db, FORMAT_VERSION)?;
    eggs_db::ensure_format_version(
        db,
        &format!("shard database {}", path.display()),
        crate::keys::FORMAT_VERSION_KEY,
        FORMAT_VERSION,
    )
}

impl Kv for RocksKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        if let Some(v) = self.pending.borrow().main.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.borrow_mut().get(key) {
            return Ok(v);
        }
        let v = self
            .db
            .get_pinned_opt(key, &self.read_opts)?
            .map(|v| v.to_vec());
        self.cache.borrow_mut().insert(key.to_vec(), v.clone());
        Ok(v)
    }

    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        if let Some(v) = self.pending.borrow().dedup.get(key) {
            return Ok(v.clone());
        }
        let cf = self.dedup_cf()?;
        Ok(self
            .db
            .get_pinned_cf_opt(cf, key, &self.read_opts)?
            .map(|v| v.to_vec()))
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
        assert!(start.starts_with(prefix), "scan starts outside its prefix");
        let pending = self.pending.borrow();
        let mut overlay = pending
            .main
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut it = self.db.raw_iterator();
        it.seek(start);
        loop {
            let db_key = it.key().filter(|k| k.starts_with(prefix));
            let from_overlay = match (db_key, overlay.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(d), Some((o, _))) => o.as_slice() <= d,
            };
            let keep_going = if from_overlay {
                let Some((k, v)) = overlay.next() else { break };
                // The overlay shadows the same key in RocksDB.
                if db_key == Some(k.as_slice()) {
                    it.next();
                }
                match v {
                    Some(v) => f(k, v),
                    None => true,
                }
            } else {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                let go = f(k, v);
                it.next();
                go
            };
            if !keep_going {
                break;
            }
        }
        it.status()?;
        Ok(())
    }

    fn apply(&self, changes: Changes) -> Result<(), ShardError> {
        self.applied.set(self.applied.get() + 1);
        let mut pending = self.pending.borrow_mut();
        for (table, k, v) in changes.ops {
            match table {
                Table::Main => pending.main.insert(k, v),
                Table::Dedup => pending.dedup.insert(k, v),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        self.write_pending(&eggs_db::sync_write())
    }

    fn applied_count(&self) -> Option<u64> {
        Some(self.applied.get())
    }
}

impl RocksKv {
    /// Writes everything applied so far to RocksDB without waiting for the disk: durable
    /// only once a later [`WalSyncer::sync`] (or synced write) returns. Lets a core thread
    /// go on with the next group while another thread waits for the fsync.
    pub fn write_unsynced(&self) -> Result<(), ShardError> {
        self.write_pending(&eggs_db::unsynced_write())
    }

    /// A handle that makes every write made so far through this database durable.
    pub fn wal_syncer(&self) -> WalSyncer {
        WalSyncer {
            db: self.db.clone(),
        }
    }

    fn write_pending(&self, opts: &rocksdb::WriteOptions) -> Result<(), ShardError> {
        // Taken out first: whether or not the write succeeds, the overlay must not outlive
        // it (on failure nothing of the group was acknowledged).
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let dedup = self.dedup_cf()?;
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in &pending.main {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        for (k, v) in pending.dedup {
            // The hashed memtable takes a fixed-length prefix of every key: a shorter key
            // would be read past its end. Only `keys::dedup` makes these keys.
            assert!(
                k.len() >= crate::keys::DEDUP_PREFIX_BYTES,
                "short dedup key"
            );
            match v {
                Some(v) => batch.put_cf(dedup, k, v),
                None => batch.delete_cf(dedup, k),
            }
        }
        self.db.write_opt(batch, opts)?;
        // Only now: had the write failed, the cache would still match RocksDB.
        let mut cache = self.cache.borrow_mut();
        for (k, v) in pending.main {
            cache.insert(k, v);
        }
        Ok(())
    }
}

/// Syncs a shard database's write-ahead log; shareable between threads.
#[derive(Clone)]
pub struct WalSyncer {
    db: std::sync::Arc<rocksdb::DB>,
}

impl WalSyncer {
    /// Returns once every write made before the call is on disk.
    pub fn sync(&self) -> Result<(), ShardError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// Hash buckets of the deduplication memtable: about one per (shard, client) pair.
const DEDUP_MEMTABLE_BUCKETS: usize = 16 * 1024;

/// Memtable size of the deduplication column family (see `RocksKv::open`).
const DEDUP_WRITE_BUFFER_BYTES: usize = 32 << 20;

/// Entries a [`RocksKv`] caches; about 100 bytes each for typical keys and values.
const READ_CACHE_ENTRIES: usize = 64 * 1024;

/// A bounded cache with approximate LRU eviction in two generations: entries go into `hot`;
/// when it is full it becomes `cold` (whose entries are dropped), and a hit in `cold` moves
/// the entry back to `hot`. Lookups and inserts are a hash probe or two; nothing is scanned.
struct ReadCache {
    hot: foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>,
    cold: foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>,
    generation: usize,
}

impl ReadCache {
    fn new(entries: usize) -> ReadCache {
        ReadCache {
            hot: Default::default(),
            cold: Default::default(),
            generation: (entries / 2).max(1),
        }
    }

    /// `Some(value)` if cached, where a cached `None` means the key is known to be absent.
    fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.hot.get(key) {
            return Some(v.clone());
        }
        let (k, v) = self.cold.remove_entry(key)?;
        self.insert(k, v.clone());
        Some(v)
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.hot.len() >= self.generation && !self.hot.contains_key(&key) {
            self.cold = std::mem::take(&mut self.hot);
        }
        // A newer value in `hot` shadows any older one left in `cold`.
        self.cold.remove(&key);
        self.hot.insert(key, value);
    }
}

/// In-memory storage for unit tests and the simulator, losing what was not synced the way
/// RocksDB behind the server's write-back overlays would: changes are visible at once,
/// durable at `sync`, and [`MemKv::crash`] rolls back everything applied through this handle
/// since its last sync. Tests that never crash may ignore `sync` (the undo log then only
/// grows, which is fine at their sizes).
///
/// Cloning shares the store and the undo log (the simulator keeps a handle across crashes).
/// [`MemKv::sibling`] shares only the store, like `RocksKv::sibling` for a core thread: each
/// handle syncs its own changes (its group commit), and their keys never overlap because each
/// core serves other shards.
#[derive(Clone, Default)]
pub struct MemKv {
    maps: Arc<Mutex<Maps>>,
    /// Previous values of keys this handle changed since its last sync, oldest first.
    undo: Arc<Mutex<Undo>>,
    /// Calls of `apply` through this handle and its clones (see [`Kv::applied_count`]).
    applied: Arc<std::sync::atomic::AtomicU64>,
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Undo = Vec<(Table, Vec<u8>, Option<Vec<u8>>)>;

#[derive(Default)]
struct Maps {
    main: Map,
    dedup: Map,
    /// Sabotage for testing checkers: retries are never recognised.
    forget_dedup: bool,
}

impl Maps {
    fn table(&mut self, table: Table) -> &mut Map {
        match table {
            Table::Main => &mut self.main,
            Table::Dedup => &mut self.dedup,
        }
    }
}

impl MemKv {
    /// A store that never finds deduplication entries, so that retried writes are applied
    /// again: a deliberately broken shard, to show that a checker notices.
    pub fn forgetting_dedup() -> MemKv {
        let kv = MemKv::default();
        kv.maps().forget_dedup = true;
        kv
    }

    /// Another handle on the same store with its own unsynced changes.
    pub fn sibling(&self) -> MemKv {
        MemKv {
            maps: self.maps.clone(),
            undo: Default::default(),
            applied: Default::default(),
        }
    }

    /// Drops every change applied through this handle since its last sync, newest first.
    pub fn crash(&self) {
        let mut maps = self.maps();
        let mut undo = self.undo();
        while let Some((table, k, old)) = undo.pop() {
            let m = maps.table(table);
            match old {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
    }

    /// Forgets the deduplication entry of `(client_id, request_id)` on every shard, as its
    /// expiry (or the FIFO column family dropping it early) would.
    pub fn expire_request(&self, client_id: u64, request_id: u64) {
        let mut id = client_id.to_be_bytes().to_vec();
        id.extend_from_slice(&request_id.to_be_bytes());
        // `keys::dedup`: shard, table, then the two ids.
        self.maps().dedup.retain(|k, _| k.get(2..) != Some(&id[..]));
    }

    /// Changes applied through this handle but not yet synced.
    pub fn unsynced(&self) -> usize {
        self.undo().len()
    }

    // A panic while a lock is held leaves the maps consistent (every change is one insert or
    // remove), so a poisoned lock is simply taken over.
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn undo(&self) -> MutexGuard<'_, Undo> {
        self.undo.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.maps().main.get(key).cloned())
    }

    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        let maps = self.maps();
        if maps.forget_dedup {
            return Ok(None);
        }
        Ok(maps.dedup.get(key).cloned())
    }

    fn expire_dedup(&self, expired: &dyn Fn(&[u8]) -> bool) -> Result<usize, ShardError> {
        let d = &mut self.maps().dedup;
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
        let maps = self.maps();
        for (k, v) in maps.main.range(start.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, changes: Changes) -> Result<(), ShardError> {
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut maps = self.maps();
        let mut undo = self.undo();
        for (table, k, v) in changes.ops {
            let m = maps.table(table);
            let old = match v {
                Some(v) => m.insert(k.clone(), v),
                None => m.remove(&k),
            };
            undo.push((table, k, old));
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        self.undo().clear();
        Ok(())
    }

    fn applied_count(&self) -> Option<u64> {
        Some(self.applied.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_all(kv: &dyn Kv, prefix: &[u8], start: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan(prefix, start, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            out.len() < limit
        })
        .unwrap();
        out
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Sync,
        Scan(u8, u8, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k % 32, v)),
            2 => any::<u8>().prop_map(|k| Op::Delete(k % 32)),
            1 => Just(Op::Sync),
            2 => (0u8..2, any::<u8>(), 1usize..40).prop_map(|(p, s, l)| Op::Scan(p, s % 32, l)),
        ]
    }

    #[test]
    fn read_cache_keeps_recent_entries_and_drops_old_ones() {
        let mut c = ReadCache::new(4); // two entries per generation
        c.insert(b"a".to_vec(), Some(b"1".to_vec()));
        c.insert(b"b".to_vec(), None);
        assert_eq!(c.get(b"a"), Some(Some(b"1".to_vec())));
        assert_eq!(c.get(b"b"), Some(None), "absences are cached too");
        c.insert(b"c".to_vec(), Some(b"3".to_vec())); // a, b move to the old generation
        assert_eq!(
            c.get(b"a"),
            Some(Some(b"1".to_vec())),
            "a hit brings it back"
        );
        c.insert(b"d".to_vec(), Some(b"4".to_vec())); // c, a old; b dropped
        assert_eq!(c.get(b"b"), None);
        c.insert(b"a".to_vec(), Some(b"new".to_vec()));
        assert_eq!(
            c.get(b"a"),
            Some(Some(b"new".to_vec())),
            "the newest value wins"
        );
        assert!(c.hot.len() + c.cold.len() <= 4);
    }

    /// Deduplication entries of interleaved shards and clients read back from the hashed
    /// memtable, from SST files after a flush, and after reopening; others stay absent.
    #[test]
    fn dedup_entries_read_back_from_memtable_and_files() {
        use eggs_protocol::ShardId;
        let dir = std::env::temp_dir().join(format!(
            "eggs-kv-dedup-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let entry = |i: u64| {
            let k = crate::keys::dedup(ShardId(u8::try_from(i % 7).unwrap()), i % 3, 1000 + i);
            (k, i.to_be_bytes().to_vec())
        };
        let check = |kv: &RocksKv| {
            for i in 0..300 {
                let (k, v) = entry(i);
                assert_eq!(kv.get_dedup(&k).unwrap(), Some(v), "entry {i}");
            }
            let absent = crate::keys::dedup(ShardId(1), 1, 999);
            assert_eq!(kv.get_dedup(&absent).unwrap(), None);
        };
        {
            let kv = RocksKv::open(&dir, &Default::default(), 1 << 20).unwrap();
            for i in 0..300 {
                let (k, v) = entry(i);
                let mut c = Changes::default();
                c.put_dedup(k, v);
                kv.apply(c).unwrap();
                if i % 50 == 49 {
                    kv.sync().unwrap();
                }
            }
            kv.sync().unwrap();
            check(&kv);
            kv.db.flush_cf(kv.dedup_cf().unwrap()).unwrap();
            check(&kv);
        }
        let kv = RocksKv::open(&dir, &Default::default(), 1 << 20).unwrap();
        check(&kv);
        drop(kv);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn format_version_is_recorded_and_other_versions_refused() {
        let dir = std::env::temp_dir().join(format!(
            "eggs-kv-version-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let open = || RocksKv::open(&dir, &Default::default(), 1 << 20);
        let key = crate::keys::FORMAT_VERSION_KEY;
        let kv = open().unwrap();
        let recorded = kv.db.get(key).unwrap();
        assert_eq!(recorded, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        // The record is in no shard's range: scans of shard 0 from its start miss it.
        assert!(scan_all(&kv, &[0], &[0], 10).is_empty());
        // A database of the code before versions: data, no record. It is version 1.
        kv.db.delete(key).unwrap();
        let mut c = Changes::default();
        c.put(crate::keys::meta(eggs_protocol::ShardId(0), 2), vec![1; 8]);
        kv.apply(c).unwrap();
        kv.sync().unwrap();
        drop(kv);
        let kv = open().unwrap();
        assert_eq!(kv.db.get(key).unwrap(), recorded);
        let newer = FORMAT_VERSION + 1;
        kv.db.put(key, newer.to_be_bytes()).unwrap();
        drop(kv);
        let Err(e) = open() else {
            panic!("opened a database of version {newer}");
        };
        let msg = e.to_string();
        assert!(msg.contains(&format!("version {newer}")), "{msg}");
        assert!(
            msg.contains(&format!("only version {FORMAT_VERSION}")),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_db(what: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "eggs-kv-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    fn everything(db: &rocksdb::DB) -> Vec<(Vec<u8>, Vec<u8>)> {
        db.iterator(rocksdb::IteratorMode::Start)
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// Writes version 1 bodies of every inode kind, and keys of other tables that the
    /// migration must leave alone; returns the latter.
    fn write_v1_inodes(db: &rocksdb::DB) -> Vec<(Vec<u8>, Vec<u8>)> {
        use crate::keys;
        use crate::values::{encode, v1};
        use eggs_protocol::{DirectoryInfo, EggsTime, InodeId, InodeType, Name, ShardId};
        let s3 = ShardId(3);
        let root = v1::DirectoryBody {
            owner_id: InodeId::NULL,
            mtime: EggsTime(10),
            info: DirectoryInfo::root_default(),
        };
        db.put(keys::dir(InodeId::ROOT), encode(&root)).unwrap();
        let dirs = [(5, InodeId::ROOT, 20), (6, InodeId::NULL, 25)];
        for (c, owner_id, t) in dirs {
            let d = v1::DirectoryBody {
                owner_id,
                mtime: EggsTime(t),
                info: DirectoryInfo::default(),
            };
            let id = InodeId::new(InodeType::Directory, s3, c);
            db.put(keys::dir(id), encode(&d)).unwrap();
        }
        for (typ, c, t) in [(InodeType::File, 7, 30), (InodeType::Symlink, 8, 40)] {
            let f = v1::FileBody {
                size: 100 + c,
                mtime: EggsTime(t),
                atime: EggsTime(t + 1),
            };
            db.put(keys::file(InodeId::new(typ, s3, c)), encode(&f))
                .unwrap();
        }
        for (typ, c, t) in [(InodeType::File, 9, 50), (InodeType::Symlink, 10, 60)] {
            let f = v1::TransientFileBody {
                size: c,
                mtime: EggsTime(t),
                deadline: EggsTime(t + 100),
                cookie: 77 + c,
                uncertified_span: Some(c * 4096),
            };
            db.put(keys::transient(InodeId::new(typ, s3, c)), encode(&f))
                .unwrap();
        }
        let d5 = InodeId::new(InodeType::Directory, s3, 5);
        let f7 = InodeId::new(InodeType::File, s3, 7);
        let others = vec![
            (
                keys::meta(s3, keys::META_NEXT_FILE_COUNTER),
                11u64.to_be_bytes().to_vec(),
            ),
            (
                keys::current_edge(d5, &Name::new("f").unwrap()),
                b"edge".to_vec(),
            ),
            (keys::span(f7, 0), b"span".to_vec()),
            // Keys of the inodes' length in other tables.
            (keys::cdc_fence(d5), vec![0, 0, 0, 0, 0, 0, 0, 9, 1]),
            (keys::cdc_inode_fence(d5), vec![0, 0, 0, 0, 0, 0, 0, 9, 0]),
        ];
        for (k, v) in &others {
            db.put(k, v).unwrap();
        }
        others
    }

    /// What [`write_v1_inodes`] wrote reads, in version 2: root's inodes with the usual
    /// modes, ctime the old mtime, times and everything else kept.
    fn check_v2_inodes(kv: &RocksKv) {
        use crate::keys;
        use crate::values::{decode, DirectoryBody, FileBody, TransientFileBody};
        use eggs_protocol::{DirectoryInfo, EggsTime, InodeAttrs, InodeId, InodeType, ShardId};
        let s3 = ShardId(3);
        let get = |k: Vec<u8>| kv.db.get(&k).unwrap().map(|v| (k, v)).unwrap();
        let (k, v) = get(keys::dir(InodeId::ROOT));
        let root: DirectoryBody = decode(&k, &v).unwrap();
        let want = DirectoryBody {
            owner_id: InodeId::NULL,
            mtime: EggsTime(10),
            info: DirectoryInfo::root_default(),
            atime: EggsTime(10),
            ctime: EggsTime(10),
            attrs: InodeAttrs::ROOT_DIR,
        };
        assert_eq!(root, want);
        for (c, owner_id, t) in [(5, InodeId::ROOT, 20), (6, InodeId::NULL, 25)] {
            let (k, v) = get(keys::dir(InodeId::new(InodeType::Directory, s3, c)));
            let d: DirectoryBody = decode(&k, &v).unwrap();
            let want = DirectoryBody {
                owner_id,
                mtime: EggsTime(t),
                info: DirectoryInfo::default(),
                atime: EggsTime(t),
                ctime: EggsTime(t),
                attrs: InodeAttrs::ROOT_DIR,
            };
            assert_eq!(d, want, "directory {c}");
        }
        let files = [
            (InodeType::File, 7, 30, InodeAttrs::ROOT_FILE),
            (InodeType::Symlink, 8, 40, InodeAttrs::ROOT_SYMLINK),
        ];
        for (typ, c, t, attrs) in files {
            let (k, v) = get(keys::file(InodeId::new(typ, s3, c)));
            let f: FileBody = decode(&k, &v).unwrap();
            let want = FileBody {
                size: 100 + c,
                mtime: EggsTime(t),
                atime: EggsTime(t + 1),
                ctime: EggsTime(t),
                attrs,
                rdev: 0,
            };
            assert_eq!(f, want, "{typ:?} {c}");
        }
        let transients = [
            (InodeType::File, 9, 50, InodeAttrs::ROOT_FILE),
            (InodeType::Symlink, 10, 60, InodeAttrs::ROOT_SYMLINK),
        ];
        for (typ, c, t, attrs) in transients {
            let (k, v) = get(keys::transient(InodeId::new(typ, s3, c)));
            let f: TransientFileBody = decode(&k, &v).unwrap();
            let want = TransientFileBody {
                size: c,
                mtime: EggsTime(t),
                deadline: EggsTime(t + 100),
                cookie: 77 + c,
                uncertified_span: Some(c * 4096),
                attrs,
                rdev: 0,
                set_atime: None,
                set_mtime: None,
            };
            assert_eq!(f, want, "transient {typ:?} {c}");
        }
    }

    /// A version 1 database (with its record, or from before records) is migrated to
    /// version 2 on open, once: inodes get root's attributes, nothing else changes.
    #[test]
    fn version_1_databases_are_migrated_once() {
        use eggs_protocol::shard::{
            ShardReq, ShardRequest, ShardResp, StatDirectoryReq, StatFileReq,
        };
        use eggs_protocol::{EggsTime, InodeAttrs, InodeId, InodeType, RequestHeader, ShardId};
        let key = crate::keys::FORMAT_VERSION_KEY;
        for recorded in [true, false] {
            let dir = temp_db("migrate");
            let open = || RocksKv::open(&dir, &Default::default(), 1 << 20);
            let kv = open().unwrap();
            let others = write_v1_inodes(&kv.db);
            if recorded {
                kv.db.put(key, 1u32.to_be_bytes()).unwrap();
            } else {
                kv.db.delete(key).unwrap();
            }
            drop(kv);

            let kv = open().unwrap();
            assert_eq!(kv.db.get(key).unwrap(), Some(2u32.to_be_bytes().to_vec()));
            check_v2_inodes(&kv);
            for (k, v) in &others {
                assert_eq!(kv.db.get(k).unwrap().as_ref(), Some(v), "{k:02x?}");
            }
            let migrated = everything(&kv.db);
            drop(kv);
            // Opening again finds version 2 and changes nothing.
            let kv = open().unwrap();
            assert_eq!(everything(&kv.db), migrated);

            // The core serves the migrated inodes.
            let mut core = crate::core::ShardCore::open(
                kv,
                &[ShardId(0), ShardId(3)],
                Default::default(),
                EggsTime(1000),
            )
            .unwrap();
            let mut ask = |shard, body| {
                let req = ShardRequest {
                    header: RequestHeader {
                        request_id: 1,
                        client_id: 1,
                    },
                    shard,
                    body,
                };
                core.handle(&req, EggsTime(2000)).unwrap().result.unwrap()
            };
            let l = InodeId::new(InodeType::Symlink, ShardId(3), 8);
            let ShardResp::StatFile(st) =
                ask(ShardId(3), ShardReq::StatFile(StatFileReq { id: l }))
            else {
                panic!("not a stat");
            };
            assert_eq!(
                (st.attrs, st.ctime, st.mtime, st.rdev),
                (InodeAttrs::ROOT_SYMLINK, EggsTime(40), EggsTime(40), 0)
            );
            let root = StatDirectoryReq { id: InodeId::ROOT };
            let ShardResp::StatDirectory(st) = ask(ShardId(0), ShardReq::StatDirectory(root))
            else {
                panic!("not a stat");
            };
            assert_eq!((st.attrs, st.ctime), (InodeAttrs::ROOT_DIR, EggsTime(10)));
            drop(core);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A version 1 database whose inodes do not decode is refused and left as it was: the
    /// migration is one batch, written only when every inode converted.
    #[test]
    fn a_failed_migration_changes_nothing() {
        let dir = temp_db("migrate-bad");
        let open = || RocksKv::open(&dir, &Default::default(), 1 << 20);
        let key = crate::keys::FORMAT_VERSION_KEY;
        let kv = open().unwrap();
        write_v1_inodes(&kv.db);
        let bad = crate::keys::file(eggs_protocol::InodeId::new(
            eggs_protocol::InodeType::File,
            eggs_protocol::ShardId(4),
            1,
        ));
        kv.db.put(&bad, [1, 2, 3]).unwrap();
        kv.db.put(key, 1u32.to_be_bytes()).unwrap();
        let before = everything(&kv.db);
        drop(kv);
        let Err(e) = open() else {
            panic!("opened a database with a corrupt inode");
        };
        assert!(
            matches!(e, ShardError::Corrupt { ref key, .. } if *key == bad),
            "{e}"
        );
        let db = rocksdb::DB::open_cf(
            &eggs_db::options(&Default::default()).unwrap(),
            &dir,
            [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, DEDUP_CF],
        )
        .unwrap();
        assert_eq!(everything(&db), before);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database of a later version is refused, and not migrated.
    #[test]
    fn version_3_databases_are_refused_untouched() {
        let dir = temp_db("version-3");
        let open = || RocksKv::open(&dir, &Default::default(), 1 << 20);
        let key = crate::keys::FORMAT_VERSION_KEY;
        let kv = open().unwrap();
        write_v1_inodes(&kv.db);
        kv.db.put(key, 3u32.to_be_bytes()).unwrap();
        let before = everything(&kv.db);
        drop(kv);
        let Err(e) = open() else {
            panic!("opened a database of version 3");
        };
        let msg = e.to_string();
        assert!(msg.contains("version 3"), "{msg}");
        assert!(msg.contains("only version 2"), "{msg}");
        let db = rocksdb::DB::open_cf(
            &eggs_db::options(&Default::default()).unwrap(),
            &dir,
            [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, DEDUP_CF],
        )
        .unwrap();
        assert_eq!(everything(&db), before);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn put(kv: &MemKv, k: &[u8], v: Option<&[u8]>) {
        let mut c = Changes::default();
        match v {
            Some(v) => c.put(k.to_vec(), v.to_vec()),
            None => c.delete(k.to_vec()),
        }
        kv.apply(c).unwrap();
    }

    #[test]
    fn mem_crash_loses_exactly_the_unsynced_changes() {
        let kv = MemKv::default();
        let other = kv.sibling();
        put(&kv, b"a", Some(b"1"));
        put(&kv, b"b", Some(b"1"));
        kv.sync().unwrap();
        put(&kv, b"a", Some(b"2"));
        put(&kv, b"a", None);
        put(&kv, b"c", Some(b"3"));
        put(&other, b"d", Some(b"4"));
        other.sync().unwrap();
        put(&other, b"e", Some(b"5"));
        assert_eq!(kv.unsynced(), 3);
        assert_eq!(other.get(b"c").unwrap(), Some(b"3".to_vec()), "one store");
        kv.clone().crash();
        other.crash();
        assert_eq!(kv.unsynced(), 0, "a clone shares the undo log");
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"c").unwrap(), None);
        assert_eq!(
            kv.get(b"d").unwrap(),
            Some(b"4".to_vec()),
            "synced by its own handle"
        );
        assert_eq!(kv.get(b"e").unwrap(), None);
    }

    #[test]
    fn mem_dedup_entries_expire_and_can_be_forgotten() {
        use eggs_protocol::ShardId;
        let kv = MemKv::default();
        let mut c = Changes::default();
        for (shard, client, request, age) in
            [(0, 1, 7, 1u8), (3, 1, 7, 1), (0, 1, 8, 9), (0, 2, 7, 1)]
        {
            c.put_dedup(
                crate::keys::dedup(ShardId(shard), client, request),
                vec![age],
            );
        }
        kv.apply(c).unwrap();
        kv.sync().unwrap();
        let k = |shard, client, request| crate::keys::dedup(ShardId(shard), client, request);
        kv.expire_request(1, 7);
        assert_eq!(kv.get_dedup(&k(0, 1, 7)).unwrap(), None);
        assert_eq!(kv.get_dedup(&k(3, 1, 7)).unwrap(), None, "on every shard");
        assert_eq!(kv.get_dedup(&k(0, 2, 7)).unwrap(), Some(vec![1]));
        assert_eq!(kv.expire_dedup(&|v| v[0] > 5).unwrap(), 1);
        assert_eq!(kv.get_dedup(&k(0, 1, 8)).unwrap(), None);
        assert_eq!(kv.get_dedup(&k(0, 2, 7)).unwrap(), Some(vec![1]));
        let broken = MemKv::forgetting_dedup();
        let mut c = Changes::default();
        c.put_dedup(k(0, 2, 7), vec![1]);
        broken.apply(c).unwrap();
        assert_eq!(broken.get_dedup(&k(0, 2, 7)).unwrap(), None);
    }

    fn key(k: u8) -> Vec<u8> {
        // Two prefixes (k's low bit) so that scans must stop at the prefix's end.
        vec![k & 1, k]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The write-back overlay reads exactly like a plain map, before and after syncs.
        #[test]
        fn rocks_overlay_matches_memory(ops in proptest::collection::vec(op(), 1..80)) {
            let dir = std::env::temp_dir().join(format!(
                "eggs-kv-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let rocks = RocksKv::open(&dir, &Default::default(), 1 << 20).unwrap();
            let mem = MemKv::default();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        for kv in [&rocks as &dyn Kv, &mem] {
                            let mut c = Changes::default();
                            c.put(key(k), vec![v]);
                            kv.apply(c).unwrap();
                        }
                    }
                    Op::Delete(k) => {
                        for kv in [&rocks as &dyn Kv, &mem] {
                            let mut c = Changes::default();
                            c.delete(key(k));
                            kv.apply(c).unwrap();
                        }
                    }
                    Op::Sync => rocks.sync().unwrap(),
                    Op::Scan(p, s, l) => {
                        let start = vec![p, s];
                        prop_assert_eq!(
                            scan_all(&rocks, &[p], &start, l),
                            scan_all(&mem, &[p], &start, l)
                        );
                        prop_assert_eq!(rocks.get(&key(s)).unwrap(), mem.get(&key(s)).unwrap());
                    }
                }
            }
            rocks.sync().unwrap();
            for p in 0..2u8 {
                prop_assert_eq!(scan_all(&rocks, &[p], &[p], 100), scan_all(&mem, &[p], &[p], 100));
            }
            drop(rocks);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
