use eggs_protocol::EggsError;

/// Everything that can go wrong in a client operation, with enough context to say where.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{what}: {err}")]
    Eggs { what: String, err: EggsError },
    #[error("{what}: no answer after {attempts} attempts over {elapsed_ms} ms")]
    Timeout {
        what: String,
        attempts: u32,
        elapsed_ms: u64,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: bad response: {why}")]
    BadResponse { what: String, why: String },
    #[error("bad path {path:?}: {why}")]
    BadPath { path: String, why: String },
}

impl ClientError {
    /// The server-side error, if that is what this is.
    pub fn eggs(&self) -> Option<EggsError> {
        match self {
            ClientError::Eggs { err, .. } => Some(*err),
            _ => None,
        }
    }
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> ClientError {
        ClientError::Io {
            what: what.into(),
            source,
        }
    }
    pub(crate) fn with_context(self, ctx: &str) -> ClientError {
        match self {
            ClientError::Eggs { what, err } => ClientError::Eggs {
                what: format!("{ctx}: {what}"),
                err,
            },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
