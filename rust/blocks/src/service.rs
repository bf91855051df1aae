//! One block service: a directory with its identity, its blocks, and the flags shuckle holds
//! for it.

use crate::error::BlocksError;
use crate::identity::Identity;
use crate::store::{Store, LOCK_FILE};
use eggs_common::crypto::BlockServiceKey;
use eggs_protocol::policy::StorageClass;
use eggs_protocol::shuckle::flags;
use eggs_protocol::BlockServiceId;
use nix::fcntl::Flock;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Service {
    pub identity: Identity,
    pub store: Store,
    /// The flags shuckle last reported, refreshed by the registration loop.
    flags: AtomicU8,
    /// Keeps the directory's lock for as long as the service lives.
    _lock: Flock<File>,
}

impl Service {
    /// Opens (creating if needed) the service stored in `dir`. Blocking.
    pub fn open(dir: &Path, class: StorageClass) -> Result<Service, BlocksError> {
        if class == StorageClass::Inline {
            return Err(BlocksError::BadConfig(format!(
                "{}: inline is not a storage class for a disk",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| BlocksError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        crate::store::check_format_version(dir)?;
        let identity = Identity::load_or_create(dir, class)?;
        let store = Store::open(dir).map_err(|e| BlocksError::io(dir, e))?;
        tracing::info!(
            "block service {:016x} ({:?}) in {}: {} blocks",
            identity.id.0,
            identity.storage_class,
            dir.display(),
            store.block_count()
        );
        Ok(Service {
            identity,
            store,
            flags: AtomicU8::new(0),
            _lock: lock,
        })
    }

    pub fn id(&self) -> BlockServiceId {
        self.identity.id
    }

    pub fn key(&self) -> &BlockServiceKey {
        &self.identity.key
    }

    pub fn path(&self) -> PathBuf {
        self.store.root().to_path_buf()
    }

    pub fn set_flags(&self, new: u8) {
        let old = self.flags.swap(new, Ordering::Relaxed);
        if old != new {
            tracing::info!(
                "block service {:016x}: flags {old:#04x} -> {new:#04x}",
                self.id().0
            );
        }
    }

    /// Whether operators have told this service to take no new blocks.
    pub fn refuses_writes(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (flags::NO_WRITE | flags::READ_ONLY) != 0
    }

    /// Whether operators have told this service to keep every block it has.
    pub fn refuses_erasures(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & flags::READ_ONLY != 0
    }
}

/// Two processes serving one directory would count and clean up each other's files.
fn lock_dir(dir: &Path) -> Result<Flock<File>, BlocksError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| BlocksError::io(&path, e))?;
    match crate::sys::try_lock(file) {
        Ok(Some(locked)) => Ok(locked),
        Ok(None) => Err(BlocksError::Locked(dir.to_path_buf())),
        Err(e) => Err(BlocksError::io(&path, e)),
    }
}

/// The services of one process, in configuration order and by id.
#[derive(Debug)]
pub(crate) struct Services {
    list: Vec<Arc<Service>>,
    by_id: HashMap<BlockServiceId, Arc<Service>>,
}

impl Services {
    /// Opens every directory. Blocking.
    pub fn open(dirs: &[(PathBuf, StorageClass)]) -> Result<Services, BlocksError> {
        let mut list: Vec<Arc<Service>> = Vec::with_capacity(dirs.len());
        let mut by_id = HashMap::with_capacity(dirs.len());
        for (dir, class) in dirs {
            let service = Arc::new(Service::open(dir, *class)?);
            // Only possible when a directory was copied: two disks would then answer for one.
            if let Some(first) = by_id.insert(service.id(), service.clone()) {
                return Err(BlocksError::DuplicateId {
                    id: service.id(),
                    first: first.path(),
                    second: service.path(),
                });
            }
            list.push(service);
        }
        Ok(Services { list, by_id })
    }

    pub fn ids(&self) -> Vec<BlockServiceId> {
        self.list.iter().map(|s| s.id()).collect()
    }

    pub fn get(&self, id: BlockServiceId) -> Option<&Arc<Service>> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.list.iter()
    }

    /// Waits, up to `limit`, until no request or registration still holds a service. File
    /// work on the blocking pool cannot be cancelled, and a directory stays locked until
    /// its service is dropped; waiting lets a restart in the same process reopen it.
    pub async fn wait_unused(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        // Each service is held once by `list` and once by `by_id`.
        while self.list.iter().any(|s| Arc::strong_count(s) > 2) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}
