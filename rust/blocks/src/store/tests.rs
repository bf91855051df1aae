// Test code: casts of test patterns and sizes need no checking.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::*;
use std::io::{Read, Seek, SeekFrom, Write};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Writes a block in chunks of `chunk` bytes and commits it.
fn put(store: &Store, id: u64, bytes: &[u8], chunk: usize) -> Result<(), StoreError> {
    let crc = crc32c::crc32c(bytes);
    let mut w = store.begin_write(BlockId(id), bytes.len() as u32, crc)?;
    for piece in bytes.chunks(chunk.max(1)) {
        w.write(piece)?;
    }
    store.commit(w)
}

/// Reads a range the way the server does: verified windows, then the requested slice.
fn get(store: &Store, id: u64, offset: u32, count: u32) -> Result<Vec<u8>, StoreError> {
    let block = store.open_block(BlockId(id))?;
    let want = u64::from(offset)..u64::from(offset) + u64::from(count);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for w in windows(page_range(offset, count)) {
        block.read_pages(w.clone(), &mut buf)?;
        let have = page_bytes(&w, block.size_bytes());
        let from = (want.start.max(have.start) - have.start) as usize;
        let to = (want.end.min(have.end) - have.start) as usize;
        out.extend_from_slice(&buf[from..to]);
    }
    Ok(out)
}

fn flip_byte(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open block file");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&b).expect("write");
}

fn leftovers(root: &Path) -> Vec<PathBuf> {
    (0..SUBDIRS)
        .flat_map(|i| std::fs::read_dir(root.join(format!("{i:02x}"))).expect("subdir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tmp."))
        })
        .collect()
}

#[test]
fn page_arithmetic() {
    assert_eq!(pages(0), 0);
    assert_eq!(pages(1), 1);
    assert_eq!(pages(4096), 1);
    assert_eq!(pages(4097), 2);
    assert_eq!(pages(u32::MAX), 1 << 20);
    assert_eq!(file_len(4097), 32 + 4097 + 8);
    assert_eq!(page_range(0, 0), 0..0);
    assert_eq!(page_range(4096, 1), 1..2);
    assert_eq!(page_range(4095, 2), 0..2);
    assert_eq!(page_range(u32::MAX, 0), (1 << 20) - 1..(1 << 20) - 1);
    assert_eq!(page_range(u32::MAX - 1, 1), (1 << 20) - 1..1 << 20);
    let w: Vec<_> = windows(10..150).collect();
    assert_eq!(w, vec![10..74, 74..138, 138..150]);
    assert_eq!(page_bytes(&(1..3), 5000), 4096..5000);
}

#[test]
fn write_then_read_whole_and_ranges() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(WINDOW_BYTES * 3 + 12_345, 7);
    put(&store, 0xabcd, &bytes, WINDOW_BYTES).expect("put");
    assert_eq!(store.block_count(), 1);
    let len = bytes.len() as u32;
    assert_eq!(get(&store, 0xabcd, 0, len).expect("whole"), bytes);
    for (offset, count) in [
        (0, 1),
        (4095, 2),
        (4096, 4096),
        (1, len - 1),
        (len - 1, 1),
        (len, 0),
        (WINDOW_BYTES as u32 - 10, 20),
        (123_457, 600_001),
    ] {
        let got = get(&store, 0xabcd, offset, count).expect("range");
        assert_eq!(
            got,
            &bytes[offset as usize..(offset + count) as usize],
            "{offset}+{count}"
        );
    }
    let file = block_path(dir.path(), BlockId(0xabcd));
    assert!(file.ends_with("66/000000000000abcd"));
    assert_eq!(std::fs::metadata(&file).expect("stat").len(), file_len(len));
}

