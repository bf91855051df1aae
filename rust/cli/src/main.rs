//! `eggscli`: direct access to an EggsFS cluster. Only flag parsing lives here.

use clap::{ArgGroup, Parser, Subcommand};
use eggs_cli::accounts::Accounts;
use eggs_cli::commands::blockservice::{self, Flag};
use eggs_cli::commands::cp::{CpOptions, Location};
use eggs_cli::commands::{self, ls::LsOptions, policy::PolicyChanges, policy::PolicyKind};
use eggs_cli::parse::{
    parse_addr, parse_block_policy, parse_duration, parse_size, parse_size_u32, parse_span_policy,
};
use eggs_cli::perms::{ModeSpec, OwnerSpec};
use eggs_cli::{CliError, Result};
use eggs_client::ShuckleClient;
use eggs_protocol::policy::{BlockPolicy, SpanPolicy};
use eggs_protocol::BlockServiceId;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Direct access to an EggsFS cluster. Paths are absolute (`/a/b`).
#[derive(Parser, Debug)]
#[command(name = "eggscli", version)]
struct Args {
    /// Shuckle's address.
    #[arg(long, global = true, env = "EGGS_SHUCKLE", value_name = "HOST:PORT",
          default_value = eggs_client::DEFAULT_SHUCKLE_ADDR, value_parser = parse_addr)]
    shuckle: SocketAddr,
    /// Give up on a request that gets no answer for this long (e.g. 10s, 2m).
    #[arg(long, global = true, default_value = "10s", value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Duration,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a directory.
    Mkdir {
        /// Create missing parents too, and do not mind an existing directory.
        #[arg(short, long)]
        parents: bool,
        path: String,
    },
    /// List a directory.
    Ls {
        /// Show mode, owner, group, size (or a device's numbers), mtime and inode id.
        #[arg(short, long)]
        long: bool,
        /// Like --long, with owners and groups as numbers rather than names.
        #[arg(short, long = "numeric-uid-gid")]
        numeric: bool,
        /// Show every version of every name: current, snapshot, and deletion markers.
        #[arg(long)]
        snapshots: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show what an inode is (mode, owner, group, times): for directories also their
    /// policies, for files their spans and where their blocks are.
    Stat { path: String },
    /// Change the permission bits, as chmod(1) takes them: octal (640, 4755) or symbolic
    /// (u+x, go-w, a=rX, g=u, comma-separated). Only the owner or root may; a symlink has no
    /// mode of its own.
    Chmod {
        /// Octal (640) or symbolic (u+x,go-w) mode.
        #[arg(allow_hyphen_values = true, value_parser = ModeSpec::parse)]
        mode: ModeSpec,
        path: String,
    },
    /// Change the owner and/or group: OWNER, OWNER:GROUP, :GROUP, or OWNER: for the owner's
    /// login group; names (this machine's /etc/passwd and /etc/group) or numeric ids. Only
    /// root gives inodes to other users; the owner may change the group to one of its own.
    /// A final symlink is changed itself, not followed.
    Chown {
        /// OWNER, OWNER:GROUP, :GROUP or OWNER: (names or ids: alice:staff, 1234:5678).
        #[arg(value_name = "OWNER[:GROUP]", value_parser = parse_owner)]
        owner: OwnerSpec,
        path: String,
    },
    /// Rename, or move into an existing directory.
    Mv { src: String, dst: String },
    /// Remove a file (it stays as a snapshot until its directory's policy expires it).
    Rm { path: String },
    /// Remove an empty directory.
    Rmdir { path: String },
    /// Show the hierarchy below a directory.
    Tree {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show or change directory policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Show what shuckle knows: shards, the CDC and block services.
    Status,
    /// Write stdin to a file (replacing a file there).
    Write { path: String },
    /// Print a file.
    Cat { path: String },
    /// Copy files between here and EggsFS: paths starting with `eggs:` are in EggsFS
    /// (`eggs:/a/b`), others are local. Into DST when it is an existing directory.
    Cp {
        /// Copy directories and everything below them.
        #[arg(short, long)]
        recursive: bool,
        /// Print how many files and bytes were copied, and how fast.
        #[arg(short, long)]
        verbose: bool,
        #[arg(value_parser = Location::parse)]
        src: Location,
        #[arg(value_parser = Location::parse)]
        dst: Location,
    },
    /// The versions of a name (current, overwritten, deleted), or for a directory its deleted
    /// and overwritten entries; the first column is the version for `undelete --version`.
    Snapshots { path: String },
    /// Restore a deleted or overwritten file, or a removed directory, while its snapshot
    /// lives (the newest version, or --version).
    Undelete {
        path: String,
        /// The version to restore (its creation time in ns, as `snapshots` prints it).
        #[arg(long)]
        version: Option<u64>,
    },
    /// The garbage collector.
    #[command(subcommand)]
    Gc(GcCmd),
    /// List block services, or set their flags.
    #[command(subcommand)]
    Blockservice(BlockServiceCmd),
    /// Move every block off a block service (decommissioned or dead) to other services,
    /// rebuilding from parity what cannot be read, until it holds nothing files refer to.
    Migrate {
        /// The service's id, in hex as `blockservice list` prints it.
        #[arg(value_parser = blockservice::parse_id)]
        id: BlockServiceId,
    },
    /// Verify every block's CRCs on its block service and rebuild missing or corrupt ones.
    Scrub {
        /// Run a whole pass now, from here (eggsgc otherwise scrubs in the background).
        #[arg(long, required = true)]
        now: bool,
        /// Block bytes verified per second (e.g. 100M; 0 = no limit).
        #[arg(long, default_value = "100M", value_name = "BYTES", value_parser = parse_size)]
        rate: u64,
        /// Only report bad blocks, do not rebuild them.
        #[arg(long)]
        no_repair: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GcCmd {
    /// What each eggsgc loop did last, and what the shards hold pending.
    Status {
        /// The status file eggsgc writes (eggsrun: DATA_DIR/gc/status).
        #[arg(long, env = "EGGS_GC_STATUS", default_value = "eggsfs-data/gc/status")]
        status_file: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BlockServiceCmd {
    /// Every block service: id, address, class, flags, space, blocks, failure domain, path.
    List,
    /// Set or clear flags of a block service.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Flag {
        /// The service's id, in hex as `list` prints it.
        #[arg(value_parser = blockservice::parse_id)]
        id: BlockServiceId,
        /// Turn a flag on (repeatable).
        #[arg(long, group = "change", value_name = "FLAG", value_enum)]
        set: Vec<Flag>,
        /// Turn a flag off (repeatable).
        #[arg(long, group = "change", value_name = "FLAG", value_enum)]
        clear: Vec<Flag>,
    },
    /// Flag a block service decommissioned and no-write (then `eggscli migrate` it).
    Decommission {
        #[arg(value_parser = blockservice::parse_id)]
        id: BlockServiceId,
    },
    /// Remove a migrated, decommissioned service that stopped running from shuckle.
    Forget {
        #[arg(value_parser = blockservice::parse_id)]
        id: BlockServiceId,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Show a directory's effective policies and which it sets itself.
    Get { path: String },
    /// Change the policies a directory sets itself.
    Set(PolicySet),
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
struct PolicySet {
    path: String,
    /// Expire snapshots this long after they stopped being current (e.g. 30d, 12h; 0 = never).
    #[arg(long, group = "change", value_name = "DURATION", value_parser = parse_duration)]
    snapshot_delete_after: Option<u64>,
    /// Keep at most this many snapshot versions of a name (0 = all).
    #[arg(long, group = "change", value_name = "N")]
    snapshot_keep_versions: Option<u16>,
    /// Target stripe size (a multiple of 4K, e.g. 1M).
    #[arg(long, group = "change", value_name = "BYTES", value_parser = parse_size_u32)]
    stripe_size: Option<u32>,
    /// Span ladder: spans up to SIZE use D data + P parity blocks, e.g. '64K:1+2,10M:4+4'.
    #[arg(long, group = "change", value_name = "SIZE:D+P,...", value_parser = parse_span_policy)]
    span: Option<SpanPolicy>,
    /// Block placement: blocks of at least MINSIZE go to the class, e.g. '0:flash,2M:hdd'.
    #[arg(long, group = "change", value_name = "MINSIZE:CLASS,...", value_parser = parse_block_policy)]
    block: Option<BlockPolicy>,
    /// Stop setting a policy here and inherit it from the parent (repeatable).
    #[arg(long, group = "change", value_name = "POLICY", value_enum)]
    inherit: Vec<PolicyKind>,
}

fn parse_owner(s: &str) -> std::result::Result<OwnerSpec, String> {
    OwnerSpec::parse(s, &Accounts::load())
}

fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    match parse_duration(s)? {
        0 => Err("the timeout must be positive".into()),
        ns => Ok(Duration::from_nanos(ns)),
    }
}

impl Cmd {
    /// What the command is about, for error messages: `ls /a`.
    fn describe(&self) -> String {
        match self {
            Cmd::Mkdir { path, .. } => format!("mkdir {path}"),
            Cmd::Ls { path, .. } => format!("ls {path}"),
            Cmd::Stat { path } => format!("stat {path}"),
            Cmd::Chmod { mode, path } => format!("chmod {mode} {path}"),
            Cmd::Chown { owner, path } => format!("chown {owner} {path}"),
            Cmd::Mv { src, dst } => format!("mv {src} {dst}"),
            Cmd::Rm { path } => format!("rm {path}"),
            Cmd::Rmdir { path } => format!("rmdir {path}"),
            Cmd::Tree { path } => format!("tree {path}"),
            Cmd::Policy(PolicyCmd::Get { path }) => format!("policy get {path}"),
            Cmd::Policy(PolicyCmd::Set(s)) => format!("policy set {}", s.path),
            Cmd::Status => "status".into(),
            Cmd::Write { path } => format!("write {path}"),
            Cmd::Cat { path } => format!("cat {path}"),
            Cmd::Cp { src, dst, .. } => format!("cp {src} {dst}"),
            Cmd::Blockservice(BlockServiceCmd::List) => "blockservice list".into(),
            Cmd::Blockservice(BlockServiceCmd::Flag { id, .. }) => {
                format!("blockservice flag {:016x}", id.0)
            }
            Cmd::Blockservice(BlockServiceCmd::Decommission { id }) => {
                format!("blockservice decommission {:016x}", id.0)
            }
            Cmd::Blockservice(BlockServiceCmd::Forget { id }) => {
                format!("blockservice forget {:016x}", id.0)
            }
            Cmd::Migrate { id } => format!("migrate {:016x}", id.0),
            Cmd::Scrub { .. } => "scrub".into(),
            Cmd::Snapshots { path } => format!("snapshots {path}"),
            Cmd::Undelete { path, .. } => format!("undelete {path}"),
            Cmd::Gc(GcCmd::Status { .. }) => "gc status".into(),
        }
    }
}

impl PolicySet {
    fn changes(self) -> PolicyChanges {
        PolicyChanges {
            snapshot_delete_after_ns: self.snapshot_delete_after,
            snapshot_keep_versions: self.snapshot_keep_versions,
            stripe_size: self.stripe_size,
            span: self.span,
            block: self.block,
            inherit: self.inherit,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let what = args.cmd.describe();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eggscli: {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let shuckle = ShuckleClient::new(args.shuckle);
    match &args.cmd {
        Cmd::Status => {
            commands::status::status(&shuckle, &mut out).await?;
            return Ok(out.flush()?);
        }
        Cmd::Blockservice(BlockServiceCmd::List) => {
            blockservice::list(&shuckle, &mut out).await?;
            return Ok(out.flush()?);
        }
        Cmd::Blockservice(BlockServiceCmd::Flag { id, set, clear }) => {
            blockservice::flag(&shuckle, *id, set, clear, &mut out).await?;
            return Ok(out.flush()?);
        }
        Cmd::Blockservice(BlockServiceCmd::Decommission { id }) => {
            commands::maintenance::decommission(&shuckle, *id, &mut out).await?;
            return Ok(out.flush()?);
        }
        _ => {}
    }
    let c = Arc::new(commands::connect(args.shuckle, args.timeout).await?);
    let out: &mut dyn Write = &mut out;
    match args.cmd {
        Cmd::Mkdir { parents, path } => commands::fs::mkdir(&c, &path, parents).await?,
        Cmd::Ls {
            long,
            numeric,
            snapshots,
            path,
        } => {
            let opts = LsOptions {
                long: long || numeric,
                numeric_ids: numeric,
                snapshots,
            };
            commands::ls::ls(&c, &path, opts, out).await?
        }
        Cmd::Stat { path } => commands::stat::stat(&c, &path, out).await?,
        Cmd::Chmod { mode, path } => commands::attrs::chmod(&c, &path, &mode, out).await?,
        Cmd::Chown { owner, path } => commands::attrs::chown(&c, &path, &owner).await?,
        Cmd::Mv { src, dst } => commands::fs::mv(&c, &src, &dst).await?,
        Cmd::Rm { path } => commands::fs::rm(&c, &path).await?,
        Cmd::Rmdir { path } => commands::fs::rmdir(&c, &path).await?,
        Cmd::Tree { path } => commands::tree::tree(&c, &path, out).await?,
        Cmd::Policy(PolicyCmd::Get { path }) => commands::stat::policy_get(&c, &path, out).await?,
        Cmd::Policy(PolicyCmd::Set(s)) => {
            let path = s.path.clone();
            commands::policy::set(&c, &path, &s.changes(), out).await?
        }
        Cmd::Write { path } => commands::io::write(&c, &path, &mut std::io::stdin().lock()).await?,
        Cmd::Cat { path } => commands::io::cat(&c, &path, out).await?,
        Cmd::Cp {
            recursive,
            verbose,
            src,
            dst,
        } => {
            let opts = CpOptions { recursive, verbose };
            commands::cp::cp(&c, &src, &dst, opts, out).await?
        }
        Cmd::Migrate { id } => commands::maintenance::migrate(&c, id, out).await?,
        Cmd::Blockservice(BlockServiceCmd::Forget { id }) => {
            commands::maintenance::forget(&c, id, out).await?
        }
        Cmd::Scrub {
            now: _,
            rate,
            no_repair,
        } => commands::maintenance::scrub_now(&c, rate, !no_repair, out).await?,
        Cmd::Snapshots { path } => commands::undelete::snapshots(&c, &path, out).await?,
        Cmd::Undelete { path, version } => {
            commands::undelete::undelete(&c, &path, version, out).await?
        }
        Cmd::Gc(GcCmd::Status { status_file }) => {
            commands::undelete::gc_status(&c, &status_file, out).await?
        }
        Cmd::Status | Cmd::Blockservice(_) => {}
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("eggscli").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags() {
        let a = parse(&["ls"]).unwrap();
        assert!(
            matches!(a.cmd, Cmd::Ls { ref path, long: false, numeric: false, snapshots: false } if path == "/")
        );
        assert_eq!(a.timeout, Duration::from_secs(10));
        let a = parse(&[
            "ls",
            "-l",
            "/a",
            "--shuckle",
            "127.0.0.1:9",
            "--timeout",
            "2m",
        ])
        .unwrap();
        assert_eq!(a.shuckle, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert!(matches!(a.cmd, Cmd::Ls { long: true, .. }));
        assert!(parse(&["--shuckle", "nope", "status"]).is_err());
        assert!(parse(&["--timeout", "0", "status"]).is_err());
    }

    #[test]
    fn commands() {
        assert!(matches!(
            parse(&["mkdir", "-p", "/a/b"]).unwrap().cmd,
            Cmd::Mkdir { parents: true, .. }
        ));
        assert!(matches!(
            parse(&["mv", "/a", "/b"]).unwrap().cmd,
            Cmd::Mv { .. }
        ));
        assert!(parse(&["mv", "/a"]).is_err());
        assert!(parse(&["rm"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert_eq!(parse(&["rmdir", "/x"]).unwrap().cmd.describe(), "rmdir /x");
        let e = parse(&["nope"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn chmod_and_chown() {
        let Cmd::Chmod { mode, path } = parse(&["chmod", "640", "/f"]).unwrap().cmd else {
            panic!("not chmod")
        };
        assert_eq!((mode.apply(0o777, false, 0), path.as_str()), (0o640, "/f"));
        let a = parse(&["chmod", "-w", "/f"]).unwrap();
        assert_eq!(a.cmd.describe(), "chmod -w /f");
        let Cmd::Chmod { mode, .. } = a.cmd else {
            panic!("not chmod")
        };
        assert_eq!(mode.apply(0o666, false, 0), 0o444);
        assert!(matches!(
            parse(&["chmod", "u+x,go-w", "/f"]).unwrap().cmd,
            Cmd::Chmod { .. }
        ));
        for bad in [
            &["chmod", "789", "/f"][..],
            &["chmod", "u+q", "/f"],
            &["chmod", "640"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let Cmd::Chown { owner, path } = parse(&["chown", "1234:5678", "/f"]).unwrap().cmd else {
            panic!("not chown")
        };
        assert_eq!(
            (owner.uid, owner.gid, path.as_str()),
            (Some(1234), Some(5678), "/f")
        );
        let a = parse(&["chown", ":5678", "/f"]).unwrap();
        assert_eq!(a.cmd.describe(), "chown :5678 /f");
        assert!(matches!(
            a.cmd,
            Cmd::Chown {
                owner: OwnerSpec {
                    uid: None,
                    gid: Some(5678),
                    ..
                },
                ..
            }
        ));
        for bad in ["", ":", "1:2:3", "4294967295", "no-such-user-here"] {
            let e = parse(&["chown", bad, "/f"]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert!(matches!(
            parse(&["ls", "-n", "/d"]).unwrap().cmd,
            Cmd::Ls {
                long: false,
                numeric: true,
                ..
            }
        ));
    }

    #[test]
    fn cp_flags() {
        let a = parse(&["cp", "-rv", "./d", "eggs:/x"]).unwrap();
        let Cmd::Cp {
            recursive,
            verbose,
            src,
            dst,
        } = a.cmd
        else {
            panic!("not cp")
        };
        assert!(recursive && verbose);
        assert_eq!(src, Location::Local("./d".into()));
        assert_eq!(dst, Location::Eggs("/x".into()));
        let a = parse(&["cp", "eggs:/f", "/tmp/f"]).unwrap();
        assert!(matches!(
            a.cmd,
            Cmd::Cp {
                recursive: false,
                verbose: false,
                ..
            }
        ));
        assert!(parse(&["cp", "eggs:rel", "/tmp"]).is_err());
        assert!(parse(&["cp", "eggs:/f"]).is_err());
    }

    #[test]
    fn blockservice_flags() {
        let a = parse(&[
            "blockservice",
            "flag",
            "00000000000000ab",
            "--set",
            "no-write",
            "--set",
            "read-only",
            "--clear",
            "decommissioned",
        ])
        .unwrap();
        let Cmd::Blockservice(BlockServiceCmd::Flag { id, set, clear }) = a.cmd else {
            panic!("not blockservice flag")
        };
        assert_eq!(id, BlockServiceId(0xab));
        assert_eq!(set, [Flag::NoWrite, Flag::ReadOnly]);
        assert_eq!(clear, [Flag::Decommissioned]);
        assert!(
            parse(&["blockservice", "flag", "ab"]).is_err(),
            "a change is required"
        );
        assert!(parse(&["blockservice", "flag", "ab", "--set", "stale"]).is_err());
        assert!(parse(&["blockservice", "flag", "zz", "--set", "no-read"]).is_err());
        assert!(matches!(
            parse(&["blockservice", "list"]).unwrap().cmd,
            Cmd::Blockservice(BlockServiceCmd::List)
        ));
    }

    #[test]
    fn maintenance_commands() {
        assert!(matches!(
            parse(&["blockservice", "decommission", "ab"]).unwrap().cmd,
            Cmd::Blockservice(BlockServiceCmd::Decommission {
                id: BlockServiceId(0xab)
            })
        ));
        assert!(matches!(
            parse(&["migrate", "0x10"]).unwrap().cmd,
            Cmd::Migrate {
                id: BlockServiceId(0x10)
            }
        ));
        assert!(parse(&["migrate"]).is_err());
        assert!(matches!(
            parse(&["blockservice", "forget", "ab"]).unwrap().cmd,
            Cmd::Blockservice(BlockServiceCmd::Forget {
                id: BlockServiceId(0xab)
            })
        ));
        assert!(matches!(
            parse(&["scrub", "--now"]).unwrap().cmd,
            Cmd::Scrub {
                rate: 104_857_600,
                no_repair: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&["scrub", "--now", "--rate", "0", "--no-repair"])
                .unwrap()
                .cmd,
            Cmd::Scrub {
                rate: 0,
                no_repair: true,
                ..
            }
        ));
        assert!(parse(&["scrub"]).is_err(), "--now is required");
    }

    #[test]
    fn policy_set_flags() {
        let a = parse(&[
            "policy",
            "set",
            "/d",
            "--snapshot-delete-after",
            "7d",
            "--span",
            "64K:1+2,10M:4+4",
            "--block",
            "0:flash,2M:hdd",
            "--stripe-size",
            "1M",
            "--inherit",
            "snapshot",
        ])
        .unwrap();
        let Cmd::Policy(PolicyCmd::Set(s)) = a.cmd else {
            panic!("not policy set")
        };
        let ch = s.changes();
        assert_eq!(ch.snapshot_delete_after_ns, Some(7 * 86_400_000_000_000));
        assert_eq!(ch.span.unwrap().entries.len(), 2);
        assert_eq!(ch.block.unwrap().entries.len(), 2);
        assert_eq!(ch.stripe_size, Some(1 << 20));
        assert_eq!(ch.inherit, [PolicyKind::Snapshot]);
        assert!(
            parse(&["policy", "set", "/d"]).is_err(),
            "a change is required"
        );
        assert!(parse(&["policy", "set", "/d", "--stripe-size", "lots"]).is_err());
        assert!(parse(&["policy", "set", "/d", "--inherit", "colour"]).is_err());
        assert!(parse(&["policy", "set", "/d", "--span", "64K:99+1"]).is_err());
        assert!(parse(&["policy", "get", "/d"]).is_ok());
    }
}
