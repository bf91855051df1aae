//! A private network namespace for `eggstests`, and network partitions inside it.
//!
//! [`enter_private`] moves the (still single-threaded) test process into a network namespace
//! of its own, so every server it starts, every client and every `eggsfuse` mount talk over a
//! loopback nobody else uses. Inside it, [`Blackhole`] partitions processes away by their
//! listening ports: policy rules (`ip rule ... sport PORT blackhole`) make the kernel drop
//! whatever those ports send. A peer then sees exactly what a partitioned host looks like:
//! connections time out (the SYN-ACK never arrives, no RST), established connections go
//! silent, datagrams get no answer; the partitioned process itself keeps running.
//!
//! Port rules only work when they come before the routing table of local addresses, so
//! [`enter_private`] moves that table's rule from preference 0 to [`LOCAL_PREF`]. That would
//! disturb everything else on the machine in its root namespace, so every `ip rule` command
//! here first checks that the thread runs in the namespace [`enter_private`] made.

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::geteuid;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Why the private namespace or a partition could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("not running as root")]
    NotRoot,
    #[error("the process already runs {0} threads (the namespace must be made before any)")]
    Threaded(usize),
    #[error("no `ip` command (iproute2) found")]
    NoIp,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unshare(CLONE_NEWNET) left the process in the same network namespace")]
    SameNamespace,
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("no private network namespace: {0}")]
    NotPrivate(String),
    #[error("no rule preferences left for partitions")]
    NoPrefs,
}

/// Where the rule looking up local addresses goes (the kernel has it at 0); partition rules
/// take preferences below it.
pub const LOCAL_PREF: u32 = 32_000;

/// The first preference partition rules use.
const FIRST_PREF: u32 = 1_000;

static NEXT_PREF: AtomicU32 = AtomicU32::new(FIRST_PREF);

/// What [`enter_private`] did: the private namespace's identity (`net:[inode]`) and the `ip`
/// binary, or why there is no private namespace.
static STATE: OnceLock<Result<Private, String>> = OnceLock::new();

#[derive(Debug)]
struct Private {
    ns: PathBuf,
    ip: PathBuf,
}

/// Moves this process into a new network namespace with `lo` up and the local table's rule
/// moved to [`LOCAL_PREF`]. Must run before any other thread exists: the namespace is
/// per-thread, and threads and children inherit it when they are made. On failure the
/// process stays in (or goes back to) the namespace it had. Call at most once.
pub fn enter_private() -> Result<(), NetnsError> {
    let r = enter();
    let state = match &r {
        Ok(p) => Ok(Private {
            ns: p.ns.clone(),
            ip: p.ip.clone(),
        }),
        Err(e) => Err(e.to_string()),
    };
    let _ = STATE.set(state);
    r.map(|_| ())
}

/// Records why the process stays in the machine's network namespace (for [`private`]).
pub fn stay(why: &str) {
    let _ = STATE.set(Err(why.into()));
}

/// Whether this process runs in the namespace [`enter_private`] made, or why not.
pub fn private() -> Result<(), String> {
    match STATE.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("no private network namespace: {e}")),
        None => Err("no private network namespace was made".into()),
    }
}

fn enter() -> Result<Private, NetnsError> {
    if !geteuid().is_root() {
        return Err(NetnsError::NotRoot);
    }
    let threads = thread_count()?;
    if threads != 1 {
        return Err(NetnsError::Threaded(threads));
    }
    let ip = find_ip().ok_or(NetnsError::NoIp)?;
    let io_err = |what| move |source| NetnsError::Io { what, source };
    let original =
        std::fs::File::open("/proc/self/ns/net").map_err(io_err("opening /proc/self/ns/net"))?;
    let before = namespace_id().map_err(io_err("reading /proc/self/ns/net"))?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io_err("unshare(CLONE_NEWNET)")(e.into()))?;
    let ns = namespace_id().map_err(io_err("reading /proc/self/ns/net"))?;
    if ns == before {
        return Err(NetnsError::SameNamespace);
    }
    let setup = [
        "link set lo up".to_string(),
        format!("rule add pref {LOCAL_PREF} lookup local"),
        "rule del pref 0".to_string(),
    ];
    for args in &setup {
        if let Err(e) = run_ip(&ip, args) {
            // Back to the original namespace; the new one goes away with its last user.
            let _ = setns(&original, CloneFlags::CLONE_NEWNET);
            return Err(e);
        }
    }
    Ok(Private { ns, ip })
}

