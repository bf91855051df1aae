//! The write path: one task per file being written owns its [`FileWriter`] and applies the
//! handle's writes, truncations, flushes and release in the order the kernel sent them; the
//! release links the file.

use super::state::Inner;
use super::{lock, to_fuse, EggsFs};
use crate::error::errno;
use eggs_client::FileWriter;
use eggs_protocol::{EggsTime, InodeId, InodeType, Name};
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
    Flush {
        reply: ReplyEmpty,
    },
    Release {
        reply: ReplyEmpty,
    },
}

/// A file being written, shared by the queue's sender side and getattr.
pub(super) struct Writing {
    pub(super) tx: mpsc::Sender<WriteMsg>,
    /// Bytes accepted so far.
    pub(super) size: AtomicU64,
    pub(super) parent: InodeId,
    pub(super) name: Name,
    /// Times asked for by setattr before the link, applied after it.
    pub(super) times: Mutex<(Option<EggsTime>, Option<EggsTime>)>,
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
        fh: u64,
    ) -> Result<InodeId, i32> {
        let writer = FileWriter::new(&self.client, parent, InodeType::File)
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
    pub(super) async fn forget_name(&self, w: &Writing) {
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

    pub(super) async fn link(&self, writer: FileWriter, w: &Writing) -> Result<(), i32> {
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
                WriteMsg::Flush { reply } | WriteMsg::Release { reply, .. } => reply.error(e),
            }
        }
    }
}
