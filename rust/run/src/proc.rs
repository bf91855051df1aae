//! One supervised child process: how to start it, signal it, reap it and restart it.

use crate::error::RunError;
use eggs_protocol::EggsTime;
use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getppid, Pid};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start a child.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub log: PathBuf,
}

#[derive(Debug)]
enum State {
    NotStarted,
    Running(Child),
    /// Reaped; waiting to be reported and restarted.
    Exited {
        pid: u32,
        status: ExitStatus,
        reported: bool,
    },
}

/// First restart delay after a crash; doubled for every crash in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying is restarted quickly again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Proc {
    pub spec: Spec,
    state: State,
    /// Wall-clock time of the last start, to tell fresh registrations from stale ones.
    pub started_at: EggsTime,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Proc {
    pub fn new(spec: Spec) -> Proc {
        Proc {
            spec,
            state: State::NotStarted,
            started_at: EggsTime(0),
            started: Instant::now(),
            backoff: MIN_BACKOFF,
            restart_at: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Running(c) => Some(c.id()),
            _ => None,
        }
    }

    /// Starts the child (it must not be running), appending its output to its log.
    pub fn spawn(&mut self) -> Result<u32, RunError> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        let log = open_log(&self.spec)?;
        let err_log = log
            .try_clone()
            .map_err(|e| RunError::io(format!("opening {}", self.spec.log.display()), e))?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            // Logs go to files: no colour escapes (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            // Its own process group: a Ctrl-C in the terminal reaches eggsrun only, which then
            // stops the children in order instead of seeing them all die at once.
            .process_group(0);
        die_with_parent(&mut cmd);
        self.started_at = EggsTime::now();
        self.started = Instant::now();
        let child = cmd.spawn().map_err(|e| {
            RunError::io(
                format!(
                    "starting {} ({})",
                    self.spec.name,
                    self.spec.program.display()
                ),
                e,
            )
        })?;
        let pid = child.id();
        self.state = State::Running(child);
        self.restart_at = None;
        Ok(pid)
    }

    /// Sends `signal` to the child if it is running.
    pub fn signal(&self, signal: Signal) -> Result<(), RunError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        // The pid is our unreaped child, so it cannot have been reused by another process.
        send_signal(pid, signal).map_err(|source| RunError::Signal {
            name: self.spec.name.clone(),
            pid,
            signal,
            source,
        })
    }

    /// Reaps the child if it has exited; returns its pid and status the first time only.
    pub fn reap(&mut self) -> Option<(u32, ExitStatus)> {
        let State::Running(child) = &mut self.state else {
            return None;
        };
        let pid = child.id();
        let status = child.try_wait().ok().flatten()?;
        self.state = State::Exited {
            pid,
            status,
            reported: false,
        };
        Some((pid, status))
    }

    /// An exit not reported yet, marking it reported.
    pub fn take_unreported_exit(&mut self) -> Option<(u32, ExitStatus)> {
        match &mut self.state {
            State::Exited {
                pid,
                status,
                reported,
            } if !*reported => {
                *reported = true;
                Some((*pid, *status))
            }
            _ => None,
        }
    }

    /// Schedules a restart after the current backoff; returns the delay.
    pub fn schedule_restart(&mut self) -> Duration {
        if self.started.elapsed() > HEALTHY_RUN {
            self.backoff = MIN_BACKOFF;
        }
        let delay = self.backoff;
        self.restart_at = Some(Instant::now() + delay);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    pub fn restart_due(&self) -> bool {
        self.pid().is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Asks the child to stop (SIGTERM), then kills it after `timeout`. Returns how it ended,
    /// or `None` if it was not running.
    pub async fn stop(&mut self, timeout: Duration) -> Option<Stopped> {
        self.pid()?;
        if self.signal(Signal::SIGTERM).is_err() {
            return self.kill_now().map(|status| Stopped {
                status,
                killed: true,
            });
        }
        self.wait_exit(timeout).await
    }

    /// Waits for the child to exit, killing it after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<Stopped> {
        self.pid()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((_, status)) = self.reap() {
                self.mark_reported();
                return Some(Stopped {
                    status,
                    killed: false,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_now().map(|status| Stopped {
            status,
            killed: true,
        })
    }

    /// An exit we caused is not news.
    fn mark_reported(&mut self) {
        self.take_unreported_exit();
        self.restart_at = None;
    }

    /// SIGKILL and reap, synchronously (for `Drop`).
    pub fn kill_now(&mut self) -> Option<ExitStatus> {
        let State::Running(child) = &mut self.state else {
            return None;
        };
        let pid = child.id();
        let _ = child.kill();
        let status = child.wait().ok()?;
        self.state = State::Exited {
            pid,
            status,
            reported: true,
        };
        self.restart_at = None;
        Some(status)
    }
}

/// A child never outlives its `Proc`, whatever path drops it (including a cancelled stop).
impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// How a stopped child ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopped {
    pub status: ExitStatus,
    /// It did not exit within the timeout after SIGTERM and was killed.
    pub killed: bool,
}

fn open_log(spec: &Spec) -> Result<std::fs::File, RunError> {
    let what = || format!("opening {}", spec.log.display());
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| RunError::io(what(), e))?;
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    writeln!(
        f,
        "==== eggsrun: starting {} at {}: {} {}",
        spec.name,
        EggsTime::now(),
        spec.program.display(),
        args.join(" ")
    )
    .map_err(|e| RunError::io(what(), e))?;
    Ok(f)
}

/// Makes the kernel send SIGTERM to the child when eggsrun dies, even by SIGKILL, so that a
/// crashed test or launcher never leaves servers behind.
///
/// The signal is tied to the thread that forks: clusters must be started and restarted from
/// threads that outlive them (tokio worker threads or the test's own thread do).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: pre_exec runs the closure in the forked child before exec, where only
    // async-signal-safe calls are allowed: two system calls (prctl, getppid), and errors made
    // from an errno, which allocate nothing (std passes only the errno to the parent anyway).
    unsafe {
        cmd.pre_exec(move || {
            set_pdeathsig(Signal::SIGTERM)?;
            if u32::try_from(getppid().as_raw()).ok() != Some(parent) {
                // The parent exited during the spawn.
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to process `pid` (a child's id as `std::process::Child` gives it).
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    // Pids never exceed 2^22 (the kernel's largest `pid_max`); one that does not fit the
    // kernel's signed type names no process.
    let pid = i32::try_from(pid).map_err(|_| Errno::ESRCH)?;
    kill(Pid::from_raw(pid), signal).map_err(Into::into)
}

/// "exit code 1", "killed by SIGKILL", ...
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by {}", signal_name(sig)),
        None => "unknown status".to_string(),
    }
}

pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// The last `lines` lines of a log file (reading at most its last 8 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(8192)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// Resident memory of a process in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, program: &str, args: &[&str]) -> Spec {
        Spec {
            name: "test".into(),
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            log: dir.join("test.log"),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("eggs-proc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn vm_rss_parsing() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(s), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn status_descriptions() {
        assert_eq!(describe_status(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by SIGKILL"
        );
        assert_eq!(signal_name(64), "signal 64");
    }

    #[tokio::test]
    async fn spawn_log_stop_and_restart() {
        let d = temp_dir("spawn");
        let mut p = Proc::new(spec(&d, "sh", &["-c", "echo hello; exec sleep 30"]));
        let pid = p.spawn().unwrap();
        assert_eq!(p.pid(), Some(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(p.reap().is_none());
        let stopped = p.stop(Duration::from_secs(5)).await.unwrap();
        assert!(!stopped.killed);
        assert_eq!(stopped.status.signal(), Some(Signal::SIGTERM as i32));
        assert_eq!(p.pid(), None);
        let tail = log_tail(&d.join("test.log"), 2);
        assert!(tail.contains("starting test"), "{tail}");
        assert!(tail.ends_with("hello"), "{tail}");
        p.spawn().unwrap();
        assert!(p.kill_now().is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn stop_kills_after_timeout() {
        let d = temp_dir("stubborn");
        let mut p = Proc::new(spec(&d, "sh", &["-c", "trap '' TERM; exec sleep 30"]));
        p.spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = p.stop(Duration::from_millis(300)).await.unwrap();
        assert!(stopped.killed);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn crash_is_reported_once_and_backs_off() {
        let d = temp_dir("crash");
        let mut p = Proc::new(spec(&d, "sh", &["-c", "exit 3"]));
        p.spawn().unwrap();
        let mut reaped = None;
        for _ in 0..100 {
            reaped = p.reap();
            if reaped.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, status) = reaped.unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(p.take_unreported_exit().is_some());
        assert!(p.take_unreported_exit().is_none());
        assert_eq!(p.schedule_restart(), MIN_BACKOFF);
        assert_eq!(p.schedule_restart(), MIN_BACKOFF * 2);
        assert!(!p.restart_due());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
