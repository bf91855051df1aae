//! The FUSE mount next to a cluster: one `eggsfuse` child that mounts the file system under
//! the data directory, and the clean-up of a mount that a crash left behind.

use crate::error::RunError;
use crate::proc::{die_with_parent, send_signal};
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::Signal;
use nix::sys::statfs::statfs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `eggsfuse` and where it mounted.
pub struct FuseMount {
    child: Child,
    mountpoint: PathBuf,
}

impl FuseMount {
    /// Starts `eggsfuse` from `bin_dir` against shuckle at `shuckle`, logging to `log`, and
    /// waits until the mount is there.
    pub async fn start(
        bin_dir: &Path,
        shuckle: SocketAddr,
        mountpoint: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<FuseMount, RunError> {
        let program = bin_dir.join("eggsfuse");
        if !program.is_file() {
            return Err(RunError::MissingBinary(program));
        }
        clean_stale_mount(mountpoint);
        let io = |what: &str, e| RunError::io(format!("{what} {}", log.display()), e);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| io("opening", e))?;
        let err = out.try_clone().map_err(|e| io("opening", e))?;
        let mut cmd = Command::new(&program);
        cmd.arg("--shuckle")
            .arg(shuckle.to_string())
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
            .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| RunError::io(format!("starting {}", program.display()), e))?;
        let mut m = FuseMount {
            child,
            mountpoint: mountpoint.to_path_buf(),
        };
        let t0 = Instant::now();
        while !is_fuse_mounted(mountpoint) {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(RunError::ChildExited {
                    name: "eggsfuse".into(),
                    status: crate::proc::describe_status(status),
                    log: log.to_path_buf(),
                    tail: crate::proc::log_tail(log, 10),
                });
            }
            if t0.elapsed() > timeout {
                m.stop().await;
                return Err(RunError::Config(format!(
                    "eggsfuse did not mount {} within {} ms",
                    mountpoint.display(),
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(m)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `eggsfuse` is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks `eggsfuse` to unmount and exit (SIGTERM), kills it after 5 s, and detaches the
    /// mount if it is still there.
    pub async fn stop(mut self) {
        let _ = send_signal(self.child.id(), Signal::SIGTERM);
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // eggsfuse detaches its mount itself, but that sometimes races with the kernel (its
        // unmount can fail with EINVAL while the mount is still listed, seen in CI): detach
        // whatever is left, a few times, rather than leave a dead mount behind.
        for _ in 0..20 {
            if !is_fuse_mounted(&self.mountpoint) {
                break;
            }
            lazy_unmount(&self.mountpoint);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a FUSE file system is mounted at `path` (per `/proc/self/mountinfo`).
pub fn is_fuse_mounted(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = path.to_string_lossy();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        f.get(4).is_some_and(|m| *m == want)
            && sep.is_some_and(|i| f.get(i + 1).is_some_and(|t| t.starts_with("fuse")))
    })
}

/// Unmounts a mount whose process died ("transport endpoint is not connected"); returns
/// whether there was one.
pub fn clean_stale_mount(path: &Path) -> bool {
    // statfs(2), unlike stat, always reaches a FUSE daemon, even while the kernel caches the
    // mount point's attributes.
    let stale = statfs(path).err() == Some(Errno::ENOTCONN);
    stale && lazy_unmount(path)
}

/// Detaches the mount at `path` (as root directly, else through `fusermount3`).
pub fn lazy_unmount(path: &Path) -> bool {
    if umount2(path, MntFlags::MNT_DETACH).is_ok() {
        return true;
    }
    Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
