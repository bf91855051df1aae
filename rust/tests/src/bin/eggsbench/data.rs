//! `eggsbench data`: where data-path throughput goes, in one run.
//!
//! 1. In memory, on one thread: the PRNG that feeds the other measurements, CRC-32C, RS(10,4)
//!    encoding, rebuilding 4 lost data blocks, and the client's whole span encoding (padding,
//!    parity and CRCs) over a 100 MiB span, repeated to about `--codec-gib`.
//! 2. The local disk that holds the cluster's data (`--dir`): write 1.4 × the file size (what
//!    RS(10,4) puts on disk) with an fsync at the end, drop it from the page cache, read it back.
//! 3. The cluster: write a `--size-gib` file through the client library (root default policy,
//!    RS(10,4) spans of 100 MiB), evict the block files from the page cache, read it back
//!    and compare its CRC-32C with what was written.
//!
//! The cluster must run on this machine for the eviction (it finds block files through the
//! paths block services register with shuckle, or drops every cache when run as root).

use eggs_client::rs::ErasureCode;
use eggs_client::span::{EncodedSpan, SpanLayout};
use eggs_client::{Client, FileWriter};
use eggs_protocol::policy::{DirectoryInfo, Parity};
use eggs_protocol::shuckle::BlockServicesReq;
use eggs_protocol::{EggsTime, InodeId, Name};
use eggs_tests::{FastRng, HashSink, PrngReader};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const GIB: f64 = (1u64 << 30) as f64;
/// The root policy's largest span: what the cluster benchmark's file is cut into.
const SPAN: usize = 100 << 20;
/// RS(10,4) writes this many bytes to disk per byte of data.
const RS_OVERHEAD: f64 = 1.4;

#[derive(clap::Args)]
pub struct DataArgs {
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Size of the file written to and read from the cluster, in GiB.
    #[arg(long, default_value_t = 4.0)]
    size_gib: f64,
    /// Where the local-disk baseline file goes: a directory on the disk the cluster's block
    /// services use. Defaults to the system temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Data pushed through each in-memory measurement, in GiB.
    #[arg(long, default_value_t = 1.0)]
    codec_gib: f64,
}

/// One line of the table.
struct Row {
    what: String,
    bytes: u64,
    time: Duration,
    /// Our throughput over the local disk's, for the cluster rows.
    vs_disk: Option<f64>,
}

impl Row {
    fn new(what: impl Into<String>, bytes: u64, time: Duration) -> Row {
        Row {
            what: what.into(),
            bytes,
            time,
            vs_disk: None,
        }
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.time.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        let vs = self.vs_disk.map_or(String::new(), |r| format!("{r:.2}"));
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {vs} |",
            self.what,
            self.bytes as f64 / GIB,
            self.time.as_secs_f64(),
            self.mb_per_s()
        );
    }
}

