//! RocksDB persistence of transaction records, the dedup index and the counters.
//!
//! Key layout (integers big-endian so that keys sort numerically):
//!
//! | key                                          | value                                  |
//! |----------------------------------------------|----------------------------------------|
//! | `0x00`                                       | [`Counters`]                           |
//! | `0x01` txn_id:u64                            | [`TxnRecord`]                          |
//! | `0x02` client_id:u64 request_id:u64          | (legacy: removed at start, see below)  |
//! | `0x03`                                       | the CDC's own client id: u64 big-endian |
//! | `0x04`                                       | format version of the database: u32 big-endian ([`FORMAT_VERSION`]) |
//!
//! Values are [`crate::record::encode_value`] encodings (a format version byte, then
//! bincode). Earlier versions also kept a request → transaction index under `0x02`; the CDC
//! rebuilds that mapping in memory from the records' headers, and rewriting an index entry
//! with every progress write cost a random-key memtable insert each, so it is gone.

use crate::cdc_core::{Loaded, Output, Write};
use crate::record::{decode_counters, decode_txn, encode_value, Counters, TxnId, TxnRecord};
use crate::CdcError;
use std::path::Path;

const COUNTERS_KEY: [u8; 1] = [0x00];
const TXN_PREFIX: u8 = 0x01;
const INDEX_PREFIX: u8 = 0x02;
const CLIENT_ID_KEY: [u8; 1] = [0x03];
const FORMAT_VERSION_KEY: [u8; 1] = [0x04];

/// The version of the layout above. Databases made before versions were recorded are
/// version 1 too: they get the record on their first open.
pub const FORMAT_VERSION: eggs_common::format_version::FormatVersion = 1;

