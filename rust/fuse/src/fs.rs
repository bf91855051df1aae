//! The FUSE file system: every callback hands its work to the tokio runtime together with
//! its reply, so one slow request never holds up the FUSE loop.
//!
//! Writes: a file is written by one handle, sequentially. The handle's writes, truncations,
//! flushes and its release go, in the order the kernel sent them, through a queue to one task
//! that owns the file's [`FileWriter`]; the release links the file (so it becomes visible when
//! its last descriptor is closed: the kernel sends one release per open file description, after
//! every dup and fork has closed it). A release registers the coming link on the directory
//! before the next request is read, and lookups, listings, renames and unlinks in that
//! directory wait for it, so a program that runs after `close` returned sees the file.

use crate::cache::ReadCache;
use crate::error::errno;
use eggs_client::{Client, ClientError, FileWriter, Stat};
use eggs_protocol::shuckle::BlockServicesReq;
use eggs_protocol::{cdc, shard, EggsTime, InodeId, InodeType, Name};
use fuser::consts::{
    FOPEN_KEEP_CACHE, FUSE_ATOMIC_O_TRUNC, FUSE_DO_READDIRPLUS, FUSE_PARALLEL_DIROPS,
    FUSE_READDIRPLUS_AUTO,
};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, Notifier, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, FUSE_ROOT_ID,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Largest read and write request asked of the kernel.
pub const MAX_IO_BYTES: u32 = 1 << 20;
/// Queued requests per file being written (the kernel sends one write at a time per writer,
/// so this is rarely more than a few).
const WRITE_QUEUE: usize = 64;
/// Entries whose attributes one readdirplus reply fetches at most.
const READDIRPLUS_BATCH: usize = 128;

/// Time-outs of the kernel's caches.
#[derive(Clone, Copy, Debug)]
pub struct CacheTimes {
    /// Names (dentries).
    pub entry: Duration,
    /// Attributes of directories (their mtime changes with every entry).
    pub dir_attr: Duration,
    /// Attributes of files: linked files never change but for their times.
    pub file_attr: Duration,
}

impl Default for CacheTimes {
    fn default() -> Self {
        CacheTimes {
            entry: Duration::from_secs(1),
            dir_attr: Duration::from_secs(1),
            file_attr: Duration::from_secs(10),
        }
    }
}

enum WriteMsg {
    Write {
        offset: u64,
        data: Vec<u8>,
        reply: ReplyWrite,
    },
    Truncate {
        size: u64,
        reply: ReplyAttr,
    },
    Flush {
        reply: ReplyEmpty,
    },
    Release {
        reply: ReplyEmpty,
    },
}

/// A file being written, shared by the queue's sender side and getattr.
struct Writing {
    tx: mpsc::Sender<WriteMsg>,
    /// Bytes accepted so far.
    size: AtomicU64,
    parent: InodeId,
    name: Name,
    /// Times asked for by setattr before the link, applied after it.
    times: Mutex<(Option<EggsTime>, Option<EggsTime>)>,
    /// Becomes true once the task is done with the file (linked or not).
    done: watch::Receiver<bool>,
    /// Whether the kernel released the handle (so the link is coming for sure).
    released: AtomicBool,
    /// After a flush (a close) the release may still be on its way (the kernel sends it
    /// asynchronously): until then lookups in the directory wait for it.
    grace_until: Mutex<Option<Instant>>,
    /// Whether `done` is in `Inner::linking`.
    registered: AtomicBool,
}

/// How long a lookup waits, after a close, for a release that may be on its way. The kernel
/// sends releases as background requests (at most `max_background` in flight, each answered
/// after its link), so after a `cp -r` of many files on a loaded machine the last releases
/// can arrive seconds after their close; 500 ms proved too short in CI. Only a listing in a
/// directory with a file still open through another descriptor (dup, fork) pays the wait.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

