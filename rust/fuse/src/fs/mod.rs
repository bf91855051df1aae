//! The FUSE file system: every callback hands its work to the tokio runtime together with
//! its reply, so one slow request never holds up the FUSE loop.
//!
//! Where what is: `callbacks.rs` (the `fuser::Filesystem` callbacks, each a thin shell that
//! parses its arguments and spawns), `state.rs` (the state they share: attributes, the names
//! the kernel knows, pending links, statfs, readdirplus), `write.rs` (the write path).
//!
//! Writes: a file is written by one handle, sequentially. The handle's writes, truncations,
//! flushes and its release go, in the order the kernel sent them, through a queue to one task
//! that owns the file's [`eggs_client::FileWriter`]; the release links the file (so it becomes
//! visible when its last descriptor is closed: the kernel sends one release per open file
//! description, after every dup and fork has closed it). A release registers the coming link
//! on the directory before the next request is read, and lookups, listings, renames and
//! unlinks in that directory wait for it, so a program that runs after `close` returned sees
//! the file.

mod callbacks;
mod pending;
mod state;
mod write;

use crate::cache::ReadCache;
use eggs_client::Client;
use eggs_protocol::{EggsTime, InodeId, InodeType, Name};
use fuser::{FileType, Notifier, TimeOrNow, FUSE_ROOT_ID};
use state::Inner;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest read and write request asked of the kernel.
pub const MAX_IO_BYTES: u32 = 1 << 20;

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

/// A time setattr asks for: "now" stays the shard's now (which needs only write
/// permission, where a given time needs ownership).
fn set_time(t: TimeOrNow) -> eggs_protocol::SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => eggs_protocol::SetTime::At(EggsTime(
            t.duration_since(UNIX_EPOCH)
                .map_or(0, eggs_protocol::conv::nanos_of),
        )),
        TimeOrNow::Now => eggs_protocol::SetTime::Now,
    }
}

/// The file type by inode id alone (listings, which carry no modes): a file's id says
/// whether it is a regular file, a FIFO, a socket or a device.
fn kind_of(id: InodeId) -> FileType {
    use eggs_protocol::FileKind;
    match id.typ() {
        Some(InodeType::Directory) => FileType::Directory,
        Some(InodeType::Symlink) => FileType::Symlink,
        _ => match id.file_kind() {
            Some(FileKind::Fifo) => FileType::NamedPipe,
            Some(FileKind::Socket) => FileType::Socket,
            Some(FileKind::CharDevice) => FileType::CharDevice,
            Some(FileKind::BlockDevice) => FileType::BlockDevice,
            _ => FileType::RegularFile,
        },
    }
}

fn kind_of_mode(mode: u32) -> FileType {
    use eggs_protocol::posix::*;
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFIFO => FileType::NamedPipe,
        S_IFSOCK => FileType::Socket,
        S_IFCHR => FileType::CharDevice,
        S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The process a kernel request comes from, as the shard is to see it.
fn caller_of(req: &fuser::Request<'_>) -> eggs_protocol::Caller {
    eggs_common::creds::of_process(req.pid(), req.uid(), req.gid())
}

impl EggsFs {
    pub fn new(
        client: Arc<Client>,
        rt: tokio::runtime::Handle,
        times: CacheTimes,
        read_cache_bytes: usize,
    ) -> EggsFs {
        let cache = Arc::new(ReadCache::new(client.clone(), read_cache_bytes));
        EggsFs {
            inner: Arc::new(Inner {
                client,
                cache,
                times,
                next_fh: AtomicU64::new(1),
                handles: Mutex::new(HashMap::new()),
                writing: Mutex::new(HashMap::new()),
                names: Mutex::new(HashMap::new()),
                linking: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
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
}

pub struct NotifierSlot(Arc<Inner>);

impl NotifierSlot {
    pub fn set(&self, n: Notifier) {
        let _ = self.0.notifier.set(n);
    }
}
