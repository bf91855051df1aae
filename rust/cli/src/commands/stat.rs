//! `stat` and `policy get`: what an inode is, and a directory's policies.

use crate::error::Result;
use crate::format::{policies, table, type_name};
use eggs_client::{Client, Stat};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::InodeId;
use std::io::Write;

pub async fn stat(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    let st = c.stat(id).await?;
    let mut rows = vec![
        row("path", path.to_string()),
        row("id", id.to_string()),
        row("type", type_name(id).to_string()),
        row("shard", id.shard().to_string()),
    ];
    match &st {
        Stat::File { size, mtime, atime } => {
            rows.push(row("size", size.to_string()));
            rows.push(row("mtime", mtime.to_string()));
            rows.push(row("atime", atime.to_string()));
        }
        Stat::Directory {
            owner_id, mtime, ..
        } => {
            rows.push(row("owner", owner(id, *owner_id)));
            rows.push(row("mtime", mtime.to_string()));
        }
    }
    for l in table(&rows, &[]) {
        writeln!(out, "{l}")?;
    }
    if let Stat::Directory { info, .. } = st {
        write_policies(c, id, &info, out).await?;
    }
    Ok(())
}

/// The directory's effective policies, each marked as set here or inherited.
pub async fn policy_get(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    let own = own_info(c, path, id).await?;
    write_policies(c, id, &own, out).await
}

async fn write_policies(
    c: &Client,
    id: InodeId,
    own: &DirectoryInfo,
    out: &mut dyn Write,
) -> Result<()> {
    let effective = c.effective_directory_info(id).await?;
    writeln!(out, "policies:")?;
    for l in policies(own, &effective) {
        writeln!(out, "  {l}")?;
    }
    Ok(())
}

/// The policies a directory sets itself.
pub(crate) async fn own_info(c: &Client, path: &str, id: InodeId) -> Result<DirectoryInfo> {
    match c.stat(id).await? {
        Stat::Directory { info, .. } => Ok(info),
        Stat::File { .. } => Err(crate::error::CliError::Client(
            eggs_client::ClientError::Eggs {
                what: format!("policies of {path}"),
                err: eggs_protocol::EggsError::NotADirectory,
            },
        )),
    }
}

fn row(k: &str, v: String) -> Vec<String> {
    vec![format!("{k}:"), v]
}

fn owner(id: InodeId, owner: InodeId) -> String {
    match (owner.is_null(), id == InodeId::ROOT) {
        (false, _) => owner.to_string(),
        (true, true) => "none (root)".into(),
        (true, false) => "none (removed)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let d = InodeId::new(
            eggs_protocol::InodeType::Directory,
            eggs_protocol::ShardId(3),
            9,
        );
        assert_eq!(owner(InodeId::ROOT, InodeId::NULL), "none (root)");
        assert_eq!(owner(d, InodeId::NULL), "none (removed)");
        assert_eq!(owner(d, InodeId::ROOT), InodeId::ROOT.to_string());
    }
}
