use std::path::PathBuf;

/// Everything that can go wrong while running a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("{} not found (build it with `cargo build --workspace --bins`, or pass another bin dir)", .0.display())]
    MissingBinary(PathBuf),
    #[error("{} is in use by another eggsrun{}", .dir.display(), .holder.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    DirInUse {
        dir: PathBuf,
        holder: Option<String>,
    },
    #[error("port {port} is already in use: is another cluster running? ({source})")]
    PortInUse {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); last lines of {}:\n{tail}", .log.display())]
    ChildExited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("after {waited_ms} ms still not registered with shuckle: {missing}")]
    NotRegistered { waited_ms: u64, missing: String },
    #[error("no process named {0:?} in this cluster")]
    UnknownProcess(String),
    #[error("sending signal {signal} to {name} (pid {pid}): {source}")]
    Signal {
        name: String,
        pid: u32,
        signal: nix::sys::signal::Signal,
        #[source]
        source: std::io::Error,
    },
    #[error("not stopped cleanly: {}", .0.join(", "))]
    Unclean(Vec<String>),
    #[error(transparent)]
    Client(#[from] eggs_client::ClientError),
}

impl RunError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> RunError {
        RunError::Io {
            what: what.into(),
            source,
        }
    }
}
