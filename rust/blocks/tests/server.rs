//! The real block server over TCP, registered with a real shuckle, driven by the client
//! helpers and by misbehaving raw sockets.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_blocks::client::{self, BlockClientError};
use eggs_blocks::identity::Identity;
use eggs_blocks::store::{self, HEADER_BYTES};
use eggs_blocks::{Blocks, BlocksConfig, BlocksError};
use eggs_client::ShuckleClient;
use eggs_common::crypto;
use eggs_protocol::blocks::{
    BlockServiceStatsReq, CheckBlockReq, EraseBlockReq, FetchBlockReq, WriteBlockReq,
};
use eggs_protocol::policy::StorageClass;
use eggs_protocol::shuckle::{flags, BlockServiceInfo, BlockServicesReq, SetBlockServiceFlagsReq};
use eggs_protocol::{BlockId, BlockServiceId, EggsError};
use eggs_shuckle::{Shuckle, ShuckleConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MIB: usize = 1 << 20;

/// A server task running until stopped.
struct Running<E> {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Running<E> {
    fn spawn<F>(addr: SocketAddr, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running<E>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(stopped));
        Running { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean stop");
    }
}

async fn start_shuckle(dir: &Path) -> Running<eggs_shuckle::ShuckleError> {
    let addr = "127.0.0.1:0".parse().expect("addr");
    let shuckle = Shuckle::bind(ShuckleConfig::new(addr, dir.join("shuckle")))
        .await
        .expect("bind shuckle");
    let addr = shuckle.local_addr();
    Running::spawn(addr, |stopped| {
        shuckle.run(async {
            let _ = stopped.await;
        })
    })
}

/// One process serving two directories (flash and hdd) of `root`.
struct Cluster {
    root: tempfile::TempDir,
    shuckle: Running<eggs_shuckle::ShuckleError>,
    blocks: Running<BlocksError>,
    ids: Vec<BlockServiceId>,
}

fn config(root: &Path, shuckle: SocketAddr) -> BlocksConfig {
    BlocksConfig {
        dirs: vec![
            (root.join("disk0"), StorageClass::Flash),
            (root.join("disk1"), StorageClass::Hdd),
        ],
        failure_domain: eggs_blocks::failure_domain("test-host").expect("fd"),
        bind: "127.0.0.1:0".parse().expect("addr"),
        shuckle,
        register_interval_ms: 50,
    }
}

async fn start_blocks(cfg: BlocksConfig) -> (Running<BlocksError>, Vec<BlockServiceId>) {
    let blocks = Blocks::bind(cfg).await.expect("bind blocks");
    let ids = blocks.service_ids();
    let running = Running::spawn(blocks.local_addr(), |stopped| {
        blocks.run(async {
            let _ = stopped.await;
        })
    });
    (running, ids)
}

/// A fresh directory named after the test, removed when dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("eggs-blocks-{name}-"))
        .tempdir()
        .expect("create temp dir")
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let root = temp_dir(name);
        let shuckle = start_shuckle(root.path()).await;
        let (blocks, ids) = start_blocks(config(root.path(), shuckle.addr)).await;
        Cluster {
            root,
            shuckle,
            blocks,
            ids,
        }
    }

    /// Stops the block services and starts them again on the same directories.
    async fn restart_blocks(self) -> Cluster {
        let Cluster {
            root,
            shuckle,
            blocks,
            ids,
        } = self;
        blocks.stop().await;
        let (blocks, new_ids) = start_blocks(config(root.path(), shuckle.addr)).await;
        assert_eq!(new_ids, ids, "ids survive a restart");
        Cluster {
            root,
            shuckle,
            blocks,
            ids,
        }
    }

    async fn stop(self) {
        self.blocks.stop().await;
        self.shuckle.stop().await;
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("disk{i}"))
    }

    fn key(&self, i: usize) -> [u8; 16] {
        Identity::load(&self.dir(i)).expect("identity").key
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.blocks.addr).await.expect("connect")
    }

    fn shuckle(&self) -> ShuckleClient {
        ShuckleClient::new(self.shuckle.addr)
    }

    /// A write request for `data` signed with service `i`'s key.
    fn write_req(&self, i: usize, block: u64, data: &[u8]) -> WriteBlockReq {
        let (crc, size) = (crc32c::crc32c(data), data.len() as u32);
        let bs = self.ids[i];
        WriteBlockReq {
            block_service_id: bs,
            block_id: BlockId(block),
            crc,
            size,
            certificate: crypto::write_certificate(&self.key(i), bs, BlockId(block), crc, size),
        }
    }

    fn fetch_req(&self, i: usize, block: u64, offset: u32, count: u32) -> FetchBlockReq {
        FetchBlockReq {
            block_service_id: self.ids[i],
            block_id: BlockId(block),
            offset,
            count,
        }
    }

    fn erase_req(&self, i: usize, block: u64) -> EraseBlockReq {
        let bs = self.ids[i];
        EraseBlockReq {
            block_service_id: bs,
            block_id: BlockId(block),
            certificate: crypto::erase_certificate(&self.key(i), bs, BlockId(block)),
        }
    }

    async fn put(&self, conn: &mut TcpStream, i: usize, block: u64, data: &[u8]) {
        let resp = client::write_block(conn, self.write_req(i, block, data), data)
            .await
            .expect("write");
        let proof = crypto::write_proof(&self.key(i), self.ids[i], BlockId(block));
        assert_eq!(resp.proof, proof, "write proof");
    }

    async fn services(&self) -> Vec<BlockServiceInfo> {
        self.shuckle()
            .request(BlockServicesReq {})
            .await
            .expect("list block services")
            .services
    }

    async fn set_flags(&self, i: usize, value: u8, mask: u8) {
        let req = SetBlockServiceFlagsReq {
            id: self.ids[i],
            flags: value,
            mask,
        };
        self.shuckle().request(req).await.expect("set flags");
    }

    fn temp_files(&self, i: usize) -> Vec<PathBuf> {
        temp_files(&self.dir(i))
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    (0..store::SUBDIRS)
        .flat_map(|i| std::fs::read_dir(dir.join(format!("{i:02x}"))).expect("subdir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tmp."))
        })
        .collect()
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            // xorshift: cheap, deterministic, not compressible by accident.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `check` until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn eggs_err<T: std::fmt::Debug>(r: Result<T, BlockClientError>) -> EggsError {
    match r {
        Err(BlockClientError::Eggs(e)) => e,
        other => panic!("expected a block service error, got {other:?}"),
    }
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read block file");
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).expect("write block file");
}

