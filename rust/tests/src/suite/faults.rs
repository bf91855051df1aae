//! Fault injection: killed processes, partitioned and frozen block services, junk on every
//! port.

use super::namespace::{join_workers, run_workers, shared_dirs, worker_configs};
use super::{ensure, Context, Env, TestError, TestResult};
use crate::netns::Blackhole;
use crate::{
    block_service_processes, prng_crc, rs_4_2_policy, span_blocks, wait_writable, FastRng,
    HashSink, PrngReader,
};
use eggs_client::FileWriter;
use eggs_protocol::codec::{encode, RequestBody};
use eggs_protocol::shuckle::{BlockServicesReq, CdcReq as ShuckleCdcReq, ShardsReq};
use eggs_protocol::{
    blocks, cdc, shard, shuckle, BlockId, BlockServiceId, EggsTime, InodeId, Message, Name,
    RequestHeader, ShardId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Which processes `kill-load` may kill, by name prefix in eggs-run's cluster. A kind the
/// cluster does not run (say, no GC yet) is simply never picked.
const KILLABLE: &[&str] = &["shard-", "cdc", "blocks-", "gc"];

/// Clients write block-backed and inline files and rename, link and remove names while
/// random shard, CDC, block-service (and GC) processes are killed with SIGKILL and restarted;
/// then every acknowledged file must read back bit-exact and the namespace match the model.
pub(super) async fn kill_load(env: &mut Env) -> TestResult {
    let shared = shared_dirs(env, 3).await?;
    for d in &shared {
        env.client
            .set_directory_info(*d, rs_4_2_policy(256 << 10, 64 << 10))
            .await
            .ctx("setting the policy")?;
    }
    let probe = Name::new("probe").expect("valid");
    wait_writable(
        &env.client,
        shared[0],
        &probe,
        700_000,
        Duration::from_secs(30),
    )
    .await
    .ctx("first block-backed write")?;
    // The probe stays: workers only look at their own names (`w<k>-`).
    let stop = Arc::new(AtomicBool::new(false));
    let set = run_workers(
        env,
        &shared,
        worker_configs(env, 3, true, 700_000),
        stop.clone(),
    );
    let victims: Vec<String> = env
        .cluster()?
        .names()
        .into_iter()
        .filter(|n| KILLABLE.iter().any(|k| n.starts_with(k)))
        .collect();
    let mut rng = FastRng::new(env.seed ^ EggsTime::now().0);
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let until = Instant::now() + env.secs(15.0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 500)).await;
        // A kind first, then one of its processes, so that the one CDC is killed as often
        // as any of the seven block-service processes.
        let kinds: Vec<&str> = KILLABLE
            .iter()
            .copied()
            .filter(|k| victims.iter().any(|v| v.starts_with(k)))
            .collect();
        let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
        let of_kind: Vec<&String> = victims.iter().filter(|v| v.starts_with(kind)).collect();
        let v = of_kind[(rng.next_u64() % of_kind.len() as u64) as usize].clone();
        let cluster = env.cluster()?;
        cluster.kill(&v, eggs_run::Signal::SIGKILL)?;
        tokio::time::sleep(Duration::from_millis(100 + rng.next_u64() % 200)).await;
        cluster.restart(&v).await?;
        *kills
            .entry(kind.trim_end_matches('-').to_string())
            .or_default() += 1;
        env.killed.push(v);
    }
    env.cluster()?
        .wait_registered(Duration::from_secs(60))
        .await?;
    stop.store(true, Ordering::Relaxed);
    let stats = join_workers(set).await?;
    ensure!(stats.ok > 20, "the load did not run: {stats}");
    Ok(format!("kills {kills:?}; 3 workers: {stats}"))
}

/// Sends SIGCONT to the frozen processes however the test ends.
struct Thaw(Vec<u32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        // The pids are the cluster's children.
        for pid in &self.0 {
            let _ = eggs_run::send_signal(*pid, eggs_run::Signal::SIGCONT);
        }
    }
}

