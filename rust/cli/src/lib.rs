//! Command-line access and maintenance: the commands behind `eggscli`.
//!
//! `main.rs` only parses flags; every command lives in [`commands`] and writes its output to
//! a writer, so that tests can run them against a real cluster and read what they print.

pub mod accounts;
pub mod commands;
pub mod error;
pub mod format;
pub mod parse;
pub mod perms;

pub use error::{CliError, Result};
