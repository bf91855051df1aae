//! The `eggstests` suite: named end-to-end tests against a cluster of real processes, each on
//! a fresh cluster started through eggs-run, or all against an existing cluster
//! (`--shuckle ADDR`, where tests that signal processes are skipped).
//!
//! Every test runs in a directory of its own (`/eggstests/<name>-<time>`), so tests can share
//! a cluster, and is scaled by [`Env::scale`]: 1 for `--short` (CI: the whole suite in a few
//! minutes on 2 cores), larger for `--long` soak runs.
//!
//! Adding a test is two steps: an `async fn my_test(env: &mut Env) -> TestResult` in one of
//! the modules here (returning a one-line summary of what it checked), and one [`TestDef`]
//! line in [`TESTS`]. A test that needs a binary the workspace may not have built yet (the
//! FUSE client `eggsfuse` for `fuse-*` tests, `eggsgc` for `file-history` expiry) lists it in
//! [`TestDef::bins`]: it is skipped with a note when the binary is missing, and finds it with
//! [`Env::bin`]. A FUSE test mounts the cluster with `eggs_run::FuseMount::start(&env.bin_dir(),
//! env.shuckle(), &env.scratch.join("mnt"), &log, timeout)` and runs the same checks through
//! the mount (for instance the model's operations with `std::fs`, or `rsync`/`tar` from a tree
//! built in [`Env::scratch`]); a `file-history` test sets snapshot policies on its directory
//! and checks `Client::full_readdir` against what it overwrote and deleted, with `gc: true`
//! to have `eggsgc` expire them.

mod data;
mod faults;
mod fuse;
mod history;
mod namespace;

use crate::model::ModelError;
use eggs_client::{Client, ClientError};
use eggs_protocol::{EggsTime, InodeId, Name};
use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig, RunError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a test failed.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: ClientError,
    },
    #[error("cluster: {0}")]
    Run(#[from] RunError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A one-line summary of what the test checked, or why it failed.
pub type TestResult = Result<String, TestError>;

/// Adds what was being done to client errors.
pub trait Context<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, TestError>;
}

impl<T> Context<T> for Result<T, ClientError> {
    fn ctx(self, what: impl Into<String>) -> Result<T, TestError> {
        self.map_err(|source| TestError::Client {
            what: what.into(),
            source,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, TestError> {
        self.map_err(|source| TestError::Io {
            what: what.into(),
            source,
        })
    }
}

/// Fails the test with a message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::suite::TestError::Failed(format!($($msg)+)));
        }
    };
}
pub(crate) use ensure;

type TestFn = for<'a> fn(&'a mut Env) -> Pin<Box<dyn Future<Output = TestResult> + Send + 'a>>;

/// One named test.
pub struct TestDef {
    pub name: &'static str,
    pub about: &'static str,
    /// It kills, stops or restarts processes, so it needs a cluster of its own.
    pub signals: bool,
    /// Block services of the cluster it starts (ignored with `--shuckle`).
    pub blocks: BlockServicesLayout,
    pub shard_processes: usize,
    /// Binaries it needs besides the servers; skipped when one is not built.
    pub bins: &'static [&'static str],
    /// Run `eggsgc` in the cluster it starts, when `eggsgc` is built.
    pub gc: bool,
    run: TestFn,
}

const NO_BLOCKS: BlockServicesLayout = BlockServicesLayout {
    failure_domains: 0,
    flash: 0,
    hdd: 0,
};

/// Seven failure domains with one flash service each: RS(4,2) spans with one service down.
pub const SEVEN_FLASH: BlockServicesLayout = BlockServicesLayout {
    failure_domains: 7,
    flash: 7,
    hdd: 0,
};

