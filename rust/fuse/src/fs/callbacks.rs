//! The `fuser::Filesystem` callbacks: each parses its arguments, answers at once what needs
//! no server, and otherwise spawns the work (with its reply) on the runtime.

use super::write::{WriteMsg, RELEASE_GRACE};
use super::{caller_of, kind_of, lock, name_of, set_time, to_eggs, to_fuse, EggsFs, MAX_IO_BYTES};
use crate::error::errno;
use eggs_client::{ClientError, FileWriter};
use eggs_protocol::conv::{fit, usize_of};
use eggs_protocol::posix::{self, AttrChange, PERM_BITS};
use eggs_protocol::{InodeType, Name};
use fuser::consts::{
    FOPEN_KEEP_CACHE, FUSE_ATOMIC_O_TRUNC, FUSE_DO_READDIRPLUS, FUSE_PARALLEL_DIROPS,
    FUSE_READDIRPLUS_AUTO,
};
use fuser::{
    FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
                // A file being written is not cached: its attributes change with its link.
                Ok((attr, true)) => reply.entry(&Duration::ZERO, &attr, 0),
                Ok((attr, false)) => reply.entry(&fs.times.entry, &attr, 0),
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
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        let id = to_eggs(ino);
        let caller = caller_of(req);
        let change = AttrChange {
            mode: mode.map(|m| m & PERM_BITS),
            uid,
            gid,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        let writing = lock(&self.inner.writing).get(&ino).cloned();
        if let Some(w) = writing {
            if change.is_empty() {
                if let Some(size) = size {
                    return self.send(&w, WriteMsg::Truncate { size, reply });
                }
            }
            return self.spawn(|fs| async move {
                fs.setattr_writing(w, caller, change, size, reply).await
            });
        }
        self.spawn(|fs| async move {
            if id.is_dir() {
                // A file closed in it just now is linked after this otherwise, and its link
                // would set the mtime that `rsync -a` or `touch` is setting to now again.
                fs.wait_links(id).await;
            }
            if let Some(size) = size {
                match fs.getattr(id).await {
                    // Linked files are immutable.
                    Ok(a) if a.size != size => return reply.error(libc::EPERM),
                    Ok(_) => {}
                    Err(e) => return reply.error(e),
                }
            }
            if !change.is_empty() {
                if let Err(e) = fs.client.set_attr(id, None, &caller, change).await {
                    tracing::debug!("setattr of {id}: {e}");
                    return reply.error(errno(&e));
                }
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
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller_of(req);
        let mode = posix::S_IFDIR | (mode & PERM_BITS & !umask);
        let parent = to_eggs(parent);
        self.spawn(|fs| async move {
            let r = async {
                let attrs = fs.client.new_attrs(parent, &caller, mode).await?;
                fs.client.mkdir_with(parent, &name, attrs).await
            }
            .await;
            fs.reply_created(r, parent, &name, reply).await;
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let dir_id = to_eggs(parent);
        self.spawn(|fs| async move {
            if fs.unlink_pending(dir_id, &name).await {
                return reply.ok();
            }
            match fs.client.unlink_in(dir_id, &name).await {
                Ok(()) => reply.ok(),
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
            // Files being written in it are entries already (the shard learns of them when
            // they are linked, which would then fail).
            if let Ok(child) = fs.client.lookup(owner_id, &name).await {
                if fs.has_pending_in(child.target_id) {
                    return reply.error(libc::ENOTEMPTY);
                }
                fs.wait_links(child.target_id).await;
            }
            match fs.client.rmdir_in(owner_id, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
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
        let caller = caller_of(req);
        self.spawn(|fs| async move {
            let r = async {
                // Like `ln -s`, never replace an existing name.
                fs.ensure_absent(parent, &name).await?;
                let mode = posix::S_IFLNK | 0o777;
                let attrs = fs.client.new_attrs(parent, &caller, mode).await?;
                let typ = InodeType::Symlink;
                let mut w = FileWriter::with_attrs(&fs.client, parent, typ, attrs, 0).await?;
                let id = w.id();
                w.append(&target).await?;
                w.finish(&name).await?;
                Ok::<_, ClientError>(id)
            }
            .await;
            fs.reply_created(r, parent, &name, reply).await;
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
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        self.spawn(|fs| async move {
            let r = async {
                if fs
                    .rename_pending(from, &name, to, &newname, noreplace)
                    .await?
                {
                    return Ok(());
                }
                let edge = fs.client.lookup(from, &name).await?;
                if noreplace {
                    fs.ensure_absent(to, &newname).await?;
                }
                // A file being written under the new name loses it, as the rename's target.
                fs.unlink_pending(to, &newname).await;
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
                Ok::<_, ClientError>(())
            }
            .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let writing = lock(&self.inner.writing).get(&ino).cloned();
        let fh = self.fh();
        if let Some(w) = writing {
            // Closed and being linked (or still open by its writer): open the linked file
            // once its link is done, never the half-stored one.
            return self.spawn(|fs| async move {
                if !fs.wait_closed(&w).await {
                    return reply.error(libc::EBUSY);
                }
                fs.open_linked(ino, flags, fh, reply).await
            });
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            // Linked files never change, so the kernel may keep their pages across opens.
            return reply.opened(0, FOPEN_KEEP_CACHE);
        }
        self.spawn(|fs| async move { fs.open_linked(ino, flags, fh, reply).await });
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
        // The kernel never sends a negative offset; read it as 0 rather than trust it.
        let offset = offset.max(0).unsigned_abs();
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
            offset: offset.max(0).unsigned_abs(),
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
        let offset = usize_of(offset.max(0).unsigned_abs());
        let dots = [(ino, "."), (ino, "..")];
        for (i, (dino, n)) in dots.iter().enumerate().skip(offset) {
            if reply.add(*dino, fit(i + 1), FileType::Directory, n) {
                return reply.ok();
            }
        }
        for (i, e) in entries.iter().enumerate().skip(offset.saturating_sub(2)) {
            let name = OsStr::from_bytes(e.name.as_bytes());
            let kind = kind_of(e.target_id);
            if reply.add(to_fuse(e.target_id), fit(i + 3), kind, name) {
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
        let offset = usize_of(offset.max(0).unsigned_abs());
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
            const BSIZE: u32 = 4096;
            let blocks = |bytes: u64| bytes / u64::from(BSIZE);
            match fs.statfs().await {
                Ok((cap, free)) => reply.statfs(
                    blocks(cap),
                    blocks(free),
                    blocks(free),
                    0,
                    0,
                    BSIZE,
                    fit(Name::MAX_LEN),
                    BSIZE,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
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
        let caller = caller_of(req);
        let mode = posix::S_IFREG | (mode & PERM_BITS & !umask);
        self.spawn(|fs| async move {
            let attrs = match fs.client.new_attrs(parent, &caller, mode).await {
                Ok(a) => a,
                Err(e) => return reply.error(errno(&e)),
            };
            match fs.start_writer(parent, name, None, attrs, fh).await {
                Ok(w) => {
                    let attr = fs.writing_attr(&w, SystemTime::now());
                    // Not cached: lookups ask this mount, which answers for the name until
                    // the file is linked, and the shard afterwards.
                    reply.created(&Duration::ZERO, &attr, 0, fh, 0);
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let typ = mode & posix::S_IFMT;
        let typ = if typ == 0 { posix::S_IFREG } else { typ };
        let known = [
            posix::S_IFREG,
            posix::S_IFIFO,
            posix::S_IFSOCK,
            posix::S_IFCHR,
            posix::S_IFBLK,
        ];
        if !known.contains(&typ) {
            return reply.error(libc::EINVAL);
        }
        let mode = typ | (mode & PERM_BITS & !umask);
        let rdev = if matches!(typ, posix::S_IFCHR | posix::S_IFBLK) {
            u64::from(rdev)
        } else {
            0
        };
        let parent = to_eggs(parent);
        let caller = caller_of(req);
        self.spawn(|fs| async move {
            let r = async {
                // mknod never replaces a name.
                fs.ensure_absent(parent, &name).await?;
                let attrs = fs.client.new_attrs(parent, &caller, mode).await?;
                let typ = InodeType::File;
                let w = FileWriter::with_attrs(&fs.client, parent, typ, attrs, rdev).await?;
                let id = w.id();
                w.finish(&name).await?;
                Ok::<_, ClientError>(id)
            }
            .await;
            fs.reply_created(r, parent, &name, reply).await;
        });
    }

    /// Hard links are not supported: a file has one name (its owning edge).
    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EPERM);
    }
}
