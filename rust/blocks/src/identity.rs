//! A block service's identity: who it is to the rest of the cluster, kept in its directory.
//!
//! The file `identity` (mode 0600: it holds the secret key) is 37 bytes:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `EGGSBSI\x01` (the last byte is the format version) |
//! | 8 | 8 | block service id, `u64` little-endian, random and never 0 |
//! | 16 | 16 | secret key (random) |
//! | 32 | 1 | storage class: the protocol tag, 1 = flash, 2 = hdd |
//! | 33 | 4 | CRC32C of bytes 0..33, `u32` little-endian |
//!
//! It is created on the first start (atomically: a crash leaves no file or a whole one) and
//! only read afterwards, so the id and key are stable for the life of the disk. A file that
//! exists but does not parse stops the service from starting: making up a new identity would
//! orphan every block stored under the old one.

use crate::error::BlocksError;
use eggs_common::crypto::BlockServiceKey;
use eggs_protocol::policy::StorageClass;
use eggs_protocol::BlockServiceId;
use rand::RngCore;
use std::fmt;
use std::path::Path;

/// The identity file's name inside the service directory.
pub const IDENTITY_FILE: &str = "identity";
const MAGIC: [u8; 8] = *b"EGGSBSI\x01";
const ENCODED_LEN: usize = 37;

#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: BlockServiceId,
    pub key: BlockServiceKey,
    pub storage_class: StorageClass,
}

/// Leaves the key out, so that it never ends up in a log.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("storage_class", &self.storage_class)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate(storage_class: StorageClass) -> Identity {
        let mut rng = rand::rngs::OsRng;
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        // 0 reads as "no block service" too easily; the retry is never needed in practice.
        let id = std::iter::repeat_with(|| rng.next_u64())
            .find(|&id| id != 0)
            .unwrap_or(1);
        Identity {
            id: BlockServiceId(id),
            key,
            storage_class,
        }
    }

    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut b = [0u8; ENCODED_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&self.id.0.to_le_bytes());
        b[16..32].copy_from_slice(&self.key);
        b[32] = class_tag(&self.storage_class);
        let crc = crc32c::crc32c(&b[..33]);
        b[33..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Identity, String> {
        let b: &[u8; ENCODED_LEN] = b
            .try_into()
            .map_err(|_| format!("{} bytes instead of {ENCODED_LEN}", b.len()))?;
        if b[..7] == MAGIC[..7] && b[7] != MAGIC[7] {
            return Err(format!(
                "identity format version {}, this build reads only version {}",
                b[7], MAGIC[7]
            ));
        }
        if b[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_le_bytes([b[33], b[34], b[35], b[36]]);
        if crc != crc32c::crc32c(&b[..33]) {
            return Err("bad CRC".into());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[16..32]);
        let storage_class = class_from_tag(b[32]).ok_or("bad storage class")?;
        Ok(Identity {
            id: BlockServiceId(u64::from_le_bytes(id)),
            key,
            storage_class,
        })
    }

    /// Reads the identity of an existing service directory.
    pub fn load(dir: &Path) -> Result<Identity, BlocksError> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = std::fs::read(&path).map_err(|e| BlocksError::io(&path, e))?;
        Identity::decode(&bytes).map_err(|why| BlocksError::Identity { path, why })
    }

    /// Reads the identity of `dir`, or creates one of class `storage_class` if there is none.
    /// An existing identity of another class is an error: blocks were placed on this disk
    /// for its class, and changing it silently would break the placement policy.
    pub fn load_or_create(
        dir: &Path,
        storage_class: StorageClass,
    ) -> Result<Identity, BlocksError> {
        let path = dir.join(IDENTITY_FILE);
        let identity = match path.try_exists() {
            Ok(true) => Identity::load(dir)?,
            Ok(false) => create(dir, storage_class)?,
            Err(e) => return Err(BlocksError::io(&path, e)),
        };
        if identity.storage_class != storage_class {
            return Err(BlocksError::StorageClassMismatch {
                path: dir.to_path_buf(),
                stored: identity.storage_class,
                asked: storage_class,
            });
        }
        Ok(identity)
    }
}

fn create(dir: &Path, storage_class: StorageClass) -> Result<Identity, BlocksError> {
    let identity = Identity::generate(storage_class);
    crate::sys::write_atomically(dir, IDENTITY_FILE, &identity.encode(), 0o600)
        .map_err(|e| BlocksError::io(dir.join(IDENTITY_FILE), e))?;
    tracing::info!(
        "created block service {:016x} in {}",
        identity.id.0,
        dir.display()
    );
    Ok(identity)
}

fn class_tag(c: &StorageClass) -> u8 {
    match c {
        StorageClass::Inline => 0,
        StorageClass::Flash => 1,
        StorageClass::Hdd => 2,
    }
}

/// Inline is no class for a disk, so it is rejected like any unknown tag.
fn class_from_tag(tag: u8) -> Option<StorageClass> {
    match tag {
        1 => Some(StorageClass::Flash),
        2 => Some(StorageClass::Hdd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let id = Identity::generate(StorageClass::Hdd);
        let bytes = id.encode();
        assert_eq!(Identity::decode(&bytes), Ok(id));
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(Identity::decode(&bad).is_err(), "flipped byte {i}");
        }
        assert!(Identity::decode(&bytes[..36]).is_err());
        let mut newer = bytes;
        newer[7] = 2;
        let why = Identity::decode(&newer).unwrap_err();
        assert!(
            why.contains("version 2") && why.contains("only version 1"),
            "{why}"
        );
    }

    #[test]
    fn stable_across_reopen_and_class_checked() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let first = Identity::load_or_create(dir.path(), StorageClass::Flash).expect("create");
        let again = Identity::load_or_create(dir.path(), StorageClass::Flash).expect("reopen");
        assert_eq!(first, again);
        assert_ne!(first.id.0, 0);
        let err = Identity::load_or_create(dir.path(), StorageClass::Hdd);
        assert!(matches!(err, Err(BlocksError::StorageClassMismatch { .. })));
        assert!(!dir.path().join("identity.tmp").exists());
    }

    #[test]
    fn corrupt_identity_refuses_to_start() {
        let dir = tempfile::tempdir().expect("create temp dir");
        std::fs::write(dir.path().join(IDENTITY_FILE), b"garbage").expect("write");
        let err = Identity::load_or_create(dir.path(), StorageClass::Flash);
        assert!(matches!(err, Err(BlocksError::Identity { .. })));
    }

    #[test]
    fn debug_hides_the_key() {
        let mut id = Identity::generate(StorageClass::Flash);
        id.key = *b"SECRETSECRETSECR";
        assert!(!format!("{id:?}").contains("SECRET"));
        assert!(!format!("{id:?}").contains("83, 69"), "no key bytes either");
    }
}
