//! One module per group of commands. Each command writes its output to `out`.

pub mod attrs;
pub mod blockservice;
pub mod cp;
pub mod fs;
pub mod io;
pub mod ls;
pub mod maintenance;
pub mod policy;
pub mod stat;
pub mod status;
pub mod tree;
pub mod undelete;

use crate::error::{CliError, Result};
use eggs_client::{Client, ClientOptions, RetryPolicy};
use std::net::SocketAddr;
use std::time::Duration;

/// A client of the cluster at `shuckle` whose requests give up after `timeout`.
pub async fn connect(shuckle: SocketAddr, timeout: Duration) -> Result<Client> {
    let deadline_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let opts = ClientOptions {
        retry: RetryPolicy {
            deadline_ms,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    Ok(Client::new(shuckle, opts).await?)
}

/// The last name of a path (`/a/b/` -> `b`), or an error for the root.
pub(crate) fn last_name(path: &str) -> Result<&str> {
    path.split('/')
        .rfind(|p| !p.is_empty() && *p != ".")
        .ok_or_else(|| CliError::Invalid(format!("{path:?} has no last name")))
}

/// `dir` + `/` + `name`, without doubling slashes.
pub(crate) fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(last_name("/a/b").unwrap(), "b");
        assert_eq!(last_name("/a/b/").unwrap(), "b");
        assert_eq!(last_name("/a/b/.").unwrap(), "b");
        assert!(last_name("/").is_err());
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a/", "x"), "/a/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }
}
