//! Path-level operations over shards and the CDC.

use crate::blocks::{BlockClientOptions, BlockPool};
use crate::error::{ClientError, Result};
use crate::rpc::{RetryPolicy, UdpRpc};
use crate::shuckle::ShuckleClient;
use eggs_protocol::cdc::{self, CdcReq, CdcRequest, CdcResp, CdcResponse};
use eggs_protocol::codec::RequestBody;
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard::{self, ShardReq, ShardRequest, ShardResp, ShardResponse};
use eggs_protocol::shuckle::{CdcReq as ShuckleCdcReq, ShardsReq};
use eggs_protocol::{
    EggsError, EggsTime, InodeId, InodeType, Name, RequestHeader, ShardId, MAX_INLINE_SPAN,
    MAX_UDP_MTU, NUM_SHARDS,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// Largest response a shard may send us.
    pub mtu: u16,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            mtu: MAX_UDP_MTU,
        }
    }
}

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

#[derive(Default)]
struct Addresses {
    shards: Vec<Option<SocketAddr>>,
    cdc: Option<SocketAddr>,
    refreshed_at: Option<Instant>,
}

/// An EggsFS client. Cheap to share behind an `Arc`; every method may run concurrently.
pub struct Client {
    shuckle: ShuckleClient,
    rpc: UdpRpc,
    opts: ClientOptions,
    addrs: Mutex<Addresses>,
    refresh: tokio::sync::Mutex<()>,
    /// Connections to block services, for the data path (`write.rs`, `read.rs`).
    blocks: Arc<BlockPool>,
}

/// Addresses are refreshed from shuckle at most this often when requests time out.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

impl Client {
    /// Connects to shuckle and learns where the shards and the CDC are.
    pub async fn new(shuckle: SocketAddr, opts: ClientOptions) -> Result<Client> {
        let client = Client {
            shuckle: ShuckleClient::new(shuckle),
            rpc: UdpRpc::new()?,
            opts,
            addrs: Mutex::new(Addresses::default()),
            refresh: tokio::sync::Mutex::new(()),
            blocks: Arc::new(BlockPool::new(BlockClientOptions::default())),
        };
        client.refresh_addresses(true).await?;
        Ok(client)
    }

    pub fn shuckle(&self) -> &ShuckleClient {
        &self.shuckle
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The block-service connections of this client.
    pub fn block_pool(&self) -> &Arc<BlockPool> {
        &self.blocks
    }

    fn addrs(&self) -> std::sync::MutexGuard<'_, Addresses> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refresh_addresses(&self, force: bool) -> Result<()> {
        let _one_at_a_time = self.refresh.lock().await;
        if !force {
            if let Some(at) = self.addrs().refreshed_at {
                if at.elapsed() < MIN_REFRESH_INTERVAL {
                    return Ok(());
                }
            }
        }
        let shards = self.shuckle.request(ShardsReq {}).await?;
        let cdc = self.shuckle.request(ShuckleCdcReq {}).await?;
        let mut a = self.addrs();
        a.shards = shards
            .shards
            .iter()
            .map(|s| (s.addr.port != 0).then(|| s.addr.to_socket_addr()))
            .collect();
        a.shards.resize(NUM_SHARDS, None);
        a.cdc = (cdc.addr.port != 0).then(|| cdc.addr.to_socket_addr());
        a.refreshed_at = Some(Instant::now());
        Ok(())
    }

    async fn shard_addr(&self, shard: ShardId, attempt: u32) -> Result<SocketAddr> {
        if attempt > 0 {
            // A time-out may mean the shard moved (restarted on another port).
            if let Err(e) = self.refresh_addresses(false).await {
                tracing::debug!("refreshing addresses: {e}");
            }
        }
        let known = self.addrs().shards.get(shard.0 as usize).copied().flatten();
        match known {
            Some(a) => Ok(a),
            None => {
                self.refresh_addresses(false).await?;
                self.addrs().shards[shard.0 as usize].ok_or(ClientError::Eggs {
                    what: format!("shard {shard}"),
                    err: EggsError::ShardNotRegistered,
                })
            }
        }
    }