/// A block-service process the partition test cuts off.
struct Victim {
    /// Its name in the cluster (`blocks-<fd>`).
    process: String,
    services: Vec<BlockServiceId>,
    /// Where it listens (one TCP port for all its services).
    addr: SocketAddr,
}

/// Cuts off as many block-service processes as the files' policy has parity blocks (those
/// holding the first data blocks of the first file's first span), twice: first at the network
/// level (everything their port sends is dropped, in the suite's private network namespace:
/// new connections time out without a reset, established ones go silent, the processes run
/// on), then one frozen (SIGSTOP: the kernel still accepts connections, nothing answers) and
/// the others again partitioned. Readers must keep reading every file bit-exact through
/// parity meanwhile, and after each heal. Without a private namespace (not root,
/// `--no-netns`) only the freeze runs, of all of them.
pub(super) async fn partition(env: &mut Env) -> TestResult {
    let c = env.client.clone();
    let files = partition_files(env).await?;
    let (victims, outsider) = partition_victims(&c, &files).await?;
    let names: Vec<&str> = victims.iter().map(|v| v.process.as_str()).collect();
    let mut phases = Vec::new();
    match crate::netns::private() {
        Ok(()) => phases.push(cut_network(env, &files, &victims, outsider).await?),
        Err(why) => phases.push(format!("network partition NOT tested: {why}")),
    }
    phases.push(freeze(env, &files, &victims).await?);
    let ids: Vec<BlockServiceId> = victims.iter().flat_map(|v| v.services.clone()).collect();
    let touched = count_touching(&c, &files, &ids).await?;
    ensure!(touched >= 1, "no file had a block on a cut-off service");
    Ok(format!(
        "{names:?} cut off ({touched} of {} files have blocks there); {}",
        files.len(),
        phases.join("; ")
    ))
}

/// Writes the files the partition test reads: RS(4,2) spans of up to 1 MiB.
async fn partition_files(env: &Env) -> Result<Vec<(InodeId, u64, u64)>, TestError> {
    let c = &env.client;
    let dir = env.subdir("p").await?;
    c.set_directory_info(dir, rs_4_2_policy(1 << 20, 64 << 10))
        .await
        .ctx("setting the policy")?;
    wait_writable(
        c,
        dir,
        &Name::new("probe").expect("valid"),
        1 << 20,
        Duration::from_secs(30),
    )
    .await
    .ctx("first block-backed write")?;
    let mut files = Vec::new();
    for k in 0..env.count(6) as u64 {
        let seed = env.seed.wrapping_add(k);
        let size = 200_000 + (seed % 800_000);
        let n = Name::new(format!("f{k}")).expect("valid");
        let id = FileWriter::write_in(c, dir, &n, PrngReader::new(seed, size))
            .await
            .ctx("writing")?;
        files.push((id, seed, size));
    }
    Ok(files)
}

