//! Which replies may leave after which sync: the shard's group commit, without I/O.
//!
//! A shard process's core threads each handle a group of requests at a time and write its
//! changes unsynced; one sync of the shared write-ahead log then makes many groups durable at
//! once. [`GroupCommit`] holds the rules, and both the server's threads and the simulator
//! drive it (they do the handling, syncing and sending):
//!
//! - A group with writes waits for a sync that starts after it was handed over; its replies
//!   leave only once that sync succeeded. A failed sync releases its groups without replies
//!   (nothing in them is known to be durable; clients retry).
//! - Pipelining: while a sync is under way the core threads go on handling groups; those
//!   queue for the next sync, which covers all of them.
//! - Read-only fast path: a group without writes is answered at once, unless an earlier group
//!   of the same core thread is still waiting for its sync (the reads may have seen its
//!   writes); then it queues behind that group. Core threads serve disjoint shards, so
//!   another thread's pending writes never matter.

use std::collections::VecDeque;

/// Groups waiting for the next sync before a shard process's core threads wait: a thread
/// that gets this far ahead of the disk stops taking requests (the server and the simulator).
pub const MAX_QUEUED_GROUPS: usize = 256;

/// A group's replies waiting for a sync, with the core thread that sends them.
struct Pending<R> {
    thread: usize,
    replies: Vec<R>,
}

/// The group commit state of one shard process. `R` is one reply (for example its address
/// and encoded bytes).
pub struct GroupCommit<R> {
    /// Per core thread: its groups handed over and not yet released by a sync.
    waiting: Vec<usize>,
    /// Groups handed over since the current sync started, in order.
    queued: VecDeque<Pending<R>>,
    /// Groups covered by the sync under way; `None` when no sync is under way.
    syncing: Option<Vec<Pending<R>>>,
    /// Most groups queued before core threads must wait (back-pressure).
    max_queued: usize,
}

impl<R> GroupCommit<R> {
    /// `threads` core threads; at most `max_queued` groups wait for the next sync before
    /// [`GroupCommit::is_full`] asks core threads to wait.
    pub fn new(threads: usize, max_queued: usize) -> GroupCommit<R> {
        assert!(threads > 0, "a shard process has at least one core thread");
        assert!(max_queued > 0, "the commit queue must hold a group");
        GroupCommit {
            waiting: vec![0; threads],
            queued: VecDeque::new(),
            syncing: None,
            max_queued,
        }
    }

    /// Core thread `thread` handled a group: `wrote` says whether any request in it wrote.
    /// Returns the replies that may leave now; the others are kept until a sync releases them.
    pub fn handled(&mut self, thread: usize, wrote: bool, replies: Vec<R>) -> Vec<R> {
        assert!(
            thread < self.waiting.len(),
            "core thread {thread} out of range"
        );
        if replies.is_empty() && !wrote {
            return replies;
        }
        if !wrote && self.waiting[thread] == 0 {
            return replies;
        }
        self.waiting[thread] += 1;
        self.queued.push_back(Pending { thread, replies });
        Vec::new()
    }

    /// Whether core threads should wait for a sync before handing over another group.
    pub fn is_full(&self) -> bool {
        self.queued.len() >= self.max_queued
    }

    /// Whether groups are waiting for a sync that has not started yet.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Whether nothing waits: no sync under way and no group queued.
    pub fn is_idle(&self) -> bool {
        self.syncing.is_none() && self.queued.is_empty()
    }

    /// Whether core thread `thread` has a group waiting for a sync.
    pub fn is_waiting(&self, thread: usize) -> bool {
        self.waiting.get(thread).is_some_and(|&n| n > 0)
    }

    /// Starts a sync if none is under way and groups are queued: it covers exactly the groups
    /// queued now. Returns how many; `None` means there is nothing to sync now. The caller
    /// makes everything written so far durable, then calls [`GroupCommit::synced`].
    pub fn start_sync(&mut self) -> Option<usize> {
        if self.syncing.is_some() || self.queued.is_empty() {
            return None;
        }
        let groups: Vec<Pending<R>> = self.queued.drain(..).collect();
        let n = groups.len();
        self.syncing = Some(groups);
        Some(n)
    }