struct Inner {
    client: Arc<Client>,
    cache: Arc<ReadCache>,
    times: CacheTimes,
    uid: u32,
    gid: u32,
    next_fh: AtomicU64,
    /// Write handles by fh.
    handles: Mutex<HashMap<u64, Arc<Writing>>>,
    /// Files being written by inode (the transient file's, or the replaced file's for
    /// `O_TRUNC`), for getattr and truncation.
    writing: Mutex<HashMap<u64, Arc<Writing>>>,
    /// The last name each file was looked up by (files have one name), for `O_TRUNC`.
    names: Mutex<HashMap<u64, (InodeId, Name)>>,
    /// Files closed at least once and not yet linked, by directory.
    linking: Mutex<HashMap<InodeId, Vec<Arc<Writing>>>>,
    /// Listings of open directories, by fh.
    dirs: Mutex<HashMap<u64, Arc<Vec<eggs_client::DirEntry>>>>,
    statfs: Mutex<Option<(Instant, u64, u64)>>,
    notifier: OnceLock<Notifier>,
}

pub struct EggsFs {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn to_eggs(ino: u64) -> InodeId {
    if ino == FUSE_ROOT_ID {
        InodeId::ROOT
    } else {
        InodeId(ino)
    }
}

pub fn to_fuse(id: InodeId) -> u64 {
    if id == InodeId::ROOT {
        FUSE_ROOT_ID
    } else {
        id.0
    }
}

fn name_of(n: &OsStr) -> Result<Name, i32> {
    Name::new(n.as_bytes()).map_err(|_| {
        if n.len() > Name::MAX_LEN {
            libc::ENAMETOOLONG
        } else {
            libc::EINVAL
        }
    })
}

fn system_time(t: EggsTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(t.0)
}

fn eggs_time(t: TimeOrNow) -> EggsTime {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    EggsTime(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    )
}

fn kind_of(id: InodeId) -> FileType {
    match id.typ() {
        Some(InodeType::Directory) => FileType::Directory,
        Some(InodeType::Symlink) => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

impl Inner {
    fn attr(&self, id: InodeId, size: u64, mtime: SystemTime, atime: SystemTime) -> FileAttr {
        let kind = kind_of(id);
        FileAttr {
            ino: to_fuse(id),
            size,
            blocks: size.div_ceil(512),
            atime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: match kind {
                FileType::Directory => 0o755,
                FileType::Symlink => 0o777,
                _ => 0o644,
            },
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            // Programs size their buffers by this (cp reads and writes this much at once).
            blksize: MAX_IO_BYTES,
            flags: 0,
        }
    }

    fn ttl(&self, id: InodeId) -> Duration {
        if id.is_dir() {
            self.times.dir_attr
        } else {
            self.times.file_attr
        }
    }

    async fn getattr(&self, id: InodeId) -> Result<FileAttr, i32> {
        let writing = lock(&self.writing).get(&id.0).cloned();
        if let Some(w) = writing {
            let now = SystemTime::now();
            return Ok(self.attr(id, w.size.load(Ordering::Relaxed), now, now));
        }
        match self.client.stat(id).await.map_err(|e| errno(&e))? {
            Stat::Directory { mtime, .. } => {
                let t = system_time(mtime);
                Ok(self.attr(id, 0, t, t))
            }
            Stat::File { size, mtime, atime } => {
                Ok(self.attr(id, size, system_time(mtime), system_time(atime)))
            }
        }
    }

    /// Waits for the links in progress in directory `dir`: those of released handles, and
    /// those of handles closed in the last [`RELEASE_GRACE`] (whose release may be coming).
    async fn wait_links(&self, dir: InodeId) {
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
    fn pend_link(&self, w: &Arc<Writing>) {
        if w.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut linking = lock(&self.linking);
        let list = linking.entry(w.parent).or_default();
        list.retain(|x| !*x.done.borrow());
        list.push(w.clone());
    }

    fn end_link(&self, w: &Writing, done: watch::Sender<bool>) {
        let _ = done.send(true);
        let mut linking = lock(&self.linking);
        if let Some(list) = linking.get_mut(&w.parent) {
            list.retain(|x| !*x.done.borrow());
            if list.is_empty() {
                linking.remove(&w.parent);
            }
        }
    }

    fn remember_name(&self, id: InodeId, parent: InodeId, name: &Name) {
        if id.is_dir() {
            return;
        }
        let mut names = lock(&self.names);
        if names.len() > 1_000_000 {
            names.clear();
        }
        names.insert(id.0, (parent, name.clone()));
    }

    async fn lookup(&self, parent: InodeId, name: &Name) -> Result<FileAttr, i32> {
        self.wait_links(parent).await;
        let r = self
            .client
            .lookup(parent, name)
            .await
            .map_err(|e| errno(&e))?;
        self.remember_name(r.target_id, parent, name);
        self.getattr(r.target_id).await
    }

    async fn set_times(
        &self,
        id: InodeId,
        atime: Option<EggsTime>,
        mtime: Option<EggsTime>,
    ) -> Result<(), ClientError> {
        if atime.is_none() && mtime.is_none() {
            return Ok(());
        }
        self.client.set_time(id, mtime, atime).await
    }

    async fn statfs(&self) -> Result<(u64, u64), ClientError> {
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

    /// Starts a writer for a new file that will be linked as `name` in `parent`; `ino` is
    /// what the kernel knows the file as (the replaced file's inode for `O_TRUNC`).
    async fn start_writer(
        self: &Arc<Self>,
        parent: InodeId,
        name: Name,
        replaced: Option<InodeId>,
        fh: u64,
    ) -> Result<InodeId, i32> {
        let writer = FileWriter::new(self.client.clone(), parent, InodeType::File)
            .await
            .map_err(|e| {
                tracing::warn!("creating {name} in {parent}: {e}");
                errno(&e)
            })?;
        let id = writer.id();
        let ino = replaced.unwrap_or(id);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (done_tx, done) = watch::channel(false);
        let w = Arc::new(Writing {
            tx,
            size: AtomicU64::new(0),
            parent,
            name,
            times: Mutex::new((None, None)),
            done,
            released: AtomicBool::new(false),
            grace_until: Mutex::new(None),
            registered: AtomicBool::new(false),
        });
        lock(&self.handles).insert(fh, w.clone());
        lock(&self.writing).insert(ino.0, w.clone());
        let task = self
            .clone()
            .write_task(writer, w, ino, replaced.is_some(), rx, done_tx);
        tokio::spawn(task);
        Ok(ino)
    }

    /// Owns one file's writer: applies its queued requests in order, links it on release.
    async fn write_task(
        self: Arc<Self>,
        mut writer: FileWriter,
        w: Arc<Writing>,
        ino: InodeId,
        replacing: bool,
        mut rx: mpsc::Receiver<WriteMsg>,
        done: watch::Sender<bool>,
    ) {
        // Once a span could not be stored the file is lost: later writes fail and the
        // release does not link it.
        let mut failed = false;
        while let Some(msg) = rx.recv().await {
            match msg {
                WriteMsg::Write {
                    offset,
                    data,
                    reply,
                } => {
                    if failed {
                        reply.error(libc::EIO);
                    } else if offset != writer.size() {
                        // Only sequential writes at the end are possible.
                        reply.error(libc::EOPNOTSUPP);
                    } else if let Err(e) = writer.append(&data).await {
                        tracing::error!("writing {}: {e}", writer.id());
                        failed = true;
                        reply.error(libc::EIO);
                    } else {
                        w.size.store(writer.size(), Ordering::Relaxed);
                        reply.written(data.len() as u32);
                    }
                }
                WriteMsg::Truncate { size, reply } => match writer.truncate(size).await {
                    _ if failed => reply.error(libc::EIO),
                    Ok(true) => {
                        w.size.store(writer.size(), Ordering::Relaxed);
                        let now = SystemTime::now();
                        reply.attr(
                            &self.times.file_attr,
                            &self.attr(ino, writer.size(), now, now),
                        );
                    }
                    Ok(false) => reply.error(libc::EOPNOTSUPP),
                    Err(e) => {
                        tracing::error!("extending {}: {e}", writer.id());
                        failed = true;
                        reply.error(libc::EIO);
                    }
                },
                WriteMsg::Flush { reply } => {
                    if replacing {
                        // close() waits for flush, not for release: drop the kernel's name
                        // for the old file now, so that whoever opens the name after close()
                        // returns asks us, and so waits for the link.
                        self.forget_name(&w).await;
                    }
                    if failed {
                        reply.error(libc::EIO)
                    } else {
                        reply.ok()
                    }
                }
                WriteMsg::Release { reply } => {
                    let id = writer.id();
                    let r = if failed {
                        Err(libc::EIO)
                    } else {
                        self.link(writer, &w).await
                    };
                    lock(&self.writing).remove(&ino.0);
                    self.remember_name(id, w.parent, &w.name);
                    self.end_link(&w, done);
                    if replacing {
                        // The name now points at the new file.
                        self.forget_name(&w).await;
                    }
                    match r {
                        Ok(()) => reply.ok(),
                        Err(e) => reply.error(e),
                    }
                    return;
                }
            }
        }
    }

    /// Makes the kernel forget the name `w` will be linked as.
    async fn forget_name(&self, w: &Writing) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let parent = to_fuse(w.parent);
        let name = OsStr::from_bytes(w.name.as_bytes()).to_owned();
        // Off the async workers: the kernel may take the directory's lock.
        let r = tokio::task::spawn_blocking(move || n.inval_entry(parent, &name)).await;
        if let Ok(Err(e)) = r {
            // ENOENT: the kernel had no such name cached.
            tracing::debug!("invalidating {} in {parent}: {e}", w.name);
        }
    }

    async fn link(&self, writer: FileWriter, w: &Writing) -> Result<(), i32> {
        let id = writer.id();
        writer.finish(&w.name).await.map_err(|e| {
            tracing::error!("linking {id} as {} in {}: {e}", w.name, w.parent);
            errno(&e)
        })?;
        let (atime, mtime) = *lock(&w.times);
        if let Err(e) = self.set_times(id, atime, mtime).await {
            tracing::warn!("setting the times of {id}: {e}");
        }
        Ok(())
    }

    async fn readdirplus(
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
            let attr = match st {
                Stat::Directory { mtime, .. } => {
                    let t = system_time(mtime);
                    self.attr(e.target_id, 0, t, t)
                }
                Stat::File { size, mtime, atime } => {
                    self.attr(e.target_id, size, system_time(mtime), system_time(atime))
                }
            };
            self.remember_name(e.target_id, dir, &e.name);
            let next = (start + i + 3) as i64;
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

impl EggsFs {
    pub fn new(
        client: Arc<Client>,
        rt: tokio::runtime::Handle,
        times: CacheTimes,
        read_cache_bytes: usize,
    ) -> EggsFs {
        let cache = Arc::new(ReadCache::new(client.clone(), read_cache_bytes));
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        EggsFs {
            inner: Arc::new(Inner {
                client,
                cache,
                times,
                uid,
                gid,
                next_fh: AtomicU64::new(1),
                handles: Mutex::new(HashMap::new()),
                writing: Mutex::new(HashMap::new()),
                names: Mutex::new(HashMap::new()),
                linking: Mutex::new(HashMap::new()),
                dirs: Mutex::new(HashMap::new()),
                statfs: Mutex::new(None),
                notifier: OnceLock::new(),
            }),
            rt,
        }
    }

    /// A handle to the state, for setting the notifier after the session took `self`.
    pub fn notifier_slot(&self) -> NotifierSlot {
        NotifierSlot(self.inner.clone())
    }

    fn fh(&self) -> u64 {
        self.inner.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn spawn<F>(&self, f: impl FnOnce(Arc<Inner>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f(self.inner.clone()));
    }

    /// Sends a request to the writer of `fh`, in the order the kernel sent them.
    fn send(&self, w: &Writing, msg: WriteMsg) {
        // The FUSE loop is a plain thread: blocking here applies back-pressure to a writer
        // that is ahead of its spans being stored.
        if let Err(mpsc::error::SendError(msg)) = w.tx.blocking_send(msg) {
            let e = libc::EIO;
            match msg {
                WriteMsg::Write { reply, .. } => reply.error(e),
                WriteMsg::Truncate { reply, .. } => reply.error(e),
                WriteMsg::Flush { reply } | WriteMsg::Release { reply, .. } => reply.error(e),
            }
        }
    }
}

pub struct NotifierSlot(Arc<Inner>);

impl NotifierSlot {
    pub fn set(&self, n: Notifier) {
        let _ = self.0.notifier.set(n);
    }
}

impl Filesystem for EggsFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), i32> {
        let _ = config.set_max_write(MAX_IO_BYTES);
        let _ = config.set_max_readahead(MAX_IO_BYTES);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        for cap in [
            FUSE_ATOMIC_O_TRUNC,
            FUSE_DO_READDIRPLUS,
            FUSE_READDIRPLUS_AUTO,
            FUSE_PARALLEL_DIROPS,
        ] {
            if let Err(unsupported) = config.add_capabilities(cap) {
                tracing::info!("kernel lacks FUSE capability {unsupported:#x}");
            }
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        self.spawn(|fs| async move {
            match fs.lookup(to_eggs(parent), &name).await {
                Ok(attr) => reply.entry(&fs.times.entry, &attr, 0),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let id = to_eggs(ino);
        self.spawn(|fs| async move {
            match fs.getattr(id).await {
                Ok(attr) => reply.attr(&fs.ttl(id), &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Modes and owners are not stored: changing them succeeds and changes nothing, so
        // that cp -p, rsync -a and tar work.
        let id = to_eggs(ino);
        let (atime, mtime) = (atime.map(eggs_time), mtime.map(eggs_time));
        let writing = lock(&self.inner.writing).get(&ino).cloned();
        if let Some(w) = writing {
            {
                let mut t = lock(&w.times);
                t.0 = atime.or(t.0);
                t.1 = mtime.or(t.1);
            }
            return match size {
                Some(size) => self.send(&w, WriteMsg::Truncate { size, reply }),
                None => {
                    let now = SystemTime::now();
                    let size = w.size.load(Ordering::Relaxed);
                    reply.attr(
                        &self.inner.times.file_attr,
                        &self.inner.attr(id, size, now, now),
                    )
                }
            };
        }
        self.spawn(|fs| async move {
            let attr = match fs.getattr(id).await {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            if size.is_some_and(|s| s != attr.size) {
                // Linked files are immutable.
                return reply.error(libc::EPERM);
            }
            // For a directory only mtime is kept (the shard ignores atime), so that a second
            // `rsync -a` sees the times it copied.
            if let Err(e) = fs.set_times(id, atime, mtime).await {
                tracing::warn!("setting times of {id}: {e}");
                return reply.error(errno(&e));
            }
            match fs.getattr(id).await {
                Ok(a) => reply.attr(&fs.ttl(id), &a),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let id = to_eggs(ino);
        self.spawn(|fs| async move {
            match fs.client.read_file(id).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        self.spawn(|fs| async move {
            let r = fs.client.mkdir_in(to_eggs(parent), &name).await;
            let attr = match r {
                Ok(id) => fs.getattr(id).await,
                Err(e) => Err(errno(&e)),
            };
            match attr {
                Ok(a) => reply.entry(&fs.times.entry, &a, 0),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let dir_id = to_eggs(parent);
        self.spawn(|fs| async move {
            fs.wait_links(dir_id).await;
            let r = async {
                let edge = fs.client.lookup(dir_id, &name).await?;
                if edge.target_id.is_dir() {
                    return Ok(Err(libc::EISDIR));
                }
                fs.client
                    .shard_request(
                        dir_id.shard(),
                        shard::SoftUnlinkFileReq {
                            dir_id,
                            target_id: edge.target_id,
                            name: name.clone(),
                            creation_time: edge.creation_time,
                        },
                    )
                    .await?;
                Ok::<_, ClientError>(Ok(()))
            }
            .await;
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(e),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let owner_id = to_eggs(parent);
        self.spawn(|fs| async move {
            fs.wait_links(owner_id).await;
            let r = async {
                let edge = fs.client.lookup(owner_id, &name).await?;
                if !edge.target_id.is_dir() {
                    return Ok(Err(libc::ENOTDIR));
                }
                fs.client
                    .cdc_request(cdc::RemoveDirectoryReq {
                        owner_id,
                        target_id: edge.target_id,
                        name: name.clone(),
                        creation_time: edge.creation_time,
                    })
                    .await?;
                Ok::<_, ClientError>(Ok(()))
            }
            .await;
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(e),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match name_of(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        let parent = to_eggs(parent);
        self.spawn(|fs| async move {
            let r = async {
                // Like `ln -s`, never replace an existing name.
                match fs.client.lookup(parent, &name).await {
                    Ok(_) => return Ok(Err(libc::EEXIST)),
                    Err(e) if errno(&e) == libc::ENOENT => {}
                    Err(e) => return Err(e),
                }
                let mut w = FileWriter::new(fs.client.clone(), parent, InodeType::Symlink).await?;
                let id = w.id();
                w.append(&target).await?;
                w.finish(&name).await?;
                Ok(Ok(id))
            }
            .await;
            let attr = match r {
                Ok(Ok(id)) => fs.getattr(id).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(errno(&e)),
            };
            match attr {
                Ok(a) => reply.entry(&fs.times.entry, &a, 0),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT.
            return reply.error(libc::EINVAL);
        }
        let (from, to) = (to_eggs(parent), to_eggs(newparent));
        self.spawn(|fs| async move {
            fs.wait_links(from).await;
            if to != from {
                fs.wait_links(to).await;
            }
            let r = async {
                let edge = fs.client.lookup(from, &name).await?;
                if flags & libc::RENAME_NOREPLACE != 0 {
                    match fs.client.lookup(to, &newname).await {
                        Ok(_) => return Ok(Err(libc::EEXIST)),
                        Err(e) if errno(&e) == libc::ENOENT => {}
                        Err(e) => return Err(e),
                    }
                }
                fs.client
                    .rename_edge(
                        edge.target_id,
                        from,
                        &name,
                        edge.creation_time,
                        to,
                        &newname,
                    )
                    .await?;
                fs.remember_name(edge.target_id, to, &newname);
                Ok::<_, ClientError>(Ok(()))
            }
            .await;
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(e),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let id = to_eggs(ino);
        let accmode = flags & libc::O_ACCMODE;
        if accmode == libc::O_RDONLY {
            // Linked files never change, so the kernel may keep their pages across opens.
            return reply.opened(0, FOPEN_KEEP_CACHE);
        }
        if lock(&self.inner.writing).contains_key(&ino) {
            // Being written by another handle.
            return reply.error(libc::EBUSY);
        }
        let known = lock(&self.inner.names).get(&ino).cloned();
        let fh = self.fh();
        self.spawn(|fs| async move {
            let Some((parent, name)) = known else {
                return reply.error(libc::EPERM);
            };
            if flags & libc::O_TRUNC == 0 {
                // Writing into an existing file is impossible; replacing an empty one is
                // the same as truncating it.
                match fs.getattr(id).await {
                    Ok(a) if a.size == 0 => {}
                    Ok(_) => return reply.error(libc::EPERM),
                    Err(e) => return reply.error(e),
                }
            }
            match fs.start_writer(parent, name, Some(id), fh).await {
                Ok(_) => reply.opened(fh, 0),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        if lock(&self.inner.handles).contains_key(&fh) {
            // A file being written cannot be read back until it is linked.
            return reply.error(libc::EOPNOTSUPP);
        }
        let id = to_eggs(ino);
        let offset = offset.max(0) as u64;
        self.spawn(|fs| async move {
            match fs.cache.read(id, offset, size as usize).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::warn!("reading {id} at {offset}: {e}");
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(w) = lock(&self.inner.handles).get(&fh).cloned() else {
            return reply.error(libc::EBADF);
        };
        let msg = WriteMsg::Write {
            offset: offset.max(0) as u64,
            data: data.to_vec(),
            reply,
        };
        self.send(&w, msg);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _lock: u64, reply: ReplyEmpty) {
        match lock(&self.inner.handles).get(&fh).cloned() {
            Some(w) => {
                // Perhaps the last close: lookups wait a little for the release.
                *lock(&w.grace_until) = Some(Instant::now() + RELEASE_GRACE);
                self.inner.pend_link(&w);
                self.send(&w, WriteMsg::Flush { reply })
            }
            None => reply.ok(),
        }
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _data: bool, reply: ReplyEmpty) {
        // Stored spans are durable; the rest becomes durable when the file is linked.
        match lock(&self.inner.handles).get(&fh).cloned() {
            Some(w) => self.send(&w, WriteMsg::Flush { reply }),
            None => reply.ok(),
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(w) = lock(&self.inner.handles).remove(&fh) else {
            return reply.ok();
        };
        // Registered before the next request is read, so later lookups wait for the link.
        w.released.store(true, Ordering::Release);
        self.inner.pend_link(&w);
        self.send(&w, WriteMsg::Release { reply });
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let id = to_eggs(ino);
        let fh = self.fh();
        self.spawn(|fs| async move {
            fs.wait_links(id).await;
            match fs.client.readdir(id).await {
                Ok(entries) => {
                    lock(&fs.dirs).insert(fh, Arc::new(entries));
                    reply.opened(fh, 0);
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.inner.dirs).get(&fh).cloned() else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as usize;
        let dots = [(ino, "."), (ino, "..")];
        for (i, (dino, n)) in dots.iter().enumerate().skip(offset) {
            if reply.add(*dino, i as i64 + 1, FileType::Directory, n) {
                return reply.ok();
            }
        }
        for (i, e) in entries.iter().enumerate().skip(offset.saturating_sub(2)) {
            let name = OsStr::from_bytes(e.name.as_bytes());
            let kind = kind_of(e.target_id);
            if reply.add(to_fuse(e.target_id), i as i64 + 3, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = lock(&self.inner.dirs).get(&fh).cloned() else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as usize;
        self.spawn(|fs| async move { fs.readdirplus(to_eggs(ino), entries, offset, reply).await });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        lock(&self.inner.dirs).remove(&fh);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.spawn(|fs| async move {
            const BSIZE: u64 = 4096;
            match fs.statfs().await {
                Ok((cap, free)) => reply.statfs(
                    cap / BSIZE,
                    free / BSIZE,
                    free / BSIZE,
                    0,
                    0,
                    BSIZE as u32,
                    Name::MAX_LEN as u32,
                    BSIZE as u32,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let _ = flags;
        let fh = self.fh();
        let parent = to_eggs(parent);
        self.spawn(|fs| async move {
            match fs.start_writer(parent, name, None, fh).await {
                Ok(id) => {
                    let now = SystemTime::now();
                    let attr = fs.attr(id, 0, now, now);
                    // The name is not cached: until the file is linked, looking it up fails
                    // (the file is invisible until closed), and afterwards waits for the link.
                    reply.created(&Duration::ZERO, &attr, 0, fh, 0);
                }
                Err(e) => reply.error(e),
            }
        });
    }
}
