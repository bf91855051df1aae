//! Who a process is, as the requests that create inodes and change their attributes name it
//! (`eggs_protocol::Caller`): this process, or (for the FUSE daemon) the process a kernel
//! request came from.

use eggs_protocol::posix::MAX_CALLER_GROUPS;
use eggs_protocol::Caller;

/// This process's effective uid and gid and its supplementary groups.
pub fn current() -> Caller {
    let groups = nix::unistd::getgroups().unwrap_or_default();
    Caller {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: groups
            .into_iter()
            .map(|g| g.as_raw())
            .take(MAX_CALLER_GROUPS)
            .collect(),
    }
}

/// This process's umask, read without changing it (`umask(2)` can only set it).
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_field(&status, "Umask:")
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}

/// The caller of a kernel request: its uid and gid as the kernel gave them, and the
/// supplementary groups of process `pid` (FUSE requests carry none), read from `/proc`.
/// A process that is gone (or a pid of another namespace) has none.
pub fn of_process(pid: u32, uid: u32, gid: u32) -> Caller {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Caller {
        uid,
        gid,
        groups: parse_groups(status_field(&status, "Groups:").unwrap_or("")),
    }
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(field))
}

fn parse_groups(list: &str) -> Vec<u32> {
    list.split_whitespace()
        .filter_map(|g| g.parse().ok())
        .take(MAX_CALLER_GROUPS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_this_process_match_getgroups() {
        let me = current();
        let theirs = of_process(std::process::id(), me.uid, me.gid);
        let mut a = me.groups.clone();
        let mut b = theirs.groups;
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert_eq!(parse_groups(" 4 24\t27 x 1000 "), vec![4, 24, 27, 1000]);
        assert!(umask() <= 0o777);
    }
}
