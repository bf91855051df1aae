//! The write path: one task per file being written owns its [`FileWriter`] and applies the
//! handle's writes, truncations, flushes and release in the order the kernel sent them; the
//! release links the file.

use super::state::Inner;
use super::{lock, to_fuse, EggsFs};
use crate::error::errno;
use eggs_client::FileWriter;
use eggs_protocol::{InodeAttrs, InodeId, InodeType, Name};
use fuser::{ReplyAttr, ReplyEmpty, ReplyWrite};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Queued requests per file being written (the kernel sends one write at a time per writer,
/// so this is rarely more than a few).
const WRITE_QUEUE: usize = 64;

pub(super) enum WriteMsg {
    Write {
        offset: u64,
        data: Vec<u8>,
        reply: ReplyWrite,
    },
    Truncate {
        size: u64,
        reply: ReplyAttr,
    },
    /// A truncation within a setattr that also changes attributes (which answers it).
    TruncateThen {
        size: u64,
        done: tokio::sync::oneshot::Sender<Result<(), i32>>,
    },
    Flush {
        reply: ReplyEmpty,
    },
    Release {
        reply: ReplyEmpty,
    },
}

/// Where a file being written will be linked. Until its link starts, this mount answers for
/// the name itself (lookups, getattr, chmod), and a rename or unlink of it changes this.
pub(super) struct Target {
    pub(super) parent: InodeId,
    pub(super) name: Name,
    /// The release began linking: from now on the name is the shard's to answer for.
    pub(super) linking: bool,
    /// Unlinked before it was linked: the release drops the file instead.
    pub(super) unlinked: bool,
}

/// A file being written, shared by the queue's sender side, getattr and the namespace
/// callbacks.
pub(super) struct Writing {
    pub(super) tx: mpsc::Sender<WriteMsg>,
    /// Bytes accepted so far.
    pub(super) size: AtomicU64,
    /// The inode the kernel knows the file as (the replaced file's for `O_TRUNC`).
    pub(super) ino: InodeId,
    /// The transient file and its cookie, for attribute changes before the link.
    pub(super) file_id: InodeId,
    pub(super) cookie: u64,
    /// The file an `O_TRUNC` open replaces, whose name this one takes.
    pub(super) replaced: Option<InodeId>,
    pub(super) target: Mutex<Target>,
    /// Mode, owner and group as the shard last confirmed them.
    pub(super) attrs: Mutex<InodeAttrs>,
    /// Access and modification times a setattr gave it (the link keeps them), if any.
    pub(super) times: Mutex<Option<(SystemTime, SystemTime)>>,
    /// Becomes true once the task is done with the file (linked or not).
    pub(super) done: watch::Receiver<bool>,
    /// Whether the kernel released the handle (so the link is coming for sure).
    pub(super) released: AtomicBool,
    /// After a flush (a close) the release may still be on its way (the kernel sends it
    /// asynchronously): until then lookups in the directory wait for it.
    pub(super) grace_until: Mutex<Option<Instant>>,
    /// Whether `done` is in `Inner::linking`.
    pub(super) registered: AtomicBool,
}

/// How long a lookup waits, after a close, for a release that may be on its way. The kernel
/// sends releases as background requests (at most `max_background` in flight, each answered
/// after its link), so after a `cp -r` of many files on a loaded machine the last releases
/// can arrive seconds after their close; 500 ms proved too short in CI. Only a listing in a
/// directory with a file still open through another descriptor (dup, fork) pays the wait.
pub(super) const RELEASE_GRACE: Duration = Duration::from_secs(5);

impl Inner {
    /// Starts a writer for a new file that will be linked as `name` in `parent`; `ino` is
    /// what the kernel knows the file as (the replaced file's inode for `O_TRUNC`).
    pub(super) async fn start_writer(
        self: &Arc<Self>,
        parent: InodeId,
        name: Name,
        replaced: Option<InodeId>,
        attrs: InodeAttrs,
        fh: u64,
    ) -> Result<Arc<Writing>, i32> {
        let writer = FileWriter::with_attrs(&self.client, parent, InodeType::File, attrs, 0)
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
            ino,
            file_id: id,
            cookie: writer.cookie(),
            replaced,
            target: Mutex::new(Target {
                parent,
                name: name.clone(),
                linking: false,
                unlinked: false,
            }),
            attrs: Mutex::new(attrs),
            times: Mutex::new(None),
            done,
            released: AtomicBool::new(false),
            grace_until: Mutex::new(None),
            registered: AtomicBool::new(false),
        });
        lock(&self.handles).insert(fh, w.clone());
        lock(&self.writing).insert(ino.0, w.clone());
        // From now on this mount answers for the name (a local file system shows a created
        // file at once, and a closed one must never be missing while its link runs).
        lock(&self.pending).insert((parent, name), w.clone());
        let task = self
            .clone()
            .write_task(writer, w.clone(), ino, replaced.is_some(), rx, done_tx);
        tokio::spawn(task);
        Ok(w)
    }

    /// Opens `ino`, which is not being written (any more): for reading as it is, for writing
    /// as a new file that replaces it (only with `O_TRUNC`, or when it is empty).
    pub(super) async fn open_linked(
        self: &Arc<Self>,
        ino: u64,
        flags: i32,
        fh: u64,
        reply: fuser::ReplyOpen,
    ) {
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            // Linked files never change, so the kernel may keep their pages across opens.
            return reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE);
        }
        if lock(&self.writing).contains_key(&ino) {
            // Being written by another handle.
            return reply.error(libc::EBUSY);
        }
        let id = super::to_eggs(ino);
        let Some((parent, name)) = lock(&self.names).get(&ino).cloned() else {
            return reply.error(libc::EPERM);
        };
        // The new file keeps the replaced one's mode, owner and group, as truncating would.
        let st = match self.client.stat(id).await {
            Ok(st) => st,
            Err(e) => return reply.error(errno(&e)),
        };
        if flags & libc::O_TRUNC == 0 && st.size() != 0 {
            // Writing into an existing file is impossible; replacing an empty one is the
            // same as truncating it.
            return reply.error(libc::EPERM);
        }
        if st.attrs().file_type() != eggs_protocol::posix::S_IFREG {
            return reply.error(libc::EPERM);
        }
        match self
            .start_writer(parent, name, Some(id), st.attrs(), fh)
            .await
        {
            Ok(_) => reply.opened(fh, 0),
            Err(e) => reply.error(e),
        }
    }

    /// Owns one file's writer: applies its queued requests in order, links it on release.
    pub(super) async fn write_task(
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
                        // At most the mount's max_write.
                        reply.written(eggs_protocol::conv::fit(data.len()));
                    }
                }
                WriteMsg::Truncate { size, reply } => match writer.truncate(size).await {
                    _ if failed => reply.error(libc::EIO),
                    Ok(true) => {
                        w.size.store(writer.size(), Ordering::Relaxed);
                        let now = SystemTime::now();
                        reply.attr(&self.times.file_attr, &self.writing_attr(&w, now));
                    }
                    Ok(false) => reply.error(libc::EOPNOTSUPP),
                    Err(e) => {
                        tracing::error!("extending {}: {e}", writer.id());
                        failed = true;
                        reply.error(libc::EIO);
                    }
                },
                WriteMsg::TruncateThen { size, done } => {
                    let r = match writer.truncate(size).await {
                        _ if failed => Err(libc::EIO),
                        Ok(true) => {
                            w.size.store(writer.size(), Ordering::Relaxed);
                            Ok(())
                        }
                        Ok(false) => Err(libc::EOPNOTSUPP),
                        Err(e) => {
                            tracing::error!("extending {}: {e}", writer.id());
                            failed = true;
                            Err(libc::EIO)
                        }
                    };
                    let _ = done.send(r);
                }
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
                    let (parent, name, unlinked) = {
                        let mut t = lock(&w.target);
                        t.linking = true;
                        (t.parent, t.name.clone(), t.unlinked)
                    };
                    let r = if failed {
                        Err(libc::EIO)
                    } else if unlinked {
                        // Removed before it was linked: it stays transient, and GC takes it.
                        Ok(())
                    } else {
                        self.link(writer, parent, &name).await
                    };
                    lock(&self.writing).remove(&ino.0);
                    if !unlinked {
                        self.remember_name(id, parent, &name);
                    }
                    // Reads meanwhile saw the half-stored file, and the kernel's attributes
                    // are those of the file being written.
                    self.cache.forget(id);
                    self.cache.forget(ino);
                    self.forget_inode(ino);
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

    /// Makes the kernel drop the attributes (and pages) it has of `ino`. Not awaited: the
    /// kernel may want the reply to the request being handled first.
    pub(super) fn forget_inode(&self, ino: InodeId) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let ino = to_fuse(ino);
        // Off the async workers, as in `forget_name`.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = n.inval_inode(ino, 0, 0) {
                tracing::debug!("invalidating inode {ino}: {e}");
            }
        });
    }

    /// Makes the kernel forget the name `w` will be linked as.
    pub(super) async fn forget_name(&self, w: &Writing) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let (parent, name) = {
            let t = lock(&w.target);
            (t.parent, t.name.clone())
        };
        let shown = name.clone();
        let parent = to_fuse(parent);
        let name = OsStr::from_bytes(name.as_bytes()).to_owned();
        // Off the async workers: the kernel may take the directory's lock.
        let r = tokio::task::spawn_blocking(move || n.inval_entry(parent, &name)).await;
        if let Ok(Err(e)) = r {
            // ENOENT: the kernel had no such name cached.
            tracing::debug!("invalidating {shown} in {parent}: {e}");
        }
    }

    /// Links the file (its attributes and the times set meanwhile are already on the
    /// transient file, which the link keeps).
    pub(super) async fn link(
        &self,
        writer: FileWriter,
        parent: InodeId,
        name: &Name,
    ) -> Result<(), i32> {
        let id = writer.id();
        writer.finish_in(parent, name).await.map_err(|e| {
            tracing::error!("linking {id} as {name} in {parent}: {e}");
            errno(&e)
        })?;
        Ok(())
    }
}

impl EggsFs {
    /// Sends a request to the writer of `fh`, in the order the kernel sent them.
    pub(super) fn send(&self, w: &Writing, msg: WriteMsg) {
        // The FUSE loop is a plain thread: blocking here applies back-pressure to a writer
        // that is ahead of its spans being stored.
        if let Err(mpsc::error::SendError(msg)) = w.tx.blocking_send(msg) {
            let e = libc::EIO;
            match msg {
                WriteMsg::Write { reply, .. } => reply.error(e),
                WriteMsg::Truncate { reply, .. } => reply.error(e),
                WriteMsg::TruncateThen { done, .. } => {
                    let _ = done.send(Err(e));
                }
                WriteMsg::Flush { reply } | WriteMsg::Release { reply, .. } => reply.error(e),
            }
        }
    }
}
