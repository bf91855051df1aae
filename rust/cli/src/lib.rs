//! Command-line access and maintenance.
