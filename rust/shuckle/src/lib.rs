//! Registry of shards, the CDC and block services.
