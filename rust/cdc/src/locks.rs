//! Exclusive locks with one FIFO queue per key.
//!
//! A transaction enqueues on all its keys at once when it arrives and runs once it heads every
//! one of its queues. Because every queue is ordered by arrival, no two transactions can each
//! wait for the other (no deadlock), and a waiting transaction is overtaken only by
//! transactions that share none of its keys (no starvation).

use crate::record::TxnId;
use eggs_protocol::InodeId;
use foldhash::HashMap;
use std::collections::VecDeque;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum LockKey {
    Dir(InodeId),
    /// Held by every RenameDirectory, so that loop checks never run concurrently with another
    /// directory move.
    DirectoryMoves,
}

#[derive(Default, Debug)]
pub struct LockTable {
    queues: HashMap<LockKey, VecDeque<TxnId>>,
}

/// Sorts and deduplicates a lock set, so that a transaction never queues behind itself.
pub fn normalize(mut keys: Vec<LockKey>) -> Vec<LockKey> {
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl LockTable {
    /// Queues `txn` on each of its (normalized) keys; true if it holds them all right away.
    pub fn enqueue(&mut self, txn: TxnId, keys: &[LockKey]) -> bool {
        for key in keys {
            self.queues.entry(*key).or_default().push_back(txn);
        }
        self.holds_all(txn, keys)
    }

    /// Whether `txn` heads the queue of every key.
    pub fn holds_all(&self, txn: TxnId, keys: &[LockKey]) -> bool {
        keys.iter()
            .all(|k| self.queues.get(k).and_then(|q| q.front()) == Some(&txn))
    }

    /// Releases `txn`'s keys (it must hold them) and returns the transactions that now head
    /// one of those queues, in key order without duplicates: the candidates to start.
    pub fn release(&mut self, txn: TxnId, keys: &[LockKey]) -> Vec<TxnId> {
        let mut candidates = Vec::new();
        for key in keys {
            let Some(queue) = self.queues.get_mut(key) else {
                continue;
            };
            if queue.front() == Some(&txn) {
                queue.pop_front();
            } else {
                // Not holding it would be a bug; still drop it so the key cannot wedge.
                tracing::error!("txn {txn} released {key:?} it did not hold");
                queue.retain(|t| *t != txn);
            }
            match queue.front() {
                Some(&next) if !candidates.contains(&next) => candidates.push(next),
                Some(_) => {}
                None => {
                    self.queues.remove(key);
                }
            }
        }
        candidates
    }

    /// Number of keys with a holder (for tests and metrics).
    pub fn held_keys(&self) -> usize {
        self.queues.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::{InodeType, ShardId};

    fn k(n: u64) -> LockKey {
        LockKey::Dir(InodeId::new(InodeType::Directory, ShardId(0), n))
    }

    #[test]
    fn fifo_without_overtaking_conflicts() {
        let mut t = LockTable::default();
        let a = normalize(vec![k(1), k(2)]);
        let b = normalize(vec![k(2), k(3)]);
        let c = normalize(vec![k(3)]);
        let d = normalize(vec![k(4), k(4)]);
        assert!(t.enqueue(1, &a));
        assert!(!t.enqueue(2, &b), "waits for 1 on k2");
        assert!(
            !t.enqueue(3, &c),
            "waits for 2 on k3 although k3 is free of holders"
        );
        assert!(
            t.enqueue(4, &d),
            "disjoint: runs at once, duplicates collapse"
        );
        assert_eq!(t.release(1, &a), vec![2]);
        assert!(t.holds_all(2, &b));
        assert!(!t.holds_all(3, &c));
        assert_eq!(t.release(2, &b), vec![3]);
        assert!(t.holds_all(3, &c));
        assert_eq!(t.release(3, &c), vec![]);
        assert_eq!(t.release(4, &d), vec![]);
        assert_eq!(t.held_keys(), 0);
    }
}