#[tokio::test]
async fn registration_is_visible_in_shuckle() {
    let c = Cluster::start("register").await;
    eventually("both services registered", || async {
        let listed = c.services().await;
        c.ids.iter().all(|id| listed.iter().any(|s| s.id == *id))
    })
    .await;
    let listed = c.services().await;
    for (i, class) in [StorageClass::Flash, StorageClass::Hdd]
        .into_iter()
        .enumerate()
    {
        let s = listed.iter().find(|s| s.id == c.ids[i]).expect("listed");
        assert_eq!(s.storage_class, class);
        assert_eq!(s.addr.to_socket_addr(), c.blocks.addr);
        assert_eq!(&s.failure_domain[..9], b"test-host");
        assert!(s.capacity_bytes > 0 && s.available_bytes <= s.capacity_bytes);
        assert_eq!(s.path, c.dir(i).display().to_string());
        assert_eq!(s.blocks, 0);
        assert_eq!(s.flags & flags::STALE, 0);
    }
    let mut conn = c.connect().await;
    c.put(&mut conn, 1, 77, &data(1000, 1)).await;
    eventually("block count refreshed", || async {
        c.services()
            .await
            .iter()
            .any(|s| s.id == c.ids[1] && s.blocks == 1)
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn write_then_fetch_whole_and_ranges() {
    let c = Cluster::start("fetch").await;
    let mut conn = c.connect().await;
    let bytes = data(3 * MIB + 123, 2);
    let len = bytes.len() as u32;
    c.put(&mut conn, 0, 0x1234, &bytes).await;
    let whole = client::fetch_block(&mut conn, c.fetch_req(0, 0x1234, 0, len)).await;
    assert!(whole.expect("whole") == bytes);
    for (offset, count) in [
        (0, 1),
        (4095, 2),
        (1_000_000, 1_500_000),
        (len - 7, 7),
        (len, 0),
    ] {
        let got = client::fetch_block(&mut conn, c.fetch_req(0, 0x1234, offset, count))
            .await
            .expect("range");
        assert!(
            got == bytes[offset as usize..(offset + count) as usize],
            "{offset}+{count}"
        );
    }
    let check = CheckBlockReq {
        block_service_id: c.ids[0],
        block_id: BlockId(0x1234),
        size: len,
        crc: crc32c::crc32c(&bytes),
    };
    client::check_block(&mut conn, check.clone())
        .await
        .expect("check");
    let stats = BlockServiceStatsReq {
        block_service_id: c.ids[0],
    };
    let stats = client::block_service_stats(&mut conn, stats)
        .await
        .expect("stats");
    assert_eq!(stats.blocks, 1);
    assert!(stats.capacity_bytes >= stats.available_bytes && stats.capacity_bytes > 0);
    // Writing the same block again is fine and still counts once.
    c.put(&mut conn, 0, 0x1234, &bytes).await;
    let stats = BlockServiceStatsReq {
        block_service_id: c.ids[0],
    };
    assert_eq!(
        client::block_service_stats(&mut conn, stats)
            .await
            .expect("stats")
            .blocks,
        1
    );
    // The other service does not have it.
    let elsewhere = client::fetch_block(&mut conn, c.fetch_req(1, 0x1234, 0, 1)).await;
    assert_eq!(eggs_err(elsewhere), EggsError::BlockNotFound);
    c.stop().await;
}

#[tokio::test]
async fn bad_requests_are_answered_and_the_connection_survives() {
    let c = Cluster::start("bad-requests").await;
    let mut conn = c.connect().await;
    let bytes = data(100_000, 3);
    c.put(&mut conn, 0, 5, &bytes).await;
    let past_end = client::fetch_block(&mut conn, c.fetch_req(0, 5, 99_999, 2)).await;
    assert_eq!(eggs_err(past_end), EggsError::MalformedRequest);
    let huge = client::fetch_block(&mut conn, c.fetch_req(0, 5, u32::MAX, u32::MAX)).await;
    assert_eq!(eggs_err(huge), EggsError::MalformedRequest);
    let mut unknown = c.write_req(0, 6, &bytes);
    unknown.block_service_id = BlockServiceId(12345);
    let unknown = client::write_block(&mut conn, unknown, &bytes).await;
    assert_eq!(eggs_err(unknown), EggsError::BlockServiceNotFound);
    // A certificate for the CRC the client announced, but other data: refused after reading.
    let mut other = bytes.clone();
    other[50_000] ^= 1;
    let bad_crc = client::write_block(&mut conn, c.write_req(0, 6, &bytes), &other).await;
    assert_eq!(eggs_err(bad_crc), EggsError::BadBlockCrc);
    assert!(c.temp_files(0).is_empty());
    let missing = client::fetch_block(&mut conn, c.fetch_req(0, 6, 0, 1)).await;
    assert_eq!(eggs_err(missing), EggsError::BlockNotFound);
    let got = client::fetch_block(&mut conn, c.fetch_req(0, 5, 0, 100_000)).await;
    assert!(got.expect("still serving") == bytes);
    c.stop().await;
}

#[tokio::test]
async fn forged_and_replayed_certificates_are_refused() {
    let c = Cluster::start("certs").await;
    let mut conn = c.connect().await;
    let bytes = data(50_000, 4);
    let mut forged = c.write_req(0, 10, &bytes);
    forged.certificate = [0x42; 8];
    assert_eq!(
        eggs_err(client::write_block(&mut conn, forged, &bytes).await),
        EggsError::BadCertificate
    );
    // Replay: a valid certificate for block 10 presented for block 11.
    let mut replay = c.write_req(0, 10, &bytes);
    replay.block_id = BlockId(11);
    assert_eq!(
        eggs_err(client::write_block(&mut conn, replay, &bytes).await),
        EggsError::BadCertificate
    );
    // ... or for the same block on the other service, which has another key anyway.
    let mut moved = c.write_req(0, 10, &bytes);
    moved.block_service_id = c.ids[1];
    assert_eq!(
        eggs_err(client::write_block(&mut conn, moved, &bytes).await),
        EggsError::BadCertificate
    );
    // ... or with other contents of the same size.
    let other = data(50_000, 5);
    let mut swapped = c.write_req(0, 10, &bytes);
    swapped.crc = crc32c::crc32c(&other);
    assert_eq!(
        eggs_err(client::write_block(&mut conn, swapped, &other).await),
        EggsError::BadCertificate
    );
    // A write proof is not an erase certificate.
    c.put(&mut conn, 0, 12, &bytes).await;
    let mut erase = c.erase_req(0, 12);
    erase.certificate = crypto::write_proof(&c.key(0), c.ids[0], BlockId(12));
    assert_eq!(
        eggs_err(client::erase_block(&mut conn, erase).await),
        EggsError::BadCertificate
    );
    for block in [10, 11] {
        let got = client::fetch_block(&mut conn, c.fetch_req(0, block, 0, 1)).await;
        assert_eq!(eggs_err(got), EggsError::BlockNotFound);
    }
    assert!(client::fetch_block(&mut conn, c.fetch_req(0, 12, 0, 1))
        .await
        .is_ok());
    assert!(c.temp_files(0).is_empty());
    c.stop().await;
}

#[tokio::test]
async fn erase_returns_a_proof_and_is_idempotent() {
    let c = Cluster::start("erase").await;
    let mut conn = c.connect().await;
    c.put(&mut conn, 1, 0xfeed, &data(10_000, 6)).await;
    let proof = crypto::erase_proof(&c.key(1), c.ids[1], BlockId(0xfeed));
    let resp = client::erase_block(&mut conn, c.erase_req(1, 0xfeed))
        .await
        .expect("erase");
    assert_eq!(resp.proof, proof);
    let gone = client::fetch_block(&mut conn, c.fetch_req(1, 0xfeed, 0, 1)).await;
    assert_eq!(eggs_err(gone), EggsError::BlockNotFound);
    let again = client::erase_block(&mut conn, c.erase_req(1, 0xfeed))
        .await
        .expect("again");
    assert_eq!(again.proof, proof);
    assert!(!store::block_path(&c.dir(1), BlockId(0xfeed)).exists());
    c.stop().await;
}

#[tokio::test]
async fn corrupt_blocks_are_reported_by_fetch_and_check() {
    let c = Cluster::start("corrupt").await;
    let mut conn = c.connect().await;
    let bytes = data(2 * MIB, 7);
    let len = bytes.len() as u32;
    c.put(&mut conn, 0, 0xa, &bytes).await;
    c.put(&mut conn, 0, 0xb, &bytes).await;
    // Block a: corrupt in its first page. Block b: in its last page, several windows in.
    flip_byte(
        &store::block_path(&c.dir(0), BlockId(0xa)),
        HEADER_BYTES + 10,
    );
    flip_byte(
        &store::block_path(&c.dir(0), BlockId(0xb)),
        HEADER_BYTES + u64::from(len) - 1,
    );
    let first = client::fetch_block(&mut conn, c.fetch_req(0, 0xa, 0, len)).await;
    assert_eq!(
        eggs_err(first),
        EggsError::BadBlockCrc,
        "reported before any data"
    );
    let check = |block: u64| CheckBlockReq {
        block_service_id: c.ids[0],
        block_id: BlockId(block),
        size: len,
        crc: crc32c::crc32c(&bytes),
    };
    assert_eq!(
        eggs_err(client::check_block(&mut conn, check(0xa)).await),
        EggsError::BadBlockCrc
    );
    assert_eq!(
        eggs_err(client::check_block(&mut conn, check(0xb)).await),
        EggsError::BadBlockCrc
    );
    let clean = client::fetch_block(&mut conn, c.fetch_req(0, 0xb, 4096, MIB as u32)).await;
    assert!(clean.expect("pages before the damage") == bytes[4096..4096 + MIB]);
    // Found after the response went out: the connection closes, the client reads short.
    let late = client::fetch_block(&mut conn, c.fetch_req(0, 0xb, 0, len)).await;
    match late {
        Err(BlockClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected a short read, got {:?}", other.map(|d| d.len())),
    }
    let mut conn = c.connect().await;
    let check_missing = client::check_block(&mut conn, check(0xc)).await;
    assert_eq!(eggs_err(check_missing), EggsError::BlockNotFound);
    c.stop().await;
}

#[tokio::test]
async fn restart_loses_no_acknowledged_block() {
    let c = Cluster::start("restart").await;
    let mut conn = c.connect().await;
    let blocks: Vec<(usize, u64, Vec<u8>)> = (0..8u64)
        .map(|i| {
            (
                (i % 2) as usize,
                0x1000 + i,
                data(300_000 + i as usize * 4099, i),
            )
        })
        .collect();
    for (svc, id, bytes) in &blocks {
        c.put(&mut conn, *svc, *id, bytes).await;
    }
    drop(conn);
    let c = c.restart_blocks().await;
    let mut conn = c.connect().await;
    for (svc, id, bytes) in &blocks {
        let got = client::fetch_block(&mut conn, c.fetch_req(*svc, *id, 0, bytes.len() as u32))
            .await
            .expect("fetch after restart");
        assert!(&got == bytes, "block {id:x}");
    }
    for svc in 0..2 {
        let req = BlockServiceStatsReq {
            block_service_id: c.ids[svc],
        };
        let stats = client::block_service_stats(&mut conn, req)
            .await
            .expect("stats");
        assert_eq!(stats.blocks, 4);
    }
    c.stop().await;
}

#[tokio::test]
async fn garbage_does_not_stop_service() {
    let c = Cluster::start("garbage").await;
    // Random bytes, a frame claiming 4 GiB, a body that does not decode, a write cut short.
    let mut raw = c.connect().await;
    raw.write_all(&data(10_000, 8)).await.expect("send garbage");
    let mut huge = b"BLO\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut raw2 = c.connect().await;
    raw2.write_all(&huge).await.expect("send huge");
    let mut raw3 = c.connect().await;
    let mut bad_body = b"BLO\x01".to_vec();
    bad_body.extend_from_slice(&4u32.to_le_bytes());
    bad_body.extend_from_slice(&99u32.to_le_bytes());
    raw3.write_all(&bad_body).await.expect("send bad body");
    let reply: Option<eggs_protocol::blocks::BlocksResponse> =
        eggs_common::frame::read_frame(&mut raw3)
            .await
            .expect("reply");
    let reply = reply.expect("a response");
    assert_eq!(reply.result, Err(EggsError::MalformedRequest));
    let mut cut = c.connect().await;
    let bytes = data(MIB, 9);
    let req = eggs_protocol::blocks::BlocksRequest {
        body: eggs_protocol::blocks::BlocksReq::WriteBlock(c.write_req(0, 99, &bytes)),
    };
    eggs_common::frame::write_frame(&mut cut, &req)
        .await
        .expect("send write");
    cut.write_all(&bytes[..MIB / 2])
        .await
        .expect("half the data");
    drop(cut);
    for s in [&mut raw, &mut raw2] {
        let mut buf = [0u8; 64];
        // The server closes these connections; reading tells us it has.
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    }
    let mut conn = c.connect().await;
    c.put(&mut conn, 0, 100, &data(5000, 10)).await;
    eventually("the cut-short write is cleaned up", || async {
        c.temp_files(0).is_empty()
    })
    .await;
    let missing = client::fetch_block(&mut conn, c.fetch_req(0, 99, 0, 1)).await;
    assert_eq!(eggs_err(missing), EggsError::BlockNotFound);
    c.stop().await;
}

#[tokio::test]
async fn flags_from_shuckle_are_honoured() {
    let c = Cluster::start("flags").await;
    let mut conn = c.connect().await;
    let bytes = data(20_000, 11);
    c.put(&mut conn, 0, 1, &bytes).await;
    eventually("registered", || async { c.services().await.len() == 2 }).await;
    c.set_flags(0, flags::READ_ONLY, flags::READ_ONLY).await;
    eventually("writes refused", || async {
        let mut conn = c.connect().await;
        let r = client::write_block(&mut conn, c.write_req(0, 2, &bytes), &bytes).await;
        r.err().and_then(|e| e.eggs()) == Some(EggsError::BlockServiceReadOnly)
    })
    .await;
    let erase = client::erase_block(&mut conn, c.erase_req(0, 1)).await;
    assert_eq!(eggs_err(erase), EggsError::BlockServiceReadOnly);
    let read = client::fetch_block(&mut conn, c.fetch_req(0, 1, 0, 20_000)).await;
    assert!(read.expect("reads still served") == bytes);
    // The other service is unaffected.
    c.put(&mut conn, 1, 2, &bytes).await;
    // NO_WRITE refuses new blocks but lets GC erase.
    c.set_flags(0, flags::NO_WRITE, flags::READ_ONLY | flags::NO_WRITE)
        .await;
    eventually("erasures allowed again", || async {
        let mut conn = c.connect().await;
        client::erase_block(&mut conn, c.erase_req(0, 1))
            .await
            .is_ok()
    })
    .await;
    let write = client::write_block(&mut conn, c.write_req(0, 3, &bytes), &bytes).await;
    assert_eq!(eggs_err(write), EggsError::BlockServiceReadOnly);
    c.set_flags(0, 0, flags::NO_WRITE).await;
    eventually("writes allowed again", || async {
        let mut conn = c.connect().await;
        client::write_block(&mut conn, c.write_req(0, 3, &bytes), &bytes)
            .await
            .is_ok()
    })
    .await;
    assert!(c.temp_files(0).is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once() {
    let c = std::sync::Arc::new(Cluster::start("many").await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        let c = c.clone();
        tasks.spawn(async move {
            let mut conn = c.connect().await;
            let bytes = data(64 * 1024 + i as usize, i);
            let svc = (i % 2) as usize;
            c.put(&mut conn, svc, 0x5000 + i, &bytes).await;
            let got = client::fetch_block(
                &mut conn,
                c.fetch_req(svc, 0x5000 + i, 0, bytes.len() as u32),
            )
            .await
            .expect("fetch");
            assert!(got == bytes);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let c = std::sync::Arc::into_inner(c).expect("sole owner");
    c.stop().await;
}

#[tokio::test]
async fn a_directory_cannot_be_served_twice() {
    let c = Cluster::start("twice").await;
    let again = Blocks::bind(config(c.root.path(), c.shuckle.addr)).await;
    assert!(
        matches!(again, Err(BlocksError::Locked(_))),
        "{:?}",
        again.err()
    );
    let mut same = config(c.root.path(), c.shuckle.addr);
    same.dirs = vec![
        (c.root.path().join("disk2"), StorageClass::Flash),
        (c.root.path().join("disk2"), StorageClass::Flash),
    ];
    assert!(matches!(
        Blocks::bind(same).await,
        Err(BlocksError::Locked(_))
    ));
    let mut hdd = config(c.root.path(), c.shuckle.addr);
    hdd.dirs = vec![(c.root.path().join("disk2"), StorageClass::Hdd)];
    assert!(matches!(
        Blocks::bind(hdd).await,
        Err(BlocksError::StorageClassMismatch { .. })
    ));
    c.stop().await;
}

/// A tmpfs of a few hundred KiB, unmounted on drop. Needs root (CI and dev machines run
/// tests as root); elsewhere the test that uses it says so and passes without checking.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(name: &str, size_bytes: usize) -> Option<SmallFs> {
        let dir = temp_dir(name);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success()).then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn disk_full_is_an_io_error_and_leaves_nothing() {
    let Some(fs) = SmallFs::mount("full", 512 * 1024) else {
        eprintln!("SKIPPED disk_full test: cannot mount a tmpfs (not root?)");
        return;
    };
    let shuckle_dir = tempfile::tempdir().expect("create temp dir");
    let shuckle = start_shuckle(shuckle_dir.path()).await;
    let mut cfg = config(fs.0.path(), shuckle.addr);
    cfg.dirs.truncate(1);
    let (blocks, ids) = start_blocks(cfg).await;
    let key = Identity::load(&fs.0.path().join("disk0"))
        .expect("identity")
        .key;
    let mut conn = TcpStream::connect(blocks.addr).await.expect("connect");
    let write = |block: u64, bytes: &[u8]| {
        let (crc, size) = (crc32c::crc32c(bytes), bytes.len() as u32);
        WriteBlockReq {
            block_service_id: ids[0],
            block_id: BlockId(block),
            crc,
            size,
            certificate: crypto::write_certificate(&key, ids[0], BlockId(block), crc, size),
        }
    };
    let big = data(MIB, 12);
    let full = client::write_block(&mut conn, write(1, &big), &big).await;
    assert_eq!(eggs_err(full), EggsError::BlockIoError);
    assert!(temp_files(&fs.0.path().join("disk0")).is_empty());
    let small = data(10_000, 13);
    client::write_block(&mut conn, write(2, &small), &small)
        .await
        .expect("a block that fits, on the same connection");
    drop(conn);
    blocks.stop().await;
    shuckle.stop().await;
}
