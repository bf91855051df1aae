//! `cargo xtask bench`: builds release binaries, starts a fresh cluster with `eggsrun`, runs
//! the benchmarks with a local-directory baseline beside each figure, and writes
//! `BENCHMARKS.md` (or `--out PATH`).
//!
//! What it measures, all in one run on one machine:
//! - the machine (CPU, cores, RAM, kernel, disk, toolchain, load);
//! - cluster start-up time (eggsrun's own figure, until everything registered) and the RSS
//!   of every server process idle after start and at its peak during the benchmarks;
//! - `eggsbench meta` against the cluster and `eggsbench meta --local` on a directory of the
//!   same disk, `--runs` times each (interleaved), medians and ratios;
//! - `eggsbench data` (in-memory codec, local-disk baseline, cluster write/read), `--runs`
//!   times, medians;
//! - the other `eggsbench` benchmarks (FUSE, GC, scrub; see [`PLUGINS`]).
//!
//! Hand-written notes (history, profiles, explanations) live in `docs/benchmarks-notes.md`
//! and are appended to the generated file as they are.

use super::{
    cargo, describe, ensure_packages, target_dir, workspace_root, Error, Result, PACKAGES,
};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Packages whose release binaries the benchmark needs.
const BENCH_PACKAGES: &[&str] = &[
    "eggs-shuckle",
    "eggs-shard",
    "eggs-cdc",
    "eggs-blocks",
    "eggs-run",
    "eggs-tests",
];

/// A benchmark beyond `eggsbench meta` and `data`: an `eggsbench` subcommand (`mode`), run
/// when built. Each has its own flags (`args`); its report is the Markdown it writes to
/// [`PluginCtx::markdown`] (when it takes such a flag), or else whatever it prints, shown as
/// text.
struct Plugin {
    bin: &'static str,
    mode: &'static str,
    title: &'static str,
    args: fn(&PluginCtx) -> Vec<String>,
}

/// What a plug-in benchmark can be told.
struct PluginCtx {
    shuckle: String,
    /// A fresh directory of its own on the measured disk.
    work: PathBuf,
    /// Where it may write its Markdown report.
    markdown: PathBuf,
    quick: bool,
    /// Medians of this run's client-library sequential write and read (MB/s).
    library_mbs: (Option<f64>, Option<f64>),
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

const PLUGINS: &[Plugin] = &[
    Plugin {
        bin: "eggsbench",
        mode: "fuse",
        title: "FUSE",
        // It starts its own cluster and mount, and compares with a local directory itself.
        args: |c| {
            let pick = |quick: &str, full: &str| if c.quick { quick } else { full }.to_string();
            let mut a = vec![
                "--size-gib".to_string(),
                pick("1", "4"),
                "--files".into(),
                pick("1000", "10000"),
                "--renames".into(),
                pick("200", "1000"),
                "--local-dir".into(),
                path_arg(&c.work.join("local")),
                "--cluster-dir".into(),
                path_arg(&c.work.join("cluster")),
                "--markdown".into(),
                path_arg(&c.markdown),
            ];
            if let Some(w) = c.library_mbs.0 {
                a.extend(["--library-write-mbs".into(), format!("{w:.0}")]);
            }
            if let Some(r) = c.library_mbs.1 {
                a.extend(["--library-read-mbs".into(), format!("{r:.0}")]);
            }
            a
        },
    },
    Plugin {
        bin: "eggsbench",
        mode: "gc",
        title: "Garbage collection",
        args: |c| {
            let files = if c.quick { "10000" } else { "100000" };
            ["--shuckle", &c.shuckle, "--files", files, "--dirs", "16"]
                .map(String::from)
                .to_vec()
        },
    },
    Plugin {
        bin: "eggsbench",
        mode: "scrub",
        title: "Scrubbing",
        args: |c| {
            let mib = if c.quick { "256" } else { "2048" };
            ["--shuckle", &c.shuckle, "--size-mib", mib]
                .map(String::from)
                .to_vec()
        },
    },
];

const NOTES: &str = "docs/benchmarks-notes.md";

#[derive(Debug)]
struct Opts {
    quick: bool,
    runs: usize,
    out: PathBuf,
    work: PathBuf,
    build: bool,
    meta_seconds: u64,
    data_gib: f64,
    codec_gib: f64,
}

const BENCH_USAGE: &str = "\
usage: cargo xtask bench [--quick] [--runs N] [--out PATH] [--work-dir DIR] [--no-build]
                         [--meta-seconds S] [--data-gib G]

