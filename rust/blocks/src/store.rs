//! The blocks of one block service on its local disk. Everything here blocks: the server
//! calls it on tokio's blocking pool.
//!
//! # On-disk format
//!
//! A service directory holds its `format` file (the layout's version, [`FORMAT_VERSION`], as
//! a u32 big-endian; see [`check_format_version`]), its `identity` file (see
//! [`crate::identity`]), a `lock` file (held with `flock` while a process serves the
//! directory) and 256 subdirectories `00` .. `ff`. Block `id` lives in subdirectory `{(id ^ id >> 8) & 0xff:02x}` as a file named by
//! the id in 16 lower-case hex digits, e.g. `94/00000000deadbe2a`: spreading blocks keeps
//! directories small enough for fast lookups and scans.
//!
//! A block file is a header, the data, then a table of page CRCs:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `EGGSBLK\x01` (the last byte is the format version) |
//! | 8 | 8 | block id, `u64` LE (guards against files moved under another name) |
//! | 16 | 4 | data size in bytes, `u32` LE |
//! | 20 | 4 | CRC32C of all the data, `u32` LE |
//! | 24 | 4 | CRC32C of bytes 0..24, `u32` LE |
//! | 28 | 4 | zero |
//! | 32 | size | the data |
//! | 32 + size | 4 × ⌈size / 4096⌉ | CRC32C of each 4 KiB page of data, `u32` LE; the last page may be short |
//!
//! The file is exactly `32 + size + 4 × ⌈size / 4096⌉` bytes long; any other length, a bad
//! header, or a page whose CRC does not match its table entry means the block is corrupt.
//! Page CRCs let a read of any range be verified by reading only the pages it touches.
//!
//! # Durability
//!
//! A block is written to `tmp.{id hex}.{random hex}` in its final subdirectory, fsynced,
//! renamed over its final name, and the subdirectory is fsynced; only then is the write
//! acknowledged. A crash therefore leaves either no block, a complete old one or a complete
//! new one under the final name, plus perhaps a `tmp.` file, which [`Store::open`] deletes.
//! Erasure unlinks the file and fsyncs the subdirectory before it is acknowledged.

use crate::sys;
pub use crate::sys::Space;
use eggs_protocol::conv::{fit, usize_of};
use eggs_protocol::{BlockId, EggsError};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Block data is checksummed in pages of this many bytes.
pub const PAGE_BYTES: u32 = 4096;
const PAGE_LEN: usize = PAGE_BYTES as usize;
/// Bytes before the data in a block file.
pub const HEADER_BYTES: u64 = 32;
const HEADER_LEN: usize = usize_of(HEADER_BYTES);
/// Pages read, verified and sent at a time: bounds the memory a read holds.
pub const WINDOW_PAGES: u32 = 64;
/// [`WINDOW_PAGES`] in bytes.
pub const WINDOW_BYTES: usize = (WINDOW_PAGES * PAGE_BYTES) as usize;
/// Number of subdirectories blocks are spread over.
pub const SUBDIRS: u32 = 256;

const MAGIC: [u8; 8] = *b"EGGSBLK\x01";
const TEMP_PREFIX: &str = "tmp.";

/// The version of the directory layout described above (identity file and block files
/// included). Directories made before versions were recorded are version 1 too: they get
/// the record on their first open.
pub const FORMAT_VERSION: eggs_common::format_version::FormatVersion = 1;
/// The file in a service directory holding its [`FORMAT_VERSION`].
pub const FORMAT_FILE: &str = "format";
/// The file held locked while a process serves the directory.
pub(crate) const LOCK_FILE: &str = "lock";
/// Files that are no data of the layout: the lock, and the version record being written.
const NOT_DATA: [&str; 3] = [LOCK_FILE, FORMAT_FILE, "format.tmp"];

/// Refuses a service directory of another layout version; records the version (durably) in
/// a new directory, and in one made before versions were recorded. Called before anything
/// else in the directory is read or written.
pub fn check_format_version(root: &Path) -> Result<(), crate::BlocksError> {
    let path = root.join(FORMAT_FILE);
    let stored = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(crate::BlocksError::io(&path, e)),
    };
    eggs_common::format_version::ensure(
        &format!("block service directory {}", root.display()),
        FORMAT_VERSION,
        stored,
        || has_data(root).map_err(|e| crate::BlocksError::io(root, e)),
        |v| {
            sys::write_atomically(root, FORMAT_FILE, v, 0o644)
                .map_err(|e| crate::BlocksError::io(&path, e))
        },
    )
}

