//! Listing directories: names, long form, and every version with `--snapshots`.

use super::last_name;
use crate::accounts::Accounts;
use crate::error::{CliError, Result};
use crate::format::{
    device, mode_string, table, time_ms, time_short, type_name, unknown_mode_string,
};
use eggs_client::{Client, DirEntry, Stat};
use eggs_protocol::shard::Edge;
use eggs_protocol::{EggsError, InodeId};
use std::io::Write;
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, Default)]
pub struct LsOptions {
    /// Mode, owner, group, size, mtime and inode id of each entry.
    pub long: bool,
    /// In the long form, owners and groups as numbers even where this machine has names
    /// for them.
    pub numeric_ids: bool,
    /// Every edge, current and snapshot, with its creation time.
    pub snapshots: bool,
}

/// At most this many stat requests in flight for `ls -l`.
const STAT_CONCURRENCY: usize = 64;

pub async fn ls(c: &Arc<Client>, path: &str, opts: LsOptions, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    if opts.snapshots {
        if !id.is_dir() {
            return Err(CliError::Client(eggs_client::ClientError::Eggs {
                what: format!("ls --snapshots {path}"),
                err: EggsError::NotADirectory,
            }));
        }
        let mut edges = c.full_readdir(id).await?;
        edges.sort_by(|a, b| (&a.name, a.creation_time).cmp(&(&b.name, b.creation_time)));
        return write_lines(out, &snapshot_lines(&edges));
    }
    let mut entries = if id.is_dir() {
        c.readdir(id).await?
    } else {
        vec![DirEntry {
            name: eggs_protocol::Name::new(last_name(path)?)
                .map_err(|e| CliError::Invalid(e.to_string()))?,
            target_id: id,
            creation_time: eggs_protocol::EggsTime(0),
        }]
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if !opts.long {
        let names: Vec<String> = entries.iter().map(|e| e.name.to_string()).collect();
        return write_lines(out, &names);
    }
    let ids: Vec<InodeId> = entries.iter().map(|e| e.target_id).collect();
    let stats = stat_all(c, &ids).await;
    let accounts = if opts.numeric_ids {
        Accounts::none()
    } else {
        Accounts::load()
    };
    write_lines(out, &long_lines(&entries, &stats, &accounts))
}

fn write_lines(out: &mut dyn Write, lines: &[String]) -> Result<()> {
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// `mode  owner  group  size  mtime  id  name`, as `ls -l` has them (the mode as
/// `-rw-r--r--`, owner and group by name where `accounts` has one, devices' numbers as
/// `major, minor` in place of the size, `-` for the size of directories); `?` where the stat
/// failed (e.g. removed meanwhile).
pub(crate) fn long_lines(
    entries: &[DirEntry],
    stats: &[Option<Stat>],
    accounts: &Accounts,
) -> Vec<String> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .zip(stats)
        .map(|(e, s)| {
            let mut row = match s {
                Some(s) => {
                    let attrs = s.attrs();
                    let size = match s {
                        Stat::Directory { .. } => "-".into(),
                        Stat::File { .. } if attrs.is_device() => device(s.rdev()),
                        Stat::File { size, .. } => size.to_string(),
                    };
                    let (_, mtime, _) = s.times();
                    vec![
                        mode_string(attrs.mode),
                        accounts.show_user(attrs.uid),
                        accounts.show_group(attrs.gid),
                        size,
                        time_short(mtime),
                    ]
                }
                None => {
                    let mut row = vec![unknown_mode_string(e.target_id)];
                    row.extend(["?"; 4].map(String::from));
                    row
                }
            };
            row.extend([e.target_id.to_string(), e.name.to_string()]);
            row
        })
        .collect();
    table(&rows, &[false, false, false, true])
}

/// `state  created  type  target  name`, where state is `current`, `snapshot`, or `deleted`
/// for the marker recording that the name was removed.
pub(crate) fn snapshot_lines(edges: &[Edge]) -> Vec<String> {
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            let (state, typ, target) = match (e.current, e.target_id.is_null()) {
                (true, _) => ("current", type_name(e.target_id), e.target_id.to_string()),
                (false, false) => ("snapshot", type_name(e.target_id), e.target_id.to_string()),
                (false, true) => ("deleted", "-", "-".to_string()),
            };
            vec![
                state.to_string(),
                time_ms(e.creation_time),
                typ.to_string(),
                target,
                e.name.to_string(),
            ]
        })
        .collect();
    table(&rows, &[])
}

