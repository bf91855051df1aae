//! Upgrades a shard database of an older format version in place, when it is opened.
//!
//! Version 2 added POSIX attributes (mode, owner, group, ctime; a directory's atime; a
//! device number) to directory, file and transient file bodies. A version 1 database is
//! rewritten in one synced write batch that also records version 2, so a crash leaves it
//! either untouched or wholly migrated. Inodes made before version 2 read as root's, with
//! mode 0755 (directories), 0644 (files) or 0777 (symlinks), and their mtime as ctime.

use crate::error::ShardError;
use crate::keys;
use crate::values::{self, v1, DirectoryBody, FileBody, TransientFileBody};
use eggs_common::format_version::{self, FormatVersion};
use eggs_protocol::{InodeAttrs, InodeId, InodeType};

/// Migrates `db` to `current` if it holds an older version this build can upgrade; any
/// other version is left to `eggs_db::ensure_format_version` to accept or refuse.
pub fn upgrade(db: &rocksdb::DB, current: FormatVersion) -> Result<(), ShardError> {
    assert_eq!(current, 2, "no migration to version {current}");
    let stored = db.get(keys::FORMAT_VERSION_KEY)?;
    let version = match stored.as_deref() {
        Some(bytes) => match <[u8; 4]>::try_from(bytes) {
            Ok(b) => FormatVersion::from_be_bytes(b),
            Err(_) => return Ok(()), // unreadable: refused by the check
        },
        None if eggs_db::has_data(db)? => format_version::LEGACY_VERSION,
        None => return Ok(()), // new
    };
    if version != 1 {
        return Ok(());
    }
    let mut batch = rocksdb::WriteBatch::default();
    let mut rewritten = 0u64;
    for entry in db.iterator(rocksdb::IteratorMode::Start) {
        let (key, value) = entry?;
        if let Some(new) = v2_value(&key, &value)? {
            batch.put(&key, new);
            rewritten += 1;
        }
    }
    batch.put(keys::FORMAT_VERSION_KEY, format_version::encode(current));
    db.write_opt(batch, &eggs_db::sync_write())?;
    tracing::info!("shard database migrated from format version 1 to {current}: {rewritten} inodes given attributes");
    Ok(())
}

/// The version 2 value of a version 1 key's value, for the bodies that changed.
fn v2_value(key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, ShardError> {
    let (table, id) = match key {
        [_shard, table, id @ ..] if id.len() == 8 => (*table, id),
        _ => return Ok(None),
    };
    let Some(id) = keys::be_u64(id).map(InodeId) else {
        return Ok(None);
    };
    let legacy = |typ: Option<InodeType>| InodeAttrs::legacy(typ.unwrap_or(InodeType::File));
    Ok(Some(match table {
        keys::DIR => {
            let d: v1::DirectoryBody = values::decode(key, value)?;
            values::encode(&DirectoryBody {
                owner_id: d.owner_id,
                atime: d.mtime,
                ctime: d.mtime,
                mtime: d.mtime,
                info: d.info,
                attrs: InodeAttrs::ROOT_DIR,
            })
        }
        keys::FILE => {
            let f: v1::FileBody = values::decode(key, value)?;
            values::encode(&FileBody {
                size: f.size,
                mtime: f.mtime,
                atime: f.atime,
                ctime: f.mtime,
                attrs: legacy(id.typ()),
                rdev: 0,
            })
        }
        keys::TRANSIENT => {
            let t: v1::TransientFileBody = values::decode(key, value)?;
            values::encode(&TransientFileBody {
                size: t.size,
                mtime: t.mtime,
                deadline: t.deadline,
                cookie: t.cookie,
                uncertified_span: t.uncertified_span,
                attrs: legacy(id.typ()),
                rdev: 0,
                set_atime: None,
                set_mtime: None,
            })
        }
        _ => return Ok(None),
    }))
}