pub async fn run(args: DataArgs) -> BoxResult<()> {
    if !(args.size_gib > 0.0 && args.codec_gib > 0.0) {
        return Err("--size-gib and --codec-gib must be positive".into());
    }
    let size = (args.size_gib * GIB) as u64;
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let load_before = loadavg();
    let client = Client::new(args.shuckle, Default::default())
        .await
        .map_err(|e| format!("connecting to shuckle at {}: {e}", args.shuckle))?;

    let codec_bytes = (args.codec_gib * GIB) as u64;
    eprintln!("in-memory measurements ({:.2} GiB each)...", args.codec_gib);
    let mut rows = tokio::task::spawn_blocking(move || in_memory(codec_bytes)).await??;

    let disk_bytes = (size as f64 * RS_OVERHEAD) as u64;
    eprintln!(
        "local disk: {:.2} GiB in {}...",
        disk_bytes as f64 / GIB,
        dir.display()
    );
    let (disk_write, disk_read) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || local_disk(&dir, disk_bytes)).await??
    };
    rows.push(Row::new(
        format!("local disk write ({RS_OVERHEAD} × size, fsync)"),
        disk_bytes,
        disk_write,
    ));
    rows.push(Row::new(
        "local disk read (evicted from page cache)",
        disk_bytes,
        disk_read,
    ));

    eprintln!("cluster: writing {:.2} GiB...", args.size_gib);
    let (write, read, eviction) = cluster(&client, size).await?;
    // The local write put as many bytes on disk as the cluster's RS(10,4) write does, so the
    // time ratio is the ratio of throughputs per byte of file.
    let mut w = Row::new("eggsfs sequential write, RS(10,4)", size, write);
    w.vs_disk = Some(disk_write.as_secs_f64() / write.as_secs_f64());
    // Reads fetch only the data blocks: as many bytes as the file, so compare MB/s directly.
    let mut r = Row::new("eggsfs sequential read, RS(10,4)", size, read);
    r.vs_disk = Some(r.mb_per_s() / rows.last().map_or(1.0, Row::mb_per_s));
    rows.push(w);
    rows.push(r);

    println!("| measurement | GiB | s | MB/s | vs local disk |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        row.print();
    }
    println!();
    println!(
        "MB = 10^6 bytes. In-memory rows run on one thread. \"vs local disk\": write = local \
         write time of {RS_OVERHEAD} × the size / eggsfs write time (same bytes on disk); \
         read = eggsfs MB/s / local read MB/s."
    );
    println!("Block files before the read: {eviction}.");
    println!(
        "Load average (1/5/15 min): {load_before} at start, {} at end; {} CPUs.",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

/// PRNG, CRC-32C, RS(10,4) encode and rebuild, and span encoding over one 100 MiB span
/// repeated to about `total` bytes.
fn in_memory(total: u64) -> BoxResult<Vec<Row>> {
    let iters = total.div_ceil(SPAN as u64).max(1);
    let bytes = iters * SPAN as u64;
    let mut rows = Vec::new();
    let mut rng = FastRng::new(1);
    let mut span = vec![0u8; SPAN];

    let t = Instant::now();
    for _ in 0..iters {
        rng.fill(&mut span);
    }
    rows.push(Row::new("PRNG (wyrand) fill", bytes, t.elapsed()));

    let t = Instant::now();
    let mut crc = 0;
    for _ in 0..iters {
        crc = crc32c::crc32c_append(crc, &span);
    }
    rows.push(Row::new("CRC-32C", bytes, t.elapsed()));
    // Keeps the loop from being optimised away.
    std::hint::black_box(crc);

    let rs_10_4 = Parity {
        data: 10,
        parity: 4,
    };
    let code = ErasureCode::new(rs_10_4)?;
    let block = SPAN / 10;
    let mut blocks: Vec<Vec<u8>> = span
        .chunks(block)
        .map(<[u8]>::to_vec)
        .chain((0..4).map(|_| vec![0u8; block]))
        .collect();
    let t = Instant::now();
    for _ in 0..iters {
        let (data, parity) = blocks.split_at_mut(10);
        let data: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
        let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|b| &mut b[..]).collect();
        code.encode(&data, &mut parity)?;
    }
    rows.push(Row::new(
        "RS(10,4) encode (10 × 10 MiB blocks)",
        bytes,
        t.elapsed(),
    ));

    // Lose the first 4 data blocks (the worst case: 4 rebuilt, all parity used) and check
    // that what comes back is what was there.
    let want: Vec<u32> = blocks[..4].iter().map(|b| crc32c::crc32c(b)).collect();
    for b in &mut blocks[..4] {
        b.fill(0);
    }
    let t = Instant::now();
    for _ in 0..iters {
        let mut shards: Vec<(&mut [u8], bool)> = blocks
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (&mut b[..], i >= 4))
            .collect();
        code.reconstruct(&mut shards, true)?;
    }
    rows.push(Row::new(
        "RS(10,4) rebuild 4 lost data blocks",
        bytes,
        t.elapsed(),
    ));
    let got: Vec<u32> = blocks[..4].iter().map(|b| crc32c::crc32c(b)).collect();
    if got != want {
        return Err("RS(10,4) rebuilt different data".into());
    }
    drop(blocks);

    let layout = SpanLayout::for_span(&DirectoryInfo::root_default(), SPAN as u32)?;
    if layout.parity != rs_10_4 {
        return Err(format!("root policy gives {:?} for 100 MiB", layout.parity).into());
    }
    let mut parity_bufs = Vec::new();
    let t = Instant::now();
    for _ in 0..iters {
        // The encoder pads the buffer to whole stripes; the span itself is SPAN bytes.
        span.truncate(SPAN);
        let encoded = EncodedSpan::encode(layout, span, parity_bufs)?;
        (span, parity_bufs) = encoded.into_buffers();
    }
    rows.push(Row::new(
        "span encode, RS(10,4) 100 MiB (pad + parity + CRCs)",
        bytes,
        t.elapsed(),
    ));
    Ok(rows)
}

