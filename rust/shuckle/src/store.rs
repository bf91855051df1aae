//! Persistence of the registry in RocksDB: one key per shard, the CDC and each block service.
//!
//! Keys: `s` + shard id byte, `c`, `b` + block service id (big-endian, so that ids iterate
//! in order). Values use the protocol's codec (its fixed bincode configuration) behind a
//! 4-byte magic naming the record type and version, so that a future format is detected at
//! start instead of misread. The key `v` holds the format version of the whole database
//! (u32 big-endian, [`FORMAT_VERSION`]).

use crate::registry::{BlockServiceRecord, Change, Endpoint};
use crate::ShuckleError;
use eggs_protocol::{codec, BlockServiceId, Message, ShardId};
use std::path::Path;

impl Message for Endpoint {
    const MAGIC: [u8; 4] = *b"SKE\x01";
}

impl Message for BlockServiceRecord {
    const MAGIC: [u8; 4] = *b"SKB\x01";
}

const SHARD_PREFIX: u8 = b's';
const CDC_KEY: &[u8] = b"c";
const BLOCK_SERVICE_PREFIX: u8 = b'b';
const FORMAT_VERSION_KEY: &[u8] = b"v";

/// The version of the layout above. Databases made before versions were recorded are
/// version 1 too: they get the record on their first open.
pub(crate) const FORMAT_VERSION: eggs_common::format_version::FormatVersion = 1;

