//! `eggsrun`: a whole EggsFS cluster on one machine, until Ctrl-C.

use clap::Parser;
use eggs_run::{rss_bytes, Cluster, ClusterConfig, FuseMount, RunError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Runs shuckle, the metadata shards and the CDC under one data directory, restarting any
/// that dies, until Ctrl-C or SIGTERM. Running it again on the same directory finds the file
/// system as it was.
#[derive(Parser, Debug)]
#[command(name = "eggsrun", version)]
struct Args {
    /// Data directory (created if missing).
    #[arg(long, default_value = "eggsfs-data")]
    dir: PathBuf,
    /// Port shuckle listens on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 10001)]
    shuckle_port: u16,
    /// Number of eggsshard processes sharing the 256 shards [default: as the data directory
    /// was created, else 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    shard_processes: Option<u16>,
    /// Where eggsshuckle, eggsshard and eggscdc are [default: next to eggsrun].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Block-service processes, one per failure domain (0 runs no block services).
    #[arg(long, default_value_t = 14)]
    failure_domains: usize,
    /// Flash block services (storage directories), spread over the failure domains.
    #[arg(long, default_value_t = 14)]
    flash_block_services: usize,
    /// Hard-disk block services, spread over the failure domains.
    #[arg(long, default_value_t = 14)]
    hdd_block_services: usize,
    /// Do not run the garbage collector (eggsgc, started by default with short intervals).
    #[arg(long)]
    no_gc: bool,
    /// Give up if the cluster has not registered with shuckle after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Where eggsfuse mounts the file system [default: DIR/fuse/mnt].
    #[arg(long)]
    mount: Option<PathBuf>,
    /// Do not mount the file system with eggsfuse.
    #[arg(long)]
    no_fuse: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eggsrun: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: &Args) -> Result<ClusterConfig, RunError> {
    let shard_processes = match args.shard_processes {
        Some(n) => n as usize,
        None => eggs_run::recorded_shard_processes(&args.dir)?.unwrap_or(1),
    };
    Ok(ClusterConfig {
        dir: args.dir.clone(),
        bin_dir: args
            .bin_dir
            .clone()
            .unwrap_or_else(eggs_run::default_bin_dir),
        shuckle_port: args.shuckle_port,
        shard_processes,
        block_services: eggs_run::BlockServicesLayout {
            failure_domains: args.failure_domains,
            flash: args.flash_block_services,
            hdd: args.hdd_block_services,
        },
        gc: (!args.no_gc).then_some(eggs_run::GcIntervals::LOCAL),
        transient_deadline_ms: None,
    })
}

async fn run(args: Args) -> Result<(), RunError> {
    let cfg = config(&args)?;
    let t0 = Instant::now();
    let cluster = Cluster::start(cfg).await?;
    let timeout = Duration::from_secs(args.timeout);
    // One listener from here to the end: a signal that arrives between two steps must not
    // be lost (a listener only sees signals that arrive after it is created).
    let shutdown = eggs_common::shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        r = cluster.wait_registered(timeout) => {
            if let Err(e) = r {
                stop(cluster).await;
                return Err(e);
            }
        }
        _ = &mut shutdown => {
            eprintln!("eggsrun: interrupted while starting");
            stop(cluster).await;
            return Ok(());
        }
    }
    if let Err(e) = own_root(&cluster).await {
        eprintln!("eggsrun: could not give the root directory to this user: {e}");
    }
    let fuse = if args.no_fuse {
        None
    } else {
        let started = tokio::select! {
            r = start_fuse(&args, &cluster) => r,
            _ = &mut shutdown => {
                eprintln!("eggsrun: interrupted while mounting");
                stop(cluster).await;
                return Ok(());
            }
        };
        match started {
            Ok(m) => Some(m),
            Err(e) => {
                stop(cluster).await;
                return Err(e);
            }
        }
    };
    print_banner(&cluster, t0.elapsed(), fuse.as_ref());
    supervise(cluster, fuse, shutdown).await;
    Ok(())
}

/// A cluster started by a user other than root gives that user the root directory while root
/// still owns it (a new cluster's root is root's, mode 0755): otherwise only root could create
/// anything through the mount. Servers trust the caller a client names (ARCHITECTURE.md,
/// "POSIX attributes"), which is how this request acts as root.
async fn own_root(cluster: &Cluster) -> Result<(), RunError> {
    let me = eggs_common::creds::current();
    if me.is_root() {
        return Ok(());
    }
    let c = cluster.client().await?;
    let root = eggs_protocol::InodeId::ROOT;
    if c.stat(root).await?.attrs().uid != 0 {
        return Ok(());
    }
    let change = eggs_protocol::AttrChange {
        uid: Some(me.uid),
        gid: Some(me.gid),
        ..Default::default()
    };
    c.set_attr(root, None, &eggs_protocol::Caller::root(), change)
        .await?;
    Ok(())
}

