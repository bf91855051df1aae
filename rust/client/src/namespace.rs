//! The namespace: looking names up, listing and resolving paths, making and removing
//! directories, unlinking, renaming and setting times.

use crate::client::Client;
use crate::error::{ClientError, Result};
use eggs_protocol::cdc;
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard;
use eggs_protocol::{EggsError, EggsTime, InodeId, Name};

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Name,
    pub target_id: InodeId,
    pub creation_time: EggsTime,
}

/// What `stat` says about an inode.
#[derive(Clone, Debug, PartialEq)]
pub enum Stat {
    Directory {
        owner_id: InodeId,
        mtime: EggsTime,
        info: DirectoryInfo,
    },
    File {
        size: u64,
        mtime: EggsTime,
        atime: EggsTime,
    },
}

impl Client {
    pub async fn lookup(&self, dir_id: InodeId, name: &Name) -> Result<shard::LookupResp> {
        self.shard_request(
            dir_id.shard(),
            shard::LookupReq {
                dir_id,
                name: name.clone(),
            },
        )
        .await
        .map_err(|e| e.with_context(&format!("lookup {name} in {dir_id}")))
    }

    pub async fn stat(&self, id: InodeId) -> Result<Stat> {
        if id.is_dir() {
            let r = self
                .shard_request(id.shard(), shard::StatDirectoryReq { id })
                .await?;
            Ok(Stat::Directory {
                owner_id: r.owner_id,
                mtime: r.mtime,
                info: r.info,
            })
        } else {
            let r = self
                .shard_request(id.shard(), shard::StatFileReq { id })
                .await?;
            Ok(Stat::File {
                size: r.size,
                mtime: r.mtime,
                atime: r.atime,
            })
        }
    }

