/// Failures of the shard process itself (as opposed to errors answered to clients).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt value under key {key:02x?}: {why}")]
    Corrupt { key: Vec<u8>, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad shard set {0:?}: expected A..=B, A..B or a comma list of 0..=255")]
    BadShardSet(String),
    #[error(transparent)]
    Format(#[from] eggs_common::format_version::FormatError),
    #[error("client: {0}")]
    Client(#[from] eggs_client::ClientError),
}
