//! Where things go: shard ranges per process, binaries, ports, and the data directory.

use crate::error::RunError;
use eggs_protocol::conv::fit;
use eggs_protocol::NUM_SHARDS;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Splits the 256 shards into `processes` contiguous ranges whose sizes differ by at most one.
pub fn split_shards(processes: usize) -> Result<Vec<RangeInclusive<u8>>, RunError> {
    if processes == 0 || processes > NUM_SHARDS {
        return Err(RunError::Config(format!(
            "the number of shard processes must be between 1 and {NUM_SHARDS}, not {processes}"
        )));
    }
    let base = NUM_SHARDS / processes;
    let extra = NUM_SHARDS % processes;
    let mut start = 0usize;
    let ranges = (0..processes)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = fit::<u8, usize>(start)..=fit::<u8, usize>(start + len - 1);
            start += len;
            r
        })
        .collect();
    Ok(ranges)
}

/// The `--shards` argument of `eggsshard` for a range.
pub fn shards_arg(r: &RangeInclusive<u8>) -> String {
    format!("{}..={}", r.start(), r.end())
}

/// Where the server binaries are by default: the directory of the running executable, or its
/// parent when that is Cargo's `deps` directory (test executables live in `target/*/deps`).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    bin_dir_for(&exe)
}

pub(crate) fn bin_dir_for(exe: &Path) -> PathBuf {
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(up) = dir.parent() {
            return up.to_path_buf();
        }
    }
    dir
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> Result<u16, RunError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| RunError::io("picking a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| RunError::io("picking a free port", e))?
        .port();
    Ok(port)
}

/// Fails early, with a clear message, when something already listens on `port`.
pub(crate) fn check_port_free(port: u16) -> Result<(), RunError> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|source| RunError::PortInUse { port, source })
}

/// An exclusive lock on the data directory, held for as long as the cluster runs, so that two
/// clusters never share one set of databases.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, RunError> {
        let path = dir.join("eggsrun.lock");
        let what = || format!("locking {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RunError::io(what(), e))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(RunError::DirInUse {
                    dir: dir.to_path_buf(),
                    holder: (!holder.is_empty()).then_some(holder),
                });
            }
        };
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(|e| RunError::io(what(), e))?;
        Ok(DirLock { _file: file })
    }
}

const LAYOUT_FILE: &str = "eggsrun.layout";

/// How many shard processes the cluster in `dir` was created with, if it was created.
///
/// Shard data directories hold the shards of one range, so a directory must always be run
/// with the same split.
pub fn recorded_shard_processes(dir: &Path) -> Result<Option<usize>, RunError> {
    let path = dir.join(LAYOUT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::io(format!("reading {}", path.display()), e)),
    };
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("shard_processes="))
        .and_then(|v| v.trim().parse().ok());
    match value {
        Some(n) => Ok(Some(n)),
        None => Err(RunError::Config(format!(
            "{} has no valid shard_processes= line",
            path.display()
        ))),
    }
}

/// Records the split on first start, and refuses a different one later.
pub(crate) fn check_layout(dir: &Path, shard_processes: usize) -> Result<(), RunError> {
    match recorded_shard_processes(dir)? {
        Some(n) if n == shard_processes => Ok(()),
        Some(n) => Err(RunError::Config(format!(
            "{} was created with {n} shard process(es), not {shard_processes}: shard data \
             cannot move between processes",
            dir.display()
        ))),
        None => {
            let path = dir.join(LAYOUT_FILE);
            std::fs::write(&path, format!("shard_processes={shard_processes}\n"))
                .map_err(|e| RunError::io(format!("writing {}", path.display()), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_all_shards_evenly() {
        for n in [1, 2, 3, 7, 16, 100, 255, 256] {
            let ranges = split_shards(n).unwrap();
            assert_eq!(ranges.len(), n);
            assert_eq!(*ranges[0].start(), 0);
            assert_eq!(*ranges[n - 1].end(), 255);
            for w in ranges.windows(2) {
                assert_eq!(*w[0].end() as usize + 1, *w[1].start() as usize);
            }
            let sizes: Vec<usize> = ranges.iter().map(|r| r.clone().count()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            assert_eq!(sizes.iter().sum::<usize>(), 256);
        }
        assert_eq!(split_shards(1).unwrap(), vec![0..=255]);
        assert_eq!(split_shards(3).unwrap(), vec![0..=85, 86..=170, 171..=255]);
        assert!(split_shards(0).is_err());
        assert!(split_shards(257).is_err());
    }

    #[test]
    fn shards_arg_format() {
        assert_eq!(shards_arg(&(0..=255)), "0..=255");
        assert_eq!(shards_arg(&(7..=7)), "7..=7");
    }

    #[test]
    fn bin_dir_skips_deps() {
        let p = Path::new("/w/target/debug/deps/eggs_tests-abc123");
        assert_eq!(bin_dir_for(p), Path::new("/w/target/debug"));
        let p = Path::new("/w/target/release/eggsrun");
        assert_eq!(bin_dir_for(p), Path::new("/w/target/release"));
        assert!(default_bin_dir().is_absolute());
    }

    #[test]
    fn free_port_is_usable() {
        let p = free_port().unwrap();
        assert_ne!(p, 0);
        check_port_free(p).unwrap();
        let held = std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        assert!(matches!(
            check_port_free(p),
            Err(RunError::PortInUse { .. })
        ));
        drop(held);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("eggs-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn layout_is_recorded_and_enforced() {
        let d = temp_dir("layout");
        assert_eq!(recorded_shard_processes(&d).unwrap(), None);
        check_layout(&d, 4).unwrap();
        assert_eq!(recorded_shard_processes(&d).unwrap(), Some(4));
        check_layout(&d, 4).unwrap();
        assert!(matches!(check_layout(&d, 2), Err(RunError::Config(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dir_lock_is_exclusive() {
        let d = temp_dir("lock");
        let held = DirLock::acquire(&d).unwrap();
        let me = std::process::id().to_string();
        match DirLock::acquire(&d) {
            Err(RunError::DirInUse { holder, .. }) => assert_eq!(holder, Some(me)),
            other => panic!("expected DirInUse, got {other:?}"),
        }
        drop(held);
        DirLock::acquire(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
