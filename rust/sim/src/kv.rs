//! A shard store that can lose what was not synced, like RocksDB behind the server's
//! write-back overlays: changes are visible at once, durable at `sync`, and a crash rolls
//! back everything applied since the last sync.
//!
//! As in the server, every core of a shard process has its own handle ([`SimKv::sibling`])
//! over one store: each handle syncs its own changes (its group commit), and their keys never
//! overlap because each core serves other shards.

use eggs_shard::{Changes, Kv, ShardError, Table};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Undo = Vec<(Table, Vec<u8>, Option<Vec<u8>>)>;

#[derive(Default)]
struct Maps {
    main: Map,
    dedup: Map,
    /// Sabotage for testing the checker: retries are never recognised.
    forget_dedup: bool,
}

/// Cloning shares the store and the undo log: the simulator keeps a handle across crashes.
#[derive(Clone, Default)]
pub struct SimKv {
    maps: Rc<RefCell<Maps>>,
    /// Previous values of keys this handle changed since its last sync, oldest first.
    undo: Rc<RefCell<Undo>>,
}

impl SimKv {
    /// A store that never finds deduplication entries, so that retried writes are applied
    /// again: a deliberately broken shard, to show that the checker notices.
    pub fn forgetting_dedup() -> SimKv {
        let kv = SimKv::default();
        kv.maps.borrow_mut().forget_dedup = true;
        kv
    }

    /// Another handle on the same store with its own unsynced changes.
    pub fn sibling(&self) -> SimKv {
        SimKv {
            maps: self.maps.clone(),
            undo: Default::default(),
        }
    }

    /// Drops every change applied through this handle since its last sync.
    pub fn crash(&self) {
        let mut maps = self.maps.borrow_mut();
        let mut undo = self.undo.borrow_mut();
        while let Some((table, k, old)) = undo.pop() {
            let m = match table {
                Table::Main => &mut maps.main,
                Table::Dedup => &mut maps.dedup,
            };
            match old {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
    }

    /// Forgets the deduplication entry of `(client_id, request_id)`, as its expiry (or the
    /// FIFO column family dropping it early) would.
    pub fn expire_request(&self, client_id: u64, request_id: u64) {
        let mut suffix = client_id.to_be_bytes().to_vec();
        suffix.extend_from_slice(&request_id.to_be_bytes());
        self.maps
            .borrow_mut()
            .dedup
            .retain(|k, _| !k.ends_with(&suffix));
    }

    /// Changes applied through this handle but not yet synced.
    pub fn unsynced(&self) -> usize {
        self.undo.borrow().len()
    }
}

impl Kv for SimKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.maps.borrow().main.get(key).cloned())
    }

    fn get_dedup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
        let maps = self.maps.borrow();
        if maps.forget_dedup {
            return Ok(None);
        }
        Ok(maps.dedup.get(key).cloned())
    }

    fn expire_dedup(&self, _expired: &dyn Fn(&[u8]) -> bool) -> Result<usize, ShardError> {
        // Like RocksDB's FIFO column family: entries linger, readers ignore expired ones.
        Ok(0)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), ShardError> {
        let maps = self.maps.borrow();
        for (k, v) in maps.main.range(start.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, changes: Changes) -> Result<(), ShardError> {
        let mut maps = self.maps.borrow_mut();
        let mut undo = self.undo.borrow_mut();
        for (table, k, v) in changes.ops {
            let m = match table {
                Table::Main => &mut maps.main,
                Table::Dedup => &mut maps.dedup,
            };
            let old = match v {
                Some(v) => m.insert(k.clone(), v),
                None => m.remove(&k),
            };
            undo.push((table, k, old));
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ShardError> {
        self.undo.borrow_mut().clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(kv: &SimKv, k: &[u8], v: Option<&[u8]>) {
        let mut c = Changes::default();
        match v {
            Some(v) => c.put(k.to_vec(), v.to_vec()),
            None => c.delete(k.to_vec()),
        }
        kv.apply(c).unwrap();
    }

    #[test]
    fn crash_loses_exactly_the_unsynced_changes() {
        let kv = SimKv::default();
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
        kv.crash();
        other.crash();
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
}