/// Every test, in the order `eggstests` runs them.
pub const TESTS: &[TestDef] = &[
    TestDef {
        name: "namespace-model",
        about: "concurrent clients doing random mkdir/create/rename/unlink/rmdir, checked \
                against a model",
        signals: false,
        blocks: NO_BLOCKS,
        shard_processes: 2,
        bins: &[],
        gc: false,
        run: |e| Box::pin(namespace::namespace_model(e)),
    },
    TestDef {
        name: "parallel-dirs",
        about: "many directories filled, renamed within and across in parallel; a directory \
                of thousands of entries",
        signals: false,
        blocks: NO_BLOCKS,
        shard_processes: 2,
        bins: &[],
        gc: false,
        run: |e| Box::pin(namespace::parallel_dirs(e)),
    },
    TestDef {
        name: "large-files",
        about: "multi-span files under the default RS(10,4) policy, whole and ranged reads",
        signals: false,
        blocks: BlockServicesLayout::RS_10_4,
        shard_processes: 1,
        bins: &[],
        gc: false,
        run: |e| Box::pin(data::large_files(e)),
    },
    TestDef {
        name: "garbage",
        about: "junk and truncated packets to every shard, CDC, shuckle and block-service port \
                while a client works",
        signals: false,
        blocks: SEVEN_FLASH,
        shard_processes: 2,
        bins: &[],
        gc: false,
        run: |e| Box::pin(faults::garbage(e)),
    },
    TestDef {
        name: "partition",
        about: "block services partitioned away (their traffic dropped in a private network \
                namespace), then frozen (SIGSTOP), while readers read through parity",
        signals: true,
        blocks: SEVEN_FLASH,
        shard_processes: 1,
        bins: &[],
        gc: false,
        run: |e| Box::pin(faults::partition(e)),
    },
    TestDef {
        name: "kill-load",
        about: "kill -9 of shards, CDC, block services (and GC) during writes and renames; \
                everything acknowledged survives",
        signals: true,
        blocks: SEVEN_FLASH,
        shard_processes: 2,
        bins: &[],
        gc: true,
        run: |e| Box::pin(faults::kill_load(e)),
    },
    TestDef {
        name: "file-history",
        about: "overwrites and a delete listed as versions (inline and block-backed files), \
                undelete bit-exact, a removed directory undeleted, snapshots and their blocks \
                expired by eggsgc under a short policy",
        signals: false,
        blocks: SEVEN_FLASH,
        shard_processes: 1,
        bins: &["eggsgc"],
        gc: true,
        run: |e| Box::pin(history::file_history(e)),
    },
    TestDef {
        name: "fuse-fs",
        about: "random mkdir/write/rename/unlink/rmdir through an eggsfuse mount, checked \
                against a model through the mount and the client",
        signals: false,
        blocks: SEVEN_FLASH,
        shard_processes: 1,
        bins: &["eggsfuse"],
        gc: false,
        run: |e| Box::pin(fuse::fuse_fs(e)),
    },
    TestDef {
        name: "fuse-rsync-tar",
        about: "rsync -a into an eggsfuse mount (twice: the second copies nothing), tar out \
                of and into it, compared with the source",
        signals: false,
        blocks: SEVEN_FLASH,
        shard_processes: 1,
        bins: &["eggsfuse"],
        gc: false,
        run: |e| Box::pin(fuse::fuse_rsync_tar(e)),
    },
];

/// How the suite runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run against this cluster instead of starting one per test.
    pub shuckle: Option<SocketAddr>,
    /// 1 for the short (CI) run; larger for soak runs.
    pub scale: f64,
    pub seed: u64,
    /// Where the servers (and `eggsfuse`, `eggsgc`) are.
    pub bin_dir: PathBuf,
    /// Where clusters' data directories go.
    pub work_dir: PathBuf,
    /// Keep the data directory of passing tests too.
    pub keep: bool,
}

/// What a test gets.
pub struct Env {
    pub client: Arc<Client>,
    /// The cluster, when the suite started it.
    pub cluster: Option<Cluster>,
    /// The test's own directory.
    pub dir: InodeId,
    pub scale: f64,
    pub seed: u64,
    bin_dir: PathBuf,
    /// A local directory of the test's own (mount points, source trees), removed after it.
    pub scratch: PathBuf,
    /// Processes the test killed on purpose (they may be reported as not stopped cleanly).
    pub killed: Vec<String>,
}

impl Env {
    /// `base` seconds scaled.
    pub fn secs(&self, base: f64) -> Duration {
        Duration::from_secs_f64(base * self.scale)
    }

