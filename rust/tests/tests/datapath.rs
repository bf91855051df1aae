//! End-to-end data path: files written to and read from real block services (`eggsblocks`
//! processes, each in its own failure domain) through a real shard, including reads with dead
//! services and corrupt blocks.
//!
//! The test directory uses RS(4,2) spans of at most 1 MiB with 64 KiB stripes (16 KiB cells)
//! and mirroring (1+2) up to 64 KiB, so that multi-span files stay small.

use eggs_client::Client;
use eggs_protocol::policy::{
    BlockPolicy, BlockPolicyEntry, DirectoryInfo, Parity, SpanPolicy, SpanPolicyEntry,
    StorageClass, StripePolicy,
};
use eggs_protocol::shard::{FileSpansReq, SpanBody};
use eggs_protocol::shuckle::{flags, BlockServicesReq};
use eggs_protocol::{BlockId, BlockServiceId, EggsError, InodeId, MAX_UDP_MTU};
use eggs_tests::start_cluster;
use rand::{RngCore, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SPAN: usize = 1 << 20;
const STRIPE: usize = 64 << 10;
const SERVICES: usize = 7;

fn test_policy() -> DirectoryInfo {
    DirectoryInfo {
        snapshot: None,
        span: Some(SpanPolicy {
            entries: vec![
                SpanPolicyEntry {
                    max_span_size: STRIPE as u32,
                    parity: Parity { data: 1, parity: 2 },
                },
                SpanPolicyEntry {
                    max_span_size: SPAN as u32,
                    parity: Parity { data: 4, parity: 2 },
                },
            ],
        }),
        block: Some(BlockPolicy {
            entries: vec![BlockPolicyEntry {
                min_size: 0,
                storage_class: StorageClass::Flash,
            }],
        }),
        stripe: Some(StripePolicy {
            target_stripe_size: STRIPE as u32,
        }),
    }
}

/// `eggsblocks` processes, one block service and failure domain each; killed when dropped.
struct BlockProcs {
    bin: PathBuf,
    shuckle: std::net::SocketAddr,
    root: PathBuf,
    /// Storage classes of each process's services (one directory each).
    classes: &'static [&'static str],
    procs: Vec<Option<Child>>,
}

impl BlockProcs {
    /// The directory of process `i`'s first service.
    fn dir(&self, i: usize) -> PathBuf {
        self.class_dir(i, self.classes[0])
    }