/// Whether `root` holds anything of a block service (an identity, subdirectories, blocks).
fn has_data(root: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        if !NOT_DATA.iter().any(|n| name.as_os_str() == *n) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such block")]
    NotFound,
    #[error("block is corrupt: {0}")]
    Corrupt(String),
    #[error("data does not match the CRC it was announced with")]
    CrcMismatch,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// The error a client is told.
    pub fn to_eggs(&self) -> EggsError {
        match self {
            StoreError::NotFound => EggsError::BlockNotFound,
            StoreError::Corrupt(_) | StoreError::CrcMismatch => EggsError::BadBlockCrc,
            StoreError::Io(_) => EggsError::BlockIoError,
        }
    }
}

/// Number of CRC pages of a block of `size_bytes`.
pub fn pages(size_bytes: u32) -> u32 {
    size_bytes.div_ceil(PAGE_BYTES)
}

/// Length of the file storing a block of `size_bytes`.
pub fn file_len(size_bytes: u32) -> u64 {
    HEADER_BYTES + u64::from(size_bytes) + 4 * u64::from(pages(size_bytes))
}

/// The pages holding bytes `offset .. offset + count` (empty when `count` is 0).
pub fn page_range(offset: u32, count: u32) -> Range<u32> {
    let start = offset / PAGE_BYTES;
    if count == 0 {
        return start..start;
    }
    let end_byte = u64::from(offset) + u64::from(count);
    let end = end_byte.div_ceil(u64::from(PAGE_BYTES));
    // At most 2^32 / 4096 + 1, which fits.
    start..u32::try_from(end).unwrap_or(u32::MAX)
}

/// Splits a page range into windows of at most [`WINDOW_PAGES`] pages.
pub fn windows(pages: Range<u32>) -> impl Iterator<Item = Range<u32>> {
    let end = pages.end;
    (pages.start..pages.end)
        .step_by(WINDOW_PAGES as usize)
        .map(move |s| s..s.saturating_add(WINDOW_PAGES).min(end))
}

/// Byte offsets (within the data) covered by `pages` of a block of `size_bytes`.
pub fn page_bytes(pages: &Range<u32>, size_bytes: u32) -> Range<u64> {
    let page = u64::from(PAGE_BYTES);
    let end = (u64::from(pages.end) * page).min(u64::from(size_bytes));
    (u64::from(pages.start) * page).min(end)..end
}

/// Where block `id` lives under a service directory.
pub fn block_path(root: &Path, id: BlockId) -> PathBuf {
    subdir(root, id).join(format!("{:016x}", id.0))
}

fn subdir(root: &Path, id: BlockId) -> PathBuf {
    root.join(format!("{:02x}", subdir_index(id)))
}

/// Shards allocate block ids as `counter << 8 | shard`, so the low byte alone would put all of
/// one shard's blocks in one subdirectory: mix in the counter's low byte too.
fn subdir_index(id: BlockId) -> u64 {
    (id.0 ^ (id.0 >> 8)) & 0xff
}

/// The fixed header of a block file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    id: BlockId,
    size_bytes: u32,
    crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&self.id.0.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_bytes.to_le_bytes());
        b[20..24].copy_from_slice(&self.crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&b[..24]);
        b[24..28].copy_from_slice(&header_crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN], id: BlockId) -> Result<Header, StoreError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[..7] == MAGIC[..7] && b[7] != MAGIC[7] {
            return Err(StoreError::Corrupt(format!(
                "block file format version {}, this build reads only version {}",
                b[7], MAGIC[7]
            )));
        }
        if b[..8] != MAGIC {
            return Err(StoreError::Corrupt("bad magic".into()));
        }
        if u32_at(24) != crc32c::crc32c(&b[..24]) {
            return Err(StoreError::Corrupt("bad header CRC".into()));
        }
        let mut stored_id = [0u8; 8];
        stored_id.copy_from_slice(&b[8..16]);
        let stored_id = BlockId(u64::from_le_bytes(stored_id));
        if stored_id != id {
            return Err(StoreError::Corrupt(format!(
                "file holds block {:016x}",
                stored_id.0
            )));
        }
        Ok(Header {
            id,
            size_bytes: u32_at(16),
            crc: u32_at(20),
        })
    }
}

/// The blocks of one service directory, and their count.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blocks: AtomicU64,
    /// Held across "does the block exist" and the rename or unlink that changes it, so that
    /// the block count stays exact under concurrent writes and erasures of one block. Never
    /// held across an fsync.
    names: Mutex<()>,
}