/// Stats every id concurrently, keeping the order; `None` where the stat failed.
async fn stat_all(c: &Arc<Client>, ids: &[InodeId]) -> Vec<Option<Stat>> {
    let mut out = vec![None; ids.len()];
    let mut set = JoinSet::new();
    let mut next = 0;
    loop {
        while next < ids.len() && set.len() < STAT_CONCURRENCY {
            let (c, i, id) = (c.clone(), next, ids[next]);
            set.spawn(async move { (i, c.stat(id).await.ok()) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, s))) => out[i] = s,
            Some(Err(_)) => {}
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::posix::{S_IFBLK, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG};
    use eggs_protocol::{EggsTime, InodeAttrs, InodeType, Name, ShardId};

    const T: EggsTime = EggsTime(1_700_000_000_000_000_000);

    fn entry(name: &str, typ: InodeType, counter: u64) -> DirEntry {
        DirEntry {
            name: Name::new(name).unwrap(),
            target_id: InodeId::new(typ, ShardId(1), counter),
            creation_time: T,
        }
    }

    fn dir_stat(mode: u32, uid: u32, gid: u32) -> Stat {
        Stat::Directory {
            owner_id: InodeId::ROOT,
            mtime: T,
            info: Default::default(),
            atime: T,
            ctime: T,
            attrs: InodeAttrs { mode, uid, gid },
        }
    }

    fn file_stat(mode: u32, uid: u32, gid: u32, size: u64, rdev: u64) -> Stat {
        Stat::File {
            size,
            mtime: T,
            atime: T,
            ctime: T,
            attrs: InodeAttrs { mode, uid, gid },
            rdev,
        }
    }

    #[test]
    fn long_listing() {
        let entries = [
            entry("sub", InodeType::Directory, 1),
            entry("hello.txt", InodeType::File, 2),
            entry("gone", InodeType::File, 3),
            entry("link", InodeType::Symlink, 4),
            entry("pipe", InodeType::File, 5),
            entry("sda1", InodeType::File, 6),
            entry("tmp", InodeType::Directory, 7),
        ];
        let stats = [
            Some(dir_stat(S_IFDIR | 0o755, 0, 0)),
            Some(file_stat(S_IFREG | 0o640, 1234, 5678, 12345, 0)),
            None,
            Some(file_stat(S_IFLNK | 0o777, 1000, 100, 7, 0)),
            Some(file_stat(S_IFIFO | 0o644, 1000, 100, 0, 0)),
            Some(file_stat(S_IFBLK | 0o660, 0, 6, 0, 0x0801)),
            Some(dir_stat(S_IFDIR | 0o1777, 0, 0)),
        ];
        let lines = long_lines(&entries, &stats, &Accounts::none());
        assert_eq!(
            lines,
            [
                "drwxr-xr-x  0     0         -  2023-11-14 22:13:20  0x4000000000000101  sub",
                "-rw-r-----  1234  5678  12345  2023-11-14 22:13:20  0x8000000000000201  hello.txt",
                "-?????????  ?     ?         ?  ?                    0x8000000000000301  gone",
                "lrwxrwxrwx  1000  100       7  2023-11-14 22:13:20  0xc000000000000401  link",
                "prw-r--r--  1000  100       0  2023-11-14 22:13:20  0x8000000000000501  pipe",
                "brw-rw----  0     6      8, 1  2023-11-14 22:13:20  0x8000000000000601  sda1",
                "drwxrwxrwt  0     0         -  2023-11-14 22:13:20  0x4000000000000701  tmp",
            ]
        );
        let names = Accounts::parse("root:x:0:0::/:\nalice:x:1000:100::/:\n", "disk:x:6:\n");
        let lines = long_lines(&entries[3..6], &stats[3..6], &names);
        assert!(
            lines[0].starts_with("lrwxrwxrwx  alice  100   "),
            "{}",
            lines[0]
        );
        assert!(
            lines[2].starts_with("brw-rw----  root   disk  8, 1  "),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn snapshot_listing() {
        let e = |current, target: InodeId| Edge {
            name_hash: 0,
            name: Name::new("f").unwrap(),
            target_id: target,
            creation_time: T,
            current,
        };
        let f = InodeId::new(InodeType::File, ShardId(0), 7);
        let lines = snapshot_lines(&[e(false, f), e(false, InodeId::NULL), e(true, f)]);
        assert_eq!(
            lines,
            [
                "snapshot  2023-11-14 22:13:20.000  file  0x8000000000000700  f",
                "deleted   2023-11-14 22:13:20.000  -     -                   f",
                "current   2023-11-14 22:13:20.000  file  0x8000000000000700  f",
            ]
        );
    }
}
