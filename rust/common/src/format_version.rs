//! On-disk format versions. Every store (the shard, CDC and shuckle RocksDB databases, a block
//! service directory) records the version of the layout it writes when it is created, and a
//! process refuses a store of any other version with an error naming both, instead of misreading
//! it. Each store keeps the record where its own layout has room (a key, a file); this module
//! is the one place that decides what a record found on open means.
//!
//! Stores made before versions were recorded have data but no record. Their layout is version
//! 1 ([`LEGACY_VERSION`]), so a build whose current version is 1 accepts them and records the
//! version on open (running clusters keep working), and any later build refuses them clearly.

/// A format version: starts at 1, bumped whenever a store's layout changes incompatibly.
pub type FormatVersion = u32;

/// The version of every store written before versions were recorded.
pub const LEGACY_VERSION: FormatVersion = 1;

/// A store that this build must not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "{what} has on-disk format version {found}, but this build reads only version {current}"
    )]
    Mismatch {
        what: String,
        found: FormatVersion,
        current: FormatVersion,
    },
    #[error("{what} has an unreadable format version record {bytes:02x?} (this build reads version {current})")]
    Unreadable {
        what: String,
        bytes: Vec<u8>,
        current: FormatVersion,
    },
}

/// What the store must do after a successful [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The record is there and matches.
    Keep,
    /// Write `encode(current)` durably before using the store: it is new, or it was made
    /// by code that recorded no version.
    Record,
}

/// The bytes of a version record: 4 bytes, big-endian.
pub fn encode(version: FormatVersion) -> [u8; 4] {
    version.to_be_bytes()
}

/// Decides whether a store can be used. `what` names it in errors (kind and path), `stored`
/// is its version record if it has one, `has_data` whether it holds anything else, and
/// `current` the version this build writes.
pub fn check(
    what: &str,
    stored: Option<&[u8]>,
    has_data: bool,
    current: FormatVersion,
) -> Result<Action, FormatError> {
    assert!(current >= LEGACY_VERSION, "format versions start at 1");
    let found = match stored {
        Some(bytes) => decode(bytes).ok_or_else(|| FormatError::Unreadable {
            what: what.to_string(),
            bytes: bytes.to_vec(),
            current,
        })?,
        None if has_data => LEGACY_VERSION,
        None => return Ok(Action::Record),
    };
    if found != current {
        return Err(FormatError::Mismatch {
            what: what.to_string(),
            found,
            current,
        });
    }
    Ok(if stored.is_some() {
        Action::Keep
    } else {
        Action::Record
    })
}

/// [`check`] with the store's I/O passed in, so that every store runs the same sequence: its
/// version record `stored`, then (only without one) whether it `has_data`, then `record` of
/// the current version's bytes if needed, which must be durable when it returns.
pub fn ensure<E: From<FormatError>>(
    what: &str,
    current: FormatVersion,
    stored: Option<Vec<u8>>,
    has_data: impl FnOnce() -> Result<bool, E>,
    record: impl FnOnce(&[u8; 4]) -> Result<(), E>,
) -> Result<(), E> {
    let has_data = match stored {
        Some(_) => true,
        None => has_data()?,
    };
    match check(what, stored.as_deref(), has_data, current)? {
        Action::Keep => Ok(()),
        Action::Record => record(&encode(current)),
    }
}

fn decode(bytes: &[u8]) -> Option<FormatVersion> {
    Some(FormatVersion::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stores_and_old_stores_of_version_1_get_a_record() {
        assert_eq!(check("db", None, false, 1), Ok(Action::Record));
        assert_eq!(check("db", None, false, 2), Ok(Action::Record));
        assert_eq!(check("db", None, true, 1), Ok(Action::Record));
        assert_eq!(check("db", Some(&encode(1)), true, 1), Ok(Action::Keep));
        assert_eq!(check("db", Some(&encode(7)), false, 7), Ok(Action::Keep));
    }

    #[test]
    fn other_versions_fail_naming_both() {
        let e = check("shard db /x", Some(&encode(2)), true, 1).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("shard db /x") && msg.contains("version 2"),
            "{msg}"
        );
        assert!(msg.contains("only version 1"), "{msg}");
        // Data from before versions were recorded is version 1, refused by a later build.
        let e = check("db", None, true, 2).unwrap_err();
        assert_eq!(
            e,
            FormatError::Mismatch {
                what: "db".into(),
                found: 1,
                current: 2
            }
        );
        let e = check("db", Some(&[1, 2]), true, 1).unwrap_err();
        assert!(matches!(e, FormatError::Unreadable { .. }));
    }
}