fn thread_count() -> Result<usize, NetnsError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|source| NetnsError::Io {
        what: "reading /proc/self/status",
        source,
    })?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// The calling thread's network namespace, as `net:[inode]`.
fn namespace_id() -> io::Result<PathBuf> {
    std::fs::read_link("/proc/thread-self/ns/net")
}

fn find_ip() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
}

fn run_ip(ip: &std::path::Path, args: &str) -> Result<(), NetnsError> {
    let out = std::process::Command::new(ip)
        .args(args.split_whitespace())
        .output()
        .map_err(|source| NetnsError::Io {
            what: "running ip",
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: args.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        })
    }
}

/// `ip <args>`, but only in the private namespace (never in the machine's own).
fn ip_in_private(args: &str) -> Result<(), NetnsError> {
    let p = match STATE.get() {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(NetnsError::NotPrivate(e.clone())),
        None => return Err(NetnsError::NotPrivate("none was made".into())),
    };
    match namespace_id() {
        Ok(ns) if ns == p.ns => run_ip(&p.ip, args),
        Ok(ns) => Err(NetnsError::NotPrivate(format!(
            "this thread is in {}, not {}",
            ns.display(),
            p.ns.display()
        ))),
        Err(source) => Err(NetnsError::Io {
            what: "reading /proc/thread-self/ns/net",
            source,
        }),
    }
}

/// Drops everything sent from some local ports (TCP and UDP) until healed or dropped: the
/// processes listening there are partitioned away from everyone, clients included.
#[derive(Debug)]
pub struct Blackhole {
    ports: Vec<u16>,
    /// Preferences of the rules in force.
    prefs: Vec<u32>,
}

impl Blackhole {
    /// Partitions away whatever listens on `ports` (in the private namespace only).
    pub async fn new(ports: &[u16]) -> Result<Blackhole, NetnsError> {
        let ports = ports.to_vec();
        tokio::task::spawn_blocking(move || Blackhole::add(ports))
            .await
            .map_err(|e| NetnsError::Io {
                what: "the ip task",
                source: io::Error::other(e.to_string()),
            })?
    }

    fn add(ports: Vec<u16>) -> Result<Blackhole, NetnsError> {
        // Rules already added are removed by `drop` if a later one fails.
        let mut hole = Blackhole {
            ports: ports.clone(),
            prefs: Vec::new(),
        };
        for port in &ports {
            for proto in ["tcp", "udp"] {
                let pref = NEXT_PREF.fetch_add(1, Ordering::Relaxed);
                if pref >= LOCAL_PREF {
                    return Err(NetnsError::NoPrefs);
                }
                ip_in_private(&format!(
                    "rule add pref {pref} ipproto {proto} sport {port} blackhole"
                ))?;
                hole.prefs.push(pref);
            }
        }
        Ok(hole)
    }

    /// The partitioned ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Ends the partition, failing if a rule could not be removed.
    pub async fn heal(mut self) -> Result<(), NetnsError> {
        let prefs = std::mem::take(&mut self.prefs);
        tokio::task::spawn_blocking(move || remove(&prefs))
            .await
            .map_err(|e| NetnsError::Io {
                what: "the ip task",
                source: io::Error::other(e.to_string()),
            })?
    }
}

/// Removes rules by preference; tries them all, returns the first error.
fn remove(prefs: &[u32]) -> Result<(), NetnsError> {
    let mut first = Ok(());
    for pref in prefs {
        if let Err(e) = ip_in_private(&format!("rule del pref {pref}")) {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // A test that failed half-way still heals (a few milliseconds of `ip` runs).
        if !self.prefs.is_empty() {
            if let Err(e) = remove(&self.prefs) {
                eprintln!("eggstests: could not end a partition: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test harness already runs several threads, so the namespace is refused (or, not as
    /// root, never tried), and then no partition rule may be added: the machine's own
    /// namespace is never touched.
    #[tokio::test]
    async fn refuses_outside_a_private_namespace() {
        let err = enter_private().expect_err("a threaded process must not unshare");
        assert!(
            matches!(err, NetnsError::Threaded(_) | NetnsError::NotRoot),
            "{err}"
        );
        assert!(private().is_err());
        let err = Blackhole::new(&[1])
            .await
            .expect_err("no private namespace");
        assert!(matches!(err, NetnsError::NotPrivate(_)), "{err}");
    }
}
