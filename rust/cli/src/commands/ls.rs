//! Listing directories: names, long form, and every version with `--snapshots`.

use super::last_name;
use crate::error::{CliError, Result};
use crate::format::{table, time_ms, time_short, type_name};
use eggs_client::{Client, DirEntry, Stat};
use eggs_protocol::shard::Edge;
use eggs_protocol::{EggsError, InodeId};
use std::io::Write;
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, Default)]
pub struct LsOptions {
    /// Type, size, mtime and inode id of each entry.
    pub long: bool,
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
    write_lines(out, &long_lines(&entries, &stats))
}

fn write_lines(out: &mut dyn Write, lines: &[String]) -> Result<()> {
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// `type  size  mtime  id  name`; `?` where the stat failed (e.g. removed meanwhile).
pub(crate) fn long_lines(entries: &[DirEntry], stats: &[Option<Stat>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .zip(stats)
        .map(|(e, s)| {
            let (size, mtime) = match s {
                Some(Stat::File { size, mtime, .. }) => (size.to_string(), time_short(*mtime)),
                Some(Stat::Directory { mtime, .. }) => ("-".into(), time_short(*mtime)),
                None => ("?".into(), "?".into()),
            };
            vec![
                type_name(e.target_id).to_string(),
                size,
                mtime,
                e.target_id.to_string(),
                e.name.to_string(),
            ]
        })
        .collect();
    table(&rows, &[false, true])
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
    use eggs_protocol::{EggsTime, InodeType, Name, ShardId};

    const T: EggsTime = EggsTime(1_700_000_000_000_000_000);

    fn entry(name: &str, typ: InodeType, counter: u64) -> DirEntry {
        DirEntry {
            name: Name::new(name).unwrap(),
            target_id: InodeId::new(typ, ShardId(1), counter),
            creation_time: T,
        }
    }

    #[test]
    fn long_listing() {
        let entries = [
            entry("sub", InodeType::Directory, 1),
            entry("hello.txt", InodeType::File, 2),
            entry("gone", InodeType::File, 3),
        ];
        let stats = [
            Some(Stat::Directory {
                owner_id: InodeId::ROOT,
                mtime: T,
                info: Default::default(),
            }),
            Some(Stat::File {
                size: 12345,
                mtime: T,
                atime: T,
            }),
            None,
        ];
        let lines = long_lines(&entries, &stats);
        assert_eq!(
            lines,
            [
                "dir       -  2023-11-14 22:13:20  0x4000000000000101  sub",
                "file  12345  2023-11-14 22:13:20  0x8000000000000201  hello.txt",
                "file      ?  ?                    0x8000000000000301  gone",
            ]
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
