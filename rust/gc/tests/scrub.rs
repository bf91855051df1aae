//! Scrubbing against a real cluster: a corrupt and a missing block file are found by a scrub
//! pass and rebuilt onto other services, after which every block of the file checks out on
//! its service (a read needs no parity work) and the file reads back bit-exact.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod repair_common;

use eggs_client::repair::BlockHealth;
use eggs_client::FileWriter;
use eggs_gc::scrub::{scrub_pass, ScrubOptions, ScrubStats};
use eggs_protocol::Name;
use repair_common::{cluster, contents, health, services, span_blocks};

fn flip_byte(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_blocks_are_rebuilt_elsewhere() {
    let (cluster, c, dir) = cluster("gc-scrub", 7).await;
    // Three RS(4,2) spans and one mirrored one.
    let data = contents(7, 3 * (256 << 10) + 5000);
    let file = FileWriter::write_in(&c, dir, &Name::new("f").unwrap(), &data[..])
        .await
        .unwrap();
    let before = span_blocks(&c, file).await;
    assert_eq!(before.len(), 4);
    let services = services(&c).await;

    // A flipped byte in the data of span 0's block 1, and span 2's block 4 deleted.
    let (bs, blk) = before[0][1];
    let corrupt_path = eggs_blocks::store::block_path(&services[&bs].0, blk);
    flip_byte(&corrupt_path, eggs_blocks::store::HEADER_BYTES + 5000);
    let (bs, blk) = before[2][4];
    let missing_path = eggs_blocks::store::block_path(&services[&bs].0, blk);
    std::fs::remove_file(&missing_path).unwrap();
    let h = health(&c, file).await;
    assert_eq!(h[0][1], BlockHealth::Corrupt);
    assert_eq!(h[2][4], BlockHealth::Missing);

    let opts = ScrubOptions {
        rate_bytes_per_s: 0,
        ..Default::default()
    };
    let s = scrub_pass(&c, &opts).await.unwrap();
    assert_eq!((s.corrupt, s.missing, s.unknown), (1, 1, 0), "{s:?}");
    assert_eq!((s.repaired, s.repair_failed), (2, 0), "{s:?}");
    // 2 files (warmup and f), 1 + 4 spans, 3 + (3 * 6 + 3) blocks.
    assert_eq!((s.files, s.spans, s.blocks_checked), (2, 5, 24), "{s:?}");

    let after = span_blocks(&c, file).await;
    for (i, (span_before, span_after)) in before.iter().zip(&after).enumerate() {
        for (j, (b, a)) in span_before.iter().zip(span_after).enumerate() {
            let replaced = (i, j) == (0, 1) || (i, j) == (2, 4);
            assert_eq!(b != a, replaced, "span {i} block {j}: {b:?} -> {a:?}");
            if replaced {
                // Not onto a service another block of the span uses.
                let others: Vec<_> = span_after.iter().filter(|x| *x != a).collect();
                assert!(others.iter().all(|o| o.0 != a.0));
            }
        }
    }
    // The old corrupt block was erased; every block now checks out, so a read needs no
    // parity work.
    assert!(!corrupt_path.exists());
    for (i, span) in health(&c, file).await.iter().enumerate() {
        assert!(
            span.iter().all(|h| *h == BlockHealth::Good),
            "span {i}: {span:?}"
        );
    }
    assert!(c.read_file(file).await.unwrap() == data);

    // A second pass finds nothing to do.
    let s = scrub_pass(&c, &opts).await.unwrap();
    assert_eq!(
        s,
        ScrubStats {
            files: 2,
            spans: 5,
            blocks_checked: 24,
            bytes_checked: s.bytes_checked,
            ..Default::default()
        }
    );
    drop(c);
    eggs_tests::finish(cluster).await;
}