/// The processes holding the first `P` data blocks of the first file's first span (`P` its
/// parity count), and the address of a block service outside them.
async fn partition_victims(
    c: &eggs_client::Client,
    files: &[(InodeId, u64, u64)],
) -> Result<(Vec<Victim>, SocketAddr), TestError> {
    let procs = block_service_processes(c).await.ctx("block services")?;
    let infos = c
        .shuckle()
        .request(BlockServicesReq {})
        .await
        .ctx("block services")?;
    let first = files.first().ok_or_else(|| fail("no files"))?;
    let spans = span_blocks(c, first.0).await.ctx("spans")?;
    let (parity, blocks) = spans.first().ok_or_else(|| fail("no block span"))?;
    ensure!(parity.parity == 2, "expected RS(4,2), got {parity:?}");
    let names: BTreeSet<String> = blocks
        .iter()
        .take(parity.parity as usize)
        .filter_map(|(s, _)| procs.get(s).map(|(_, p)| p.clone()))
        .collect();
    ensure!(
        names.len() == parity.parity as usize,
        "data blocks share a process: {names:?}"
    );
    let mut victims = Vec::new();
    for process in names {
        let services: Vec<BlockServiceId> = procs
            .iter()
            .filter(|(_, (_, p))| *p == process)
            .map(|(id, _)| *id)
            .collect();
        let addr = infos
            .services
            .iter()
            .find(|s| services.contains(&s.id))
            .map(|s| s.addr.to_socket_addr())
            .ok_or_else(|| fail(&format!("no address for {process}")))?;
        victims.push(Victim {
            process,
            services,
            addr,
        });
    }
    let outsider = infos
        .services
        .iter()
        .map(|s| s.addr.to_socket_addr())
        .find(|a| victims.iter().all(|v| v.addr != *a))
        .ok_or_else(|| fail("every block service is a victim"))?;
    Ok((victims, outsider))
}

/// Whether a TCP connection to `addr` is established within `timeout`.
async fn connects(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The network phase: the victims' ports blackholed while readers read, then healed.
async fn cut_network(
    env: &Env,
    files: &[(InodeId, u64, u64)],
    victims: &[Victim],
    outsider: SocketAddr,
) -> TestResult {
    let c = &env.client;
    let ports: Vec<u16> = victims.iter().map(|v| v.addr.port()).collect();
    let hole = Blackhole::new(&ports)
        .await
        .map_err(|e| fail(&format!("partitioning: {e}")))?;
    // The partition holds (a handshake never completes) while the rest of the network works.
    for v in victims {
        ensure!(
            !connects(v.addr, Duration::from_secs(1)).await,
            "{} at {} still accepts connections behind the partition",
            v.process,
            v.addr
        );
    }
    ensure!(
        connects(outsider, Duration::from_secs(5)).await,
        "block service at {outsider}, outside the partition, does not accept connections"
    );
    let during = read_all(c, files, env.secs(2.0)).await?;
    // Their heartbeats to shuckle leave from ephemeral ports, which the partition lets through.
    let listed = block_service_processes(c).await.ctx("block services")?;
    let fresh = victims
        .iter()
        .filter(|v| v.services.iter().all(|s| listed.contains_key(s)))
        .count();
    hole.heal()
        .await
        .map_err(|e| fail(&format!("healing the partition: {e}")))?;
    for v in victims {
        ensure!(
            connects(v.addr, Duration::from_secs(5)).await,
            "{} at {} accepts no connections after the partition healed",
            v.process,
            v.addr
        );
    }
    let after = read_all(c, files, Duration::ZERO).await?;
    Ok(format!(
        "ports {ports:?} blackholed: {during}, shuckle still listed {fresh} of {} as fresh \
         (heartbeats use other ports); {} reads after healing",
        victims.len(),
        after.reads
    ))
}

/// The freeze phase: victims stopped (SIGSTOP) while readers read, then thawed. In the
/// private namespace only the first is frozen and the others are blackholed at the same time
/// (both kinds of failure at once, with fresh connections: the network phase had established
/// ones go silent), so no read waits for two stall timeouts in a row; without it, all are
/// frozen.
async fn freeze(env: &mut Env, files: &[(InodeId, u64, u64)], victims: &[Victim]) -> TestResult {
    let (frozen, cut) = match crate::netns::private() {
        Ok(()) => victims.split_at(1),
        Err(_) => (victims, &[][..]),
    };
    let pids: Vec<u32> = env
        .cluster()?
        .processes()
        .into_iter()
        .filter(|(n, _)| frozen.iter().any(|v| v.process == *n))
        .map(|(_, pid)| pid)
        .collect();
    ensure!(
        pids.len() == frozen.len(),
        "{} of {} processes to freeze are running",
        pids.len(),
        frozen.len()
    );
    let c = &env.client;
    c.block_pool().clear();
    let ports: Vec<u16> = cut.iter().map(|v| v.addr.port()).collect();
    let hole = match ports.is_empty() {
        true => None,
        false => Some(
            Blackhole::new(&ports)
                .await
                .map_err(|e| fail(&format!("partitioning: {e}")))?,
        ),
    };
    let thaw = Thaw(pids.clone());
    for pid in &pids {
        let _ = eggs_run::send_signal(*pid, eggs_run::Signal::SIGSTOP);
    }
    let during = read_all(c, files, env.secs(2.0)).await?;
    drop(thaw);
    if let Some(h) = hole {
        h.heal()
            .await
            .map_err(|e| fail(&format!("healing the partition: {e}")))?;
    }
    let after = read_all(c, files, Duration::ZERO).await?;
    let names = |vs: &[Victim]| vs.iter().map(|v| v.process.clone()).collect::<Vec<_>>();
    let also = match cut.is_empty() {
        true => String::new(),
        false => format!(" and {:?} blackholed", names(cut)),
    };
    Ok(format!(
        "{:?} frozen{also}: {during}; {} reads after the thaw",
        names(frozen),
        after.reads
    ))
}

fn fail(msg: &str) -> TestError {
    TestError::Failed(msg.to_string())
}

/// How a round of reads went.
struct Reads {
    reads: usize,
    elapsed: Duration,
    /// The longest single read (one that meets a cut-off service waits for a client timeout
    /// before it turns to parity).
    slowest: Duration,
}

impl std::fmt::Display for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reads in {:.1} s (slowest {:.1} s)",
            self.reads,
            self.elapsed.as_secs_f64(),
            self.slowest.as_secs_f64()
        )
    }
}

