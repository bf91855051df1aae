/// Failures of the shard's storage and logic (as opposed to errors answered to clients):
/// what [`crate::ShardCore`] and a [`crate::Kv`] can return. Nothing here comes from the
/// network, so the core does not depend on the client library.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt value under key {key:02x?}: {why}")]
    Corrupt { key: Vec<u8>, why: String },
    #[error(transparent)]
    Format(#[from] eggs_common::format_version::FormatError),
}

/// Failures of the shard process around the core: configuration, sockets, threads and the
/// registration with shuckle, plus the core's own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad shard set {0:?}: expected A..=B, A..B or a comma list of 0..=255")]
    BadShardSet(String),
    #[error("client: {0}")]
    Client(#[from] eggs_client::ClientError),
}
