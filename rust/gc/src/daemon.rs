//! The daemon: a list of loops, each run as its own task at its own interval, and a status
//! file that records what each did (read by `eggscli gc status`).
//!
//! More loops (scrubbing, migration) plug in as further [`LoopSpec`]s: a name, an interval
//! and an async function returning a one-line summary of its pass.

use crate::{collect, destroy, GcError, GcOptions};
use eggs_client::Client;
use eggs_protocol::conv::millis_of;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One pass of a loop: `Ok(summary)` or `Err(why)`, both one line.
pub type PassFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
pub type PassFn = Arc<dyn Fn() -> PassFuture + Send + Sync>;

pub struct LoopSpec {
    pub name: String,
    /// Pause between the end of a pass and the start of the next.
    pub interval: Duration,
    pub run: PassFn,
}

impl LoopSpec {
    pub fn new<F, Fut>(name: &str, interval: Duration, f: F) -> LoopSpec
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        LoopSpec {
            name: name.to_string(),
            interval,
            run: Arc::new(move || Box::pin(f())),
        }
    }
}

/// This crate's loops: `collect` (directory collection) and `destroy` (file destruction).
pub fn standard_loops(
    client: Arc<Client>,
    opts: GcOptions,
    collect_interval: Duration,
    destroy_interval: Duration,
) -> Vec<LoopSpec> {
    let (c1, o1) = (client.clone(), opts.clone());
    let collect = LoopSpec::new("collect", collect_interval, move || {
        let (c, o) = (c1.clone(), o1.clone());
        async move { summary(collect::collect_pass(&c, &o).await) }
    });
    let destroy = LoopSpec::new("destroy", destroy_interval, move || {
        let (c, o) = (client.clone(), opts.clone());
        async move { summary(destroy::destroy_pass(&c, &o).await) }
    });
    vec![collect, destroy]
}

