//! End-to-end data path: files written to and read from real block services (`eggsblocks`
//! processes started by eggs-run, one per failure domain) through a real shard, including
//! reads with dead services and corrupt blocks.
//!
//! The test directory uses RS(4,2) spans of at most 1 MiB with 64 KiB stripes (16 KiB cells)
//! and mirroring (1+2) up to 64 KiB, so that multi-span files stay small.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::{Client, FileWriter};
use eggs_protocol::policy::{DirectoryInfo, Parity};
use eggs_protocol::{BlockId, BlockServiceId, EggsError, InodeId};
use eggs_run::BlockServicesLayout;
use eggs_tests::{start_cluster_with_blocks, HashSink, PrngReader};
use rand::{RngCore, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SPAN: usize = 1 << 20;
const STRIPE: usize = 64 << 10;
const SERVICES: usize = 7;

fn test_policy() -> DirectoryInfo {
    eggs_tests::rs_4_2_policy(SPAN as u32, STRIPE as u32)
}

/// The block services eggs-run started: where each stores its blocks and which process
/// (`blocks-<failure domain>`) serves it.
struct Services {
    by_id: HashMap<BlockServiceId, (PathBuf, String)>,
}

impl Services {
    async fn load(c: &Client) -> Services {
        let by_id = eggs_tests::block_service_processes(c).await.unwrap();
        assert!(by_id.values().all(|(_, p)| p.starts_with("blocks-")));
        Services { by_id }
    }

    fn process(&self, id: BlockServiceId) -> &str {
        &self.by_id[&id].1
    }

    fn dir(&self, id: BlockServiceId) -> &Path {
        &self.by_id[&id].0
    }

    /// Every service the named process serves.
    fn of_process(&self, name: &str) -> HashSet<BlockServiceId> {
        self.by_id
            .iter()
            .filter(|(_, (_, p))| p == name)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Writes until the shard has learnt of enough block services (it asks shuckle periodically).
async fn wait_writable(c: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match FileWriter::write_path(c, path, &[7u8; 5000][..]).await {
            Ok(_) => return,
            Err(e) if e.eggs() == Some(EggsError::NotEnoughBlockServices) => {
                assert!(
                    Instant::now() < deadline,
                    "shard never saw the block services"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("first write: {e}"),
        }
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Where each span's blocks are: `(service, block)` per span, in block order.
async fn block_map(c: &Client, file: InodeId) -> Vec<(Parity, Vec<(BlockServiceId, BlockId)>)> {
    eggs_tests::span_blocks(c, file).await.unwrap()
}

struct Written {
    name: String,
    id: InodeId,
    data: Vec<u8>,
}

/// Reads every file back: those with no span missing more than P blocks must come back
/// exactly; the others must fail with an error saying blocks are missing, never wrong data.
async fn check_files(
    c: &Client,
    files: &[Written],
    lost: &HashSet<(BlockServiceId, BlockId)>,
    dead: &HashSet<BlockServiceId>,
) -> (usize, usize) {
    let (mut good, mut failed) = (0, 0);
    for f in files {
        let map = block_map(c, f.id).await;
        let readable = map.iter().all(|(parity, blocks)| {
            let gone = blocks
                .iter()
                .filter(|b| dead.contains(&b.0) || lost.contains(b))
                .count();
            gone <= parity.parity as usize
        });
        match c.read_file(f.id).await {
            Ok(back) => {
                assert!(
                    readable,
                    "{}: read although more than P blocks are gone",
                    f.name
                );
                assert!(back == f.data, "{}: wrong data", f.name);
                good += 1;
            }
            Err(e) => {
                assert!(!readable, "{}: {e}", f.name);
                assert!(
                    e.to_string().contains("blocks readable"),
                    "{}: unclear error {e}",
                    f.name
                );
                failed += 1;
            }
        }
    }
    (good, failed)
}

/// Flips a byte in the middle of a block's data on disk (where the block store puts it).
fn corrupt_block(dir: &Path, block: BlockId) {
    let path = eggs_blocks::store::block_path(dir, block);
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = eggs_blocks::store::HEADER_BYTES as usize + 5000;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_block_services_and_survive_losses() {
    if !blocks_built() {
        return;
    }
    let layout = BlockServicesLayout {
        failure_domains: SERVICES,
        flash: SERVICES,
        hdd: 0,
    };
    let (mut cluster, c) = start_cluster_with_blocks("datapath", 1, layout).await;
    let services = Services::load(&c).await;
    assert_eq!(services.by_id.len(), SERVICES);
    let dir = c.mkdir("/t").await.unwrap();
    c.set_directory_info(dir, test_policy()).await.unwrap();
    wait_writable(&c, "/t/first").await;

    // Round trips at the edges of pages, stripes and spans.
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        STRIPE - 1,
        STRIPE,
        STRIPE + 1,
        2 * STRIPE,
        2 * STRIPE + 1,
        SPAN - 1,
        SPAN,
        SPAN + 1,
        3 * SPAN + 12345,
    ];
    let mut files = Vec::new();
    for (k, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, k as u64);
        let name = format!("f{size}");
        let mut reported = 0;
        let owner = c.resolve("/t").await.unwrap();
        let id = FileWriter::write_in_with_progress(
            &c,
            owner,
            &eggs_protocol::Name::new(name.as_str()).unwrap(),
            &data[..],
            &mut |n| reported = n,
        )
        .await
        .unwrap_or_else(|e| panic!("writing {size} bytes: {e}"));
        assert_eq!(reported, size as u64);
        let back = c.read_file(id).await.unwrap();
        assert!(back == data, "{size} bytes read back differ");
        let mut streamed = Vec::new();
        assert_eq!(
            c.read_file_to(id, &mut streamed).await.unwrap(),
            size as u64
        );
        assert!(streamed == data);
        files.push(Written { name, id, data });
    }
    check_ranges(&c, files.last().unwrap()).await;

    // Spans smaller than what is read to rule out an inline file.
    let tiny = c.mkdir("/t/tiny").await.unwrap();
    let mut policy = test_policy();
    policy.span.as_mut().unwrap().entries.truncate(1);
    policy.span.as_mut().unwrap().entries[0].max_span_size = 1000;
    c.set_directory_info(tiny, policy).await.unwrap();
    let data = random_bytes(5500, 77);
    let id = FileWriter::write_path(&c, "/t/tiny/f", &data[..])
        .await
        .unwrap();
    assert_eq!(block_map(&c, id).await.len(), 6);
    assert!(c.read_file(id).await.unwrap() == data);
    assert!(c.read_range(id, 999, 1002).await.unwrap() == data[999..2001]);

    // A dead service: writes go around it (the shard may still pick it, until it is stale).
    let mut killed = vec!["blocks-0".to_string()];
    cluster.kill("blocks-0", eggs_run::Signal::SIGKILL).unwrap();
    let mut dead = services.of_process("blocks-0");
    for k in 0..3 {
        let data = random_bytes(SPAN + 1, 100 + k);
        let id = FileWriter::write_path(&c, &format!("/t/after-kill-{k}"), &data[..])
            .await
            .unwrap_or_else(|e| panic!("writing with a dead service: {e}"));
        for (_, blocks) in block_map(&c, id).await {
            assert!(blocks.iter().all(|b| !dead.contains(&b.0)));
        }
        files.push(Written {
            name: format!("after-kill-{k}"),
            id,
            data,
        });
    }
    let (good, failed) = check_files(&c, &files, &HashSet::new(), &dead).await;
    assert_eq!((good, failed), (files.len(), 0));

    // A corrupt block on disk: read through parity.
    let target = files
        .iter()
        .position(|f| f.data.len() == 3 * SPAN + 12345)
        .unwrap();
    let map = block_map(&c, files[target].id).await;
    let (_, first_span) = &map[0];
    let corrupt = first_span
        .iter()
        .copied()
        .find(|b| !dead.contains(&b.0))
        .unwrap();
    corrupt_block(services.dir(corrupt.0), corrupt.1);
    let lost: HashSet<_> = [corrupt].into_iter().collect();
    let (good, failed) = check_files(&c, &files, &lost, &dead).await;
    assert_eq!((good, failed), (files.len(), 0));

    // Kill services holding blocks of that span, one by one, until it has lost more than P:
    // every file stays readable exactly while none of its spans has lost more than P blocks.
    let holders: Vec<BlockServiceId> = first_span
        .iter()
        .filter(|b| **b != corrupt && !dead.contains(&b.0))
        .map(|b| b.0)
        .collect();
    for svc in holders {
        let proc = services.process(svc).to_string();
        cluster.kill(&proc, eggs_run::Signal::SIGKILL).unwrap();
        dead.extend(services.of_process(&proc));
        killed.push(proc);
        check_files(&c, &files, &lost, &dead).await;
        let gone = first_span
            .iter()
            .filter(|b| dead.contains(&b.0) || lost.contains(b))
            .count();
        if gone > 2 {
            let e = c.read_file(files[target].id).await.unwrap_err();
            assert!(e.to_string().contains("only 3 of 6 blocks readable"), "{e}");
            break;
        }
    }
    eggs_tests::finish_after_kills(cluster, &killed).await;
}

/// Ranged reads (what FUSE will use) against the whole file.
async fn check_ranges(c: &Client, f: &Written) {
    let len = f.data.len();
    let ranges = [
        (0, 1),
        (0, len),
        (4095, 2),
        (STRIPE as u64 - 10, 20),
        (SPAN as u64 - 1, 2),
        (SPAN as u64 + 5, 3 * STRIPE + 7),
        (len as u64 - 3, 10),
        (len as u64, 5),
        (len as u64 + 100, 5),
    ];
    for (offset, n) in ranges {
        let got = c.read_range(f.id, offset, n).await.unwrap();
        let from = (offset as usize).min(len);
        let to = (offset as usize + n).min(len);
        assert!(got == f.data[from..to], "range {offset}+{n}");
    }
}

/// The root's default policies (RS(10,4) spans of 100 MiB) on 14 failure domains with a flash
/// and a hard-disk service each, with a 1 GiB file streamed from a seeded generator and read
/// back into a hashing sink, so that neither side holds the file in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_1gib_round_trip() {
    if !blocks_built() {
        return;
    }
    const SIZE: u64 = 1 << 30;
    let (cluster, c) =
        start_cluster_with_blocks("datapath-1gib", 1, BlockServicesLayout::RS_10_4).await;
    wait_writable(&c, "/first").await;
    let mut reader = PrngReader::new(42, SIZE);
    let name = eggs_protocol::Name::new("large").unwrap();
    let mut reported = 0;
    let t = Instant::now();
    let id = FileWriter::write_in_with_progress(&c, InodeId::ROOT, &name, &mut reader, &mut |n| {
        reported = n
    })
    .await
    .unwrap();
    let write = t.elapsed();
    assert_eq!(reported, SIZE);
    let t = Instant::now();
    let mut sink = HashSink::default();
    assert_eq!(c.read_file_to(id, &mut sink).await.unwrap(), SIZE);
    let read = t.elapsed();
    assert_eq!(sink.len, SIZE);
    assert_eq!(sink.crc, reader.crc(), "1 GiB read back differs");
    // 10 spans of 100 MiB and one of 24 MiB, all RS(10,4) over 14 services.
    let map = block_map(&c, id).await;
    assert_eq!(map.len(), 11);
    let rs_10_4 = Parity {
        data: 10,
        parity: 4,
    };
    assert!(map.iter().all(|(p, b)| *p == rs_10_4 && b.len() == 14));
    let mib = SIZE as f64 / (1 << 20) as f64;
    eprintln!(
        "1 GiB: write {:.0} MiB/s ({:.1} s), read {:.0} MiB/s ({:.1} s)",
        mib / write.as_secs_f64(),
        write.as_secs_f64(),
        mib / read.as_secs_f64(),
        read.as_secs_f64()
    );
    eggs_tests::finish(cluster).await;
}

/// Whether `eggsblocks` is built next to the test binaries (eggs-run starts it from there).
fn blocks_built() -> bool {
    let bin = eggs_run::default_bin_dir().join("eggsblocks");
    if !bin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build --bins)",
            bin.display()
        );
    }
    bin.is_file()
}
