//! The few system calls std does not offer (through nix), and durable-file helpers. All
//! blocking.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, Flock, FlockArg};
use nix::sys::statvfs::statvfs;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Size and free space of the file system holding a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// `statvfs(2)`. Available bytes are those an unprivileged writer may use (`f_bavail`),
/// which is all a block service may use: it drops its capabilities (root's reserve too).
pub fn space(path: &Path) -> io::Result<Space> {
    let st = statvfs(path)?;
    // The field types are 32-bit on some targets and 64-bit on others.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, bavail) = (
        st.fragment_size() as u64,
        st.blocks() as u64,
        st.blocks_available() as u64,
    );
    Ok(Space {
        capacity_bytes: blocks.saturating_mul(frsize),
        available_bytes: bavail.saturating_mul(frsize),
    })
}

/// Reserves `len_bytes` for `file`, so that a full disk shows up before any data is
/// received and the block's extents are allocated in one go. File systems that cannot
/// preallocate are fine: the writes themselves will then report a full disk.
pub fn preallocate(file: &File, len_bytes: u64) -> io::Result<()> {
    if len_bytes == 0 {
        return Ok(());
    }
    let len = nix::libc::off_t::try_from(len_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Takes an exclusive `flock(2)` on `file` without waiting: `None` when another process
/// holds it. The lock lasts as long as the returned value.
pub fn try_lock(file: File) -> io::Result<Option<Flock<File>>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Makes the entries of a directory (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new
/// contents, never a mix: temporary file, fsync, rename, fsync the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let result = write_then_rename(&temp, &dir.join(name), bytes, mode);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

fn write_then_rename(temp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(temp, path)
}

/// Linux's host name, for the default failure domain.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_of_temp_dir() {
        let s = space(&std::env::temp_dir()).expect("statvfs");
        assert!(s.capacity_bytes > 0);
        assert!(s.available_bytes <= s.capacity_bytes);
        assert!(space(Path::new("/nonexistent/eggs")).is_err());
    }
}