pub fn txn_key(id: TxnId) -> [u8; 9] {
    let mut k = [TXN_PREFIX; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

type KeyValue = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

pub struct Store {
    db: rocksdb::DB,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, CdcError> {
        std::fs::create_dir_all(dir).map_err(|source| CdcError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let db = eggs_db::open(dir, &eggs_db::DbConfig::default())?;
        let store = Store { db };
        store.check_format_version(dir)?;
        Ok(store)
    }

    /// Refuses a database of another format version; records the version (synced) in a new
    /// one, and in one made before versions were recorded.
    fn check_format_version(&self, dir: &Path) -> Result<(), CdcError> {
        eggs_db::ensure_format_version(
            &self.db,
            &format!("CDC database {}", dir.display()),
            &FORMAT_VERSION_KEY,
            FORMAT_VERSION,
        )
    }

    /// Reads every record and the counters. A record that cannot be decoded stops the CDC:
    /// guessing the state of a transaction could corrupt the file system.
    pub fn load(&self) -> Result<Loaded, CdcError> {
        let counters = match self.db.get(COUNTERS_KEY)? {
            Some(v) => decode_counters(&v).map_err(|e| corrupt(&COUNTERS_KEY, e))?,
            None => Counters::default(),
        };
        let mut records = Vec::new();
        for item in self.scan(TXN_PREFIX) {
            let (key, value) = item?;
            let record: TxnRecord = decode_txn(&value).map_err(|e| corrupt(&key, e))?;
            records.push(record);
        }
        self.drop_legacy_index()?;
        let client_id = self.client_id()?;
        Ok(Loaded {
            counters,
            records,
            client_id,
        })
    }

    /// The client id the CDC uses towards the shards, chosen at random when the database is
    /// created and kept forever, so that steps resent after a restart are recognised as the
    /// same requests by the shards' dedup.
    fn client_id(&self) -> Result<u64, CdcError> {
        if let Some(v) = self.db.get(CLIENT_ID_KEY)? {
            let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| CdcError::Corrupt {
                key: format!("{CLIENT_ID_KEY:02x?}"),
                reason: format!("client id of {} bytes", v.len()),
            })?;
            return Ok(u64::from_be_bytes(bytes));
        }
        let id = rand::random::<u64>();
        self.db
            .put_opt(CLIENT_ID_KEY, id.to_be_bytes(), &eggs_db::sync_write())?;
        Ok(id)
    }

    fn scan(&self, prefix: u8) -> impl Iterator<Item = KeyValue> + '_ {
        let mode = rocksdb::IteratorMode::From(&[prefix], rocksdb::Direction::Forward);
        self.db.iterator(mode).take_while(move |item| {
            item.as_ref()
                .map_or(true, |(k, _)| k.first() == Some(&prefix))
        })
    }

    /// Removes the request index older versions kept (see the module comment).
    fn drop_legacy_index(&self) -> Result<(), CdcError> {
        let mut batch = rocksdb::WriteBatch::default();
        for item in self.scan(INDEX_PREFIX) {
            let (key, _) = item?;
            batch.delete(&key);
        }
        if !batch.is_empty() {
            tracing::info!("removing {} legacy request index entries", batch.len());
            self.db.write_opt(batch, &eggs_db::unsynced_write())?;
        }
        Ok(())
    }

    /// Applies several bursts' writes, in order, as one atomic batch: synced if any of them
    /// asks for it (a later burst may depend on an earlier one, never the other way round).
    pub fn persist_all(&self, outputs: &[Output]) -> Result<(), CdcError> {
        let mut batch = rocksdb::WriteBatch::default();
        for o in outputs {
            if let Some(c) = &o.counters {
                batch.put(COUNTERS_KEY, encode_value(c));
            }
            for w in &o.writes {
                match w {
                    Write::Put(r) => batch.put(txn_key(r.id), encode_value(r)),
                    Write::Delete { id } => batch.delete(txn_key(*id)),
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let opts = if outputs.iter().any(|o| o.sync) {
            eggs_db::sync_write()
        } else {
            eggs_db::unsynced_write()
        };
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

fn corrupt(key: &[u8], e: crate::record::RecordError) -> CdcError {
    CdcError::Corrupt {
        key: format!("{key:02x?}"),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Progress, Step, TxnState};
    use eggs_protocol::cdc::{CdcReq, RemoveDirectoryReq};
    use eggs_protocol::{EggsError, EggsTime, InodeId, Name, RequestHeader};

    fn record(id: TxnId, request_id: u64, state: TxnState) -> TxnRecord {
        TxnRecord {
            id,
            header: RequestHeader {
                request_id,
                client_id: 3,
            },
            req: CdcReq::RemoveDirectory(RemoveDirectoryReq {
                owner_id: InodeId::ROOT,
                target_id: InodeId(InodeId::ROOT.0 + 256),
                name: Name::new("x").unwrap(),
                creation_time: EggsTime(1),
            }),
            arrived_at: EggsTime(2),
            state,
        }
    }

    fn index_key(h: RequestHeader) -> [u8; 17] {
        let mut k = [INDEX_PREFIX; 17];
        k[1..9].copy_from_slice(&h.client_id.to_be_bytes());
        k[9..].copy_from_slice(&h.request_id.to_be_bytes());
        k
    }

    fn running() -> TxnState {
        TxnState::Running(Progress {
            step: Step::LockOldEdge,
            new_dir_id: InodeId::NULL,
            creation_time: EggsTime(0),
            failure: None,
        })
    }

    #[test]
    fn persisted_records_load_back() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let a = record(1, 10, running());
        let b = record(2, 11, running());
        let b_done = record(
            2,
            11,
            TxnState::Done {
                result: Err(EggsError::DirectoryNotEmpty),
                finished_at: EggsTime(9),
            },
        );
        let counters = Counters {
            next_txn_id: 3,
            next_dir_counter: 17,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.load().unwrap().records.is_empty());
            let puts = vec![Write::Put(a.clone()), Write::Put(b)];
            store
                .persist_all(&[output(puts, Some(counters), true)])
                .unwrap();
            let done = output(vec![Write::Put(b_done.clone())], None, false);
            store.persist_all(&[done]).unwrap();
            let c = record(3, 12, running());
            let put_c = output(vec![Write::Put(c.clone())], None, true);
            store.persist_all(&[put_c]).unwrap();
            let delete = Write::Delete { id: c.id };
            store
                .persist_all(&[output(vec![delete], None, false)])
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.counters, counters);
        assert_eq!(loaded.records, [a, b_done]);
    }

    fn output(writes: Vec<Write>, counters: Option<Counters>, sync: bool) -> Output {
        Output {
            writes,
            counters,
            sync,
            sends: Vec::new(),
            replies: Vec::new(),
        }
    }

    #[test]
    fn queued_bursts_apply_in_order_as_one_batch() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let a = record(1, 10, running());
        let b = record(2, 11, running());
        let first = Counters {
            next_txn_id: 3,
            next_dir_counter: 5,
        };
        let later = Counters {
            next_txn_id: 4,
            next_dir_counter: 6,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            // A later burst deletes what an earlier one put, and moves the counters on.
            let bursts = [
                output(
                    vec![Write::Put(a.clone()), Write::Put(b)],
                    Some(first),
                    false,
                ),
                output(vec![Write::Delete { id: 2 }], Some(later), true),
                output(Vec::new(), None, false),
            ];
            store.persist_all(&bursts).unwrap();
            store.persist_all(&[]).unwrap();
        }
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.counters, later);
        assert_eq!(loaded.records, [a]);
    }

    #[test]
    fn format_version_is_recorded_and_other_versions_refused() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).unwrap();
        let recorded = store.db.get(FORMAT_VERSION_KEY).unwrap();
        assert_eq!(recorded, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        // A database of the code before versions: data, no record. It is version 1.
        store.db.delete(FORMAT_VERSION_KEY).unwrap();
        store.db.put(CLIENT_ID_KEY, 9u64.to_be_bytes()).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.db.get(FORMAT_VERSION_KEY).unwrap(), recorded);
        assert_eq!(store.load().unwrap().client_id, 9);
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
    fn legacy_index_entries_are_dropped_and_corrupt_records_refused() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).unwrap();
        let stale = RequestHeader {
            request_id: 1,
            client_id: 1,
        };
        store.db.put(index_key(stale), 5u64.to_be_bytes()).unwrap();
        store.load().unwrap();
        assert_eq!(store.db.get(index_key(stale)).unwrap(), None);
        store.db.put(txn_key(4), [1, 2, 3]).unwrap();
        assert!(matches!(store.load(), Err(CdcError::Corrupt { .. })));
    }
}
