//! The simulator's shard store is the shard crate's [`eggs_shard::MemKv`]: changes visible
//! at once, durable at `sync`, and a crash rolls back everything a handle applied since its
//! last sync, like RocksDB behind the server's write-back overlays. Every core of a
//! simulated shard process has its own handle (`MemKv::sibling`) over one store.

/// The name the simulator uses for it.
pub type SimKv = eggs_shard::MemKv;