/// Removes the baseline file however the measurement ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `bytes` to a new file in `dir` and fsyncs it, drops it from the page cache, reads it
/// back; returns both times.
fn local_disk(dir: &Path, bytes: u64) -> BoxResult<(Duration, Duration)> {
    let path = dir.join(format!("eggsbench-disk-{}", std::process::id()));
    let _guard = RemoveOnDrop(path.clone());
    let mut buf = vec![0u8; 8 << 20];
    FastRng::new(7).fill(&mut buf);
    let ctx = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut f = File::create(&path).map_err(|e| ctx("creating", e))?;
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        // Every chunk differs, in case the file system deduplicates or compresses.
        buf[..8].copy_from_slice(&left.to_le_bytes());
        f.write_all(&buf[..n]).map_err(|e| ctx("writing", e))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| ctx("syncing", e))?;
    let write = t.elapsed();
    // Clean pages only go after the fsync above.
    fadvise_dontneed(&f).map_err(|e| ctx("evicting", e))?;
    drop(f);
    let mut f = File::open(&path).map_err(|e| ctx("opening", e))?;
    let t = Instant::now();
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| ctx("reading", e))?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let elapsed = t.elapsed();
    if read != bytes {
        return Err(format!("read {read} bytes back of {bytes}").into());
    }
    Ok((write, elapsed))
}

fn fadvise_dontneed(f: &File) -> std::io::Result<()> {
    posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(Into::into)
}

/// Writes and reads back a `size`-byte file; returns both times and how the block files were
/// evicted from the page cache in between.
async fn cluster(c: &Client, size: u64) -> BoxResult<(Duration, Duration, String)> {
    let dir_name = Name::new(format!("eggsbench-data-{}", EggsTime::now().0).as_str())?;
    let dir = c.mkdir_in(InodeId::ROOT, &dir_name).await?;
    let name = Name::new("sequential")?;
    let mut reader = PrngReader::new(0x5eed, size);
    let t = Instant::now();
    let id = FileWriter::write_in_with_progress(c, dir, &name, &mut reader, &mut |_| {}).await?;
    let write = t.elapsed();
    let eviction = evict_block_files(c).await;
    let mut sink = HashSink::default();
    let t = Instant::now();
    let n = c.read_file_to(id, &mut sink).await?;
    let read = t.elapsed();
    if n != size || sink.len != size || sink.crc != reader.crc() {
        return Err(format!(
            "read back {} bytes with CRC-32C {:08x}, wrote {size} with {:08x}",
            sink.len,
            sink.crc,
            reader.crc()
        )
        .into());
    }
    // Leave the namespace as it was (blocks go when the cluster collects them).
    let path = format!("/{dir_name}/sequential");
    if let Err(e) = c.unlink(&path).await {
        eprintln!("could not remove {path}: {e}");
    }
    Ok((write, read, eviction))
}

/// Gets the written blocks out of the page cache so the read measures the disk: every cache
/// when root, else each block file under the paths the services registered (which only
/// works when they are on this machine). Says what it did.
async fn evict_block_files(c: &Client) -> String {
    // Dirty pages cannot be dropped; block services sync their blocks, but be sure.
    nix::unistd::sync();
    if nix::unistd::geteuid().is_root() && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok() {
        return "evicted (root: `echo 1 > /proc/sys/vm/drop_caches`)".into();
    }
    let services = match c.shuckle().request(BlockServicesReq {}).await {
        Ok(r) => r.services,
        Err(e) => return format!("NOT evicted (cannot list block services: {e})"),
    };
    let roots: Vec<PathBuf> = services.iter().map(|s| PathBuf::from(&s.path)).collect();
    let evicted = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        for r in &roots {
            n += evict_tree(r);
        }
        n
    })
    .await
    .unwrap_or(0);
    if evicted == 0 {
        "NOT evicted (not root, and no block files found locally): reads may come from the \
         page cache"
            .into()
    } else {
        format!("evicted with posix_fadvise(DONTNEED) on {evicted} files (not root)")
    }
}

/// fadvise(DONTNEED) on every file under `dir`; returns how many.
fn evict_tree(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => n += evict_tree(&path),
            Ok(t)
                if t.is_file() && File::open(&path).and_then(|f| fadvise_dontneed(&f)).is_ok() =>
            {
                n += 1
            }
            _ => {}
        }
    }
    n
}

/// `/proc/loadavg`'s first three fields, to judge how busy the shared machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