  --quick        a smoke run: 1 run, 1 s per metadata operation, 0.25 GiB of data
  --runs N       repetitions of each benchmark; medians are reported (default 3)
  --out PATH     where the report goes (default BENCHMARKS.md in the workspace root)
  --work-dir DIR cluster data and local baselines (default TARGET/bench; the disk measured)
  --no-build     use the release binaries as they are";

fn parse(args: &[OsString]) -> Result<Opts> {
    let mut o = Opts {
        quick: false,
        runs: 3,
        out: workspace_root().join("BENCHMARKS.md"),
        work: target_dir().join("bench"),
        build: true,
        meta_seconds: 5,
        data_gib: 4.0,
        codec_gib: 1.0,
    };
    let (mut runs, mut secs, mut gib) = (None, None, None);
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| Error::Msg(format!("{name} needs a value\n{BENCH_USAGE}")))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.build = false,
            "--runs" => runs = Some(whole(&value("--runs")?)?),
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--work-dir" => o.work = PathBuf::from(value("--work-dir")?),
            "--meta-seconds" => secs = Some(whole(&value("--meta-seconds")?)?),
            "--data-gib" => gib = Some(number(&value("--data-gib")?)?),
            "-h" | "--help" => {
                println!("{BENCH_USAGE}");
                return Err(Error::Exit(0));
            }
            other => return Err(Error::Msg(format!("unknown flag {other}\n{BENCH_USAGE}"))),
        }
    }
    if o.quick {
        (o.runs, o.meta_seconds, o.data_gib, o.codec_gib) = (1, 1, 0.25, 0.1);
    }
    o.runs = runs.unwrap_or(o.runs).max(1);
    o.meta_seconds = secs.unwrap_or(o.meta_seconds).max(1);
    o.data_gib = gib.unwrap_or(o.data_gib);
    if o.out.is_relative() {
        o.out = std::env::current_dir()
            .map_err(|e| Error::Msg(format!("current directory: {e}")))?
            .join(&o.out);
    }
    Ok(o)
}

fn whole<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse::<T>()
        .map_err(|_| Error::Msg(format!("{s:?} is not a whole number")))
}

fn number(s: &str) -> Result<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| Error::Msg(format!("{s:?} is not a positive number")))
}

pub fn bench(args: &[OsString]) -> Result<()> {
    let opts = parse(args)?;
    let bin = target_dir().join("release");
    if opts.build {
        ensure_packages(PACKAGES)?;
        build()?;
    }
    let _ = std::fs::remove_dir_all(&opts.work);
    std::fs::create_dir_all(&opts.work)
        .map_err(|e| Error::Msg(format!("creating {}: {e}", opts.work.display())))?;
    let machine = machine(&opts.work);
    let load_start = loadavg();
    let mut cluster = Running::start(&bin, &opts.work)?;
    let result = run_all(&opts, &bin, &mut cluster);
    cluster.stop();
    let mut report = result?;
    report.machine = machine;
    report.load = (load_start, loadavg());
    let text = render(&opts, &report);
    std::fs::write(&opts.out, text)
        .map_err(|e| Error::Msg(format!("writing {}: {e}", opts.out.display())))?;
    eprintln!("xtask: wrote {}", opts.out.display());
    let _ = std::fs::remove_dir_all(&opts.work);
    Ok(())
}

/// One metadata operation: its label, then per run its row's numbers, on EggsFS and locally.
type MetaRows = (String, Vec<Vec<f64>>, Vec<Vec<f64>>);

/// Builds the release binaries (the plug-in benchmarks are `eggsbench` subcommands, so they
/// build with it).
fn build() -> Result<()> {
    let mut a = vec!["build", "--release", "--bins"];
    for p in BENCH_PACKAGES {
        a.extend(["-p", p]);
    }
    cargo(&a, &[])
}