/// The maintenance loops: `scrub` (check every block at a bounded rate, rebuild bad ones)
/// and `migrate` (empty every block service flagged decommissioned).
pub fn maintenance_loops(
    client: Arc<Client>,
    scrub: crate::scrub::ScrubOptions,
    scrub_interval: Duration,
    migrate_interval: Duration,
) -> Vec<LoopSpec> {
    let c1 = client.clone();
    let scrub = LoopSpec::new("scrub", scrub_interval, move || {
        let (c, o) = (c1.clone(), scrub.clone());
        async move {
            match crate::scrub::scrub_pass(&c, &o).await {
                Ok(s) if s.repair_failed == 0 => Ok(format!("{s:?}")),
                Ok(s) => Err(format!("{s:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let migrate = LoopSpec::new("migrate", migrate_interval, move || {
        let c = client.clone();
        async move {
            match crate::migrate::migrate_decommissioned(&c).await {
                Ok(done) if done.iter().all(|(_, s)| s.remaining_files == 0) => {
                    Ok(format!("{done:?}"))
                }
                Ok(done) => Err(format!("files remain: {done:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    vec![scrub, migrate]
}

/// A pass with errors still did work; the summary says how much, and it counts as failed.
trait Errors: std::fmt::Display {
    fn errors(&self) -> u64;
}
impl Errors for collect::CollectStats {
    fn errors(&self) -> u64 {
        self.errors
    }
}
impl Errors for destroy::DestroyStats {
    fn errors(&self) -> u64 {
        self.errors
    }
}
fn summary<S: Errors>(s: S) -> Result<String, String> {
    if s.errors() == 0 {
        Ok(s.to_string())
    } else {
        Err(s.to_string())
    }
}

/// What a loop did last, as written to the status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStatus {
    pub name: String,
    pub interval_ms: u64,
    pub passes: u64,
    pub running: bool,
    /// Start of the last finished pass (ms since the epoch; 0 = none yet).
    pub last_start_unix_ms: u64,
    pub last_duration_ms: u64,
    pub last_ok: bool,
    pub summary: String,
}

impl LoopStatus {
    /// One line: `key=value` fields, then `summary=` and the rest of the line.
    pub fn to_line(&self) -> String {
        format!(
            "loop={} interval_ms={} passes={} running={} last_start_unix_ms={} last_duration_ms={} ok={} summary={}",
            self.name,
            self.interval_ms,
            self.passes,
            self.running,
            self.last_start_unix_ms,
            self.last_duration_ms,
            self.last_ok,
            self.summary.replace('\n', " ")
        )
    }

    pub fn from_line(line: &str) -> Option<LoopStatus> {
        let (fields, summary) = line.split_once(" summary=")?;
        let mut s = LoopStatus {
            summary: summary.to_string(),
            ..Default::default()
        };
        for kv in fields.split(' ') {
            let (k, v) = kv.split_once('=')?;
            match k {
                "loop" => s.name = v.to_string(),
                "interval_ms" => s.interval_ms = v.parse().ok()?,
                "passes" => s.passes = v.parse().ok()?,
                "running" => s.running = v.parse().ok()?,
                "last_start_unix_ms" => s.last_start_unix_ms = v.parse().ok()?,
                "last_duration_ms" => s.last_duration_ms = v.parse().ok()?,
                "ok" => s.last_ok = v.parse().ok()?,
                _ => {} // fields added later
            }
        }
        Some(s)
    }
}

/// Reads a status file written by the daemon.
pub fn read_status(path: &Path) -> Result<Vec<LoopStatus>, GcError> {
    let text = std::fs::read_to_string(path).map_err(|source| GcError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            LoopStatus::from_line(l).ok_or_else(|| GcError::BadStatus {
                path: path.to_path_buf(),
                why: format!("bad line {l:?}"),
            })
        })
        .collect()
}

struct Shared {
    statuses: Mutex<Vec<LoopStatus>>,
    /// Serialises writers of the file (the loops finish passes independently).
    write: tokio::sync::Mutex<()>,
    path: Option<PathBuf>,
}

impl Shared {
    fn update(&self, i: usize, f: impl FnOnce(&mut LoopStatus)) {
        let mut all = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(i) {
            f(s);
        }
    }

    /// Writes every loop's status atomically (temporary file, then rename).
    async fn write(&self) {
        let Some(path) = &self.path else { return };
        let _guard = self.write.lock().await;
        let text: String = {
            let all = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            all.iter().map(|s| s.to_line() + "\n").collect()
        };
        let tmp = path.with_extension("tmp");
        let r = async {
            tokio::fs::write(&tmp, text).await?;
            tokio::fs::rename(&tmp, path).await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!("writing GC status {}: {e}", path.display());
        }
    }
}

/// Runs every loop until `shutdown` completes; a pass in progress is abandoned then (every
/// step is safe to interrupt).
pub async fn run_daemon(
    loops: Vec<LoopSpec>,
    status_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GcError> {
    if let Some(dir) = status_file.as_ref().and_then(|p| p.parent()) {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| GcError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let shared = Arc::new(Shared {
        statuses: Mutex::new(
            loops
                .iter()
                .map(|l| LoopStatus {
                    name: l.name.clone(),
                    interval_ms: millis_of(l.interval),
                    ..Default::default()
                })
                .collect(),
        ),
        write: tokio::sync::Mutex::new(()),
        path: status_file,
    });
    shared.write().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, l) in loops.into_iter().enumerate() {
        tasks.spawn(run_loop(i, l, shared.clone()));
    }
    shutdown.await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn run_loop(i: usize, l: LoopSpec, shared: Arc<Shared>) {
    loop {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis_of);
        shared.update(i, |s| s.running = true);
        shared.write().await;
        let started = Instant::now();
        let result = (l.run)().await;
        let ms = millis_of(started.elapsed());
        match &result {
            Ok(sum) => tracing::info!("{} pass done in {ms} ms: {sum}", l.name),
            Err(sum) => tracing::warn!("{} pass done in {ms} ms with errors: {sum}", l.name),
        }
        shared.update(i, |s| {
            s.running = false;
            s.passes += 1;
            s.last_start_unix_ms = start_unix_ms;
            s.last_duration_ms = ms;
            s.last_ok = result.is_ok();
            s.summary = match result {
                Ok(x) | Err(x) => x,
            };
        });
        shared.write().await;
        tokio::time::sleep(l.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        let s = LoopStatus {
            name: "collect".into(),
            interval_ms: 5000,
            passes: 3,
            running: false,
            last_start_unix_ms: 1_700_000_000_000,
            last_duration_ms: 42,
            last_ok: true,
            summary: "directories=3 removed_edges=10 errors=0".into(),
        };
        assert_eq!(LoopStatus::from_line(&s.to_line()), Some(s));
        assert_eq!(LoopStatus::from_line("garbage"), None);
    }

    #[tokio::test]
    async fn daemon_runs_each_loop_and_writes_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc").join("status");
        let fast = LoopSpec::new("fast", Duration::from_millis(10), || async {
            Ok("did things".to_string())
        });
        let failing = LoopSpec::new("failing", Duration::from_millis(10), || async {
            Err("errors=1".to_string())
        });
        let p = path.clone();
        let stop = async move {
            // Until both loops have finished a few passes.
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(s) = read_status(&p) {
                    if s.iter().all(|l| l.passes >= 3) {
                        return;
                    }
                }
            }
        };
        run_daemon(vec![fast, failing], Some(path.clone()), stop)
            .await
            .unwrap();
        let s = read_status(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].last_ok && s[0].summary == "did things");
        assert!(!s[1].last_ok && s[1].summary == "errors=1");
    }
}
