//! `eggsbench scrub`: how fast a scrub pass verifies blocks, next to how fast the disk under
//! the block services reads the same block files, in one run against a running cluster
//! whose block-service directories are on this machine (`eggsrun --no-gc`, so that the
//! background GC does not compete).
//!
//! Writes `--size-mib` of data into new files, then, with the page cache dropped before each
//! measurement (needs root: `/proc/sys/vm/drop_caches`):
//! 1. reads every block file of every service directly from the disk, `--threads` at once
//!    (the raw sequential read bandwidth for exactly the bytes the scrub reads);
//! 2. runs one scrub pass without a rate limit and reports its throughput.

use crate::BoxError;
use eggs_client::{Client, ClientOptions, FileWriter};
use eggs_gc::scrub::{scrub_pass, ScrubOptions};
use eggs_protocol::shuckle::BlockServicesReq;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ScrubArgs {
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Data to write before measuring (0: measure what the cluster already holds).
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Size of each file written.
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
    /// Threads reading block files for the raw disk measurement.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Spans the scrub checks at once.
    #[arg(long, default_value_t = 4)]
    parallel_spans: usize,
}

pub async fn run(args: ScrubArgs) -> Result<(), BoxError> {
    let c = Arc::new(Client::new(args.shuckle, ClientOptions::default()).await?);
    if args.size_mib > 0 {
        write_data(&c, args.size_mib, args.file_mib.max(1)).await?;
    }
    let services = c.shuckle().request(BlockServicesReq {}).await?.services;
    let dirs: Vec<PathBuf> = services.iter().map(|s| PathBuf::from(&s.path)).collect();

    drop_caches()?;
    let threads = args.threads.max(1);
    let (bytes, secs) =
        tokio::task::spawn_blocking(move || read_block_files(&dirs, threads)).await??;
    report(
        &format!("raw read of every block file ({threads} threads)"),
        bytes,
        secs,
    );

    drop_caches()?;
    let opts = ScrubOptions {
        rate_bytes_per_s: 0,
        parallel_spans: args.parallel_spans,
        repair: true,
    };
    let t = Instant::now();
    let s = scrub_pass(&c, &opts).await?;
    let secs = t.elapsed().as_secs_f64();
    report(
        &format!(
            "scrub pass ({} spans at once, {} blocks, {} bad)",
            args.parallel_spans,
            s.blocks_checked,
            s.missing + s.corrupt
        ),
        s.bytes_checked,
        secs,
    );
    Ok(())
}

fn report(what: &str, bytes: u64, secs: f64) {
    println!(
        "{what}: {:.2} GiB in {secs:.2} s = {:.0} MB/s",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
}

/// Writes `size_mib` of pseudo-random data as files of `file_mib` under a new directory.
async fn write_data(c: &Client, size_mib: u64, file_mib: u64) -> Result<(), BoxError> {
    let base = format!("/scrubbench-{:08x}", std::process::id());
    c.mkdir(&base).await?;
    let mut data = vec![0u8; (file_mib << 20) as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let files = size_mib.div_ceil(file_mib);
    let t = Instant::now();
    for i in 0..files {
        // A different first word per file, so that no two files are identical.
        data[..8].copy_from_slice(&i.to_le_bytes());
        FileWriter::write_path(c, &format!("{base}/f{i}"), &data[..]).await?;
    }
    report(
        "write through the client",
        files * (file_mib << 20),
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// Empties the page cache, so that reads come from the disk.
fn drop_caches() -> Result<(), BoxError> {
    std::process::Command::new("sync")
        .status()
        .map_err(|e| format!("running sync: {e}"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("dropping the page cache (run as root): {e}"))?;
    Ok(())
}

/// Reads every block file below `dirs` with `threads` threads; returns (bytes, seconds).
fn read_block_files(dirs: &[PathBuf], threads: usize) -> Result<(u64, f64), BoxError> {
    let mut files = Vec::new();
    for d in dirs {
        let Ok(subdirs) = std::fs::read_dir(d) else {
            continue;
        };
        for sub in subdirs {
            let sub = sub?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&sub)? {
                files.push(f?.path());
            }
        }
    }
    let files = Arc::new(files);
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let files = files.clone();
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0;
                for f in files.iter().skip(i).step_by(threads) {
                    let mut file = std::fs::File::open(f)?;
                    loop {
                        let n = file.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                }
                Ok(total)
            })
        })
        .collect();
    let mut bytes = 0;
    for h in handles {
        bytes += h.join().map_err(|_| "reader thread panicked")??;
    }
    Ok((bytes, t.elapsed().as_secs_f64()))
}