/// Everything the report shows.
#[derive(Default)]
struct Report {
    machine: Vec<(String, String)>,
    load: (String, String),
    startup_ms: Option<u64>,
    startup_wall_ms: u64,
    /// Per process: (name, idle RSS, peak RSS under load), bytes.
    rss: Vec<(String, u64, u64)>,
    /// Label -> (EggsFS runs, local runs), each run a row of the table.
    meta: Vec<MetaRows>,
    data: Vec<(String, Vec<Vec<Option<f64>>>)>,
    data_footer: Vec<String>,
    plugins: Vec<(&'static str, String)>,
}

/// Writes back every dirty page now (`sync`): the local runs do not fsync, and their
/// write-back would otherwise fall into the next EggsFS run, queueing its fsyncs behind it.
fn write_back_now() -> Result<()> {
    let status = Command::new("sync")
        .status()
        .map_err(|e| Error::Msg(format!("running sync: {e}")))?;
    if !status.success() {
        return Err(Error::Msg(format!("sync failed: {status}")));
    }
    Ok(())
}

fn run_all(opts: &Opts, bin: &Path, cluster: &mut Running) -> Result<Report> {
    let mut report = Report {
        startup_ms: cluster.startup_ms,
        startup_wall_ms: u64::try_from(cluster.startup_wall.as_millis()).unwrap_or(u64::MAX),
        ..Report::default()
    };
    std::thread::sleep(Duration::from_secs(2));
    let idle = cluster.rss();
    let sampler = Sampler::start(cluster.pid);
    let shuckle = cluster.shuckle.clone();
    let eggsbench = bin.join("eggsbench");
    let local_dir = opts.work.join("local");
    std::fs::create_dir_all(&local_dir)
        .map_err(|e| Error::Msg(format!("creating {}: {e}", local_dir.display())))?;
    let secs = opts.meta_seconds.to_string();
    let mut meta: Vec<MetaRows> = Vec::new();
    for run in 0..opts.runs {
        eprintln!("xtask: metadata run {} of {}", run + 1, opts.runs);
        let eggs = table(&capture(Command::new(&eggsbench).args([
            "meta",
            "--shuckle",
            &shuckle,
            "--seconds",
            &secs,
        ]))?);
        let local = table(&capture(
            Command::new(&eggsbench)
                .args(["meta", "--seconds", &secs])
                .arg("--local")
                .arg(&local_dir),
        )?);
        write_back_now()?;
        for row in eggs {
            let label = row[0].clone();
            let nums: Vec<f64> = row[1..].iter().map(|c| num(c).unwrap_or(0.0)).collect();
            let entry = match meta.iter_mut().position(|m| m.0 == label) {
                Some(i) => &mut meta[i],
                None => {
                    meta.push((label.clone(), Vec::new(), Vec::new()));
                    let last = meta.len() - 1;
                    &mut meta[last]
                }
            };
            entry.1.push(nums);
            if let Some(l) = local.iter().find(|l| l[0] == label) {
                entry
                    .2
                    .push(l[1..].iter().map(|c| num(c).unwrap_or(0.0)).collect());
            }
        }
    }
    report.meta = meta;
    let size = opts.data_gib.to_string();
    let codec = opts.codec_gib.to_string();
    for run in 0..opts.runs {
        eprintln!("xtask: data run {} of {}", run + 1, opts.runs);
        let out = capture(
            Command::new(&eggsbench)
                .args([
                    "data",
                    "--shuckle",
                    &shuckle,
                    "--size-gib",
                    &size,
                    "--codec-gib",
                    &codec,
                ])
                .arg("--dir")
                .arg(&opts.work),
        )?;
        for row in table(&out) {
            let nums: Vec<Option<f64>> = row[1..].iter().map(|c| num(c)).collect();
            match report.data.iter_mut().find(|d| d.0 == row[0]) {
                Some(d) => d.1.push(nums),
                None => report.data.push((row[0].clone(), vec![nums])),
            }
        }
        report.data_footer = out
            .lines()
            .filter(|l| !l.starts_with('|') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
    }
    let library = |label: &str| {
        let runs = report.data.iter().find(|d| d.0.starts_with(label))?;
        median(
            runs.1
                .iter()
                .filter_map(|r| r.get(2).copied().flatten())
                .collect(),
        )
    };
    let library_mbs = (
        library("eggsfs sequential write"),
        library("eggsfs sequential read"),
    );
    for p in PLUGINS {
        let work = opts.work.join(format!("{}-{}", p.bin, p.mode));
        let ctx = PluginCtx {
            shuckle: shuckle.clone(),
            markdown: work.join("report.md"),
            work,
            quick: opts.quick,
            library_mbs,
        };
        eprintln!("xtask: plug-in benchmark {} {}", p.bin, p.mode);
        let body = plugin(bin, p, &ctx);
        report.plugins.push((p.title, body));
    }
    let peak = sampler.stop();
    report.rss = idle
        .into_iter()
        .map(|(pid, name, rss)| {
            let max = peak.get(&pid).copied().unwrap_or(rss).max(rss);
            (name, rss, max)
        })
        .collect();
    Ok(report)
}

fn plugin(bin: &Path, p: &Plugin, ctx: &PluginCtx) -> String {
    let path = bin.join(p.bin);
    if !path.is_file() {
        return format!("Skipped: `{}` is not built.", p.bin);
    }
    if let Err(e) = std::fs::create_dir_all(&ctx.work) {
        return format!("Skipped: cannot create {}: {e}", ctx.work.display());
    }
    let mut cmd = Command::new(&path);
    cmd.arg(p.mode).args((p.args)(ctx)).current_dir(&ctx.work);
    let out = match capture(&mut cmd) {
        Ok(out) => out,
        Err(e) => return format!("`{}` failed: {e:?}", describe(&cmd)),
    };
    let shown = format!("`{} {} {}`", p.bin, p.mode, (p.args)(ctx).join(" "));
    match std::fs::read_to_string(&ctx.markdown) {
        Ok(md) if !md.trim().is_empty() => format!("{shown}:\n\n{}", demote_headings(&md)),
        _ if out.trim().is_empty() => format!("{shown} printed nothing."),
        _ => format!("{shown}:\n\n```text\n{}\n```", out.trim_end()),
    }
}

/// Moves a plug-in's Markdown headings one level down, under the section it goes into.
fn demote_headings(md: &str) -> String {
    md.trim_end()
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("#{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a command, returning its stdout (stderr goes to ours); fails on a non-zero exit.
fn capture(cmd: &mut Command) -> Result<String> {
    eprintln!("xtask: {}", describe(cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Msg(format!("cannot run {}: {e}", describe(cmd))))?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{} failed ({})",
            describe(cmd),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The body rows of the first Markdown table in `text`, cells trimmed.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// A number in a table cell (`1,234.5` too); `None` for empty or text cells.
fn num(cell: &str) -> Option<f64> {
    cell.replace(',', "").parse().ok()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `eggsrun` and its children, running for the benchmark.
struct Running {
    child: Child,
    pid: u32,
    shuckle: String,
    startup_ms: Option<u64>,
    startup_wall: Duration,
}

impl Running {
    fn start(bin: &Path, work: &Path) -> Result<Running> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Msg(format!("picking a port: {e}")))?
            .port();
        let eggsrun = bin.join("eggsrun");
        let help = Command::new(&eggsrun)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(&eggsrun);
        cmd.arg("--dir")
            .arg(work.join("cluster"))
            .args(["--shuckle-port", &port.to_string()]);
        // The benchmarks measure the servers alone: no background GC, no mount.
        for flag in ["--no-gc", "--no-fuse"] {
            if help.contains(flag) {
                cmd.arg(flag);
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        eprintln!("xtask: {}", describe(&cmd));
        let t = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Msg(format!("cannot run {}: {e}", describe(&cmd))))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Msg("eggsrun's stdout was not piped".into()))?;
        let (tx, rx) = mpsc::channel();
        // Keeps draining eggsrun's output so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let mut running = Running {
            child,
            pid,
            shuckle: format!("127.0.0.1:{port}"),
            startup_ms: None,
            startup_wall: Duration::ZERO,
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(90)) {
                Ok(line) => {
                    // "EggsFS is up in 373 ms: ..."
                    if let Some(rest) = line.split("is up in ").nth(1) {
                        running.startup_wall = t.elapsed();
                        running.startup_ms =
                            rest.split_whitespace().next().and_then(|n| n.parse().ok());
                        return Ok(running);
                    }
                }
                Err(_) => {
                    running.stop();
                    return Err(Error::Msg(
                        "eggsrun did not come up (see its output above)".into(),
                    ));
                }
            }
        }
    }

    /// `(pid, name, rss)` of every child of eggsrun.
    fn rss(&self) -> Vec<(u32, String, u64)> {
        children(self.pid)
            .into_iter()
            .filter_map(|pid| Some((pid, proc_name(pid)?, rss_bytes(pid)?)))
            .collect()
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the RSS of eggsrun's children every 250 ms; keeps each one's peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<HashMap<u32, u64>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(parent: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(HashMap::new()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for pid in children(parent) {
                    if let Some(rss) = rss_bytes(pid) {
                        let mut m = p.lock().unwrap_or_else(|e| e.into_inner());
                        let e = m.entry(pid).or_insert(0);
                        *e = (*e).max(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Sampler { stop, peak, thread }
    }

    fn stop(self) -> HashMap<u32, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let m = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        m.clone()
    }
}

/// Pids whose parent is `parent`, from `/proc/*/stat`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect();
    out.sort();
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The process's name as eggsrun knows it: its data directory argument's last component
/// (`shard-0`, `blocks-3`, ...) or else the program name.
fn proc_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let failure_domain = args
        .iter()
        .position(|a| a == "--failure-domain")
        .and_then(|i| args.get(i + 1));
    if let Some(fd) = failure_domain {
        return Some(format!("{comm} {fd}"));
    }
    let shards = args
        .iter()
        .position(|a| a == "--shards")
        .and_then(|i| args.get(i + 1));
    Some(match shards {
        Some(s) => format!("{comm} (shards {s})"),
        None => comm,
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One command's first line of output, or "unknown".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine(work: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".to_string(), |kb| {
            format!("{:.1} GiB", kb / (1 << 20) as f64)
        });
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let work_s = work.to_string_lossy().into_owned();
    let df = Command::new("df")
        .args(["-h", "--output=source,fstype,size,avail", &work_s])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(str::to_string)
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".into());
    let disks = Command::new("lsblk")
        .args(["-dno", "NAME,MODEL,SIZE,ROTA", "-e", "7"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let rocksdb = bundled_rocksdb_version();
    vec![
        ("CPU".into(), format!("{model}, {cores} logical cores")),
        ("RAM".into(), ram),
        ("OS / kernel".into(), format!("{os}, Linux {kernel}")),
        (
            "disk of the data".into(),
            format!(
                "{df} (lsblk: {}; ROTA 1 = rotational)",
                if disks.is_empty() { "unknown" } else { &disks }
            ),
        ),
        ("Rust".into(), first_line("rustc", &["--version"])),
        ("RocksDB (bundled by librocksdb-sys)".into(), rocksdb),
    ]
}

/// The librocksdb-sys version in Cargo.lock, which names the RocksDB it bundles after `+`.
fn bundled_rocksdb_version() -> String {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"librocksdb-sys\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".into()
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{:.0}", v);
        // Thousands separators.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.2}")
    }
}

fn render(opts: &Opts, r: &Report) -> String {
    let mut s = String::new();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let _ = writeln!(s, "# EggsFS benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}` on {date} ({} run(s) of each benchmark; medians). \
         Do not edit by hand: rerun it. Hand-written notes are in `{NOTES}` and appended \
         below.\n",
        if opts.quick { " --quick" } else { "" },
        opts.runs
    );
    if opts.quick {
        let _ = writeln!(
            s,
            "**Quick smoke run: the figures are not representative.**\n"
        );
    }
    let _ = writeln!(s, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | {} at start, {} at end |\n\nClient, servers and disk \
         share the machine: every figure includes the client's own CPU cost.\n",
        r.load.0, r.load.1
    );
    let _ = writeln!(s, "## Cluster start-up and memory\n");
    let _ = writeln!(
        s,
        "`eggsrun` with its defaults (1 shard process for the 256 shards, the CDC, 14 \
         block-service processes with a flash and an hdd directory each), no GC, no mount. \
         Start-up until every shard, the CDC and every block service had registered: **{} ms** \
         (eggsrun's figure; {} ms from spawning it to its banner).\n",
        r.startup_ms.map_or("?".into(), |v| v.to_string()),
        r.startup_wall_ms
    );
    let _ = writeln!(s, "| process | RSS idle after start (MiB) | peak RSS during the benchmarks (MiB) |\n|---|---:|---:|");
    let (mut idle, mut peak) = (0, 0);
    for (name, i, p) in &r.rss {
        let _ = writeln!(s, "| {name} | {} | {} |", mib(*i), mib(*p));
        idle += i;
        peak += p;
    }
    let _ = writeln!(
        s,
        "| **all {} processes** | {} | {} (sum of peaks) |\n",
        r.rss.len(),
        mib(idle),
        mib(peak)
    );
    let _ = writeln!(s, "## Metadata operations\n");
    let _ = writeln!(
        s,
        "`eggsbench meta --seconds {}` (128 requests in flight from one client process with 2 \
         tokio workers; every write durable before its reply) and, in the same run, \
         `eggsbench meta --local DIR` doing the same operations on a directory of the same \
         disk with 8 threads (not fsynced; `sync` writes its files back after each local run, \
         so that their write-back does not fall into the next EggsFS run). The runs alternate; \
         the cluster is the same for all runs (it grows).\n",
        opts.meta_seconds
    );
    let _ = writeln!(
        s,
        "| operation | EggsFS ops/s | runs | p50 µs | p99 µs | local ops/s | EggsFS / local |\n|---|---:|---|---:|---:|---:|---:|"
    );
    for (label, eggs, local) in &r.meta {
        let col = |rows: &Vec<Vec<f64>>, i: usize| {
            median(rows.iter().filter_map(|r| r.get(i).copied()).collect())
        };
        let ops = col(eggs, 0);
        let runs: Vec<String> = eggs
            .iter()
            .filter_map(|r| r.first())
            .map(|v| fmt_num(*v))
            .collect();
        let l = col(local, 0);
        let ratio = match (ops, l) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => String::new(),
        };
        let f = |v: Option<f64>| v.map_or(String::new(), fmt_num);
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {ratio} |",
            f(ops),
            runs.join(" / "),
            f(col(eggs, 1)),
            f(col(eggs, 2)),
            f(l)
        );
    }
    let _ = writeln!(s, "\np50/p99: medians over the runs.\n");
    let _ = writeln!(s, "## Data path\n");
    let _ = writeln!(
        s,
        "`eggsbench data --size-gib {} --codec-gib {} --dir WORK` against the same cluster: the \
         root's default policy (RS(10,4) spans of up to 100 MiB). The local-disk rows are the \
         baseline (same disk, same bytes); \"vs local disk\" is EggsFS over it.\n",
        opts.data_gib, opts.codec_gib
    );
    let _ = writeln!(s, "| measurement | GiB | s (median) | MB/s (median) | runs (MB/s) | vs local disk |\n|---|---:|---:|---:|---|---:|");
    for (label, runs) in &r.data {
        let col = |i: usize| {
            median(
                runs.iter()
                    .filter_map(|r| r.get(i).copied().flatten())
                    .collect(),
            )
        };
        let per_run: Vec<String> = runs
            .iter()
            .filter_map(|r| r.get(2).copied().flatten())
            .map(fmt_num)
            .collect();
        let f = |v: Option<f64>| v.map_or(String::new(), fmt_num);
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} |",
            f(col(0)),
            f(col(1)),
            f(col(2)),
            per_run.join(" / "),
            f(col(3))
        );
    }
    if !r.data_footer.is_empty() {
        let _ = writeln!(s, "\nFrom the last run: {}\n", r.data_footer.join(" "));
    }
    for (title, body) in &r.plugins {
        let _ = writeln!(s, "## {title}\n\n{body}\n");
    }
    match std::fs::read_to_string(workspace_root().join(NOTES)) {
        Ok(notes) => {
            let _ = writeln!(s, "---\n\n{}", notes.trim_end());
        }
        Err(e) => {
            let _ = writeln!(s, "(No hand-written notes: {NOTES}: {e}.)");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_medians() {
        let out = "noise\n| op | ops/s | p50 |\n|---|---:|---:|\n| lookup | 64,409 | 1789 |\n| x y | 3.5 | |\n\nfooter\n";
        let t = table(out);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ["lookup", "64,409", "1789"]);
        assert_eq!(num(&t[0][1]), Some(64409.0));
        assert_eq!(num(&t[1][2]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(demote_headings("## A\ntext\n# B\n"), "### A\ntext\n## B");
    }

    #[test]
    fn flags() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let o = parse(&a(&["--quick", "--out", "/tmp/b.md"])).unwrap();
        assert!(o.quick && o.runs == 1 && o.meta_seconds == 1);
        assert_eq!(o.out, Path::new("/tmp/b.md"));
        let o = parse(&a(&["--runs", "5"])).unwrap();
        assert_eq!((o.runs, o.meta_seconds), (5, 5));
        assert!(parse(&a(&["--runs"])).is_err());
        assert!(parse(&a(&["--runs", "x"])).is_err());
        assert!(parse(&a(&["--bogus"])).is_err());
    }

    #[test]
    fn own_process_has_a_parent() {
        let me = std::process::id();
        assert!(parent_of(me).is_some());
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(proc_name(me).is_some());
    }
}
