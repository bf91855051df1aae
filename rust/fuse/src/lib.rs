//! eggsfuse: EggsFS mounted through FUSE.
//!
//! [`mount`] connects to shuckle, cleans up a stale mount left by a crash, mounts, and serves
//! until the file system is unmounted or the process gets SIGINT/SIGTERM (then it unmounts).
//! The file system itself is in `fs` (callbacks, shared state, write path); the read cache
//! in `cache`.
//!
//! Write semantics (see the README): a file is written once, sequentially, by one open file
//! description, and appears when that description is released (its last descriptor closed).
//! Writes anywhere but at the current end fail with `EOPNOTSUPP`; opening an existing,
//! non-empty file for writing without `O_TRUNC` fails with `EPERM`.

mod cache;
mod error;
mod fs;

pub use error::FuseError;
pub use fs::{CacheTimes, MAX_IO_BYTES};

use eggs_client::{Client, ClientOptions};
use fuser::MountOption;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sys::statfs::statfs;
use nix::unistd::geteuid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The capabilities eggsfuse keeps, when it has them (as root): mounting and unmounting
/// with mount(2) and umount2(2) need CAP_SYS_ADMIN. Also kept in the bounding set, so that
/// the setuid `fusermount3` (the fallback, and what an unprivileged user mounts with) can
/// still get it. Nothing else: /dev/fuse is open to everyone and the mount point is ours.
pub const MOUNT_CAPS: &[eggs_common::caps::Capability] =
    &[eggs_common::caps::Capability::CAP_SYS_ADMIN];

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub shuckle: SocketAddr,
    pub mountpoint: PathBuf,
    pub times: CacheTimes,
    /// Budget of the read cache.
    pub read_cache_bytes: usize,
    /// Let other users use the mount (always on when running as root).
    pub allow_other: bool,
    /// Tokio worker threads.
    pub threads: usize,
}

impl MountConfig {
    pub fn new(shuckle: SocketAddr, mountpoint: impl Into<PathBuf>) -> MountConfig {
        MountConfig {
            shuckle,
            mountpoint: mountpoint.into(),
            times: CacheTimes::default(),
            read_cache_bytes: 512 << 20,
            allow_other: false,
            threads: 4,
        }
    }
}

/// Mounts EggsFS and serves it until it is unmounted or a signal asks to stop.
pub fn mount(cfg: MountConfig) -> Result<(), FuseError> {
    let mnt = &cfg.mountpoint;
    let path = mnt.display().to_string();
    let mp_err = |source| FuseError::MountPoint {
        path: path.clone(),
        source,
    };
    clean_stale_mount(mnt);
    std::fs::create_dir_all(mnt).map_err(mp_err)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()
        .map_err(FuseError::Runtime)?;
    let client = rt
        .block_on(Client::new(cfg.shuckle, ClientOptions::default()))
        .map_err(|source| FuseError::Connect {
            addr: cfg.shuckle.to_string(),
            source,
        })?;
    let fs = fs::EggsFs::new(
        Arc::new(client),
        rt.handle().clone(),
        cfg.times,
        cfg.read_cache_bytes,
    );
    let slot = fs.notifier_slot();
    let mut opts = vec![
        MountOption::FSName("eggsfs".into()),
        MountOption::Subtype("eggsfs".into()),
        MountOption::RW,
        MountOption::NoDev,
        MountOption::NoSuid,
        // The kernel checks modes and owners for every access (read, write, search, the
        // sticky bit, who may chmod and chown) against the attributes we report, as for a
        // local file system; the shard checks attribute changes again.
        MountOption::DefaultPermissions,
    ];
    if cfg.allow_other || geteuid().is_root() {
        opts.push(MountOption::AllowOther);
    }
    let session_err = |source| FuseError::Session {
        path: path.clone(),
        source,
    };
    let mut session = fuser::Session::new(fs, mnt, &opts).map_err(session_err)?;
    slot.set(session.notifier());
    let stop_path = mnt.clone();
    rt.spawn(async move {
        eggs_common::shutdown_signal().await;
        tracing::info!("unmounting {}", stop_path.display());
        // The session's loop ends once the kernel drops the mount.
        if !lazy_unmount(&stop_path) {
            tracing::error!("could not unmount {}", stop_path.display());
        }
    });
    tracing::info!("EggsFS from {} mounted on {path}", cfg.shuckle);
    let r = session.run().map_err(session_err);
    drop(session);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    r
}

/// Whether `path` is a mount point of an EggsFS FUSE mount (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path).or_else(|_| Ok::<_, ()>(path.to_path_buf())) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        // After the separator: the file-system type, then the source (our fsname).
        let sep = fields.iter().position(|f| *f == "-");
        let ours = sep.is_some_and(|i| {
            fields.get(i + 1).is_some_and(|t| t.starts_with("fuse"))
                && fields.get(i + 2).is_some_and(|s| *s == "eggsfs")
        });
        fields.get(4).is_some_and(|m| *m == want) && ours
    })
}

/// A mount left behind by a process that died answers "transport endpoint is not
/// connected": unmount it so that the mount point can be used again.
pub fn clean_stale_mount(path: &Path) {
    if statfs_errno(path) == Some(Errno::ENOTCONN as i32) {
        tracing::warn!("{}: stale mount, unmounting it", path.display());
        lazy_unmount(path);
    }
}

/// The errno of statfs(2) on `path`, which (unlike stat) always reaches a FUSE daemon, so a
/// dead one shows even while the kernel still caches the attributes.
pub fn statfs_errno(path: &Path) -> Option<i32> {
    statfs(path).err().map(|e| e as i32)
}

/// Detaches the mount at `path` now (busy users keep their open files).
pub fn lazy_unmount(path: &Path) -> bool {
    if umount2(path, MntFlags::MNT_DETACH).is_ok() {
        return true;
    }
    // Not root: the setuid helper may unmount what this user mounted.
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    run("fusermount3", &["-u", "-z"]) || run("umount", &["-l"])
}