impl Store {
    /// Opens a service directory: creates missing subdirectories, deletes the temporary
    /// files of writes a crash interrupted, and counts the blocks.
    pub fn open(root: &Path) -> io::Result<Store> {
        let mut blocks = 0;
        let mut created = false;
        for i in 0..SUBDIRS {
            let dir = root.join(format!("{i:02x}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            blocks += scan_subdir(&dir)?;
        }
        if created {
            sys::sync_dir(root)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            blocks: AtomicU64::new(blocks),
            names: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn block_count(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    pub fn space(&self) -> io::Result<Space> {
        sys::space(&self.root)
    }

    /// Starts writing block `id` of `size_bytes` whose data must have CRC `crc`. Reserves
    /// the space up front, so that a full disk fails here.
    pub fn begin_write(
        &self,
        id: BlockId,
        size_bytes: u32,
        crc: u32,
    ) -> Result<BlockWriter, StoreError> {
        let dir = subdir(&self.root, id);
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{:016x}.{:016x}",
            id.0,
            rand::random::<u64>()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        // From here on the writer's Drop removes the temporary file, whatever fails next.
        let writer = BlockWriter {
            file,
            temp,
            header: Header {
                id,
                size_bytes,
                crc,
            },
            written_bytes: 0,
            crc: 0,
            page_crc: 0,
            pages_flushed: 0,
            table: Vec::new(),
            committed: false,
        };
        sys::preallocate(&writer.file, file_len(size_bytes))?;
        Ok(writer)
    }

    /// Makes a fully written block durable and visible under its final name.
    pub fn commit(&self, mut w: BlockWriter) -> Result<(), StoreError> {
        if w.written_bytes != w.header.size_bytes {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "block data incomplete",
            )));
        }
        if w.crc != w.header.crc {
            return Err(StoreError::CrcMismatch);
        }
        w.file.write_all_at(&w.header.encode(), 0)?;
        w.file.sync_data()?;
        let path = block_path(&self.root, w.header.id);
        self.rename_counted(&w.temp, &path)?;
        w.committed = true;
        sys::sync_dir(&subdir(&self.root, w.header.id))?;
        Ok(())
    }

    fn rename_counted(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let existed = to.try_exists()?;
        std::fs::rename(from, to)?;
        if !existed {
            self.blocks.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Opens block `id` for reading, checking its header and length.
    pub fn open_block(&self, id: BlockId) -> Result<BlockFile, StoreError> {
        let file = match File::open(block_path(&self.root, id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0).map_err(truncated)?;
        let header = Header::decode(&head, id)?;
        let len = file.metadata()?.len();
        if len != file_len(header.size_bytes) {
            return Err(StoreError::Corrupt(format!(
                "file is {len} bytes, expected {}",
                file_len(header.size_bytes)
            )));
        }
        Ok(BlockFile { file, header })
    }

    /// Reads all of block `id`, verifying every page, and that it has the given size and CRC.
    pub fn check(&self, id: BlockId, size_bytes: u32, crc: u32) -> Result<(), StoreError> {
        let block = self.open_block(id)?;
        if block.size_bytes() != size_bytes || block.crc() != crc {
            return Err(StoreError::Corrupt(format!(
                "stored size {} crc {:08x}, expected size {size_bytes} crc {crc:08x}",
                block.size_bytes(),
                block.crc()
            )));
        }
        let mut buf = Vec::with_capacity(WINDOW_BYTES);
        let mut actual = 0;
        for window in windows(0..pages(size_bytes)) {
            block.read_pages(window, &mut buf)?;
            actual = crc32c::crc32c_append(actual, &buf);
        }
        if actual != crc {
            return Err(StoreError::Corrupt(format!(
                "data crc {actual:08x}, expected {crc:08x}"
            )));
        }
        Ok(())
    }

    /// Deletes block `id` durably; true if it existed. The directory is synced even when the
    /// block was already gone: a retried erasure must not be acknowledged before the first
    /// attempt's unlink is durable.
    pub fn erase(&self, id: BlockId) -> Result<bool, StoreError> {
        let existed = {
            let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            match std::fs::remove_file(block_path(&self.root, id)) {
                Ok(()) => {
                    self.blocks.fetch_sub(1, Ordering::Relaxed);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            }
        };
        sys::sync_dir(&subdir(&self.root, id))?;
        Ok(existed)
    }
}

/// Deletes leftover temporary files in one subdirectory and counts its blocks.
fn scan_subdir(dir: &Path) -> io::Result<u64> {
    let mut blocks = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) {
            tracing::info!("removing leftover {}", entry.path().display());
            std::fs::remove_file(entry.path())?;
        } else if is_block_name(&name) {
            blocks += 1;
        } else {
            tracing::warn!("ignoring unexpected file {}", entry.path().display());
        }
    }
    Ok(blocks)
}

fn is_block_name(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A read that ran past the end of the file means the file is shorter than its header says.
fn truncated(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        StoreError::Corrupt("file is truncated".into())
    } else {
        StoreError::Io(e)
    }
}

/// A block being written. Dropping it before [`Store::commit`] succeeds deletes the
/// temporary file, so failed and abandoned writes leave nothing behind.
#[derive(Debug)]
pub struct BlockWriter {
    file: File,
    temp: PathBuf,
    header: Header,
    written_bytes: u32,
    /// CRC of all data so far.
    crc: u32,
    /// CRC of the data so far in the current, incomplete page.
    page_crc: u32,
    /// Page CRCs already written to the table.
    pages_flushed: u32,
    /// Encoded page CRCs not yet written to the table.
    table: Vec<u8>,
    committed: bool,
}

impl BlockWriter {
    pub fn block_id(&self) -> BlockId {
        self.header.id
    }

    /// Appends the next piece of data (of any length).
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let end = u64::from(self.written_bytes) + data.len() as u64;
        if end > u64::from(self.header.size_bytes) {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more data than the block's size",
            )));
        }
        self.file
            .write_all_at(data, HEADER_BYTES + u64::from(self.written_bytes))?;
        self.absorb(data);
        self.flush_table()
    }

