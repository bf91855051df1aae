//! What the callbacks share: the client, the read cache, the write handles and files being
//! written, the names the kernel knows files by, the links in progress per directory.

use super::write::Writing;
use super::{kind_of_mode, lock, system_time, to_fuse, CacheTimes, MAX_IO_BYTES};
use crate::cache::ReadCache;
use crate::error::errno;
use eggs_client::{Client, ClientError, Stat};
use eggs_protocol::posix::PERM_BITS;
use eggs_protocol::shuckle::BlockServicesReq;
use eggs_protocol::{InodeAttrs, InodeId, Name};
use fuser::{FileAttr, FileType, Notifier, ReplyDirectoryPlus};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Entries whose attributes one readdirplus reply fetches at most.
const READDIRPLUS_BATCH: usize = 128;

struct Times {
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
}

/// The one place an inode's attributes become the kernel's.
fn file_attr(id: InodeId, attrs: InodeAttrs, size: u64, t: Times, rdev: u64) -> FileAttr {
    let kind = kind_of_mode(attrs.mode);
    FileAttr {
        ino: to_fuse(id),
        size,
        blocks: size.div_ceil(512),
        atime: t.atime,
        mtime: t.mtime,
        ctime: t.ctime,
        crtime: t.crtime,
        kind,
        perm: eggs_protocol::conv::fit(attrs.mode & PERM_BITS),
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: attrs.uid,
        gid: attrs.gid,
        // Linux's dev_t is 32 bits as the kernel sees it through FUSE.
        rdev: u32::try_from(rdev).unwrap_or(u32::MAX),
        // Programs size their buffers by this (cp reads and writes this much at once).
        blksize: MAX_IO_BYTES,
        flags: 0,
    }
}

pub(super) struct Inner {
    pub(super) client: Arc<Client>,
    pub(super) cache: Arc<ReadCache>,
    pub(super) times: CacheTimes,
    pub(super) next_fh: AtomicU64,
    /// Write handles by fh.
    pub(super) handles: Mutex<HashMap<u64, Arc<Writing>>>,
    /// Files being written by inode (the transient file's, or the replaced file's for
    /// `O_TRUNC`), for getattr and truncation.
    pub(super) writing: Mutex<HashMap<u64, Arc<Writing>>>,
    /// The last name each file was looked up by (files have one name), for `O_TRUNC`.
    pub(super) names: Mutex<HashMap<u64, (InodeId, Name)>>,
    /// Files closed at least once and not yet linked, by directory.
    pub(super) linking: Mutex<HashMap<InodeId, Vec<Arc<Writing>>>>,
    /// Names of files being written that are not linked yet, which this mount answers for
    /// (see `Target`): by (directory, name).
    pub(super) pending: Mutex<HashMap<(InodeId, Name), Arc<Writing>>>,
    /// Listings of open directories, by fh.
    pub(super) dirs: Mutex<HashMap<u64, Arc<Vec<eggs_client::DirEntry>>>>,
    pub(super) statfs: Mutex<Option<(Instant, u64, u64)>>,
    pub(super) notifier: OnceLock<Notifier>,
}

impl Inner {
    /// What the kernel is told about an inode the shard described.
    pub(super) fn attr(&self, id: InodeId, st: &Stat) -> FileAttr {
        let (atime, mtime, ctime) = st.times();
        let times = Times {
            atime: system_time(atime),
            mtime: system_time(mtime),
            ctime: system_time(ctime),
            crtime: system_time(mtime),
        };
        file_attr(id, st.attrs(), st.size(), times, st.rdev())
    }

    /// The attributes of a file being written: its size so far, times now unless a setattr
    /// set them.
    pub(super) fn writing_attr(&self, w: &Writing, now: SystemTime) -> FileAttr {
        let (atime, mtime) = lock(&w.times).unwrap_or((now, now));
        let times = Times {
            atime,
            mtime,
            ctime: now,
            crtime: now,
        };
        let size = w.size.load(Ordering::Relaxed);
        file_attr(w.ino, *lock(&w.attrs), size, times, 0)
    }

    pub(super) fn ttl(&self, id: InodeId) -> Duration {
        if lock(&self.writing).contains_key(&id.0) {
            // Its size and times change until (and with) its link.
            Duration::ZERO
        } else if id.is_dir() {
            self.times.dir_attr
        } else {
            self.times.file_attr
        }
    }