/// Mounts the cluster with eggsfuse under the data directory (or `--mount`).
async fn start_fuse(args: &Args, cluster: &Cluster) -> Result<FuseMount, RunError> {
    let mnt = args
        .mount
        .clone()
        .unwrap_or_else(|| cluster.dir().join("fuse").join("mnt"));
    std::fs::create_dir_all(cluster.dir().join("logs"))
        .map_err(|e| RunError::Config(format!("creating the log directory: {e}")))?;
    FuseMount::start(
        &cluster.config().bin_dir,
        cluster.shuckle_addr(),
        &mnt,
        &cluster.dir().join("logs").join("fuse.log"),
        Duration::from_secs(args.timeout),
    )
    .await
}

/// Keeps the cluster up until asked to stop, then unmounts and stops it.
async fn supervise(
    mut cluster: Cluster,
    mut fuse: Option<FuseMount>,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                for event in cluster.supervise() {
                    eprintln!("eggsrun: {event}");
                }
                if fuse.as_mut().is_some_and(|m| !m.running()) {
                    eprintln!("eggsrun: eggsfuse exited; see logs/fuse.log");
                    if let Some(m) = fuse.take() {
                        m.stop().await;
                    }
                }
            }
        }
    }
    eprintln!("eggsrun: stopping");
    if let Some(m) = fuse {
        // Unmount first: the mount needs the cluster to answer while it lets go.
        m.stop().await;
    }
    stop(cluster).await;
}

/// Stops the cluster cleanly; a second Ctrl-C kills what is still running.
async fn stop(cluster: Cluster) {
    let dir = cluster.dir().to_path_buf();
    tokio::select! {
        r = cluster.stop() => match r {
            Ok(()) => eprintln!("eggsrun: stopped; the data stays in {}", dir.display()),
            Err(e) => eprintln!("eggsrun: {e}"),
        },
        // Dropping the stop future drops the cluster, which kills its children.
        _ = eggs_common::shutdown_signal() => eprintln!("eggsrun: interrupted again; killed what was left"),
    }
}

fn print_banner(cluster: &Cluster, elapsed: Duration, fuse: Option<&FuseMount>) {
    let shuckle = cluster.shuckle_addr();
    let cli = cli_path(&cluster.config().bin_dir);
    let procs = cluster.shard_ranges().len();
    println!(
        "EggsFS is up in {} ms: shuckle at {shuckle}, 256 shards in {procs} process(es), CDC.",
        elapsed.as_millis()
    );
    println!("  data: {}", cluster.dir().display());
    println!("  logs: {}", cluster.dir().join("logs").display());
    println!("  processes:");
    for (i, (name, pid)) in cluster.processes().into_iter().enumerate() {
        let rss = rss_bytes(pid)
            .map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "?".into());
        let shards = if (1..=procs).contains(&i) {
            let range = &cluster.shard_ranges()[i - 1];
            format!("  shards {}", eggs_run::shards_arg(range))
        } else {
            String::new()
        };
        println!("    {name:<10} pid {pid:<8} rss {rss:>10}{shards}");
    }
    if let Some(m) = fuse {
        println!(
            "  mounted at {} (eggsfuse pid {}, log logs/fuse.log): use it like any directory",
            m.mountpoint().display(),
            m.pid(),
        );
    }
    println!("Try:");
    let c = format!("{cli} --shuckle {shuckle}");
    println!("  {c} status");
    println!("  {c} mkdir -p /demo/dir");
    println!("  echo hello | {c} write /demo/dir/hello.txt");
    println!("  {c} ls -l /demo/dir");
    println!("  {c} cat /demo/dir/hello.txt");
    println!("  (or export EGGS_SHUCKLE={shuckle} and leave out --shuckle)");
    println!("Ctrl-C stops the cluster; the data stays in the data directory.");
}

/// `eggscli` as the user can type it: relative to the current directory when it is below it.
fn cli_path(bin_dir: &Path) -> String {
    let path = bin_dir.join("eggscli");
    if !path.is_file() {
        return "eggscli".into();
    }
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match rel {
        Some(r) => format!("./{}", r.display()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["eggsrun"]).unwrap();
        assert_eq!(a.dir, Path::new("eggsfs-data"));
        assert_eq!(a.shuckle_port, 10001);
        assert_eq!(a.shard_processes, None);
        assert_eq!(a.timeout, 60);
        assert!(!a.no_fuse && a.mount.is_none());
        let cfg = config(&a).unwrap();
        assert_eq!(cfg.bin_dir, eggs_run::default_bin_dir());
    }

    #[test]
    fn flags() {
        let a = Args::try_parse_from([
            "eggsrun",
            "--dir",
            "/tmp/x",
            "--shuckle-port",
            "0",
            "--shard-processes",
            "4",
            "--bin-dir",
            "/opt/eggs",
        ])
        .unwrap();
        let cfg = config(&a).unwrap();
        assert_eq!(cfg.dir, Path::new("/tmp/x"));
        assert_eq!(cfg.shuckle_port, 0);
        assert_eq!(cfg.shard_processes, 4);
        assert_eq!(cfg.bin_dir, Path::new("/opt/eggs"));
        assert!(Args::try_parse_from(["eggsrun", "--shard-processes", "0"]).is_err());
        assert!(Args::try_parse_from(["eggsrun", "--shard-processes", "257"]).is_err());
        assert!(Args::try_parse_from(["eggsrun", "--shuckle-port", "x"]).is_err());
    }
}