    /// Updates the running CRCs, queueing the CRC of every page `data` completes.
    fn absorb(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        let mut rest = data;
        while !rest.is_empty() {
            let in_page = usize_of(u64::from(self.written_bytes % PAGE_BYTES));
            let take = rest.len().min(PAGE_LEN - in_page);
            self.page_crc = crc32c::crc32c_append(self.page_crc, &rest[..take]);
            // Cannot overflow: write() checked the total against the u32 size.
            self.written_bytes += fit::<u32, usize>(take);
            rest = &rest[take..];
            let page_full = in_page + take == PAGE_LEN;
            if page_full || self.written_bytes == self.header.size_bytes {
                self.table.extend_from_slice(&self.page_crc.to_le_bytes());
                self.page_crc = 0;
            }
        }
    }

    fn flush_table(&mut self) -> Result<(), StoreError> {
        if self.table.is_empty() {
            return Ok(());
        }
        let at =
            HEADER_BYTES + u64::from(self.header.size_bytes) + 4 * u64::from(self.pages_flushed);
        self.file.write_all_at(&self.table, at)?;
        self.pages_flushed += fit::<u32, usize>(self.table.len() / 4);
        self.table.clear();
        Ok(())
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Usually on a blocking thread; when a connection task is cancelled between
            // chunks it is an async worker, which an unlink holds only briefly.
            if let Err(e) = std::fs::remove_file(&self.temp) {
                tracing::warn!("cannot remove {}: {e}", self.temp.display());
            }
        }
    }
}

/// A stored block open for reading.
#[derive(Debug)]
pub struct BlockFile {
    file: File,
    header: Header,
}

impl BlockFile {
    pub fn size_bytes(&self) -> u32 {
        self.header.size_bytes
    }

    pub fn crc(&self) -> u32 {
        self.header.crc
    }

    /// Replaces `buf` with the data of `pages`, each verified against its stored CRC.
    pub fn read_pages(&self, pages: Range<u32>, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        if pages.start > pages.end || pages.end > self::pages(self.header.size_bytes) {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pages beyond the end of the block",
            )));
        }
        let bytes = page_bytes(&pages, self.header.size_bytes);
        buf.clear();
        buf.resize(usize_of(bytes.end - bytes.start), 0);
        self.file
            .read_exact_at(buf, HEADER_BYTES + bytes.start)
            .map_err(truncated)?;
        let mut table = vec![0u8; 4 * (pages.end - pages.start) as usize];
        let table_at =
            HEADER_BYTES + u64::from(self.header.size_bytes) + 4 * u64::from(pages.start);
        self.file
            .read_exact_at(&mut table, table_at)
            .map_err(truncated)?;
        verify_pages(pages.start, buf, &table)
    }
}

fn verify_pages(first_page: u32, data: &[u8], table: &[u8]) -> Result<(), StoreError> {
    let chunks = data.chunks(PAGE_LEN).zip(table.chunks_exact(4));
    for (i, (page, stored)) in chunks.enumerate() {
        let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        if crc32c::crc32c(page) != stored {
            return Err(StoreError::Corrupt(format!(
                "page {} does not match its CRC",
                first_page as usize + i
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