    pub(super) async fn getattr(&self, id: InodeId) -> Result<FileAttr, i32> {
        let writing = lock(&self.writing).get(&id.0).cloned();
        if let Some(w) = writing {
            return Ok(self.writing_attr(&w, SystemTime::now()));
        }
        let st = self.client.stat(id).await.map_err(|e| errno(&e))?;
        Ok(self.attr(id, &st))
    }

    /// Drops `key` from the names this mount answers for, if it is still `w`'s (a rename or
    /// another file being written may have taken it since).
    pub(super) fn unpend(&self, key: &(InodeId, Name), w: &Arc<Writing>) {
        let mut pending = lock(&self.pending);
        if pending.get(key).is_some_and(|x| Arc::ptr_eq(x, w)) {
            pending.remove(key);
        }
    }

    /// The file being written under `name` in `dir` whose link has not begun, if any.
    pub(super) fn pending(&self, dir: InodeId, name: &Name) -> Option<Arc<Writing>> {
        let w = lock(&self.pending).get(&(dir, name.clone())).cloned()?;
        let linking = lock(&w.target).linking;
        (!linking).then_some(w)
    }

    /// Waits for the link of a file that was closed: for as long as it takes once the kernel
    /// released it, up to [`super::write::RELEASE_GRACE`] after a close whose release has not
    /// come (another descriptor may still be open). Returns whether it is done with.
    pub(super) async fn wait_closed(&self, w: &Writing) -> bool {
        if w.released.load(Ordering::Acquire) {
            self.wait_done(w).await;
            return true;
        }
        let until = *lock(&w.grace_until);
        if let Some(until) = until {
            let mut rx = w.done.clone();
            let _ = tokio::time::timeout_at(until.into(), rx.wait_for(|done| *done)).await;
        }
        let done = *w.done.borrow();
        done
    }

