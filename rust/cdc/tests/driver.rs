//! The real driver (UDP, RocksDB, shard client, shuckle heartbeat) against an in-process fake
//! shuckle and a fake shard that serves all 256 shards with scripted answers. Integration
//! tests against real shard processes belong in `rust/tests`.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_cdc::{Cdc, CdcConfig, CdcError};
use eggs_common::frame::{read_frame, write_frame};
use eggs_protocol::cdc::{CdcReq, CdcRequest, CdcResp, CdcResponse, MakeDirectoryReq};
use eggs_protocol::codec;
use eggs_protocol::shard::{ShardReq, ShardRequest, ShardResp, ShardResponse};
use eggs_protocol::shuckle::{
    CdcResp as ShuckleCdcResp, RegisterCdcResp, ShardInfo, ShardsResp, ShuckleReq, ShuckleRequest,
    ShuckleResp, ShuckleResponse,
};
use eggs_protocol::{
    Addr, DirectoryInfo, EggsError, EggsTime, InodeId, Name, RequestHeader, NUM_SHARDS,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the shard list (every shard at `shard`) and the CDC registry.
async fn fake_shuckle(shard: SocketAddr) -> (SocketAddr, Arc<Mutex<Option<Addr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cdc: Arc<Mutex<Option<Addr>>> = Arc::default();
    let registry = cdc.clone();
    let shard = Addr::from_socket_addr(shard).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                while let Ok(Some(req)) = read_frame::<ShuckleRequest, _>(&mut stream).await {
                    let result = shuckle_answer(req.body, shard, &registry);
                    if write_frame(&mut stream, &ShuckleResponse { result })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, cdc)
}

fn shuckle_answer(
    req: ShuckleReq,
    shard: Addr,
    registry: &Mutex<Option<Addr>>,
) -> Result<ShuckleResp, EggsError> {
    let now = EggsTime::now();
    Ok(match req {
        ShuckleReq::Shards(_) => ShuckleResp::Shards(ShardsResp {
            shards: vec![
                ShardInfo {
                    addr: shard,
                    last_seen: now,
                };
                NUM_SHARDS
            ],
        }),
        ShuckleReq::Cdc(_) => ShuckleResp::Cdc(ShuckleCdcResp {
            addr: lock(registry).unwrap_or_default(),
            last_seen: now,
        }),
        ShuckleReq::RegisterCdc(r) => {
            *lock(registry) = Some(r.addr);
            ShuckleResp::RegisterCdc(RegisterCdcResp {})
        }
        _ => return Err(EggsError::InternalError),
    })
}

/// Answers every CDC step with success, except names listed in `existing` (NameExists), and
/// no answer at all to CreateCurrentEdge while `mute_edges` is set.
#[derive(Default)]
struct ShardScript {
    existing: HashSet<Name>,
    mute_edges: bool,
    seen: Vec<ShardReq>,
}

async fn fake_shard() -> (SocketAddr, Arc<Mutex<ShardScript>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let script: Arc<Mutex<ShardScript>> = Arc::default();
    let s = script.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(req) = codec::decode::<ShardRequest>(&buf[..n]) else {
                continue;
            };
            let Some(result) = shard_answer(&req.body, &mut lock(&s)) else {
                continue;
            };
            let resp = ShardResponse {
                request_id: req.header.request_id,
                result,
            };
            let _ = socket.send_to(&codec::encode(&resp), from).await;
        }
    });
    (addr, script)
}

/// The attributes the fake shard gives every directory a client stats (to make a new
/// directory's from): setgid, so that its group is the one new directories get.
const PARENT_ATTRS: eggs_protocol::InodeAttrs = eggs_protocol::InodeAttrs {
    mode: eggs_protocol::posix::S_IFDIR | eggs_protocol::posix::S_ISGID | 0o775,
    uid: 0,
    gid: 4242,
};

fn shard_answer(req: &ShardReq, s: &mut ShardScript) -> Option<Result<ShardResp, EggsError>> {
    use eggs_protocol::shard::*;
    // A client's own reads are not CDC steps: answered, not recorded.
    if let ShardReq::StatDirectory(_) = req {
        return Some(Ok(ShardResp::StatDirectory(StatDirectoryResp {
            owner_id: InodeId::NULL,
            mtime: EggsTime(1),
            info: DirectoryInfo::default(),
            atime: EggsTime(1),
            ctime: EggsTime(1),
            attrs: PARENT_ATTRS,
        })));
    }
    s.seen.push(req.clone());
    Some(Ok(match req {
        ShardReq::CreateDirectoryInode(_) => {
            ShardResp::CreateDirectoryInode(CreateDirectoryInodeResp { mtime: EggsTime(1) })
        }
        ShardReq::CreateCurrentEdge(_) if s.mute_edges => return None,
        ShardReq::CreateCurrentEdge(r) if s.existing.contains(&r.name) => {
            return Some(Err(EggsError::NameExists))
        }
        ShardReq::CreateCurrentEdge(_) => ShardResp::CreateCurrentEdge(CreateCurrentEdgeResp {
            creation_time: EggsTime(42),
        }),
        ShardReq::RemoveDirectoryInode(_) => {
            ShardResp::RemoveDirectoryInode(RemoveDirectoryInodeResp {})
        }
        ShardReq::LockCurrentEdge(_) => ShardResp::LockCurrentEdge(LockCurrentEdgeResp {}),
        ShardReq::UnlockCurrentEdge(_) => ShardResp::UnlockCurrentEdge(UnlockCurrentEdgeResp {}),
        _ => return Some(Err(EggsError::TypeMismatch)),
    }))
}

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), CdcError>>,
}