pub(crate) struct Store {
    db: rocksdb::DB,
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Store, ShuckleError> {
        let db = eggs_db::open(dir, &eggs_db::DbConfig::default()).map_err(|source| {
            ShuckleError::OpenDb {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        let store = Store { db };
        store.check_format_version(dir)?;
        Ok(store)
    }

    /// Refuses a database of another format version; records the version (synced) in a new
    /// one, and in one made before versions were recorded.
    fn check_format_version(&self, dir: &Path) -> Result<(), ShuckleError> {
        eggs_db::ensure_format_version(
            &self.db,
            &format!("shuckle database {}", dir.display()),
            FORMAT_VERSION_KEY,
            FORMAT_VERSION,
        )
    }

    /// Every record ever written. Refuses to start on a record it cannot read, rather than
    /// silently forgetting a block service and its flags.
    pub(crate) fn load(&self) -> Result<Vec<Change>, ShuckleError> {
        let mut records = Vec::new();
        for entry in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (key, value) = entry?;
            // Checked by `open`; not a record.
            if *key == *FORMAT_VERSION_KEY {
                continue;
            }
            records.push(decode_record(&key, &value)?);
        }
        Ok(records)
    }

    /// Writes all changes of one request as a single synced batch: a heartbeat of 256 shards
    /// costs one WAL append and one fsync, and a crash never keeps half a request.
    pub(crate) fn write(&self, changes: &[Change]) -> Result<(), ShuckleError> {
        // The server skips requests without changes: each write here costs an fsync.
        assert!(!changes.is_empty(), "an empty synced write");
        let mut batch = rocksdb::WriteBatch::default();
        for change in changes {
            match change {
                Change::ForgetBlockService(id) => batch.delete(block_service_key(*id)),
                _ => {
                    let (key, value) = encode_record(change);
                    batch.put(key, value);
                }
            }
        }
        self.db
            .write_opt(batch, &eggs_db::sync_write())
            .map_err(ShuckleError::from)
    }
}

fn encode_record(change: &Change) -> (Vec<u8>, Vec<u8>) {
    match change {
        Change::Shard(id, endpoint) => (vec![SHARD_PREFIX, id.0], codec::encode(endpoint)),
        Change::Cdc(endpoint) => (CDC_KEY.to_vec(), codec::encode(endpoint)),
        Change::BlockService(record) => (block_service_key(record.id), codec::encode(record)),
        Change::ForgetBlockService(id) => {
            unreachable!("forgetting {id:?} is a deletion, written by `write`")
        }
    }
}

fn block_service_key(id: BlockServiceId) -> Vec<u8> {
    let mut key = vec![BLOCK_SERVICE_PREFIX];
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn decode_record(key: &[u8], value: &[u8]) -> Result<Change, ShuckleError> {
    let corrupt = |why: String| ShuckleError::Corrupt {
        key: key.to_vec(),
        why,
    };
    match key {
        [SHARD_PREFIX, id] => {
            let endpoint = codec::decode(value).map_err(|e| corrupt(e.to_string()))?;
            Ok(Change::Shard(ShardId(*id), endpoint))
        }
        CDC_KEY => Ok(Change::Cdc(
            codec::decode(value).map_err(|e| corrupt(e.to_string()))?,
        )),
        [BLOCK_SERVICE_PREFIX, id @ ..] if id.len() == 8 => {
            let record: BlockServiceRecord =
                codec::decode(value).map_err(|e| corrupt(e.to_string()))?;
            if block_service_key(record.id) != key {
                return Err(corrupt(format!("holds block service {}", record.id.0)));
            }
            Ok(Change::BlockService(record))
        }
        _ => Err(corrupt("unknown key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SecretKey;
    use eggs_protocol::policy::StorageClass;
    use eggs_protocol::{Addr, EggsTime};

    fn endpoint(port: u16, t: u64) -> Endpoint {
        Endpoint {
            addr: Addr {
                ip: [127, 0, 0, 1],
                port,
            },
            last_seen: EggsTime(t),
        }
    }

    fn block_service(id: u64) -> BlockServiceRecord {
        BlockServiceRecord {
            id: BlockServiceId(id),
            addr: endpoint(5000, 0).addr,
            storage_class: StorageClass::Flash,
            failure_domain: [3; 16],
            secret_key: SecretKey([7; 16]),
            flags: 5,
            capacity_bytes: 10,
            available_bytes: 9,
            blocks: 8,
            path: "/d".into(),
            last_seen: EggsTime(42),
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut written: Vec<Change> = (0..=255u8)
            .map(|i| Change::Shard(ShardId(i), endpoint(6000, u64::from(i))))
            .collect();
        written.push(Change::Cdc(endpoint(7000, 1)));
        written.push(Change::BlockService(block_service(u64::MAX)));
        written.push(Change::BlockService(block_service(1)));
        Store::open(dir.path()).unwrap().write(&written).unwrap();
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.len(), written.len());
        for change in &written {
            assert!(loaded.contains(change), "lost {change:?}");
        }
    }

    #[test]
    fn forgotten_block_services_are_deleted() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).unwrap();
        store
            .write(&[
                Change::BlockService(block_service(1)),
                Change::BlockService(block_service(2)),
            ])
            .unwrap();
        store
            .write(&[Change::ForgetBlockService(BlockServiceId(1))])
            .unwrap();
        drop(store);
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded, vec![Change::BlockService(block_service(2))]);
    }

    #[test]
    fn format_version_is_recorded_and_other_versions_refused() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).unwrap();
        let recorded = store.db.get(FORMAT_VERSION_KEY).unwrap();
        assert_eq!(recorded, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        assert_eq!(store.load().unwrap(), Vec::new(), "the record is no change");
        // A database of the code before versions: data, no record. It is version 1.
        store.db.delete(FORMAT_VERSION_KEY).unwrap();
        store.write(&[Change::Cdc(endpoint(7000, 1))]).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.db.get(FORMAT_VERSION_KEY).unwrap(), recorded);
        assert_eq!(store.load().unwrap(), vec![Change::Cdc(endpoint(7000, 1))]);
        let newer = FORMAT_VERSION + 1;
        store
            .db
            .put(FORMAT_VERSION_KEY, newer.to_be_bytes())
            .unwrap();
        drop(store);
        let Err(e) = Store::open(dir.path()) else {
            panic!("opened a database of version {newer}");
        };
        let msg = e.to_string();
        assert!(msg.contains(&format!("version {newer}")), "{msg}");
        assert!(
            msg.contains(&format!("only version {FORMAT_VERSION}")),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_records_are_reported() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).unwrap();
        store.db.put(b"c", b"SKE\x01\x00").unwrap();
        assert!(matches!(store.load(), Err(ShuckleError::Corrupt { .. })));
        store.db.delete(b"c").unwrap();
        let mut misplaced = block_service_key(BlockServiceId(2));
        store
            .db
            .put(&misplaced, codec::encode(&block_service(3)))
            .unwrap();
        assert!(matches!(store.load(), Err(ShuckleError::Corrupt { .. })));
        store.db.delete(&misplaced).unwrap();
        misplaced.push(0);
        store.db.put(&misplaced, b"").unwrap();
        assert!(matches!(store.load(), Err(ShuckleError::Corrupt { .. })));
    }
}
