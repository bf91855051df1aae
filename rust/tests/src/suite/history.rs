//! File history: the snapshot edges that overwriting and deleting leave, bringing an old
//! version back, and the GC expiring them once the directory's snapshot policy allows.

use super::{ensure, Context, Env, TestError, TestResult};
use crate::prng_bytes;
use eggs_client::Client;
use eggs_protocol::policy::{DirectoryInfo, SnapshotPolicy};
use eggs_protocol::shard::{Edge, RestoreSnapshotEdgeReq, SoftUnlinkFileReq};
use eggs_protocol::{EggsError, EggsTime, InodeId, Name};
use std::time::{Duration, Instant};

/// How long the GC (a pass every 5 s with `GcIntervals::LOCAL`) may take to expire snapshots.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(60);

/// Overwrites a name several times and deletes it; checks the versions `full_readdir` lists
/// (in creation order, ending with the deletion marker); restores an overwritten version and
/// reads it back bit-exact; then sets a 1 ms snapshot policy and waits for `eggsgc` to expire
/// every snapshot edge, after which restoring fails with `SnapshotNotFound`.
pub(super) async fn file_history(env: &mut Env) -> TestResult {
    let c = env.client.clone();
    let dir = env.subdir("history").await?;
    let f = Name::new("f").expect("valid");
    let keep = Name::new("keep").expect("valid");
    let versions = env.count(4).max(3);
    let mut written: Vec<(InodeId, Vec<u8>)> = Vec::new();
    for v in 0..versions {
        // Different sizes: one inline span up to several.
        let data = prng_bytes(env.seed.wrapping_add(v as u64), 100 + v * 3001);
        let id = c
            .write_small_file_in(dir, &f, &data)
            .await
            .ctx(format!("writing version {v}"))?;
        written.push((id, data));
    }
    // A name whose current version must survive the expiry of its older one.
    c.write_small_file_in(dir, &keep, b"old")
        .await
        .ctx("writing keep")?;
    let keep_id = c
        .write_small_file_in(dir, &keep, b"new")
        .await
        .ctx("overwriting keep")?;
    unlink(&c, dir, &f).await?;

    let edges = versions_of(&c, dir, &f).await?;
    check_history(&edges, &written)?;

    // Undelete an overwritten (not the newest) version.
    let old = versions / 2;
    let r = c
        .shard_request(
            dir.shard(),
            RestoreSnapshotEdgeReq {
                dir_id: dir,
                name: f.clone(),
                creation_time: edges[old].creation_time,
            },
        )
        .await
        .ctx(format!("restoring version {old}"))?;
    ensure!(
        r.target_id == written[old].0,
        "restore returned {}, version {old} was {}",
        r.target_id,
        written[old].0
    );
    let now = c.lookup(dir, &f).await.ctx("lookup after restore")?;
    ensure!(
        now.target_id == written[old].0,
        "after restore f is {}, expected {}",
        now.target_id,
        written[old].0
    );
    let back = c.read_file(now.target_id).await.ctx("reading restored")?;
    ensure!(
        back == written[old].1,
        "restored version {old}: {} bytes differ from the {} written",
        back.len(),
        written[old].1.len()
    );
    unlink(&c, dir, &f).await?;
    let before_expiry = versions_of(&c, dir, &f).await?;
    ensure!(
        before_expiry.iter().all(|e| !e.current) && before_expiry.len() > versions,
        "after the second delete: {before_expiry:?}"
    );

    // Expire everything not current: a tiny age limit on this directory only.
    let policy = DirectoryInfo {
        snapshot: Some(SnapshotPolicy {
            delete_after_ns: 1_000_000,
            delete_after_versions: 0,
        }),
        ..Default::default()
    };
    c.set_directory_info(dir, policy)
        .await
        .ctx("setting the snapshot policy")?;
    let t0 = Instant::now();
    loop {
        let all = c.full_readdir(dir).await.ctx("full_readdir")?;
        if all.iter().all(|e| e.current) {
            ensure!(
                all.len() == 1 && all[0].name == keep && all[0].target_id == keep_id,
                "after expiry the directory holds {all:?}"
            );
            break;
        }
        ensure!(
            t0.elapsed() < EXPIRY_DEADLINE,
            "eggsgc did not expire the snapshots within {EXPIRY_DEADLINE:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expired_in = t0.elapsed();
    let kept = c.read_file(keep_id).await.ctx("reading keep")?;
    ensure!(kept == b"new", "keep reads {kept:?} after expiry");
    for (i, e) in edges
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.target_id.is_null())
    {
        let r = c
            .shard_request(
                dir.shard(),
                RestoreSnapshotEdgeReq {
                    dir_id: dir,
                    name: f.clone(),
                    creation_time: e.creation_time,
                },
            )
            .await;
        match r {
            Err(err) if err.eggs() == Some(EggsError::SnapshotNotFound) => {}
            other => ensure!(
                false,
                "restoring expired version {i} gave {other:?}, not SnapshotNotFound"
            ),
        }
    }
    Ok(format!(
        "{versions} versions + deletion marker listed in order, version {old} restored \
         bit-exact, all snapshots expired by eggsgc in {:.1} s, undelete then SnapshotNotFound",
        expired_in.as_secs_f64()
    ))
}

/// The versions of `name` must be the files written, oldest first, then a deletion marker.
fn check_history(edges: &[Edge], written: &[(InodeId, Vec<u8>)]) -> Result<(), TestError> {
    ensure!(
        edges.len() == written.len() + 1,
        "{} versions written and deleted, full_readdir lists {edges:?}",
        written.len()
    );
    for (i, (e, (id, _))) in edges.iter().zip(written).enumerate() {
        ensure!(
            !e.current && e.target_id == *id,
            "version {i}: expected snapshot edge to {id}, got {e:?}"
        );
    }
    let last = &edges[written.len()];
    ensure!(
        !last.current && last.target_id.is_null(),
        "the newest edge is not a deletion marker: {last:?}"
    );
    let times: Vec<EggsTime> = edges.iter().map(|e| e.creation_time).collect();
    ensure!(
        times.windows(2).all(|w| w[0] < w[1]),
        "versions not in creation order: {times:?}"
    );
    Ok(())
}

async fn versions_of(c: &Client, dir: InodeId, name: &Name) -> Result<Vec<Edge>, TestError> {
    Ok(c.full_readdir(dir)
        .await
        .ctx("full_readdir")?
        .into_iter()
        .filter(|e| e.name == *name)
        .collect())
}

/// Deletes the current file at `name` (it becomes a snapshot edge plus a deletion marker).
async fn unlink(c: &Client, dir: InodeId, name: &Name) -> Result<(), TestError> {
    let e = c.lookup(dir, name).await.ctx(format!("lookup {name:?}"))?;
    c.shard_request(
        dir.shard(),
        SoftUnlinkFileReq {
            dir_id: dir,
            target_id: e.target_id,
            name: name.clone(),
            creation_time: e.creation_time,
        },
    )
    .await
    .ctx(format!("unlinking {name:?}"))?;
    Ok(())
}
