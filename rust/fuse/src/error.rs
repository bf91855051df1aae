//! The errors of eggsfuse, and how client errors become errnos.

use eggs_client::ClientError;
use eggs_protocol::EggsError;

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("mount point {path}: {source}")]
    MountPoint {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to shuckle at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: ClientError,
    },
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("FUSE session on {path}: {source}")]
    Session {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The errno a file-system call returns for a failed client operation.
pub fn errno(e: &ClientError) -> i32 {
    let Some(err) = e.eggs() else {
        return libc::EIO;
    };
    match err {
        EggsError::NameNotFound
        | EggsError::DirectoryNotFound
        | EggsError::FileNotFound
        | EggsError::DirectoryRemoved => libc::ENOENT,
        EggsError::NameExists | EggsError::CannotOverrideDirectory => libc::EEXIST,
        EggsError::NotADirectory => libc::ENOTDIR,
        EggsError::IsADirectory => libc::EISDIR,
        EggsError::DirectoryNotEmpty => libc::ENOTEMPTY,
        EggsError::LoopInDirectoryRename | EggsError::BadName => libc::EINVAL,
        EggsError::CannotRemoveRoot | EggsError::EdgeLocked => libc::EBUSY,
        EggsError::NotEnoughBlockServices => libc::ENOSPC,
        _ => libc::EIO,
    }
}