    async fn cdc_addr(&self, attempt: u32) -> Result<SocketAddr> {
        if attempt > 0 || self.addrs().cdc.is_none() {
            if let Err(e) = self.refresh_addresses(attempt == 0).await {
                tracing::debug!("refreshing addresses: {e}");
            }
        }
        self.addrs().cdc.ok_or(ClientError::Eggs {
            what: "CDC".into(),
            err: EggsError::CdcNotRegistered,
        })
    }

    /// Sends one request to a shard and waits for its response.
    pub async fn shard_request<B>(&self, shard: ShardId, body: B) -> Result<B::RespBody>
    where
        B: RequestBody<Req = ShardReq, Resp = ShardResp>,
    {
        self.shard_request_with_header(shard, self.rpc.new_header(), body)
            .await
    }

    /// Like [`Client::shard_request`] with a header chosen by the caller. The CDC uses it so
    /// that every copy of a transaction step, even one sent again after a restart, carries
    /// the same (client id, request id) and so is applied at most once by the shard.
    pub async fn shard_request_with_header<B>(
        &self,
        shard: ShardId,
        header: RequestHeader,
        body: B,
    ) -> Result<B::RespBody>
    where
        B: RequestBody<Req = ShardReq, Resp = ShardResp>,
    {
        let req = ShardRequest {
            header,
            shard,
            body: body.into_req(),
        };
        // Formatted only for an error or a log line: this is the hot path of every request.
        let what = Described("shard ", shard, req.body.kind());
        let resp: ShardResponse = self
            .rpc
            .call(&what, header.request_id, &req, self.opts.retry, |attempt| {
                self.shard_addr(shard, attempt)
            })
            .await?;
        match resp.result {
            Ok(r) => B::from_resp(r).ok_or_else(|| wrong_kind(&what.to_string())),
            Err(err) => Err(ClientError::Eggs {
                what: what.to_string(),
                err,
            }),
        }
    }

    /// Sends one request to the CDC and waits for its response.
    pub async fn cdc_request<B>(&self, body: B) -> Result<B::RespBody>
    where
        B: RequestBody<Req = CdcReq, Resp = CdcResp>,
    {
        let header = self.rpc.new_header();
        let req = CdcRequest {
            header,
            body: body.into_req(),
        };
        let what = Described("CDC", "", req.body.kind());
        let resp: CdcResponse = self
            .rpc
            .call(&what, header.request_id, &req, self.opts.retry, |attempt| {
                self.cdc_addr(attempt)
            })
            .await?;
        match resp.result {
            Ok(r) => B::from_resp(r).ok_or_else(|| wrong_kind(&what.to_string())),
            Err(err) => Err(ClientError::Eggs {
                what: what.to_string(),
                err,
            }),
        }
    }

    // ---- inode-level operations ----

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
                        mtu: self.opts.mtu,
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
                        mtu: self.opts.mtu,
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

    /// The directory's policies with inheritance resolved, walking up to the root.
    pub async fn effective_directory_info(&self, dir_id: InodeId) -> Result<DirectoryInfo> {
        let mut info = DirectoryInfo::default();
        let mut cur = dir_id;
        // Bounded walk: a corrupt owner chain must not hang us.
        for _ in 0..4096 {
            let r = self
                .shard_request(cur.shard(), shard::StatDirectoryReq { id: cur })
                .await?;
            info.inherit_from(&r.info);
            if info.is_complete() || cur == InodeId::ROOT || r.owner_id.is_null() {
                return Ok(info);
            }
            cur = r.owner_id;
        }
        Err(ClientError::BadResponse {
            what: format!("policies of {dir_id}"),
            why: "directory chain too deep".into(),
        })
    }

    pub async fn set_directory_info(&self, id: InodeId, info: DirectoryInfo) -> Result<()> {
        self.shard_request(id.shard(), shard::SetDirectoryInfoReq { id, info })
            .await?;
        Ok(())
    }

