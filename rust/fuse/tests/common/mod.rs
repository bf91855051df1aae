//! What the mount tests share: a cluster with block services and a real eggsfuse mount of it,
//! and running shell and python3 snippets in it.
//!
//! Needs root and /dev/fuse, and the server binaries built (`cargo build --bins`): `can_run`
//! says whether this machine has them.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use eggs_client::{Client, FileWriter};
use eggs_protocol::policy::{
    BlockPolicy, BlockPolicyEntry, DirectoryInfo, Parity, SpanPolicy, SpanPolicyEntry,
    StorageClass, StripePolicy,
};
use eggs_protocol::EggsError;
use eggs_run::{BlockServicesLayout, Cluster};
use eggs_tests::{start_cluster_with_blocks, FastRng};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SPAN: usize = 1 << 20;
pub const STRIPE: usize = 64 << 10;
pub const SERVICES: usize = 7;

/// Only one cluster (and mount) at a time in a test binary.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Small spans and stripes (1+2 up to 64 KiB, 4+2 up to 1 MiB), so that boundaries are cheap.
pub fn test_policy() -> DirectoryInfo {
    DirectoryInfo {
        snapshot: None,
        span: Some(SpanPolicy {
            entries: vec![
                SpanPolicyEntry {
                    max_span_size: STRIPE as u32,
                    parity: Parity { data: 1, parity: 2 },
                },
                SpanPolicyEntry {
                    max_span_size: SPAN as u32,
                    parity: Parity { data: 4, parity: 2 },
                },
            ],
        }),
        block: Some(BlockPolicy {
            entries: vec![BlockPolicyEntry {
                min_size: 0,
                storage_class: StorageClass::Flash,
            }],
        }),
        stripe: Some(StripePolicy {
            target_stripe_size: STRIPE as u32,
        }),
    }
}

/// Whether this machine can run these tests.
pub fn can_run() -> bool {
    let bins = eggs_run::default_bin_dir();
    let ok = bins.join("eggsblocks").is_file()
        && bins.join("eggsshard").is_file()
        && Path::new("/dev/fuse").exists()
        && nix::unistd::geteuid().is_root();
    if !ok {
        eprintln!("skipped: needs root, /dev/fuse and the server binaries (cargo build --bins)");
    }
    ok
}

/// An eggsfuse process and its mount point; dropping it unmounts, even when a test fails.
pub struct Mount {
    pub child: Child,
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(shuckle: SocketAddr, dir: &Path) -> Mount {
        // Fails on a stale mount, which eggsfuse cleans up.
        let _ = std::fs::create_dir_all(dir);
        let child = Command::new(env!("CARGO_BIN_EXE_eggsfuse"))
            .arg("--shuckle")
            .arg(shuckle.to_string())
            .arg(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("eggsfuse starts");
        let m = Mount {
            child,
            dir: dir.to_path_buf(),
        };
        let t0 = Instant::now();
        // A stale mount is listed too, but answers ENOTCONN until eggsfuse replaced it.
        while !eggs_fuse::is_mounted(dir) || eggs_fuse::statfs_errno(dir).is_some() {
            assert!(t0.elapsed() < Duration::from_secs(20), "eggsfuse mounts");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_keeps_only_mount_caps(m.child.id());
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = eggs_run::send_signal(self.child.id(), eggs_run::Signal::SIGTERM);
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if eggs_fuse::is_mounted(&self.dir) {
            eggs_fuse::lazy_unmount(&self.dir);
        }
    }
}

/// eggsfuse, run as root here, keeps CAP_SYS_ADMIN (it mounts and unmounts with mount(2)
/// itself) in every thread, and nothing else.
pub fn assert_keeps_only_mount_caps(pid: u32) {
    let admin = eggs_common::caps::Capability::CAP_SYS_ADMIN.bitmask();
    let threads = eggs_common::caps::of_process(pid).expect("eggsfuse's capabilities");
    assert!(threads.len() > 1, "eggsfuse serves on several threads");
    for t in threads {
        assert_eq!(
            (t.effective, t.permitted, t.bounding),
            (admin, admin, admin),
            "{t:?}"
        );
        assert_eq!((t.inheritable, t.ambient), (0, 0), "{t:?}");
    }
}

/// Runs a shell command in `cwd`; panics with its output unless it succeeds.
pub fn sh(cwd: &Path, cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a python3 script (which exits non-zero on failure); `None` when there is no python3.
pub fn python(cwd: &Path, script: &str) -> Option<String> {
    if !have("python3") {
        eprintln!("python3 not found: skipping its part");
        return None;
    }
    Some(sh(cwd, &format!("python3 - <<'EOF'\n{script}\nEOF")))
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    FastRng::new(seed).fill(&mut v);
    v
}

pub struct Setup {
    pub cluster: Cluster,
    pub client: std::sync::Arc<Client>,
    /// A scratch directory of the test's own, next to the cluster's.
    pub local: PathBuf,
    pub mount: Mount,
}

/// A cluster with 7 flash block services, `/t` with the small test policy, and a mount.
pub async fn setup(name: &str) -> Setup {
    let layout = BlockServicesLayout {
        failure_domains: SERVICES,
        flash: SERVICES,
        hdd: 0,
    };
    let (cluster, client) = start_cluster_with_blocks(name, 1, layout).await;
    let dir = client.mkdir("/t").await.unwrap();
    client.set_directory_info(dir, test_policy()).await.unwrap();
    // Until the shard has heard of the block services, block writes fail.
    let t0 = Instant::now();
    loop {
        match FileWriter::write_path(&client, "/t/.probe", &[7u8; 5000][..]).await {
            Ok(_) => break,
            Err(e) if e.eggs() == Some(EggsError::NotEnoughBlockServices) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "shard sees services"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("probe write: {e}"),
        }
    }
    client.unlink("/t/.probe").await.unwrap();
    let local = cluster.dir().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mount = Mount::new(cluster.shuckle_addr(), &cluster.dir().join("mnt"));
    Setup {
        cluster,
        client,
        local,
        mount,
    }
}
