//! Integration tests and benchmarks against real processes.