    /// Waits until `w` is done with (linked, dropped or failed).
    pub(super) async fn wait_done(&self, w: &Writing) {
        let mut rx = w.done.clone();
        // An error means the writer task is gone, which also ends the wait.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Waits for the links in progress in directory `dir`: those of released handles, and
    /// those of handles closed in the last [`RELEASE_GRACE`] (whose release may be coming).
    pub(super) async fn wait_links(&self, dir: InodeId) {
        let pending = lock(&self.linking).get(&dir).cloned().unwrap_or_default();
        for w in pending {
            let mut rx = w.done.clone();
            if w.released.load(Ordering::Acquire) {
                // An error means the writer task is gone, which also ends the wait.
                let _ = rx.wait_for(|done| *done).await;
                continue;
            }
            let until = *lock(&w.grace_until);
            if let Some(until) = until {
                let wait = rx.wait_for(|done| *done);
                let _ = tokio::time::timeout_at(until.into(), wait).await;
            }
        }
    }

    /// Registers `w` in its directory's pending links (once).
    pub(super) fn pend_link(&self, w: &Arc<Writing>) {
        if w.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        let parent = lock(&w.target).parent;
        let mut linking = lock(&self.linking);
        let list = linking.entry(parent).or_default();
        list.retain(|x| !*x.done.borrow());
        list.push(w.clone());
    }

    pub(super) fn end_link(&self, w: &Arc<Writing>, done: watch::Sender<bool>) {
        let _ = done.send(true);
        let (parent, name) = {
            let t = lock(&w.target);
            (t.parent, t.name.clone())
        };
        self.unpend(&(parent, name), w);
        let mut linking = lock(&self.linking);
        for list in linking.values_mut() {
            list.retain(|x| !*x.done.borrow());
        }
        linking.retain(|_, list| !list.is_empty());
    }

    /// Answers mkdir, symlink and mknod with what they made (or why they failed).
    pub(super) async fn reply_created(
        &self,
        made: Result<InodeId, ClientError>,
        parent: InodeId,
        name: &Name,
        reply: fuser::ReplyEntry,
    ) {
        let attr = match made {
            Ok(id) => {
                self.remember_name(id, parent, name);
                self.getattr(id).await
            }
            Err(e) => Err(errno(&e)),
        };
        match attr {
            Ok(a) => reply.entry(&self.times.entry, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn remember_name(&self, id: InodeId, parent: InodeId, name: &Name) {
        if id.is_dir() {
            return;
        }
        let mut names = lock(&self.names);
        if names.len() > 1_000_000 {
            names.clear();
        }
        names.insert(id.0, (parent, name.clone()));
    }

    /// The attributes of `name` in `parent`, and whether they are those of a file being
    /// written (which the kernel must not cache).
    pub(super) async fn lookup(
        &self,
        parent: InodeId,
        name: &Name,
    ) -> Result<(FileAttr, bool), i32> {
        let known = lock(&self.pending).get(&(parent, name.clone())).cloned();
        if let Some(w) = known {
            // Closed already: the link is coming, and the linked file is what to show (for
            // a replacement, under its new inode). Should the link be late, the file being
            // written is: never ENOENT.
            let linked = self.wait_closed(&w).await;
            if !linked && self.pending(parent, name).is_some() {
                return Ok((self.writing_attr(&w, SystemTime::now()), true));
            }
        }
        let r = self
            .client
            .lookup(parent, name)
            .await
            .map_err(|e| errno(&e))?;
        self.remember_name(r.target_id, parent, name);
        let writing = lock(&self.writing).contains_key(&r.target_id.0);
        Ok((self.getattr(r.target_id).await?, writing))
    }

    pub(super) async fn statfs(&self) -> Result<(u64, u64), ClientError> {
        if let Some((at, cap, free)) = *lock(&self.statfs) {
            if at.elapsed() < Duration::from_secs(5) {
                return Ok((cap, free));
            }
        }
        let services = self
            .client
            .shuckle()
            .request(BlockServicesReq {})
            .await?
            .services;
        let cap = services.iter().map(|s| s.capacity_bytes).sum();
        let free = services.iter().map(|s| s.available_bytes).sum();
        *lock(&self.statfs) = Some((Instant::now(), cap, free));
        Ok((cap, free))
    }

    /// Fails with `EEXIST` when `name` exists in `dir` (for `ln -s`, `mknod` and
    /// `RENAME_NOREPLACE`, which never replace a name), or a file is being written there.
    pub(super) async fn ensure_absent(&self, dir: InodeId, name: &Name) -> Result<(), ClientError> {
        let exists = || ClientError::Eggs {
            what: format!("{name} in {dir}"),
            err: eggs_protocol::EggsError::NameExists,
        };
        if lock(&self.pending).contains_key(&(dir, name.clone())) {
            return Err(exists());
        }
        match self.client.lookup(dir, name).await {
            Ok(_) => Err(ClientError::Eggs {
                what: format!("{name} in {dir}"),
                err: eggs_protocol::EggsError::NameExists,
            }),
            Err(e) if errno(&e) == libc::ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn readdirplus(
        &self,
        dir: InodeId,
        entries: Arc<Vec<eggs_client::DirEntry>>,
        offset: usize,
        mut reply: ReplyDirectoryPlus,
    ) {
        let start = offset.saturating_sub(2);
        let batch: Vec<_> = entries
            .iter()
            .skip(start)
            .take(READDIRPLUS_BATCH)
            .cloned()
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, e) in batch.iter().enumerate() {
            let client = self.client.clone();
            let id = e.target_id;
            tasks.spawn(async move { (i, client.stat(id).await) });
        }
        let mut stats = vec![None; batch.len()];
        while let Some(Ok((i, r))) = tasks.join_next().await {
            stats[i] = r.ok();
        }
        if offset < 2 {
            let Ok(attr) = self.getattr(dir).await else {
                return reply.error(libc::EIO);
            };
            for (o, n) in [(1, "."), (2, "..")].into_iter().skip(offset) {
                if reply.add(to_fuse(dir), o, n, &self.times.dir_attr, &attr, 0) {
                    return reply.ok();
                }
            }
        }
        for (i, (e, st)) in batch.iter().zip(stats).enumerate() {
            // A name removed since the listing was taken is left out.
            let Some(st) = st else { continue };
            let attr = self.attr(e.target_id, &st);
            self.remember_name(e.target_id, dir, &e.name);
            let next = eggs_protocol::conv::fit(start + i + 3);
            let name = OsStr::from_bytes(e.name.as_bytes());
            if reply.add(
                to_fuse(e.target_id),
                next,
                name,
                &self.times.entry,
                &attr,
                0,
            ) {
                break;
            }
        }
        reply.ok();
    }
}