    /// The sync under way finished (`ok`: it succeeded). Returns, in the order the groups
    /// were handed over, the replies each core thread may now send: none if the sync failed.
    pub fn synced(&mut self, ok: bool) -> Vec<(usize, Vec<R>)> {
        let groups = self
            .syncing
            .take()
            .unwrap_or_else(|| panic!("a sync finished that was never started"));
        let mut out = Vec::with_capacity(if ok { groups.len() } else { 0 });
        for g in groups {
            let waiting = &mut self.waiting[g.thread];
            assert!(*waiting > 0, "core thread {} released too often", g.thread);
            *waiting -= 1;
            if ok {
                out.push((g.thread, g.replies));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gc() -> GroupCommit<u32> {
        GroupCommit::new(2, 4)
    }

    #[test]
    fn a_read_only_group_is_answered_at_once() {
        let mut g = gc();
        assert_eq!(g.handled(0, false, vec![1, 2]), vec![1, 2]);
        assert!(g.is_idle());
        assert_eq!(g.start_sync(), None, "nothing to sync");
    }

    #[test]
    fn a_write_group_waits_for_its_sync() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert!(g.is_waiting(0));
        assert_eq!(g.start_sync(), Some(1));
        assert_eq!(g.synced(true), vec![(0, vec![1])]);
        assert!(g.is_idle());
        assert!(!g.is_waiting(0));
    }

    #[test]
    fn a_read_behind_a_pending_write_of_its_thread_waits_too() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert!(
            g.handled(0, false, vec![2]).is_empty(),
            "may have read 1's writes"
        );
        assert_eq!(g.start_sync(), Some(2));
        assert_eq!(g.synced(true), vec![(0, vec![1]), (0, vec![2])]);
        // Once released, reads go straight out again.
        assert_eq!(g.handled(0, false, vec![3]), vec![3]);
    }

    #[test]
    fn another_threads_pending_write_does_not_hold_a_read() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert_eq!(g.handled(1, false, vec![2]), vec![2]);
    }

    #[test]
    fn groups_handled_during_a_sync_wait_for_the_next_one() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert_eq!(g.start_sync(), Some(1));
        // Pipelining: the thread goes on while the sync is under way.
        assert!(g.handled(0, true, vec![2]).is_empty());
        assert!(g.handled(1, true, vec![3]).is_empty());
        assert_eq!(g.start_sync(), None, "one sync at a time");
        assert_eq!(
            g.synced(true),
            vec![(0, vec![1])],
            "2 and 3 were not covered"
        );
        assert!(g.is_waiting(0) && g.is_waiting(1));
        assert_eq!(g.start_sync(), Some(2));
        assert_eq!(g.synced(true), vec![(0, vec![2]), (1, vec![3])]);
        assert!(g.is_idle());
    }

    #[test]
    fn a_read_during_a_sync_waits_if_its_thread_has_a_write_in_it() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert_eq!(g.start_sync(), Some(1));
        assert!(g.handled(0, false, vec![2]).is_empty());
        assert_eq!(g.synced(true), vec![(0, vec![1])]);
        // The read is still queued (for the next sync), and holds later reads behind it.
        assert!(g.is_waiting(0));
        assert!(g.handled(0, false, vec![3]).is_empty());
        assert_eq!(g.start_sync(), Some(2));
        assert_eq!(g.synced(true), vec![(0, vec![2]), (0, vec![3])]);
    }

    #[test]
    fn a_failed_sync_releases_without_replies() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert!(g.handled(0, false, vec![2]).is_empty());
        assert_eq!(g.start_sync(), Some(2));
        assert!(g.synced(false).is_empty());
        assert!(g.is_idle());
        assert_eq!(g.handled(0, false, vec![4]), vec![4]);
    }

    #[test]
    fn empty_read_groups_are_not_queued() {
        let mut g = gc();
        assert!(g.handled(0, true, vec![1]).is_empty());
        assert!(g.handled(0, false, vec![]).is_empty());
        assert_eq!(g.start_sync(), Some(1));
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut g = gc();
        for i in 0..4 {
            assert!(!g.is_full());
            let _ = g.handled(i % 2, true, vec![u32::try_from(i).unwrap()]);
        }
        assert!(g.is_full());
        assert_eq!(g.start_sync(), Some(4));
        assert!(!g.is_full());
    }

    #[test]
    #[should_panic(expected = "never started")]
    fn a_sync_that_never_started_cannot_finish() {
        let _ = gc().synced(true);
    }
}
