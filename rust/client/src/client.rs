//! The [`Client`] itself: where shards and the CDC are (learnt from shuckle, refreshed when
//! requests time out), and sending one request to a shard or the CDC. The operations built on
//! top live by concern: `namespace.rs` (names, directories, renames, times), `policy.rs`
//! (directory policies), `write.rs` and `read.rs` (file data), `span_pager.rs` (listing a
//! file's spans), `repair.rs` (moving and rebuilding blocks).

use crate::blocks::{BlockClientOptions, BlockPool};
use crate::error::{ClientError, Result};
use crate::rpc::{RetryPolicy, UdpRpc};
use crate::shuckle::ShuckleClient;
use eggs_protocol::cdc::{CdcReq, CdcRequest, CdcResp, CdcResponse};
use eggs_protocol::codec::RequestBody;
use eggs_protocol::shard::{ShardReq, ShardRequest, ShardResp, ShardResponse};
use eggs_protocol::shuckle::{CdcReq as ShuckleCdcReq, ShardsReq};
use eggs_protocol::{EggsError, RequestHeader, ShardId, MAX_UDP_MTU, NUM_SHARDS};
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

#[derive(Default)]
struct Addresses {
    shards: Vec<Option<SocketAddr>>,
    cdc: Option<SocketAddr>,
    refreshed_at: Option<Instant>,
}

/// An EggsFS client. Clones are cheap and share everything (addresses, sockets, block-service
/// connections), so that a [`crate::FileWriter`] can store spans from tasks of its own; every
/// method may run concurrently.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    shuckle: ShuckleClient,
    rpc: UdpRpc,
    opts: ClientOptions,
    addrs: Mutex<Addresses>,
    refresh: tokio::sync::Mutex<()>,
    /// Connections to block services, for the data path (`write.rs`, `read.rs`).
    blocks: Arc<BlockPool>,
    /// This process's credentials and umask, for what it creates and changes on its own
    /// behalf (the FUSE daemon names each request's caller instead).
    caller: eggs_protocol::Caller,
    umask: u32,
}

/// Addresses are refreshed from shuckle at most this often when requests time out.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

impl Client {
    /// Connects to shuckle and learns where the shards and the CDC are.
    pub async fn new(shuckle: SocketAddr, opts: ClientOptions) -> Result<Client> {
        let client = Client {
            shared: Arc::new(Shared {
                shuckle: ShuckleClient::new(shuckle),
                rpc: UdpRpc::new()?,
                opts,
                addrs: Mutex::new(Addresses::default()),
                refresh: tokio::sync::Mutex::new(()),
                blocks: Arc::new(BlockPool::new(BlockClientOptions::default())),
                caller: eggs_common::creds::current(),
                umask: eggs_common::creds::umask(),
            }),
        };
        client.refresh_addresses(true).await?;
        Ok(client)
    }

    pub fn shuckle(&self) -> &ShuckleClient {
        &self.shared.shuckle
    }

    pub fn options(&self) -> &ClientOptions {
        &self.shared.opts
    }

    /// This process's uid, gid and groups (the creator and changer of what the library
    /// makes and changes unless a caller is named).
    pub fn caller(&self) -> &eggs_protocol::Caller {
        &self.shared.caller
    }

    /// This process's umask, which new inodes' modes get (as `open(2)` and `mkdir(2)` do).
    pub fn umask(&self) -> u32 {
        self.shared.umask
    }

    /// The block-service connections of this client.
    pub fn block_pool(&self) -> &Arc<BlockPool> {
        &self.shared.blocks
    }

    fn addrs(&self) -> std::sync::MutexGuard<'_, Addresses> {
        self.shared.addrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refresh_addresses(&self, force: bool) -> Result<()> {
        let _one_at_a_time = self.shared.refresh.lock().await;
        if !force {
            if let Some(at) = self.addrs().refreshed_at {
                if at.elapsed() < MIN_REFRESH_INTERVAL {
                    return Ok(());
                }
            }
        }
        let shards = self.shared.shuckle.request(ShardsReq {}).await?;
        let cdc = self.shared.shuckle.request(ShuckleCdcReq {}).await?;
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
        self.shard_request_with_header(shard, self.shared.rpc.new_header(), body)
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
            .shared
            .rpc
            .call(
                &what,
                header.request_id,
                &req,
                self.shared.opts.retry,
                |attempt| self.shard_addr(shard, attempt),
            )
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
        let header = self.shared.rpc.new_header();
        let req = CdcRequest {
            header,
            body: body.into_req(),
        };
        let what = Described("CDC", "", req.body.kind());
        let resp: CdcResponse = self
            .shared
            .rpc
            .call(
                &what,
                header.request_id,
                &req,
                self.shared.opts.retry,
                |attempt| self.cdc_addr(attempt),
            )
            .await?;
        match resp.result {
            Ok(r) => B::from_resp(r).ok_or_else(|| wrong_kind(&what.to_string())),
            Err(err) => Err(ClientError::Eggs {
                what: what.to_string(),
                err,
            }),
        }
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
