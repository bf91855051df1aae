//! `snapshots`, `undelete` and `gc status`: what deletion left behind, bringing it back, and
//! what the garbage collector did.

use super::ls::snapshot_lines;
use crate::error::{CliError, Result};
use crate::format::{table, time_ms};
use eggs_client::Client;
use eggs_gc::daemon::read_status;
use eggs_protocol::cdc::UndeleteDirectoryReq;
use eggs_protocol::shard::{
    Edge, RestoreSnapshotEdgeReq, VisitReleasedFilesReq, VisitTransientFilesReq,
};
use eggs_protocol::{EggsError, EggsTime, InodeId, Name, ShardId, MAX_UDP_MTU};
use std::io::Write;
use std::path::Path;

/// The versions of a name (`PATH` names a file or a deleted name), or, for a directory, the
/// snapshot edges inside it (deleted and overwritten entries). Each line starts with the
/// version to give `undelete --version`.
pub async fn snapshots(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let edges = if path.trim_matches('/').is_empty() {
        dir_snapshots(c, InodeId::ROOT).await?
    } else {
        let (dir, name) = c.resolve_parent(path).await?;
        let versions: Vec<Edge> = c
            .full_readdir(dir)
            .await?
            .into_iter()
            .filter(|e| e.name == name)
            .collect();
        match versions.iter().find(|e| e.current) {
            Some(e) if e.target_id.is_dir() => dir_snapshots(c, e.target_id).await?,
            _ if versions.is_empty() => {
                return Err(CliError::Invalid(format!(
                    "{path}: no current or past version (snapshots expired, or never existed)"
                )))
            }
            _ => versions,
        }
    };
    for (e, line) in edges.iter().zip(snapshot_lines(&edges)) {
        writeln!(out, "{:<20} {line}", e.creation_time.0)?;
    }
    Ok(())
}

async fn dir_snapshots(c: &Client, dir: InodeId) -> Result<Vec<Edge>> {
    Ok(c.full_readdir(dir)
        .await?
        .into_iter()
        .filter(|e| !e.current)
        .collect())
}

/// Makes a past version of `path` current again: the given one (its creation time, as
/// `snapshots` prints it), or the newest that has a target. Files are restored by their
/// directory's shard; a removed directory through the CDC.
pub async fn undelete(
    c: &Client,
    path: &str,
    version: Option<u64>,
    out: &mut dyn Write,
) -> Result<()> {
    let (dir, name) = c.resolve_parent(path).await?;
    let edges = c.full_readdir(dir).await?;
    let versions: Vec<&Edge> = edges.iter().filter(|e| e.name == name).collect();
    if let Some(e) = versions.iter().find(|e| e.current) {
        return Err(CliError::Invalid(format!(
            "{path} exists ({}); remove or rename it first to restore an older version",
            e.target_id
        )));
    }
    let chosen = match version {
        Some(v) => versions
            .iter()
            .find(|e| e.creation_time == EggsTime(v) && !e.target_id.is_null()),
        None => versions.iter().rev().find(|e| !e.target_id.is_null()),
    };
    let Some(e) = chosen else {
        return Err(CliError::Invalid(match version {
            Some(v) => {
                format!("{path}: no version {v}: it expired and its data is gone, or never existed")
            }
            None => {
                format!("{path}: nothing to restore: its snapshots expired and the data is gone")
            }
        }));
    };
    if e.target_id.is_dir() {
        return undelete_dir(c, path, dir, name, e, out).await;
    }
    let req = RestoreSnapshotEdgeReq {
        dir_id: dir,
        name: name.clone(),
        creation_time: e.creation_time,
    };
    match c.shard_request(dir.shard(), req).await {
        Ok(r) => {
            writeln!(
                out,
                "restored {path} (version {} of {})",
                e.creation_time.0,
                time_ms(e.creation_time)
            )?;
            debug_assert_eq!(r.target_id, e.target_id);
            Ok(())
        }
        Err(err) => Err(match err.eggs() {
            Some(EggsError::SnapshotNotFound) => {
                CliError::Invalid(format!("{path}: that version expired and its data is gone"))
            }
            Some(EggsError::EdgeNotOwned) => CliError::Invalid(format!(
                "{path}: that version was moved away; the file lives under its new name"
            )),
            Some(EggsError::NameExists) => {
                CliError::Invalid(format!("{path} exists now; remove or rename it first"))
            }
            _ => err.into(),
        }),
    }
}

