//! Dropping, at start, the Linux capabilities a daemon does not need, so that a bug in a
//! server run as root cannot use privileges it never needed (overriding file permissions,
//! killing other users' processes, writing into the blocks reserved for root, ...).
//!
//! Capability sets belong to threads, and a new thread copies its creator's: call
//! [`drop_all_except`] while the process has one thread, before the tokio runtime starts.

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("capabilities: {what}: {source}")]
    Kernel {
        what: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// What [`drop_all_except`] left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The effective and permitted sets: the wanted capabilities the process had.
    pub permitted: Vec<Capability>,
    /// Whether the bounding set was cut down to the wanted capabilities; false when the
    /// process lacked `CAP_SETPCAP` (not root), which it needs for that.
    pub bounding_reduced: bool,
}

/// Clears the effective, permitted, inheritable and ambient sets except for those of `keep`
/// that the process has, and the bounding set (which limits what a program it executes
/// could regain, root's setuid helpers included) except for `keep`. Without `CAP_SETPCAP`
/// the bounding set stays as it is, with a warning. Logs one line saying what it kept.
///
/// Panics when the process already runs other threads: they would keep their capabilities.
pub fn drop_all_except(keep: &[Capability]) -> Result<Kept, CapsError> {
    let threads = own_thread_count();
    assert!(
        !matches!(threads, Some(n) if n > 1),
        "capabilities must be dropped before threads start ({threads:?} running)"
    );
    let bounding_reduced = reduce_bounding(keep)?;
    caps::clear(None, CapSet::Ambient).map_err(kernel("clearing the ambient set"))?;
    let had = caps::read(None, CapSet::Permitted).map_err(kernel("reading the permitted set"))?;
    let kept: CapsHashSet = keep.iter().copied().filter(|c| had.contains(c)).collect();
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &kept).map_err(kernel("setting the effective set"))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(kernel("clearing the inheritable set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(kernel("setting the permitted set"))?;
    let mut permitted: Vec<Capability> = kept.into_iter().collect();
    permitted.sort_by_key(Capability::index);
    let result = Kept {
        permitted,
        bounding_reduced,
    };
    tracing::info!("{}", describe(&result));
    Ok(result)
}

/// The log line of [`drop_all_except`].
pub fn describe(kept: &Kept) -> String {
    let mut line = String::from("capabilities: kept ");
    if kept.permitted.is_empty() {
        line.push_str("none");
    }
    for (i, c) in kept.permitted.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(line, "{sep}{c}");
    }
    line.push_str(if kept.bounding_reduced {
        "; bounding set cut down to what is kept"
    } else {
        "; bounding set unchanged (no CAP_SETPCAP)"
    });
    line
}

fn reduce_bounding(keep: &[Capability]) -> Result<bool, CapsError> {
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(kernel("reading the bounding set"))?;
    let mut extra: Vec<Capability> = bounding.into_iter().filter(|c| !keep.contains(c)).collect();
    if extra.is_empty() {
        return Ok(true);
    }
    let may = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(kernel("reading the effective set"))?;
    if !may {
        tracing::warn!(
            "capabilities: without CAP_SETPCAP the bounding set keeps {} capabilities that a \
             setuid or file-capability program started from here could regain",
            extra.len()
        );
        return Ok(false);
    }
    // CAP_SETPCAP last: each drop needs it.
    extra.sort_by_key(|c| *c == Capability::CAP_SETPCAP);
    for c in extra {
        caps::drop(None, CapSet::Bounding, c).map_err(kernel("dropping from the bounding set"))?;
    }
    Ok(true)
}

fn kernel(what: &'static str) -> impl Fn(caps::errors::CapsError) -> CapsError {
    move |source| CapsError::Kernel { what, source }
}

fn own_thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field(&status, "Threads:")?.parse().ok()
}

/// The capability masks of one thread, as `/proc/<pid>/task/<tid>/status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    pub tid: u32,
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// The capabilities of every thread of process `pid` (how tests and operators check that a
/// daemon dropped them: `/proc/<pid>/status` alone shows only the main thread).
pub fn of_process(pid: u32) -> std::io::Result<Vec<ThreadCaps>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that exited since the listing has no status any more.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let caps = parse_status(&status).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no capability masks in /proc/{pid}/task/{tid}/status"),
            )
        })?;
        threads.push(ThreadCaps { tid, ..caps });
    }
    Ok(threads)
}

/// The `Cap*` masks of a `/proc/.../status` text (`tid` left 0).
pub fn parse_status(status: &str) -> Option<ThreadCaps> {
    let mask = |name| u64::from_str_radix(status_field(status, name)?, 16).ok();
    Some(ThreadCaps {
        tid: 0,
        inheritable: mask("CapInh:")?,
        permitted: mask("CapPrm:")?,
        effective: mask("CapEff:")?,
        bounding: mask("CapBnd:")?,
        ambient: mask("CapAmb:")?,
    })
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_masks_of_a_status_file() {
        let status = "Name:\teggsshard\nThreads:\t3\nCapInh:\t0000000000000000\n\
                      CapPrm:\t0000000000200000\nCapEff:\t0000000000200000\n\
                      CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let caps = parse_status(status).unwrap();
        assert_eq!(caps.permitted, Capability::CAP_SYS_ADMIN.bitmask());
        assert_eq!(caps.effective, caps.permitted);
        assert_eq!(caps.bounding, (1 << 41) - 1);
        assert_eq!(caps.inheritable | caps.ambient, 0);
        assert_eq!(status_field(status, "Threads:"), Some("3"));
        assert_eq!(parse_status("Name:\tx\nCapInh:\tzz\n"), None);
    }

    #[test]
    fn this_process_threads_are_listed() {
        let threads = of_process(std::process::id()).unwrap();
        assert!(threads.iter().any(|t| t.tid == std::process::id()));
        let own = parse_status(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
        // Every thread of a test binary has the capabilities it started with.
        assert!(threads.iter().all(|t| t.permitted == own.permitted));
    }

    #[test]
    fn the_log_line_names_what_is_kept() {
        let kept = Kept {
            permitted: vec![Capability::CAP_SYS_ADMIN],
            bounding_reduced: true,
        };
        assert_eq!(
            describe(&kept),
            "capabilities: kept CAP_SYS_ADMIN; bounding set cut down to what is kept"
        );
        let none = Kept {
            permitted: vec![],
            bounding_reduced: false,
        };
        assert!(describe(&none).starts_with("capabilities: kept none; bounding set unchanged"));
    }
}
