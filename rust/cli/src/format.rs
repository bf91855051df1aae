//! Showing things to people: sizes, durations, times, modes, tables and policies.

use eggs_protocol::policy::{DirectoryInfo, StorageClass};
use eggs_protocol::posix::{
    S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, S_ISGID, S_ISUID,
    S_ISVTX,
};
use eggs_protocol::{EggsTime, InodeId, InodeType};

const UNITS: &[(&str, u32)] = &[("T", 40), ("G", 30), ("M", 20), ("K", 10)];

/// Exact size in the largest unit that divides it: `65536` -> `64K`, `1000` -> `1000`.
/// The output parses back with [`crate::parse::parse_size`].
pub fn size_exact(bytes: u64) -> String {
    for (unit, shift) in UNITS {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Approximate size for reading: `1.5G`, `12K`, `512`.
pub fn size_human(bytes: u64) -> String {
    for (unit, shift) in UNITS {
        let base = 1u64 << shift;
        if bytes >= base {
            let v = bytes as f64 / base as f64;
            return if v < 10.0 {
                format!("{v:.1}{unit}")
            } else {
                format!("{v:.0}{unit}")
            };
        }
    }
    bytes.to_string()
}

/// Weeks are accepted on input but not shown: `7d` reads better than `1w`.
const NS_UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Exact duration in the largest unit that divides it (`30d`, `36h`); parses back with
/// [`crate::parse::parse_duration`].
pub fn duration_exact(ns: u64) -> String {
    if ns == 0 {
        return "0".into();
    }
    for (unit, per) in NS_UNITS {
        if ns % per == 0 {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// How long ago `t` was, roughly: `0.4s`, `12m`, `3d`, or `never` for the zero time.
pub fn age(now: EggsTime, t: EggsTime) -> String {
    if t.0 == 0 {
        return "never".into();
    }
    let ns = now.0.saturating_sub(t.0);
    let secs = ns as f64 / 1e9;
    if secs < 60.0 {
        format!("{secs:.1}s ago")
    } else if secs < 3600.0 {
        format!("{:.0}m ago", secs / 60.0)
    } else if secs < 86400.0 {
        format!("{:.0}h ago", secs / 3600.0)
    } else {
        format!("{:.0}d ago", secs / 86400.0)
    }
}

/// `2024-05-01 10:00:00` (UTC), for listings.
pub fn time_short(t: EggsTime) -> String {
    time_prefix(t, 19)
}

/// `2024-05-01 10:00:00.123` (UTC), where the order of close events matters.
pub fn time_ms(t: EggsTime) -> String {
    time_prefix(t, 23)
}

fn time_prefix(t: EggsTime, len: usize) -> String {
    let full = t.to_string();
    full.get(..len).map(|s| s.replace('T', " ")).unwrap_or(full)
}

pub fn type_name(id: InodeId) -> &'static str {
    match id.typ() {
        Some(InodeType::Directory) => "dir",
        Some(InodeType::File) => "file",
        Some(InodeType::Symlink) => "link",
        None => "?",
    }
}

/// The type letter `ls -l` shows for a mode's file type: `-` (regular file), `d`, `l`,
/// `p` (FIFO), `s` (socket), `c`, `b` (character and block devices), `?` for no known type.
pub fn type_char(mode: u32) -> char {
    match mode & S_IFMT {
        S_IFREG => '-',
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        S_IFIFO => 'p',
        S_IFSOCK => 's',
        S_IFCHR => 'c',
        S_IFBLK => 'b',
        _ => '?',
    }
}

/// A mode as `ls -l` shows it, `drwxr-xr-x`: the type letter ([`type_char`]), then read,
/// write and execute of owner, group and others. Setuid, setgid and sticky take the place of
/// the owner's, group's and others' execute: `s`, `s`, `t` when that execute bit is set too,
/// `S`, `S`, `T` when it is not.
pub fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char(mode));
    for (shift, special, set, unset) in [
        (6, S_ISUID, 's', 'S'),
        (3, S_ISGID, 's', 'S'),
        (0, S_ISVTX, 't', 'T'),
    ] {
        let bits = mode >> shift;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The mode string of an inode whose attributes are unknown (its stat failed), as `ls -l`
/// shows one: the type its id says, then `?` for every permission.
pub fn unknown_mode_string(id: InodeId) -> String {
    let t = match id.typ() {
        Some(InodeType::Directory) => 'd',
        Some(InodeType::File) => '-',
        Some(InodeType::Symlink) => 'l',
        None => '?',
    };
    format!("{t}?????????")
}

/// What `stat` calls a mode's file type. Directories, regular files and symlinks have the
/// names [`type_name`] gives their inode ids.
pub fn mode_type_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFREG => "file",
        S_IFDIR => "dir",
        S_IFLNK => "link",
        S_IFIFO => "fifo",
        S_IFSOCK => "socket",
        S_IFCHR => "char-device",
        S_IFBLK => "block-device",
        _ => "?",
    }
}

/// The major number of a device number in Linux's encoding (glibc's `major`): bits 8..20
/// and 44..64.
pub fn dev_major(rdev: u64) -> u32 {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    // Bits 8..20 and 44..64 of a u64: 12 + 20 bits.
    eggs_protocol::conv::fit(major)
}

/// The minor number of a device number in Linux's encoding (glibc's `minor`): bits 0..8
/// and 20..44.
pub fn dev_minor(rdev: u64) -> u32 {
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    // Bits 0..8 and 20..44 of a u64: 8 + 24 bits.
    eggs_protocol::conv::fit(minor)
}

/// A device number as `ls -l` shows it in place of the size: `8, 1`.
pub fn device(rdev: u64) -> String {
    format!("{}, {}", dev_major(rdev), dev_minor(rdev))
}

pub fn storage_class(c: StorageClass) -> &'static str {
    match c {
        StorageClass::Inline => "inline",
        StorageClass::Flash => "flash",
        StorageClass::Hdd => "hdd",
    }
}

/// Lines of columns, padded to line up; `right[i]` right-aligns column `i`. The last column
/// is never padded.
pub fn table(rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let w = widths[c];
                    if c + 1 == row.len() {
                        cell.clone()
                    } else if right.get(c).copied().unwrap_or(false) {
                        format!("{cell:>w$}")
                    } else {
                        format!("{cell:<w$}")
                    }
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

/// The four policies, one line each, marking which are set on the directory itself.
pub fn policies(own: &DirectoryInfo, effective: &DirectoryInfo) -> Vec<String> {
    let origin = |set: bool| if set { "(set here)" } else { "(inherited)" };
    let mut rows = Vec::new();
    let mut row = |name: &str, value: Option<String>, set: bool| {
        let value = value.unwrap_or_else(|| "unset".into());
        rows.push(vec![name.to_string(), value, origin(set).to_string()]);
    };
    row(
        "snapshot",
        effective.snapshot.as_ref().map(|s| {
            let after = match s.delete_after_ns {
                0 => "never".to_string(),
                ns => duration_exact(ns),
            };
            let keep = match s.delete_after_versions {
                0 => "all".to_string(),
                n => n.to_string(),
            };
            format!("delete-after={after} keep-versions={keep}")
        }),
        own.snapshot.is_some(),
    );
    row(
        "span",
        effective.span.as_ref().map(|s| {
            let items: Vec<String> = s
                .entries
                .iter()
                .map(|e| {
                    let size = size_exact(e.max_span_size.into());
                    format!("{size}:{}+{}", e.parity.data, e.parity.parity)
                })
                .collect();
            items.join(",")
        }),
        own.span.is_some(),
    );
    row(
        "block",
        effective.block.as_ref().map(|b| {
            let items: Vec<String> = b
                .entries
                .iter()
                .map(|e| {
                    let size = size_exact(e.min_size.into());
                    format!("{size}:{}", storage_class(e.storage_class))
                })
                .collect();
            items.join(",")
        }),
        own.block.is_some(),
    );
    row(
        "stripe",
        effective
            .stripe
            .as_ref()
            .map(|s| size_exact(s.target_stripe_size.into())),
        own.stripe.is_some(),
    );
    table(&rows, &[])
}

/// Block-service flag names, `-` when none is set.
pub fn block_service_flags(flags: u8) -> String {
    use eggs_protocol::shuckle::flags as f;
    let names = [
        (f::NO_WRITE, "no-write"),
        (f::NO_READ, "no-read"),
        (f::DECOMMISSIONED, "decommissioned"),
        (f::STALE, "stale"),
        (f::READ_ONLY, "read-only"),
    ];
    let mut set: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known = names.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !known != 0 {
        set.push(format!("0x{:02x}", flags & !known));
    }
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

/// A span's redundancy: `RS(10,4)`, or `mirrored 1+2` for copies (one data block).
pub fn parity(p: eggs_protocol::policy::Parity) -> String {
    if p.data == 1 {
        format!("mirrored 1+{}", p.parity)
    } else {
        format!("RS({},{})", p.data, p.parity)
    }
}

/// Failure domains are names padded with NULs.
pub fn failure_domain(fd: &[u8; 16]) -> String {
    let end = fd.iter().position(|&b| b == 0).unwrap_or(fd.len());
    String::from_utf8_lossy(&fd[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_duration, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(size_exact(0), "0");
        assert_eq!(size_exact(1000), "1000");
        assert_eq!(size_exact(65536), "64K");
        assert_eq!(size_exact(10 << 20), "10M");
        assert_eq!(size_exact(3 << 30), "3G");
        assert_eq!(size_exact(1536), "1536");
        for n in [0, 1, 1536, 4096, 65536, 10 << 20, 1 << 40, 12345678] {
            assert_eq!(parse_size(&size_exact(n)), Ok(n));
        }
        assert_eq!(size_human(512), "512");
        assert_eq!(size_human(1536), "1.5K");
        assert_eq!(size_human(100 << 20), "100M");
        assert_eq!(size_human(3 << 40), "3.0T");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_exact(0), "0");
        assert_eq!(duration_exact(30 * 86_400_000_000_000), "30d");
        assert_eq!(duration_exact(36 * 3_600_000_000_000), "36h");
        assert_eq!(duration_exact(14 * 86_400_000_000_000), "14d");
        assert_eq!(duration_exact(1_500_000_000), "1500ms");
        assert_eq!(duration_exact(7), "7ns");
        for s in ["90s", "30d", "12h", "250ms", "7d"] {
            assert_eq!(duration_exact(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn ages_and_times() {
        let now = EggsTime(1_000 * 1_000_000_000);
        assert_eq!(age(now, EggsTime(0)), "never");
        assert_eq!(age(now, EggsTime(now.0 - 400_000_000)), "0.4s ago");
        assert_eq!(age(now, EggsTime(now.0 - 600 * 1_000_000_000)), "10m ago");
        assert_eq!(
            time_short(EggsTime(1_700_000_000_123_456_789)),
            "2023-11-14 22:13:20"
        );
        assert_eq!(
            time_ms(EggsTime(1_700_000_000_123_456_789)),
            "2023-11-14 22:13:20.123"
        );
    }

    #[test]
    fn tables() {
        let rows = vec![
            vec!["dir".to_string(), "-".into(), "a".into()],
            vec!["file".to_string(), "12345".into(), "bb".into()],
        ];
        assert_eq!(
            table(&rows, &[false, true]),
            ["dir       -  a", "file  12345  bb"]
        );
        assert!(table(&[], &[]).is_empty());
    }

    #[test]
    fn root_policies() {
        let root = DirectoryInfo::root_default();
        let lines = policies(&root, &root);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "snapshot  delete-after=30d keep-versions=all  (set here)"
        );
        assert!(lines[1].starts_with("span      64K:1+2,10M:4+4,100M:10+4"));
        assert!(lines[2].starts_with("block     0:flash,2M:hdd"));
        assert!(lines[3].starts_with("stripe    1M"));
        let lines = policies(&DirectoryInfo::default(), &root);
        assert!(lines.iter().all(|l| l.ends_with("(inherited)")));
    }

    #[test]
    fn parities_and_domains() {
        use eggs_protocol::policy::Parity;
        assert_eq!(
            parity(Parity {
                data: 10,
                parity: 4
            }),
            "RS(10,4)"
        );
        assert_eq!(parity(Parity { data: 1, parity: 2 }), "mirrored 1+2");
        let mut fd = [0u8; 16];
        fd[..4].copy_from_slice(b"rack");
        assert_eq!(failure_domain(&fd), "rack");
        assert_eq!(failure_domain(&[b'x'; 16]), "x".repeat(16));
    }

    /// Linux's (glibc's) `makedev`, to check decoding against.
    fn makedev(major: u32, minor: u32) -> u64 {
        let (major, minor) = (u64::from(major), u64::from(minor));
        (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
    }

    #[test]
    fn mode_strings_of_every_type() {
        assert_eq!(mode_string(S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(S_IFREG | 0o640), "-rw-r-----");
        assert_eq!(mode_string(S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(S_IFIFO | 0o644), "prw-r--r--");
        assert_eq!(mode_string(S_IFSOCK | 0o700), "srwx------");
        assert_eq!(mode_string(S_IFCHR | 0o660), "crw-rw----");
        assert_eq!(mode_string(S_IFBLK | 0o660), "brw-rw----");
        assert_eq!(mode_string(S_IFREG), "----------");
        assert_eq!(mode_string(0o644), "?rw-r--r--", "no type bits");
        assert_eq!(mode_string(0o170_644), "?rw-r--r--", "not a type");
        for (mode, name) in [
            (S_IFREG, "file"),
            (S_IFDIR, "dir"),
            (S_IFLNK, "link"),
            (S_IFIFO, "fifo"),
            (S_IFSOCK, "socket"),
            (S_IFCHR, "char-device"),
            (S_IFBLK, "block-device"),
            (0, "?"),
        ] {
            assert_eq!(mode_type_name(mode | 0o600), name);
        }
    }

    #[test]
    fn setuid_setgid_and_sticky_show_in_the_execute_places() {
        assert_eq!(mode_string(S_IFREG | S_ISUID | 0o755), "-rwsr-xr-x");
        assert_eq!(mode_string(S_IFREG | S_ISUID | 0o644), "-rwSr--r--");
        assert_eq!(mode_string(S_IFREG | S_ISGID | 0o755), "-rwxr-sr-x");
        assert_eq!(mode_string(S_IFREG | S_ISGID | 0o644), "-rw-r-Sr--");
        assert_eq!(mode_string(S_IFDIR | S_ISVTX | 0o777), "drwxrwxrwt");
        assert_eq!(mode_string(S_IFDIR | S_ISVTX | 0o776), "drwxrwxrwT");
        assert_eq!(mode_string(S_IFDIR | S_ISGID | 0o2775), "drwxrwsr-x");
        assert_eq!(mode_string(S_IFREG | 0o7777), "-rwsrwsrwt");
        assert_eq!(mode_string(S_IFREG | 0o7000), "---S--S--T");
    }

    #[test]
    fn unknown_modes_keep_the_type_of_the_id() {
        let id = |t| InodeId::new(t, eggs_protocol::ShardId(1), 2);
        assert_eq!(unknown_mode_string(id(InodeType::Directory)), "d?????????");
        assert_eq!(unknown_mode_string(id(InodeType::File)), "-?????????");
        assert_eq!(unknown_mode_string(id(InodeType::Symlink)), "l?????????");
    }

    #[test]
    fn device_numbers_decode_as_linux_encodes_them() {
        assert_eq!(device(makedev(8, 1)), "8, 1");
        assert_eq!(device(0x0801), "8, 1");
        assert_eq!(device(makedev(1, 3)), "1, 3");
        assert_eq!(device(0), "0, 0");
        for (major, minor) in [(259, 65536), (4095, 255), (4096, 256), (u32::MAX, u32::MAX)] {
            let rdev = makedev(major, minor);
            assert_eq!((dev_major(rdev), dev_minor(rdev)), (major, minor));
        }
        assert_eq!(dev_major(u64::MAX), u32::MAX);
        assert_eq!(dev_minor(u64::MAX), u32::MAX);
    }

    #[test]
    fn flags() {
        assert_eq!(block_service_flags(0), "-");
        assert_eq!(block_service_flags(1 | 8), "no-write,stale");
        assert_eq!(block_service_flags(0x80), "0x80");
    }
}
