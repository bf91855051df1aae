//! Data-path tests.

use super::{ensure, Context, Env, TestResult};
use crate::{prng_range, span_blocks, wait_writable, FastRng, HashSink, PrngReader};
use eggs_client::{FileWriter, Stat};
use eggs_protocol::Name;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Files under the root's default policy (RS(10,4) spans of up to 100 MiB over 14 failure
/// domains): sizes around inline, stripe and span boundaries, and one large file streamed from
/// a seeded generator and read back whole into a hashing sink and in random ranges.
pub(super) async fn large_files(env: &mut Env) -> TestResult {
    let c = env.client.clone();
    let name = |s: &str| Name::new(s).expect("valid");
    wait_writable(
        &c,
        env.dir,
        &name("probe"),
        10 << 20,
        Duration::from_secs(30),
    )
    .await
    .ctx("first block-backed write")?;
    let large = env.count(150) as u64 * MIB;
    let sizes = [0, 1, 4095, 4097, 65 * 1024 + 3, 10 * MIB + 1, large];
    let mut report = Vec::new();
    for (k, &size) in sizes.iter().enumerate() {
        let seed = env.seed.wrapping_add(k as u64);
        let n = format!("f{size}");
        let mut reader = PrngReader::new(seed, size);
        let t = Instant::now();
        let id = FileWriter::write_in(&c, env.dir, &name(&n), &mut reader)
            .await
            .ctx(format!("writing {size} bytes"))?;
        let write = t.elapsed();
        match c.stat(id).await.ctx("stat")? {
            Stat::File { size: s, .. } => ensure!(s == size, "{n}: stat says {s} bytes"),
            other => ensure!(false, "{n} is not a file: {other:?}"),
        }
        let t = Instant::now();
        let mut sink = HashSink::default();
        c.read_file_to(id, &mut sink)
            .await
            .ctx(format!("reading {n}"))?;
        let read = t.elapsed();
        ensure!(
            sink.len == size && sink.crc == reader.crc(),
            "{n}: read back {} bytes with CRC {:08x}, wrote {size} with {:08x}",
            sink.len,
            sink.crc,
            reader.crc()
        );
        // Ranged reads (what FUSE does) at random places, including past the end.
        let mut rng = FastRng::new(seed);
        for _ in 0..8 {
            let offset = rng.next_u64() % (size + 10);
            let len = (rng.next_u64() % (3 * MIB)) as usize;
            let got = c
                .read_range(id, offset, len)
                .await
                .ctx(format!("reading {n} at {offset}+{len}"))?;
            let from = offset.min(size);
            let want_len = (size - from).min(len as u64) as usize;
            let want = prng_range(seed, from, want_len);
            ensure!(got == want, "{n}: range {offset}+{len} differs");
        }
        if size == large {
            let spans = span_blocks(&c, id).await.ctx("spans")?;
            ensure!(
                spans.len() as u64 == large.div_ceil(100 * MIB),
                "{n}: {} block spans",
                spans.len()
            );
            report.push(format!(
                "{} MiB in {} spans: write {:.0} MiB/s, read {:.0} MiB/s",
                size / MIB,
                spans.len(),
                size as f64 / MIB as f64 / write.as_secs_f64(),
                size as f64 / MIB as f64 / read.as_secs_f64()
            ));
        }
    }
    Ok(format!(
        "{} files round-trip whole and in ranges; {}",
        sizes.len(),
        report.join(", ")
    ))
}