/// One reader per file reads it (at least once, and until `duration` has passed), checking
/// its contents. (A read that meets a cut-off service waits for the client's connect or stall
/// timeout before it turns to parity, so readers run in parallel.)
async fn read_all(
    c: &Arc<eggs_client::Client>,
    files: &[(InodeId, u64, u64)],
    duration: Duration,
) -> Result<Reads, TestError> {
    let start = Instant::now();
    let until = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for &(id, seed, size) in files {
        let c = c.clone();
        set.spawn(async move {
            let want = tokio::task::spawn_blocking(move || prng_crc(seed, size))
                .await
                .map_err(|e| fail(&e.to_string()))?;
            let (mut n, mut slowest) = (0, Duration::ZERO);
            loop {
                let mut sink = HashSink::default();
                let t = Instant::now();
                c.read_file_to(id, &mut sink)
                    .await
                    .ctx(format!("reading {id}"))?;
                slowest = slowest.max(t.elapsed());
                ensure!(
                    sink.len == size && sink.crc == want,
                    "file {id} read back wrong ({} bytes)",
                    sink.len
                );
                n += 1;
                if Instant::now() >= until {
                    return Ok::<_, TestError>((n, slowest));
                }
            }
        });
    }
    let (mut reads, mut slowest) = (0, Duration::ZERO);
    while let Some(r) = set.join_next().await {
        let (n, s) = r.map_err(|e| fail(&e.to_string()))??;
        reads += n;
        slowest = slowest.max(s);
    }
    Ok(Reads {
        reads,
        elapsed: start.elapsed(),
        slowest,
    })
}