    fn class_dir(&self, i: usize, class: &str) -> PathBuf {
        self.root.join(format!("blocks-{i}-{class}"))
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.root.join("logs").join(format!("blocks-{i}.log")))
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--shuckle")
            .arg(self.shuckle.to_string())
            .args(self.classes.iter().flat_map(|class| {
                let dir = format!("{}:{class}", self.class_dir(i, class).display());
                ["--dir".to_string(), dir]
            }))
            .arg("--failure-domain")
            .arg(format!("fd{i}"))
            .arg("--register-interval-ms")
            .arg("200")
            .env("EGGS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the child die with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.procs[i] = Some(cmd.spawn().expect("eggsblocks starts"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BlockProcs {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// Maps block-service ids to the index of the process serving them, once all registered.
async fn wait_services(c: &Client, procs: &BlockProcs, n: usize) -> HashMap<BlockServiceId, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let services = c.shuckle().request(BlockServicesReq {}).await.unwrap();
        let by_path: HashMap<BlockServiceId, usize> = services
            .services
            .iter()
            .filter(|s| s.flags & flags::STALE == 0)
            .filter_map(|s| {
                let i = (0..n).find(|&i| {
                    let path = Path::new(&s.path);
                    procs.classes.iter().any(|c| path == procs.class_dir(i, c))
                })?;
                Some((s.id, i))
            })
            .collect();
        if by_path.len() == n * procs.classes.len() {
            return by_path;
        }
        assert!(Instant::now() < deadline, "block services did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes until the shard has learnt of enough block services (it asks shuckle periodically).
async fn wait_writable(c: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.write_file(path, &[7u8; 5000][..]).await {
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
    let mut out = Vec::new();
    let mut offset = Some(0);
    while let Some(o) = offset {
        let r = c
            .shard_request(
                file.shard(),
                FileSpansReq {
                    file_id: file,
                    byte_offset: o,
                    mtu: MAX_UDP_MTU,
                },
            )
            .await
            .unwrap();
        for s in r.spans {
            if let SpanBody::Blocks(b) = s.body {
                let blocks = b.blocks.iter().map(|b| (b.block_service_id, b.block_id));
                out.push((b.parity, blocks.collect()));
            }
        }
        offset = r.next_offset;
    }
    out
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

/// Flips a byte in the middle of a block's data on disk (block files are a 32-byte header,
/// the data, then page CRCs; see `rust/blocks/src/store.rs`).
fn corrupt_block(dir: &Path, block: BlockId) {
    let path = dir
        .join(format!("{:02x}", block.0 & 0xff))
        .join(format!("{:016x}", block.0));
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = 32 + 5000;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_block_services_and_survive_losses() {
    let bin = eggs_run::default_bin_dir().join("eggsblocks");
    if !bin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build --bins)",
            bin.display()
        );
        return;
    }
    let (cluster, c) = start_cluster("datapath", 1).await;
    let mut procs = BlockProcs {
        bin,
        shuckle: cluster.shuckle_addr(),
        root: cluster.dir().to_path_buf(),
        classes: &["flash"],
        procs: (0..SERVICES).map(|_| None).collect(),
    };
    for i in 0..SERVICES {
        procs.start(i);
    }
    let services = wait_services(&c, &procs, SERVICES).await;
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
        let id = c
            .write_file_with_progress(
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
    let id = c.write_file("/t/tiny/f", &data[..]).await.unwrap();
    assert_eq!(block_map(&c, id).await.len(), 6);
    assert!(c.read_file(id).await.unwrap() == data);
    assert!(c.read_range(id, 999, 1002).await.unwrap() == data[999..2001]);

    // A dead service: writes go around it (the shard may still pick it, until it is stale).
    procs.kill(0);
    let mut dead: HashSet<BlockServiceId> = services
        .iter()
        .filter(|(_, &i)| i == 0)
        .map(|(&id, _)| id)
        .collect();
    for k in 0..3 {
        let data = random_bytes(SPAN + 1, 100 + k);
        let id = c
            .write_file(&format!("/t/after-kill-{k}"), &data[..])
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
    corrupt_block(&procs.dir(services[&corrupt.0]), corrupt.1);
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
        dead.insert(svc);
        procs.kill(services[&svc]);
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
    drop(procs);
    eggs_tests::finish(cluster).await;
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
/// and a hard-disk service each, with a file
/// of one full span plus one byte, and its throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_large_file() {
    let bin = eggs_run::default_bin_dir().join("eggsblocks");
    if !bin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build --bins)",
            bin.display()
        );
        return;
    }
    const N: usize = 14;
    let (cluster, c) = start_cluster("datapath-large", 1).await;
    let mut procs = BlockProcs {
        bin,
        shuckle: cluster.shuckle_addr(),
        root: cluster.dir().to_path_buf(),
        // Small blocks go to flash, large ones to disks (the root's block policy).
        classes: &["flash", "hdd"],
        procs: (0..N).map(|_| None).collect(),
    };
    for i in 0..N {
        procs.start(i);
    }
    wait_services(&c, &procs, N).await;
    wait_writable(&c, "/first").await;
    let size = (100 << 20) + 1;
    let data = random_bytes(size, 42);
    let t = Instant::now();
    let id = c.write_file("/large", &data[..]).await.unwrap();
    let write = t.elapsed();
    let t = Instant::now();
    let mut back = Vec::with_capacity(size);
    c.read_file_to(id, &mut back).await.unwrap();
    let read = t.elapsed();
    assert!(back == data);
    let map = block_map(&c, id).await;
    assert_eq!(map.len(), 2);
    assert_eq!(
        map[0].0,
        Parity {
            data: 10,
            parity: 4
        }
    );
    assert_eq!(map[1].0, Parity { data: 1, parity: 2 });
    let mib = size as f64 / (1 << 20) as f64;
    eprintln!(
        "100 MiB + 1: write {:.0} MiB/s, read {:.0} MiB/s",
        mib / write.as_secs_f64(),
        mib / read.as_secs_f64()
    );
    drop(procs);
    eggs_tests::finish(cluster).await;
}