/// A removed directory comes back through the CDC (re-attached to its parent, then linked).
async fn undelete_dir(
    c: &Client,
    path: &str,
    dir: InodeId,
    name: Name,
    e: &Edge,
    out: &mut dyn Write,
) -> Result<()> {
    let req = UndeleteDirectoryReq {
        owner_id: dir,
        name,
        target_id: e.target_id,
    };
    match c.cdc_request(req).await {
        Ok(_) => {
            writeln!(out, "restored directory {path} ({})", e.target_id)?;
            Ok(())
        }
        Err(err) => Err(match err.eggs() {
            Some(EggsError::SnapshotNotFound) => {
                CliError::Invalid(format!("{path}: the directory was collected: it is gone"))
            }
            Some(EggsError::DirectoryNotRemoved) => CliError::Invalid(format!(
                "{path}: that directory lives elsewhere now (it was moved, not removed)"
            )),
            Some(EggsError::NameExists) => {
                CliError::Invalid(format!("{path} exists now; remove or rename it first"))
            }
            _ => err.into(),
        }),
    }
}

/// What each GC loop did last (from the daemon's status file) and what the shards hold
/// pending: transient files (due for destruction or still being written) and releases.
pub async fn gc_status(c: &Client, status_file: &Path, out: &mut dyn Write) -> Result<()> {
    match read_status(status_file) {
        Ok(loops) => {
            let now_ms = EggsTime::now().0 / 1_000_000;
            let rows: Vec<Vec<String>> = loops
                .iter()
                .map(|l| {
                    let last = if l.passes == 0 {
                        "never".to_string()
                    } else {
                        format!(
                            "{}s ago, {} ms",
                            now_ms.saturating_sub(l.last_start_unix_ms) / 1000,
                            l.last_duration_ms
                        )
                    };
                    vec![
                        l.name.clone(),
                        format!("every {}s", l.interval_ms / 1000),
                        format!("{} passes", l.passes),
                        if l.running { "running" } else { "idle" }.to_string(),
                        last,
                        if l.last_ok { "ok" } else { "errors" }.to_string(),
                        l.summary.clone(),
                    ]
                })
                .collect();
            for line in table(&rows, &[]) {
                writeln!(out, "{line}")?;
            }
        }
        Err(e) => writeln!(out, "no GC status ({e}); is eggsgc running?")?,
    }
    let p = pending(c).await?;
    writeln!(
        out,
        "pending: {} transient files past their deadline, {} not yet ({} bytes), {} cross-shard releases",
        p.due, p.not_due, p.bytes, p.releases
    )?;
    Ok(())
}

#[derive(Default)]
struct Pending {
    due: u64,
    not_due: u64,
    bytes: u64,
    releases: u64,
}

async fn pending(c: &Client) -> Result<Pending> {
    let mut p = Pending::default();
    let now = EggsTime::now();
    for s in 0..=255u8 {
        let shard = ShardId(s);
        let mut start = InodeId::NULL;
        loop {
            let req = VisitTransientFilesReq {
                start_id: start,
                mtu: MAX_UDP_MTU,
            };
            let r = c.shard_request(shard, req).await?;
            for f in &r.files {
                if f.deadline <= now {
                    p.due += 1;
                } else {
                    p.not_due += 1;
                }
                p.bytes += f.size;
            }
            match r.next_id {
                Some(n) => start = n,
                None => break,
            }
        }
        let mut start = InodeId::NULL;
        loop {
            let req = VisitReleasedFilesReq {
                start_id: start,
                mtu: MAX_UDP_MTU,
            };
            let r = c.shard_request(shard, req).await?;
            p.releases += r.file_ids.len() as u64;
            match r.next_id {
                Some(n) => start = n,
                None => break,
            }
        }
    }
    Ok(p)
}
