//! The crate's error: what stops block services from starting.

use eggs_protocol::policy::StorageClass;
use eggs_protocol::BlockServiceId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything that stops block services from starting. Problems with single requests or
/// connections are answered or logged instead, and never stop the server.
#[derive(Debug, thiserror::Error)]
pub enum BlocksError {
    #[error("bad configuration: {0}")]
    BadConfig(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] eggs_common::format_version::FormatError),
    #[error("{}: unreadable identity file ({why}); refusing to make up a new one", path.display())]
    Identity { path: PathBuf, why: String },
    #[error("{}: holds a {stored:?} block service, not {asked:?}", path.display())]
    StorageClassMismatch {
        path: PathBuf,
        stored: StorageClass,
        asked: StorageClass,
    },
    #[error("{}: already served by another block service (this process or another)", .0.display())]
    Locked(PathBuf),
    #[error("{} and {} have the same block service id {:016x}", first.display(), second.display(), id.0)]
    DuplicateId {
        id: BlockServiceId,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Background(String),
}

impl BlocksError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> BlocksError {
        BlocksError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