    /// `base` items scaled (at least one).
    pub fn count(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }

    /// The cluster, for tests with `signals: true`.
    pub fn cluster(&mut self) -> Result<&mut Cluster, TestError> {
        self.cluster
            .as_mut()
            .ok_or_else(|| TestError::Failed("this test needs a cluster of its own".into()))
    }

    /// A binary next to the servers (listed in the test's `bins`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Where the servers and the other binaries are.
    pub fn bin_dir(&self) -> &std::path::Path {
        &self.bin_dir
    }

    /// The cluster's shuckle.
    pub fn shuckle(&self) -> SocketAddr {
        self.client.shuckle().addr()
    }

    /// A subdirectory of the test's directory.
    pub async fn subdir(&self, name: &str) -> Result<InodeId, TestError> {
        let n = Name::new(name).map_err(|e| TestError::Failed(format!("{name}: {e}")))?;
        self.client
            .mkdir_in(self.dir, &n)
            .await
            .ctx(format!("mkdir {name}"))
    }
}

/// How one test ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// Looks tests up by name; fails with the known names if one is unknown.
pub fn select(names: &[String]) -> Result<Vec<&'static TestDef>, String> {
    if names.is_empty() {
        return Ok(TESTS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            TESTS.iter().find(|t| t.name == n).ok_or_else(|| {
                let known: Vec<&str> = TESTS.iter().map(|t| t.name).collect();
                format!("no test named {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Runs the tests in order, printing one line per test; returns how each ended.
pub async fn run(opts: &Options, tests: &[&'static TestDef]) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    for t in tests {
        let start = Instant::now();
        let (outcome, msg) = match skip_reason(opts, t) {
            Some(why) => (Outcome::Skipped, why),
            None => match run_one(opts, t).await {
                Ok(summary) => (Outcome::Passed, summary),
                Err(e) => (Outcome::Failed, e.to_string()),
            },
        };
        let tag = match outcome {
            Outcome::Passed => "PASS",
            Outcome::Failed => "FAIL",
            Outcome::Skipped => "SKIP",
        };
        println!(
            "{tag} {} ({:.1} s): {msg}",
            t.name,
            start.elapsed().as_secs_f64()
        );
        out.push((t.name, outcome));
    }
    out
}

fn skip_reason(opts: &Options, t: &TestDef) -> Option<String> {
    if t.signals && opts.shuckle.is_some() {
        return Some("signals processes: needs a cluster of its own (no --shuckle)".into());
    }
    let missing: Vec<&str> = t
        .bins
        .iter()
        .copied()
        .filter(|b| !opts.bin_dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not built in {}",
            missing.join(", "),
            opts.bin_dir.display()
        ));
    }
    None
}

/// Longest a test may take at scale 1.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

async fn run_one(opts: &Options, t: &TestDef) -> TestResult {
    let (cluster, shuckle) = match opts.shuckle {
        Some(addr) => (None, addr),
        None => {
            let c = start(opts, t).await?;
            let addr = c.shuckle_addr();
            (Some(c), addr)
        }
    };
    let data_dir = cluster.as_ref().map(|c| c.dir().to_path_buf());
    let client = Arc::new(
        Client::new(shuckle, Default::default())
            .await
            .ctx(format!("connecting to shuckle at {shuckle}"))?,
    );
    let dir = client
        .mkdir_p(&format!("/eggstests/{}-{}", t.name, EggsTime::now().0))
        .await
        .ctx("making the test directory")?;
    let scratch = opts.work_dir.join(format!(
        "eggstests-{}-{}-scratch",
        std::process::id(),
        t.name
    ));
    std::fs::create_dir_all(&scratch).ctx(format!("creating {}", scratch.display()))?;
    let mut env = Env {
        client,
        cluster,
        dir,
        scale: opts.scale,
        seed: opts.seed,
        bin_dir: opts.bin_dir.clone(),
        scratch: scratch.clone(),
        killed: Vec::new(),
    };
    let limit = TEST_TIMEOUT.mul_f64(opts.scale.max(1.0));
    let result = match tokio::time::timeout(limit, (t.run)(&mut env)).await {
        Ok(r) => r,
        Err(_) => Err(TestError::Failed(format!("timed out after {limit:?}"))),
    };
    let result = result.and_then(|s| no_unexpected_exits(&mut env).map(|()| s));
    let stopped = match env.cluster.take() {
        Some(c) => stop(c, &env.killed).await,
        None => Ok(()),
    };
    let result = result.and_then(|s| stopped.map(|()| s));
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(d) = data_dir {
        if result.is_ok() && !opts.keep {
            let _ = std::fs::remove_dir_all(&d);
        } else {
            eprintln!("{}: data and logs kept in {}", t.name, d.display());
        }
    }
    result
}

async fn start(opts: &Options, t: &TestDef) -> Result<Cluster, TestError> {
    let dir = opts
        .work_dir
        .join(format!("eggstests-{}-{}", std::process::id(), t.name));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ClusterConfig::new(dir);
    cfg.bin_dir = opts.bin_dir.clone();
    cfg.shard_processes = t.shard_processes;
    cfg.block_services = t.blocks;
    if t.gc && opts.bin_dir.join("eggsgc").is_file() {
        cfg.gc = Some(eggs_run::GcIntervals::LOCAL);
    }
    let cluster = Cluster::start(cfg).await?;
    cluster.wait_registered(Duration::from_secs(60)).await?;
    Ok(cluster)
}

/// A server that died without the test killing it is a failure (a crash on bad input, say).
fn no_unexpected_exits(env: &mut Env) -> Result<(), TestError> {
    let Some(c) = env.cluster.as_mut() else {
        return Ok(());
    };
    let died: Vec<String> = c
        .supervise()
        .into_iter()
        .filter(|e| matches!(e, eggs_run::ChildEvent::Exited { .. }))
        .map(|e| e.to_string())
        .collect();
    ensure!(died.is_empty(), "{}", died.join("; "));
    Ok(())
}

/// Stops the cluster; only processes the test killed may be reported as unclean.
async fn stop(cluster: Cluster, killed: &[String]) -> Result<(), TestError> {
    match cluster.stop().await {
        Ok(()) => Ok(()),
        Err(RunError::Unclean(list)) => {
            let unexpected: Vec<&String> = list
                .iter()
                .filter(|u| !killed.iter().any(|k| u.starts_with(&format!("{k} "))))
                .collect();
            ensure!(unexpected.is_empty(), "not stopped cleanly: {unexpected:?}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints the test list (`--list`).
pub fn list() {
    for t in TESTS {
        let mut notes = Vec::new();
        if t.signals {
            notes.push("own cluster".to_string());
        }
        if !t.bins.is_empty() {
            notes.push(format!("needs {}", t.bins.join(", ")));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join("; "))
        };
        println!("{:<16} {}{notes}", t.name, t.about);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_name() {
        let all = select(&[]).unwrap();
        assert_eq!(all.len(), TESTS.len());
        let mut names: Vec<&str> = TESTS.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TESTS.len(), "test names are unique");
        let some = select(&["kill-load".into(), "garbage".into()]).unwrap();
        assert_eq!(some[0].name, "kill-load");
        assert_eq!(some[1].name, "garbage");
        let e = select(&["nope".into()]).err().unwrap();
        assert!(e.contains("namespace-model"), "{e}");
    }

    #[test]
    fn skips() {
        let opts = |shuckle: Option<SocketAddr>| Options {
            shuckle,
            scale: 1.0,
            seed: 1,
            bin_dir: "/nonexistent".into(),
            work_dir: std::env::temp_dir(),
            keep: false,
        };
        let kill = select(&["kill-load".into()]).unwrap()[0];
        assert!(skip_reason(&opts(None), kill).is_none());
        let external = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert!(skip_reason(&opts(external), kill).is_some());
        let needs_bin = TestDef {
            bins: &["eggsfuse"],
            ..*kill
        };
        let why = skip_reason(&opts(None), &needs_bin).unwrap();
        assert!(why.contains("eggsfuse not built"), "{why}");
    }
}