async fn count_touching(
    c: &eggs_client::Client,
    files: &[(InodeId, u64, u64)],
    services: &[BlockServiceId],
) -> Result<usize, TestError> {
    let mut n = 0;
    for (id, _, _) in files {
        let spans = span_blocks(c, *id).await.ctx("spans")?;
        if spans
            .iter()
            .any(|(_, b)| b.iter().any(|(s, _)| services.contains(s)))
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Every port of the cluster: shard and CDC UDP ports, shuckle and block-service TCP ports.
struct Ports {
    udp: Vec<(SocketAddr, &'static str)>,
    tcp: Vec<(SocketAddr, &'static str)>,
}

async fn ports(c: &eggs_client::Client, shuckle: SocketAddr) -> Result<Ports, TestError> {
    let shards = c.shuckle().request(ShardsReq {}).await.ctx("shards")?;
    let cdc = c.shuckle().request(ShuckleCdcReq {}).await.ctx("cdc")?;
    let services = c
        .shuckle()
        .request(BlockServicesReq {})
        .await
        .ctx("block services")?;
    let mut udp: Vec<(SocketAddr, &str)> = shards
        .shards
        .iter()
        .filter(|s| s.addr.port != 0)
        .map(|s| (s.addr.to_socket_addr(), "shard"))
        .collect();
    udp.sort();
    udp.dedup();
    udp.push((cdc.addr.to_socket_addr(), "cdc"));
    let mut tcp: Vec<(SocketAddr, &str)> = services
        .services
        .iter()
        .map(|s| (s.addr.to_socket_addr(), "blocks"))
        .collect();
    tcp.sort();
    tcp.dedup();
    tcp.push((shuckle, "shuckle"));
    Ok(Ports { udp, tcp })
}

/// Valid requests of each protocol, to truncate and mutate.
fn samples(dir: InodeId) -> Vec<(&'static str, Vec<u8>)> {
    let header = RequestHeader {
        request_id: 0x0102_0304_0506_0708,
        client_id: 0x1112_1314_1516_1718,
    };
    let name = Name::new("garbage-target").expect("valid");
    let shard = |body: shard::ShardReq| {
        encode(&shard::ShardRequest {
            header,
            shard: ShardId(dir.shard().0),
            body,
        })
    };
    vec![
        (
            "shard",
            shard(
                shard::LookupReq {
                    dir_id: dir,
                    name: name.clone(),
                }
                .into_req(),
            ),
        ),
        (
            "shard",
            shard(
                shard::ReadDirReq {
                    dir_id: dir,
                    start: None,
                    mtu: 1400,
                }
                .into_req(),
            ),
        ),
        (
            "cdc",
            encode(&cdc::CdcRequest {
                header,
                body: cdc::MakeDirectoryReq {
                    owner_id: dir,
                    name,
                    info: Default::default(),
                    attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
                }
                .into_req(),
            }),
        ),
        (
            "shuckle",
            frame(&shuckle::ShuckleRequest {
                body: ShardsReq {}.into_req(),
            }),
        ),
        (
            "blocks",
            frame(&blocks::BlocksRequest {
                body: blocks::FetchBlockReq {
                    block_service_id: BlockServiceId(1),
                    block_id: BlockId(1),
                    offset: 0,
                    count: 4096,
                }
                .into_req(),
            }),
        ),
    ]
}

/// A TCP frame: magic, little-endian body length, body.
fn frame<M: Message>(m: &M) -> Vec<u8> {
    let e = encode(m);
    let mut out = e[..4].to_vec();
    out.extend_from_slice(&((e.len() - 4) as u32).to_le_bytes());
    out.extend_from_slice(&e[4..]);
    out
}

/// Junk for one protocol: every truncation of a valid request, single-byte mutations of it,
/// random bytes with and without a valid magic, and (for TCP) frames claiming huge lengths.
fn junk(valid: &[u8], rng: &mut FastRng, tcp: bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    for i in 0..valid.len() {
        let mut v = valid.to_vec();
        v[i] ^= 1 << (rng.next_u64() % 8);
        out.push(v.clone());
        v[i] = 0xff;
        out.push(v);
    }
    for _ in 0..50 {
        let mut v = vec![0u8; (rng.next_u64() % 1500) as usize];
        rng.fill(&mut v);
        if rng.next_u64().is_multiple_of(2) && v.len() >= 4 {
            v[..4].copy_from_slice(&valid[..4]);
        }
        out.push(v);
    }
    if tcp {
        for len in [u32::MAX, 1 << 30, 10 << 20, 0] {
            let mut v = valid[..4].to_vec();
            v.extend_from_slice(&len.to_le_bytes());
            out.push(v);
        }
    }
    out
}

/// Junk to every port, in rounds, until `stop`; returns how many datagrams and connections.
async fn spray(
    ports: Ports,
    samples: Vec<(&'static str, Vec<u8>)>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<(u64, u64), TestError> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .ctx("binding a UDP socket")?;
    let mut rng = FastRng::new(seed);
    let (mut datagrams, mut conns) = (0u64, 0u64);
    // Half-sent frames left open while everything else goes on.
    let mut held = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (addr, kind) in &ports.udp {
            for (_, valid) in samples.iter().filter(|s| s.0 == *kind) {
                for j in junk(valid, &mut rng, false) {
                    let _ = sock.send_to(&j, addr).await;
                    datagrams += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (addr, kind) in &ports.tcp {
            for (_, valid) in samples.iter().filter(|s| s.0 == *kind) {
                let all = junk(valid, &mut rng, true);
                // A third of the junk, each on a fresh connection; some (often truncated
                // frames) are left open, so servers also hold connections that never finish.
                for (i, j) in all.iter().enumerate().step_by(3) {
                    let Ok(Ok(mut s)) = tokio::time::timeout(
                        Duration::from_secs(2),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    else {
                        continue;
                    };
                    conns += 1;
                    let _ = s.write_all(j).await;
                    if i % 7 == 0 && held.len() < 64 {
                        held.push(s);
                    }
                }
            }
        }
        if held.len() >= 64 {
            held.clear();
        }
    }
    Ok((datagrams, conns))
}

/// Junk and truncated packets to every UDP and TCP port of the cluster while model workers
/// keep working and a block-backed file keeps being read; everything must stay correct and
/// no server may die.
pub(super) async fn garbage(env: &mut Env) -> TestResult {
    let c = env.client.clone();
    let shared = shared_dirs(env, 2).await?;
    let data_dir = env.subdir("data").await?;
    c.set_directory_info(data_dir, rs_4_2_policy(1 << 20, 64 << 10))
        .await
        .ctx("setting the policy")?;
    let file = wait_writable(
        &c,
        data_dir,
        &Name::new("f").expect("valid"),
        3 << 20,
        Duration::from_secs(30),
    )
    .await
    .ctx("first block-backed write")?;
    let before = c.read_file(file).await.ctx("reading")?;
    let ports = ports(&c, c.shuckle().addr()).await?;
    let summary = format!("{} UDP and {} TCP ports", ports.udp.len(), ports.tcp.len());
    let stop = Arc::new(AtomicBool::new(false));
    let sprayer = tokio::spawn(spray(ports, samples(shared[0]), env.seed, stop.clone()));
    let workers_stop = Arc::new(AtomicBool::new(false));
    let set = run_workers(
        env,
        &shared,
        worker_configs(env, 2, false, 5000),
        workers_stop.clone(),
    );
    let until = Instant::now() + env.secs(8.0);
    let mut reads = 0;
    while Instant::now() < until {
        let back = c.read_file(file).await.ctx("reading during the spray")?;
        ensure!(back == before, "the file reads back differently");
        let _: HashMap<_, _> = block_service_processes(&c)
            .await
            .ctx("asking shuckle during the spray")?;
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers_stop.store(true, Ordering::Relaxed);
    let stats = join_workers(set).await?;
    stop.store(true, Ordering::Relaxed);
    let (datagrams, conns) = sprayer.await.map_err(|e| fail(&e.to_string()))??;
    ensure!(datagrams > 0 && conns > 0, "nothing was sent");
    Ok(format!(
        "{datagrams} junk datagrams and {conns} junk connections to {summary}; meanwhile \
         {reads} file reads and {stats}"
    ))
}
