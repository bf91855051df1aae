//! The namespace: looking names up, listing and resolving paths, making and removing
//! directories, unlinking, renaming and changing attributes.

use crate::client::Client;
use crate::error::{ClientError, Result};
use eggs_protocol::cdc;
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::posix::{self, AttrChange, SetTime};
use eggs_protocol::shard;
use eggs_protocol::{Caller, EggsError, EggsTime, InodeAttrs, InodeId, Name};

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
        atime: EggsTime,
        ctime: EggsTime,
        attrs: InodeAttrs,
    },
    /// Files, symlinks and special files.
    File {
        size: u64,
        mtime: EggsTime,
        atime: EggsTime,
        ctime: EggsTime,
        attrs: InodeAttrs,
        rdev: u64,
    },
}

impl Stat {
    pub fn attrs(&self) -> InodeAttrs {
        match self {
            Stat::Directory { attrs, .. } | Stat::File { attrs, .. } => *attrs,
        }
    }

    /// Bytes of a file; 0 for directories.
    pub fn size(&self) -> u64 {
        match self {
            Stat::Directory { .. } => 0,
            Stat::File { size, .. } => *size,
        }
    }

    /// `(atime, mtime, ctime)`.
    pub fn times(&self) -> (EggsTime, EggsTime, EggsTime) {
        match self {
            Stat::Directory {
                atime,
                mtime,
                ctime,
                ..
            }
            | Stat::File {
                atime,
                mtime,
                ctime,
                ..
            } => (*atime, *mtime, *ctime),
        }
    }

    pub fn rdev(&self) -> u64 {
        match self {
            Stat::Directory { .. } => 0,
            Stat::File { rdev, .. } => *rdev,
        }
    }
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
                atime: r.atime,
                ctime: r.ctime,
                attrs: r.attrs,
            })
        } else {
            let r = self
                .shard_request(id.shard(), shard::StatFileReq { id })
                .await?;
            Ok(Stat::File {
                size: r.size,
                mtime: r.mtime,
                atime: r.atime,
                ctime: r.ctime,
                attrs: r.attrs,
                rdev: r.rdev,
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

    /// The attributes of an inode that `caller` creates in directory `parent` with `mode`
    /// (type and permission bits, umask applied): `posix::new_inode_attrs` over the
    /// directory's own attributes.
    pub async fn new_attrs(
        &self,
        parent: InodeId,
        caller: &Caller,
        mode: u32,
    ) -> Result<InodeAttrs> {
        let dir = self
            .shard_request(parent.shard(), shard::StatDirectoryReq { id: parent })
            .await?;
        Ok(posix::new_inode_attrs(&dir.attrs, caller, mode))
    }

    /// Makes a directory as this process would (its uid and gid, mode 0777 less its umask,
    /// the parent's group and setgid bit where the parent has setgid).
    pub async fn mkdir_in(&self, owner_id: InodeId, name: &Name) -> Result<InodeId> {
        let mode = posix::S_IFDIR | (0o777 & !self.umask());
        let attrs = self.new_attrs(owner_id, self.caller(), mode).await?;
        self.mkdir_with(owner_id, name, attrs).await
    }

    /// Makes a directory with exactly `attrs`.
    pub async fn mkdir_with(
        &self,
        owner_id: InodeId,
        name: &Name,
        attrs: InodeAttrs,
    ) -> Result<InodeId> {
        let r = self
            .cdc_request(cdc::MakeDirectoryReq {
                owner_id,
                name: name.clone(),
                info: DirectoryInfo::default(),
                attrs,
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

    /// Sets the modification and/or access time of a linked file, symlink or live
    /// directory, as this process.
    pub async fn set_time(
        &self,
        id: InodeId,
        mtime: Option<EggsTime>,
        atime: Option<EggsTime>,
    ) -> Result<()> {
        let change = AttrChange {
            mtime: mtime.map(SetTime::At),
            atime: atime.map(SetTime::At),
            ..Default::default()
        };
        self.set_attr(id, None, self.caller(), change).await?;
        Ok(())
    }

    /// Changes the mode, owner, group or times of an inode on behalf of `caller` (the
    /// shard checks Linux's rules); `cookie` names a transient file, which keeps the change
    /// for its link.
    pub async fn set_attr(
        &self,
        id: InodeId,
        cookie: Option<u64>,
        caller: &Caller,
        change: AttrChange,
    ) -> Result<shard::SetAttrResp> {
        let req = shard::SetAttrReq {
            id,
            cookie,
            caller: caller.clone(),
            change,
        };
        self.shard_request(id.shard(), req)
            .await
            .map_err(|e| e.with_context(&format!("changing the attributes of {id}")))
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
