//! Project automation, run as `cargo xtask <command>`.
//!
//! Depends on nothing but std so that it builds in seconds, before the system packages the
//! rest of the workspace needs are installed (installing them is its first job).

mod bench;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Debian packages the workspace needs to build: the rocksdb crate compiles the bundled
/// RocksDB (C++, so g++) and generates its bindings with bindgen (libclang); and to run and
/// test: eggsfuse mounts through fusermount3 (fuse3), the FUSE tests use rsync, and
/// eggstests partitions block services with `ip rule` (iproute2) in a private network
/// namespace.
const PACKAGES: &[&str] = &["libclang-dev", "g++", "fuse3", "rsync", "iproute2"];

/// The server binaries `run` starts, plus the launcher and the CLI.
const RUN_PACKAGES: &[&str] = &[
    "eggs-shuckle",
    "eggs-shard",
    "eggs-cdc",
    "eggs-blocks",
    "eggs-gc",
    "eggs-fuse",
    "eggs-run",
    "eggs-cli",
];

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  run [EGGSRUN ARGS]   build in release mode and start a local cluster
                       (eggsrun --dir ./eggsfs-data unless --dir is given)
  test [CARGO ARGS]    build every binary, then cargo test --workspace [CARGO ARGS],
                       then eggstests --short (only when no CARGO ARGS are given)
  bench [--quick] [--out PATH] [--runs N]
                       release build, fresh cluster, benchmarks with local baselines:
                       writes BENCHMARKS.md (see `cargo xtask bench --help`)
  lint                 cargo fmt --check and clippy -D warnings on the whole workspace
  deps                 only install the system packages the build needs";

/// Why a task failed; `Exit` carries a child's exit code through.
#[derive(Debug)]
enum Error {
    Exit(i32),
    Msg(String),
}

impl From<String> for Error {
    fn from(m: String) -> Error {
        Error::Msg(m)
    }
}

type Result<T> = std::result::Result<T, Error>;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Error::Msg(m)) => {
            eprintln!("xtask: {m}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[OsString]) -> Result<()> {
    let (cmd, rest) = match args.split_first() {
        Some((c, rest)) => (c.to_string_lossy().into_owned(), rest),
        None => {
            eprintln!("{USAGE}");
            return Err(Error::Exit(2));
        }
    };
    match cmd.as_str() {
        "run" => run(rest),
        "test" => test(rest),
        "bench" => bench::bench(rest),
        "lint" => lint(),
        "deps" => ensure_packages(PACKAGES),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            Err(Error::Exit(2))
        }
    }
}

fn test(extra: &[OsString]) -> Result<()> {
    ensure_packages(PACKAGES)?;
    // Integration tests start the real server binaries, so those must exist first.
    cargo(&["build", "--workspace", "--bins"], &[])?;
    cargo(&["test", "--workspace"], extra)?;
    if !extra.is_empty() {
        eprintln!("xtask: arguments given: not running eggstests --short");
        return Ok(());
    }
    // The end-to-end suite (rust/tests/src/suite), each test on a fresh cluster.
    let mut cmd = Command::new(target_dir().join("debug").join("eggstests"));
    cmd.arg("--short").current_dir(workspace_root());
    eprintln!("xtask: {}", describe(&cmd));
    status(&mut cmd)
}

fn lint() -> Result<()> {
    ensure_packages(PACKAGES)?;
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

fn run(extra: &[OsString]) -> Result<()> {
    ensure_packages(PACKAGES)?;
    let mut build = vec!["build", "--release"];
    for p in RUN_PACKAGES {
        build.extend(["-p", p]);
    }
    cargo(&build, &[])?;
    // `cargo xtask run -- --dir x` hands us the `--` too.
    let extra = match extra.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => extra,
    };
    let eggsrun = target_dir().join("release").join("eggsrun");
    let mut cmd = Command::new(&eggsrun);
    if !has_dir_flag(extra) {
        cmd.arg("--dir").arg(workspace_root().join("eggsfs-data"));
    }
    cmd.args(extra);
    eprintln!("xtask: running {}", describe(&cmd));
    exec(cmd)
}

/// Whether eggsrun's arguments already choose a data directory.
fn has_dir_flag(args: &[OsString]) -> bool {
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--dir" || a.starts_with("--dir=")
    })
}

/// Replaces this process, so that Ctrl-C and exit codes go straight to and from the child.
#[cfg(unix)]
fn exec(mut cmd: Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(Error::Msg(format!("cannot run {}: {err}", describe(&cmd))))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command) -> Result<()> {
    status(&mut cmd)
}

fn workspace_root() -> PathBuf {
    // rust/xtask -> the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// Runs cargo (the one that runs us, when there is one) in the workspace root.
fn cargo(args: &[&str], extra: &[OsString]) -> Result<()> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.args(args).args(extra).current_dir(workspace_root());
    eprintln!("xtask: {}", describe(&cmd));
    status(&mut cmd)
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    match st.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code)),
        None => Err(Error::Msg(format!("{} was killed ({st})", describe(cmd)))),
    }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Installs the missing ones among `packages` with apt-get when we are root; otherwise says
/// exactly what to run.
fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing = match missing_packages(packages) {
        Some(m) => m,
        None => {
            eprintln!(
                "xtask: no dpkg-query here (not Debian?); make sure these are installed: {}",
                packages.join(" ")
            );
            return Ok(());
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(Error::Msg(format!(
            "missing system packages: {list}\ninstall them with:\n  \
             sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {list}"
        )));
    }
    eprintln!("xtask: installing missing system packages: {list}");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        cmd
    };
    status(&mut apt(&["update"]))?;
    status(apt(&["install", "-y"]).args(&missing))
}

/// `None` when dpkg-query is not available.
fn missing_packages(packages: &[&str]) -> Option<Vec<String>> {
    let mut missing = Vec::new();
    for p in packages {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output();
        match out {
            Ok(o) => {
                if !is_installed(&String::from_utf8_lossy(&o.stdout)) {
                    missing.push(p.to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => missing.push(p.to_string()),
        }
    }
    Some(missing)
}

/// dpkg's status line for an installed package is `install ok installed`.
fn is_installed(status: &str) -> bool {
    status.trim() == "install ok installed"
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        assert!(is_installed("install ok installed"));
        assert!(!is_installed("deinstall ok config-files"));
        assert!(!is_installed(""));
        assert!(!is_installed("unknown ok not-installed"));
    }

    #[test]
    fn dir_flag() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(has_dir_flag(&a(&["--dir", "/x"])));
        assert!(has_dir_flag(&a(&["--shard-processes", "2", "--dir=/x"])));
        assert!(!has_dir_flag(&a(&["--shuckle-port", "0"])));
        assert!(!has_dir_flag(&a(&["--directory-listing"])));
    }

    #[test]
    fn paths() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("rust/xtask").is_dir());
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(dispatch(&[]), Err(Error::Exit(2))));
        assert!(matches!(dispatch(&["nope".into()]), Err(Error::Exit(2))));
        assert!(dispatch(&["help".into()]).is_ok());
    }
}