#[test]
fn chunking_does_not_change_the_file() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(5 * 4096 + 1, 3);
    put(&store, 1, &bytes, bytes.len()).expect("one piece");
    put(&store, 2, &bytes, 1000).expect("odd pieces");
    put(&store, 3, &bytes, 1).expect("bytes");
    let body = |id: u64| {
        let f = std::fs::read(block_path(dir.path(), BlockId(id))).expect("read");
        f[HEADER_BYTES as usize..].to_vec()
    };
    assert_eq!(body(1), body(2));
    assert_eq!(body(1), body(3));
    store
        .check(BlockId(2), bytes.len() as u32, crc32c::crc32c(&bytes))
        .expect("check");
}

#[test]
fn empty_block() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    put(&store, 9, &[], 1).expect("put");
    assert_eq!(get(&store, 9, 0, 0).expect("get"), Vec::<u8>::new());
    store.check(BlockId(9), 0, 0).expect("check");
}

#[test]
fn crc_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(10_000, 1);
    let mut w = store
        .begin_write(BlockId(5), bytes.len() as u32, crc32c::crc32c(&bytes) ^ 1)
        .expect("begin");
    w.write(&bytes).expect("write");
    assert!(matches!(store.commit(w), Err(StoreError::CrcMismatch)));
    assert!(matches!(
        store.open_block(BlockId(5)),
        Err(StoreError::NotFound)
    ));
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(store.block_count(), 0);
}

#[test]
fn too_much_or_too_little_data_is_refused() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(100, 1);
    let mut w = store
        .begin_write(BlockId(5), 99, crc32c::crc32c(&bytes[..99]))
        .expect("begin");
    assert!(w.write(&bytes).is_err());
    drop(w);
    let mut w = store.begin_write(BlockId(5), 100, 0).expect("begin");
    w.write(&bytes[..50]).expect("write");
    assert!(store.commit(w).is_err());
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(store.block_count(), 0);
}

#[test]
fn abandoned_write_is_removed() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let mut w = store.begin_write(BlockId(6), 8192, 0).expect("begin");
    w.write(&[1; 4096]).expect("write");
    assert_eq!(leftovers(dir.path()).len(), 1);
    drop(w);
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn crash_leftovers_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    put(&store, 0x100, &data(5000, 2), 4096).expect("put");
    // A crash mid-write: the temporary file stays (forget skips the cleanup in Drop).
    let mut w = store.begin_write(BlockId(0x200), 8192, 0).expect("begin");
    w.write(&data(8192, 3)).expect("write");
    std::mem::forget(w);
    assert_eq!(leftovers(dir.path()).len(), 1);
    assert!(matches!(
        store.open_block(BlockId(0x200)),
        Err(StoreError::NotFound)
    ));
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(store.block_count(), 1);
    assert!(matches!(
        store.open_block(BlockId(0x200)),
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        get(&store, 0x100, 0, 5000).expect("old block"),
        data(5000, 2)
    );
}

#[test]
fn idempotent_rewrite_and_count_across_reopen() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(70_000, 4);
    put(&store, 42, &bytes, 65536).expect("first");
    put(&store, 42, &bytes, 4096).expect("again");
    put(&store, 43, &bytes, 4096).expect("other");
    assert_eq!(store.block_count(), 2);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.block_count(), 2);
    assert_eq!(get(&store, 42, 0, 70_000).expect("get"), bytes);
}