async fn start_cdc(dir: &tempfile::TempDir, shuckle: SocketAddr) -> Running {
    let cfg = CdcConfig {
        dir: dir.path().to_path_buf(),
        bind: "127.0.0.1:0".parse().unwrap(),
        shuckle,
    };
    let cdc = Cdc::bind(cfg).await.unwrap();
    let addr = cdc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(cdc.run(async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Sends `bytes` every 300 ms until a response arrives (like a client retrying), for at most
/// `wait`.
async fn call_raw(to: SocketAddr, bytes: &[u8], wait: Duration) -> Option<CdcResponse> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        socket.send_to(bytes, to).await.unwrap();
        let recv = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf));
        if let Ok(Ok((n, _))) = recv.await {
            return Some(codec::decode::<CdcResponse>(&buf[..n]).unwrap());
        }
    }
    None
}

async fn call(to: SocketAddr, req: &CdcRequest) -> CdcResponse {
    let resp = call_raw(to, &codec::encode(req), Duration::from_secs(20)).await;
    let resp = resp.expect("no answer from the CDC");
    assert_eq!(resp.request_id, req.header.request_id);
    resp
}

fn mkdir(request_id: u64, name: &str) -> CdcRequest {
    CdcRequest {
        header: RequestHeader {
            request_id,
            client_id: 77,
        },
        body: CdcReq::MakeDirectory(MakeDirectoryReq {
            owner_id: InodeId::ROOT,
            name: Name::new(name).unwrap(),
            info: DirectoryInfo::default(),
            attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
        }),
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mkdir_through_shuckle_registration() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (shard, script) = fake_shard().await;
    let (shuckle, registry) = fake_shuckle(shard).await;
    let cdc = start_cdc(&dir, shuckle).await;
    wait_for("CDC registration", || lock(&registry).is_some()).await;
    assert_eq!(lock(&registry).map(|a| a.to_socket_addr()), Some(cdc.addr));
    let client = eggs_client::Client::new(shuckle, Default::default())
        .await
        .unwrap();
    let id = client
        .mkdir_in(InodeId::ROOT, &Name::new("a").unwrap())
        .await
        .unwrap();
    assert!(id.is_dir() && id != InodeId::ROOT);
    lock(&script).existing.insert(Name::new("taken").unwrap());
    let err = client
        .mkdir_in(InodeId::ROOT, &Name::new("taken").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.eggs(), Some(EggsError::NameExists));
    let kinds: Vec<_> = lock(&script).seen.iter().map(|r| r.kind()).collect();
    // The directory is the client's, with the setgid parent's group, all the way to the
    // shard.
    let first = lock(&script).seen[0].clone();
    let ShardReq::CreateDirectoryInode(create) = first else {
        panic!("the first step is not CreateDirectoryInode");
    };
    assert_eq!(create.attrs.uid, client.caller().uid);
    assert_eq!(create.attrs.gid, PARENT_ATTRS.gid);
    assert!(create.attrs.is_dir(), "{:o}", create.attrs.mode);
    assert_ne!(create.attrs.mode & eggs_protocol::posix::S_ISGID, 0);
    assert_eq!(
        kinds,
        [
            "CreateDirectoryInode",
            "CreateCurrentEdge",
            // The new edge is created locked and unlocked as the last step.
            "UnlockCurrentEdge",
            "CreateDirectoryInode",
            "CreateCurrentEdge",
            // A rollback fences the directory against late copies of the create first.
            "UnlockCurrentEdge",
            "RemoveDirectoryInode"
        ]
    );
    cdc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_datagrams_get_malformed_request_when_they_carry_an_id() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (shard, _) = fake_shard().await;
    let (shuckle, _) = fake_shuckle(shard).await;
    let cdc = start_cdc(&dir, shuckle).await;
    let mut bad = b"CDC\x01".to_vec();
    bad.extend_from_slice(&1234u64.to_le_bytes());
    bad.extend_from_slice(&[0xff; 7]);
    let resp = call_raw(cdc.addr, &bad, Duration::from_secs(5)).await;
    assert_eq!(
        resp,
        Some(CdcResponse {
            request_id: 1234,
            result: Err(EggsError::MalformedRequest)
        })
    );
    let short = call_raw(cdc.addr, b"CDC", Duration::from_millis(700)).await;
    assert_eq!(short, None, "too short to carry a request id: dropped");
    // Still serving.
    let resp = call(cdc.addr, &mkdir(1, "ok")).await;
    assert!(resp.result.is_ok());
    cdc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_get_the_stored_result_across_restarts() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (shard, script) = fake_shard().await;
    let (shuckle, _) = fake_shuckle(shard).await;
    let cdc = start_cdc(&dir, shuckle).await;
    let first = call(cdc.addr, &mkdir(1, "d")).await;
    assert!(matches!(first.result, Ok(CdcResp::MakeDirectory(_))));
    cdc.stop().await;
    let steps_before = lock(&script).seen.len();
    let cdc = start_cdc(&dir, shuckle).await;
    assert_eq!(call(cdc.addr, &mkdir(1, "d")).await, first);
    assert_eq!(lock(&script).seen.len(), steps_before, "not run twice");
    // A new request gets a new directory id.
    let second = call(cdc.addr, &mkdir(2, "e")).await;
    let (Ok(CdcResp::MakeDirectory(a)), Ok(CdcResp::MakeDirectory(b))) =
        (&first.result, &second.result)
    else {
        panic!("mkdirs failed: {first:?} {second:?}");
    };
    assert_ne!(a.id, b.id);
    cdc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_transaction_resumes_after_restart() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (shard, script) = fake_shard().await;
    let (shuckle, _) = fake_shuckle(shard).await;
    lock(&script).mute_edges = true;
    let cdc = start_cdc(&dir, shuckle).await;
    let bytes = codec::encode(&mkdir(1, "d"));
    let pending = call_raw(cdc.addr, &bytes, Duration::from_millis(600)).await;
    assert_eq!(pending, None, "stuck on the muted step");
    wait_for("the edge step", || {
        lock(&script)
            .seen
            .iter()
            .any(|r| matches!(r, ShardReq::CreateCurrentEdge(_)))
    })
    .await;
    cdc.stop().await;
    let created = lock(&script).seen.iter().find_map(|r| match r {
        ShardReq::CreateDirectoryInode(c) => Some(c.id),
        _ => None,
    });
    lock(&script).mute_edges = false;
    let cdc = start_cdc(&dir, shuckle).await;
    let resp = call(cdc.addr, &mkdir(1, "d")).await;
    let Ok(CdcResp::MakeDirectory(r)) = resp.result else {
        panic!("mkdir failed: {resp:?}");
    };
    assert_eq!(
        Some(r.id),
        created,
        "the resumed transaction kept its directory id"
    );
    assert_eq!(r.creation_time, EggsTime(42));
    cdc.stop().await;
}

/// Starts the `eggscdc` binary and waits for it to register a new address with shuckle.
async fn spawn_binary(
    dir: &tempfile::TempDir,
    shuckle: SocketAddr,
    registry: &Mutex<Option<Addr>>,
) -> (tokio::process::Child, SocketAddr) {
    *lock(registry) = None;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_eggscdc"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--shuckle")
        .arg(shuckle.to_string())
        .env("EGGS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("the CDC process to register", || lock(registry).is_some()).await;
    let addr = lock(registry).map(|a| a.to_socket_addr()).unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_resumes_its_transaction() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (shard, script) = fake_shard().await;
    let (shuckle, registry) = fake_shuckle(shard).await;
    lock(&script).mute_edges = true;
    let (mut child, addr) = spawn_binary(&dir, shuckle, &registry).await;
    let bytes = codec::encode(&mkdir(1, "d"));
    assert_eq!(
        call_raw(addr, &bytes, Duration::from_millis(300)).await,
        None
    );
    wait_for("the edge step", || {
        lock(&script)
            .seen
            .iter()
            .any(|r| matches!(r, ShardReq::CreateCurrentEdge(_)))
    })
    .await;
    child.kill().await.unwrap(); // SIGKILL
    lock(&script).mute_edges = false;
    let (mut child, addr) = spawn_binary(&dir, shuckle, &registry).await;
    let resp = call(addr, &mkdir(1, "d")).await;
    assert!(
        matches!(resp.result, Ok(CdcResp::MakeDirectory(_))),
        "{resp:?}"
    );
    let inodes = lock(&script)
        .seen
        .iter()
        .filter_map(|r| match r {
            ShardReq::CreateDirectoryInode(c) => Some(c.id),
            _ => None,
        })
        .collect::<HashSet<_>>();
    assert_eq!(inodes.len(), 1, "resumed with the same directory id");
    child.kill().await.unwrap();
}
