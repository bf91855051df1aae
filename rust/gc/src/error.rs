//! The one error type of eggsgc.

use eggs_client::ClientError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad status file {path}: {why}")]
    BadStatus { path: PathBuf, why: String },
    #[error("GC task failed: {0}")]
    Task(String),
}