#[test]
fn erase_is_idempotent() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    put(&store, 7, &data(10, 0), 10).expect("put");
    assert!(store.erase(BlockId(7)).expect("erase"));
    assert_eq!(store.block_count(), 0);
    assert!(!store.erase(BlockId(7)).expect("erase again"));
    assert_eq!(store.block_count(), 0);
    assert!(matches!(
        store.open_block(BlockId(7)),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.check(BlockId(7), 10, 0),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn flipped_data_byte_is_detected_in_its_page_only() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(4 * 4096, 5);
    let crc = crc32c::crc32c(&bytes);
    put(&store, 11, &bytes, 4096).expect("put");
    flip_byte(
        &block_path(dir.path(), BlockId(11)),
        HEADER_BYTES + 2 * 4096 + 17,
    );
    assert!(matches!(
        get(&store, 11, 8192, 100),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        get(&store, 11, 0, 16384),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        get(&store, 11, 0, 8192).expect("clean pages"),
        &bytes[..8192]
    );
    assert_eq!(
        get(&store, 11, 12288, 4096).expect("clean page"),
        &bytes[12288..]
    );
    assert!(matches!(
        store.check(BlockId(11), 16384, crc),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        StoreError::Corrupt(String::new()).to_eggs(),
        EggsError::BadBlockCrc
    );
}

#[test]
fn flipped_table_or_header_byte_is_detected() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(3 * 4096, 6);
    let crc = crc32c::crc32c(&bytes);
    put(&store, 12, &bytes, 4096).expect("put");
    put(&store, 13, &bytes, 4096).expect("put");
    let table_at = HEADER_BYTES + bytes.len() as u64 + 4;
    flip_byte(&block_path(dir.path(), BlockId(12)), table_at);
    assert!(matches!(
        get(&store, 12, 4096, 1),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.check(BlockId(12), 3 * 4096, crc),
        Err(StoreError::Corrupt(_))
    ));
    for at in [0, 9, 17, 21, 25] {
        put(&store, 13, &bytes, 4096).expect("rewrite");
        flip_byte(&block_path(dir.path(), BlockId(13)), at);
        assert!(
            matches!(store.open_block(BlockId(13)), Err(StoreError::Corrupt(_))),
            "header byte {at}"
        );
    }
}

#[test]
fn wrong_length_or_misplaced_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(5000, 8);
    put(&store, 14, &bytes, 4096).expect("put");
    let path = block_path(dir.path(), BlockId(14));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(file_len(5000) - 1).expect("truncate");
    assert!(matches!(
        store.open_block(BlockId(14)),
        Err(StoreError::Corrupt(_))
    ));
    std::fs::write(&path, b"short").expect("write");
    assert!(matches!(
        store.open_block(BlockId(14)),
        Err(StoreError::Corrupt(_))
    ));
    // Block 0x15's file copied under the name of block 0x115 (same subdirectory).
    put(&store, 0x15, &bytes, 4096).expect("put");
    std::fs::copy(
        block_path(dir.path(), BlockId(0x15)),
        block_path(dir.path(), BlockId(0x115)),
    )
    .expect("copy");
    assert!(matches!(
        store.open_block(BlockId(0x115)),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn check_compares_size_and_crc() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    let bytes = data(9000, 9);
    let crc = crc32c::crc32c(&bytes);
    put(&store, 15, &bytes, 4096).expect("put");
    store.check(BlockId(15), 9000, crc).expect("intact");
    assert!(matches!(
        store.check(BlockId(15), 8999, crc),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.check(BlockId(15), 9000, crc ^ 1),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn unexpected_files_are_left_alone() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(dir.path()).expect("open");
    std::fs::write(dir.path().join("00").join("README"), b"hi").expect("write");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.block_count(), 0);
    assert!(dir.path().join("00").join("README").exists());
}

#[test]
fn format_version_is_recorded_and_other_versions_refused() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let record = dir.path().join(FORMAT_FILE);
    check_format_version(dir.path()).expect("fresh directory");
    let recorded = std::fs::read(&record).expect("record written");
    assert_eq!(recorded, FORMAT_VERSION.to_be_bytes());
    check_format_version(dir.path()).expect("same version");
    // A directory of the code before versions: data, no record. It is version 1.
    std::fs::remove_file(&record).expect("remove record");
    Store::open(dir.path()).expect("open");
    check_format_version(dir.path()).expect("directory from before versions");
    assert_eq!(std::fs::read(&record).expect("record"), recorded);
    let newer = FORMAT_VERSION + 1;
    std::fs::write(&record, newer.to_be_bytes()).expect("write record");
    let msg = check_format_version(dir.path())
        .expect_err("a directory of another version")
        .to_string();
    assert!(msg.contains(&format!("version {newer}")), "{msg}");
    assert!(
        msg.contains(&format!("only version {FORMAT_VERSION}")),
        "{msg}"
    );
}
