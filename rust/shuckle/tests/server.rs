//! The real server over TCP, driven by the real client and by misbehaving raw sockets.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::ShuckleClient;
use eggs_common::frame::{read_frame, write_frame};
use eggs_protocol::policy::StorageClass;
use eggs_protocol::shuckle::{
    flags, BlockServiceInfo, BlockServiceRegistration, BlockServicesReq, CdcReq,
    RegisterBlockServicesReq, RegisterCdcReq, RegisterShardsReq, SetBlockServiceFlagsReq,
    ShardsReq, ShuckleReq, ShuckleRequest, ShuckleResp, ShuckleResponse,
};
use eggs_protocol::{Addr, BlockServiceId, EggsError, EggsTime, ShardId, NUM_SHARDS};
use eggs_shuckle::{Shuckle, ShuckleConfig, ShuckleError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in the background until stopped.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ShuckleError>>,
}

impl Running {
    async fn start(cfg: ShuckleConfig) -> Running {
        let shuckle = Shuckle::bind(cfg).await.expect("bind");
        let addr = shuckle.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(shuckle.run(async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    fn client(&self) -> ShuckleClient {
        ShuckleClient::new(self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean shutdown");
    }
}

fn config(dir: &tempfile::TempDir) -> ShuckleConfig {
    ShuckleConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf())
}

fn addr(port: u16) -> Addr {
    Addr {
        ip: [127, 0, 0, 1],
        port,
    }
}

fn registration(id: u64, port: u16) -> BlockServiceRegistration {
    BlockServiceRegistration {
        id: BlockServiceId(id),
        addr: addr(port),
        storage_class: StorageClass::Flash,
        failure_domain: [id as u8; 16],
        secret_key: [9; 16],
        capacity_bytes: 1 << 40,
        available_bytes: 1 << 39,
        blocks: id * 10,
        path: format!("/data/{id}"),
    }
}

/// Everything the server reports, to compare before and after a restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    shards: Vec<eggs_protocol::shuckle::ShardInfo>,
    cdc: (Addr, EggsTime),
    block_services: Vec<BlockServiceInfo>,
}

async fn snapshot(client: &ShuckleClient) -> Snapshot {
    let shards = client.request(ShardsReq {}).await.unwrap().shards;
    let cdc = client.request(CdcReq {}).await.unwrap();
    let bs = client.request(BlockServicesReq {}).await.unwrap();
    Snapshot {
        shards,
        cdc: (cdc.addr, cdc.last_seen),
        block_services: bs.services,
    }
}

async fn register_everything(client: &ShuckleClient) {
    let all: Vec<ShardId> = (0..=255).map(ShardId).collect();
    let shards = RegisterShardsReq {
        shards: all.clone(),
        addr: addr(6000),
    };
    client.request(shards).await.unwrap();
    let moved = RegisterShardsReq {
        shards: vec![ShardId(7)],
        addr: addr(6007),
    };
    client.request(moved).await.unwrap();
    let cdc = RegisterCdcReq { addr: addr(6100) };
    client.request(cdc).await.unwrap();
    let services = vec![registration(2, 6202), registration(1, 6201)];
    let bs = RegisterBlockServicesReq { services };
    client.request(bs).await.unwrap();
    let set = SetBlockServiceFlagsReq {
        id: BlockServiceId(2),
        flags: flags::NO_WRITE,
        mask: flags::NO_WRITE,
    };
    client.request(set).await.unwrap();
}

#[tokio::test]
async fn registers_queries_and_survives_restart() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let server = Running::start(config(&dir)).await;
    let client = server.client();
    let empty = snapshot(&client).await;
    assert_eq!(empty.shards.len(), NUM_SHARDS);
    assert!(empty.shards.iter().all(|s| s.addr == Addr::default()));
    assert_eq!(empty.cdc, (Addr::default(), EggsTime(0)));
    assert!(empty.block_services.is_empty());

    let before = EggsTime::now();
    register_everything(&client).await;
    let got = snapshot(&client).await;
    assert_eq!(got.shards.len(), NUM_SHARDS);
    assert_eq!(got.shards[0].addr, addr(6000));
    assert_eq!(got.shards[7].addr, addr(6007));
    assert!(got.shards.iter().all(|s| s.last_seen >= before));
    assert_eq!(got.cdc.0, addr(6100));
    let ids: Vec<u64> = got.block_services.iter().map(|b| b.id.0).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(got.block_services[0].flags, 0);
    assert_eq!(got.block_services[1].flags, flags::NO_WRITE);
    assert_eq!(got.block_services[1].path, "/data/2");

    let unknown = SetBlockServiceFlagsReq {
        id: BlockServiceId(3),
        flags: 1,
        mask: 1,
    };
    let err = client.request(unknown).await.unwrap_err();
    assert_eq!(err.eggs(), Some(EggsError::BlockServiceNotFound));

    server.stop().await;
    let server = Running::start(config(&dir)).await;
    assert_eq!(
        snapshot(&server.client()).await,
        got,
        "state survives a restart"
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_block_services_turn_stale() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = config(&dir);
    cfg.stale_after_ms = 200;
    let server = Running::start(cfg).await;
    let client = server.client();
    let register = || RegisterBlockServicesReq {
        services: vec![registration(1, 6201)],
    };
    let flags_now =
        || async { client.request(BlockServicesReq {}).await.unwrap().services[0].flags };
    client.request(register()).await.unwrap();
    assert_eq!(flags_now().await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(flags_now().await, flags::STALE);
    client.request(register()).await.unwrap();
    assert_eq!(flags_now().await, 0, "a heartbeat clears STALE");
    server.stop().await;
}

/// Sends raw bytes on a fresh connection and returns what the server sent back before
/// closing it (or fails the test if it keeps the connection open).
async fn send_raw(server: SocketAddr, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    // A reset instead of a clean close is fine too: either way the server hung up.
    let _ = read.await.expect("server did not close the connection");
    answer
}

fn frame(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn bad_input_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let server = Running::start(config(&dir)).await;
    // A connection that stalls mid-frame must not hold up anyone else.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"SHU\x01\x10\x00").await.unwrap();

    let garbage = b"GET / HTTP/1.1\r\nHost: shuckle\r\n\r\n";
    assert!(send_raw(server.addr, garbage, false).await.is_empty());
    let truncated = &frame(b"SHU\x01", &[0; 100])[..50];
    assert!(send_raw(server.addr, truncated, true).await.is_empty());
    let huge = b"SHU\x01\xff\xff\xff\xff";
    assert!(send_raw(server.addr, huge, false).await.is_empty());

    // Our magic but an unknown request kind: answered with MalformedRequest, then closed.
    let unknown_kind = frame(b"SHU\x01", &99u32.to_le_bytes());
    let answer = send_raw(server.addr, &unknown_kind, false).await;
    let resp: ShuckleResponse = read_frame(&mut &answer[..]).await.unwrap().unwrap();
    assert_eq!(resp.result, Err(EggsError::MalformedRequest));

    let shards = server.client().request(ShardsReq {}).await.unwrap();
    assert_eq!(shards.shards.len(), NUM_SHARDS);
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn one_connection_carries_many_requests() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let server = Running::start(config(&dir)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let requests = [
        ShuckleReq::RegisterCdc(RegisterCdcReq { addr: addr(6100) }),
        ShuckleReq::Cdc(CdcReq {}),
        ShuckleReq::SetBlockServiceFlags(SetBlockServiceFlagsReq {
            id: BlockServiceId(1),
            flags: 0,
            mask: 0,
        }),
        ShuckleReq::Shards(ShardsReq {}),
    ];
    let mut answers = Vec::new();
    for body in requests {
        write_frame(&mut stream, &ShuckleRequest { body })
            .await
            .unwrap();
        let resp: ShuckleResponse = read_frame(&mut stream).await.unwrap().unwrap();
        answers.push(resp.result);
    }
    assert!(matches!(&answers[1], Ok(ShuckleResp::Cdc(c)) if c.addr == addr(6100)));
    assert_eq!(answers[2], Err(EggsError::BlockServiceNotFound));
    assert!(matches!(&answers[3], Ok(ShuckleResp::Shards(s)) if s.shards.len() == NUM_SHARDS));
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = config(&dir);
    cfg.idle_timeout_ms = 100;
    let server = Running::start(cfg).await;
    assert!(send_raw(server.addr, b"", false).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn extra_connections_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = config(&dir);
    cfg.max_connections = 1;
    cfg.idle_timeout_ms = 300;
    let server = Running::start(cfg).await;
    let hog = TcpStream::connect(server.addr).await.unwrap();
    // Let the server accept the hog before the client queues behind it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.client().request(ShardsReq {}).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered while the only slot was taken"
    );
    drop(hog);
    server.stop().await;
}

#[tokio::test]
async fn bad_config_is_rejected() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = config(&dir);
    cfg.max_connections = 0;
    assert!(matches!(
        Shuckle::bind(cfg).await,
        Err(ShuckleError::BadConfig(_))
    ));
}

#[tokio::test]
async fn second_server_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let server = Running::start(config(&dir)).await;
    assert!(matches!(
        Shuckle::bind(config(&dir)).await,
        Err(ShuckleError::OpenDb { .. })
    ));
    server.stop().await;
}