    /// All current entries of a directory, in the stable listing order.
    pub async fn readdir(&self, dir_id: InodeId) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .shard_request(
                    dir_id.shard(),
                    shard::ReadDirReq {
                        dir_id,
                        start,
                        mtu: self.options().mtu,
                    },
                )
                .await?;
            out.extend(r.entries.into_iter().map(|e| DirEntry {
                name: e.name,
                target_id: e.target_id,
                creation_time: e.creation_time,
            }));
            match r.next {
                Some(n) => start = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Every edge of a directory, current and snapshot, in listing order.
    pub async fn full_readdir(&self, dir_id: InodeId) -> Result<Vec<shard::Edge>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .shard_request(
                    dir_id.shard(),
                    shard::FullReadDirReq {
                        dir_id,
                        start,
                        mtu: self.options().mtu,
                    },
                )
                .await?;
            out.extend(r.entries);
            match r.next {
                Some(n) => start = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Resolves an absolute path (`/a/b`) to an inode id, following no symlinks.
    pub async fn resolve(&self, path: &str) -> Result<InodeId> {
        let mut cur = InodeId::ROOT;
        for name in split_path(path)? {
            if !cur.is_dir() {
                return Err(ClientError::Eggs {
                    what: format!("resolving {path}"),
                    err: EggsError::NotADirectory,
                });
            }
            cur = self
                .lookup(cur, &name)
                .await
                .map_err(|e| e.with_context(&format!("resolving {path}")))?
                .target_id;
        }
        Ok(cur)
    }

    /// Resolves everything but the last component: `(parent directory, last name)`.
    pub async fn resolve_parent(&self, path: &str) -> Result<(InodeId, Name)> {
        let mut names = split_path(path)?;
        let last = names.pop().ok_or_else(|| ClientError::BadPath {
            path: path.into(),
            why: "the root has no parent".into(),
        })?;
        let mut cur = InodeId::ROOT;
        for name in names {
            cur = self
                .lookup(cur, &name)
                .await
                .map_err(|e| e.with_context(&format!("resolving {path}")))?
                .target_id;
            if !cur.is_dir() {
                return Err(ClientError::Eggs {
                    what: format!("resolving {path}"),
                    err: EggsError::NotADirectory,
                });
            }
        }
        Ok((cur, last))
    }

    pub async fn mkdir_in(&self, owner_id: InodeId, name: &Name) -> Result<InodeId> {
        let r = self
            .cdc_request(cdc::MakeDirectoryReq {
                owner_id,
                name: name.clone(),
                info: DirectoryInfo::default(),
            })
            .await?;
        Ok(r.id)
    }

    pub async fn mkdir(&self, path: &str) -> Result<InodeId> {
        let (owner, name) = self.resolve_parent(path).await?;
        self.mkdir_in(owner, &name)
            .await
            .map_err(|e| e.with_context(&format!("mkdir {path}")))
    }

    /// Creates every missing directory along `path` (like `mkdir -p`).
    pub async fn mkdir_p(&self, path: &str) -> Result<InodeId> {
        let mut cur = InodeId::ROOT;
        for name in split_path(path)? {
            cur = match self.lookup(cur, &name).await {
                Ok(r) if r.target_id.is_dir() => r.target_id,
                Ok(_) => {
                    return Err(ClientError::Eggs {
                        what: format!("mkdir -p {path}: {name}"),
                        err: EggsError::NotADirectory,
                    })
                }
                Err(e) if e.eggs() == Some(EggsError::NameNotFound) => {
                    match self.mkdir_in(cur, &name).await {
                        Ok(id) => id,
                        // Somebody else made it meanwhile.
                        Err(e) if e.eggs() == Some(EggsError::NameExists) => {
                            self.lookup(cur, &name).await?.target_id
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// Removes a file or symlink (it stays as a snapshot edge until its policy expires it).
    pub async fn unlink(&self, path: &str) -> Result<()> {
        let (dir_id, name) = self.resolve_parent(path).await?;
        self.unlink_in(dir_id, &name)
            .await
            .map_err(|e| e.with_context(&format!("rm {path}")))
    }

    /// Removes the file or symlink `name` of directory `dir_id`.
    pub async fn unlink_in(&self, dir_id: InodeId, name: &Name) -> Result<()> {
        let edge = self.lookup(dir_id, name).await?;
        if edge.target_id.is_dir() {
            return Err(ClientError::Eggs {
                what: format!("unlinking {name} in {dir_id}"),
                err: EggsError::IsADirectory,
            });
        }
        self.shard_request(
            dir_id.shard(),
            shard::SoftUnlinkFileReq {
                dir_id,
                target_id: edge.target_id,
                name: name.clone(),
                creation_time: edge.creation_time,
            },
        )
        .await?;
        Ok(())
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &str) -> Result<()> {
        let (owner_id, name) = self.resolve_parent(path).await?;
        self.rmdir_in(owner_id, &name)
            .await
            .map_err(|e| e.with_context(&format!("rmdir {path}")))
    }

    /// Removes the empty directory `name` of directory `owner_id`.
    pub async fn rmdir_in(&self, owner_id: InodeId, name: &Name) -> Result<()> {
        let edge = self.lookup(owner_id, name).await?;
        if !edge.target_id.is_dir() {
            return Err(ClientError::Eggs {
                what: format!("removing directory {name} in {owner_id}"),
                err: EggsError::NotADirectory,
            });
        }
        self.cdc_request(cdc::RemoveDirectoryReq {
            owner_id,
            target_id: edge.target_id,
            name: name.clone(),
            creation_time: edge.creation_time,
        })
        .await?;
        Ok(())
    }

    /// Renames `from` to `to`: within a directory through its shard, across directories
    /// through the CDC.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (old_owner, old_name) = self.resolve_parent(from).await?;
        let (new_owner, new_name) = self.resolve_parent(to).await?;
        let edge = self.lookup(old_owner, &old_name).await?;
        self.rename_edge(
            edge.target_id,
            old_owner,
            &old_name,
            edge.creation_time,
            new_owner,
            &new_name,
        )
        .await
        .map_err(|e| e.with_context(&format!("mv {from} {to}")))?;
        Ok(())
    }

    /// Renames a known edge; returns the new edge's creation time.
    pub async fn rename_edge(
        &self,
        target_id: InodeId,
        old_owner_id: InodeId,
        old_name: &Name,
        old_creation_time: EggsTime,
        new_owner_id: InodeId,
        new_name: &Name,
    ) -> Result<EggsTime> {
        if old_owner_id == new_owner_id {
            if old_name == new_name {
                return Ok(old_creation_time);
            }
            let r = self
                .shard_request(
                    old_owner_id.shard(),
                    shard::SameDirectoryRenameReq {
                        dir_id: old_owner_id,
                        target_id,
                        old_name: old_name.clone(),
                        old_creation_time,
                        new_name: new_name.clone(),
                    },
                )
                .await?;
            return Ok(r.new_creation_time);
        }
        // Across directories: the CDC moves the edge (a directory's owner changes too).
        let r = if target_id.is_dir() {
            let req = cdc::RenameDirectoryReq {
                target_id,
                old_owner_id,
                old_name: old_name.clone(),
                old_creation_time,
                new_owner_id,
                new_name: new_name.clone(),
            };
            self.cdc_request(req).await?.creation_time
        } else {
            let req = cdc::RenameFileReq {
                target_id,
                old_owner_id,
                old_name: old_name.clone(),
                old_creation_time,
                new_owner_id,
                new_name: new_name.clone(),
            };
            self.cdc_request(req).await?.creation_time
        };
        Ok(r)
    }

    /// Sets the modification and/or access time of a linked file or symlink, or the
    /// modification time of a live directory (directories have no access time: `atime` is
    /// ignored for them).
    pub async fn set_time(
        &self,
        id: InodeId,
        mtime: Option<EggsTime>,
        atime: Option<EggsTime>,
    ) -> Result<()> {
        self.shard_request(id.shard(), shard::SetTimeReq { id, mtime, atime })
            .await
            .map_err(|e| e.with_context(&format!("setting the times of {id}")))?;
        Ok(())
    }
}

/// Splits an absolute path into names; empty components (`//`) and `.` are skipped.
pub fn split_path(path: &str) -> Result<Vec<Name>> {
    if !path.starts_with('/') {
        return Err(ClientError::BadPath {
            path: path.into(),
            why: "paths must be absolute".into(),
        });
    }
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(ClientError::BadPath {
                        path: path.into(),
                        why: "'..' above the root".into(),
                    });
                }
            }
            p => out.push(Name::new(p).map_err(|e| ClientError::BadPath {
                path: path.into(),
                why: e.to_string(),
            })?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let names = |p| {
            split_path(p)
                .unwrap()
                .into_iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert!(names("/").is_empty());
        assert_eq!(names("/a//b/./c/"), ["a", "b", "c"]);
        assert_eq!(names("/a/../b"), ["b"]);
        assert!(split_path("a/b").is_err());
        assert!(split_path("/..").is_err());
    }
}