    // ---- path-level operations ----

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
        let edge = self.lookup(dir_id, &name).await?;
        if edge.target_id.is_dir() {
            return Err(ClientError::Eggs {
                what: format!("rm {path}"),
                err: EggsError::IsADirectory,
            });
        }
        self.shard_request(
            dir_id.shard(),
            shard::SoftUnlinkFileReq {
                dir_id,
                target_id: edge.target_id,
                name,
                creation_time: edge.creation_time,
            },
        )
        .await
        .map_err(|e| e.with_context(&format!("rm {path}")))?;
        Ok(())
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &str) -> Result<()> {
        let (owner_id, name) = self.resolve_parent(path).await?;
        let edge = self.lookup(owner_id, &name).await?;
        if !edge.target_id.is_dir() {
            return Err(ClientError::Eggs {
                what: format!("rmdir {path}"),
                err: EggsError::NotADirectory,
            });
        }
        self.cdc_request(cdc::RemoveDirectoryReq {
            owner_id,
            target_id: edge.target_id,
            name,
            creation_time: edge.creation_time,
        })
        .await
        .map_err(|e| e.with_context(&format!("rmdir {path}")))?;
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
        if target_id.is_dir() {
            let r = self
                .cdc_request(cdc::RenameDirectoryReq {
                    target_id,
                    old_owner_id,
                    old_name: old_name.clone(),
                    old_creation_time,
                    new_owner_id,
                    new_name: new_name.clone(),
                })
                .await?;
            Ok(r.creation_time)
        } else {
            let r = self
                .cdc_request(cdc::RenameFileReq {
                    target_id,
                    old_owner_id,
                    old_name: old_name.clone(),
                    old_creation_time,
                    new_owner_id,
                    new_name: new_name.clone(),
                })
                .await?;
            Ok(r.creation_time)
        }
    }

    /// Writes a file from memory and links it at `path` (replacing an existing file there).
    /// Up to [`Client::MAX_SMALL_FILE`] bytes it is stored inline in the metadata (no block
    /// services needed); larger files go through [`Client::write_file`].
    pub async fn write_small_file(&self, path: &str, data: &[u8]) -> Result<InodeId> {
        let (owner_id, name) = self.resolve_parent(path).await?;
        self.write_small_file_in(owner_id, &name, data)
            .await
            .map_err(|e| e.with_context(&format!("writing {path}")))
    }

    /// Largest file [`Client::write_small_file`] stores inline.
    pub const MAX_SMALL_FILE: usize = 64 * MAX_INLINE_SPAN;

    pub async fn write_small_file_in(
        &self,
        owner_id: InodeId,
        name: &Name,
        data: &[u8],
    ) -> Result<InodeId> {
        if data.len() > Self::MAX_SMALL_FILE {
            return self.write_file_in(owner_id, name, data).await;
        }
        let shard = owner_id.shard();
        let f = self
            .shard_request(
                shard,
                shard::ConstructFileReq {
                    typ: InodeType::File,
                },
            )
            .await?;
        for (i, chunk) in data.chunks(MAX_INLINE_SPAN).enumerate() {
            self.shard_request(
                shard,
                shard::AddInlineSpanReq {
                    file_id: f.id,
                    cookie: f.cookie,
                    byte_offset: (i * MAX_INLINE_SPAN) as u64,
                    data: chunk.to_vec(),
                    crc: crc32c::crc32c(chunk),
                },
            )
            .await?;
        }
        self.shard_request(
            shard,
            shard::LinkFileReq {
                file_id: f.id,
                cookie: f.cookie,
                owner_id,
                name: name.clone(),
            },
        )
        .await?;
        Ok(f.id)
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

    /// Reads a whole file, checking every span's CRC (see [`Client::read_file_to`]).
    pub async fn read_file(&self, file_id: InodeId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_file_to(file_id, &mut out).await?;
        Ok(out)
    }
}

/// "shard 7 Lookup", "CDC MakeDirectory": a request's description, formatted on demand.
struct Described<T: std::fmt::Display>(&'static str, T, &'static str);

impl<T: std::fmt::Display> std::fmt::Display for Described<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{} {}", self.0, self.1, self.2)
    }
}

fn wrong_kind(what: &str) -> ClientError {
    ClientError::BadResponse {
        what: what.into(),
        why: "response of the wrong kind".into(),
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
