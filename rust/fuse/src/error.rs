//! The errors of eggsfuse, and how client errors become errnos.

use eggs_client::ClientError;
use eggs_protocol::EggsError;
use nix::errno::Errno;

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
    errno_of(e) as i32
}

fn errno_of(e: &ClientError) -> Errno {
    let Some(err) = e.eggs() else {
        return Errno::EIO;
    };
    match err {
        EggsError::NameNotFound
        | EggsError::DirectoryNotFound
        | EggsError::FileNotFound
        | EggsError::DirectoryRemoved => Errno::ENOENT,
        EggsError::NameExists | EggsError::CannotOverrideDirectory => Errno::EEXIST,
        EggsError::NotADirectory => Errno::ENOTDIR,
        EggsError::IsADirectory => Errno::EISDIR,
        EggsError::DirectoryNotEmpty => Errno::ENOTEMPTY,
        EggsError::LoopInDirectoryRename | EggsError::BadName => Errno::EINVAL,
        EggsError::CannotRemoveRoot | EggsError::EdgeLocked => Errno::EBUSY,
        EggsError::NotEnoughBlockServices => Errno::ENOSPC,
        EggsError::NotPermitted => Errno::EPERM,
        EggsError::AccessDenied => Errno::EACCES,
        EggsError::BadAttributes => Errno::EINVAL,
        _ => Errno::EIO,
    }
}
