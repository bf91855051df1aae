//! File history: the snapshot edges that overwriting and deleting leave, bringing an old
//! version back (inline and block-backed files, and a removed directory), and the GC expiring
//! them once the directory's snapshot policy allows, block files included.

use super::{ensure, Context, Env, TestError, TestResult};
use crate::PrngReader;
use crate::{block_service_processes, prng_bytes, rs_4_2_policy, span_blocks, wait_writable};
use eggs_blocks::store::block_path;
use eggs_client::{Client, FileWriter};
use eggs_protocol::cdc::{RemoveDirectoryReq, UndeleteDirectoryReq};
use eggs_protocol::policy::{DirectoryInfo, SnapshotPolicy};
use eggs_protocol::shard::{
    BlockServiceFilesReq, Edge, RestoreSnapshotEdgeReq, SoftUnlinkFileReq, StatDirectoryReq,
};
use eggs_protocol::{BlockServiceId, EggsError, EggsTime, InodeId, Name, MAX_UDP_MTU};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the GC (a pass every 5 s with `GcIntervals::LOCAL`) may take to expire snapshots.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(60);
/// RS(4,2) spans of at most 1 MiB: a version of a few MiB has several block spans.
const SPAN: u32 = 1 << 20;
const STRIPE: u32 = 64 << 10;
/// How long the shard may take to learn of the block services.
const WRITABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Overwrites a name several times and deletes it; checks the versions `full_readdir` lists
/// (in creation order, ending with the deletion marker); restores an overwritten version and
/// reads it back bit-exact; the same with files of several block spans; undeletes a removed
/// directory and restores the file deleted in it. Then sets a 1 ms snapshot policy and waits
/// for `eggsgc` to expire every snapshot edge, after which restoring fails with
/// `SnapshotNotFound` and the old versions' block files have left the block services.
pub(super) async fn file_history(env: &mut Env) -> TestResult {
    let c = env.client.clone();
    let dir = env.subdir("history").await?;
    c.set_directory_info(dir, rs_4_2_policy(SPAN, STRIPE))
        .await
        .ctx("setting the span policy")?;
    let f = Name::new("f").expect("valid");
    let keep = Name::new("keep").expect("valid");
    let versions = env.count(4).max(3);
    let mut written: Vec<(InodeId, Vec<u8>)> = Vec::new();
    for v in 0..versions {
        // Different sizes: one inline span up to several.
        let data = prng_bytes(env.seed.wrapping_add(v as u64), 100 + v * 3001);
        let id = FileWriter::write_in(&c, dir, &f, &data[..])
            .await
            .ctx(format!("writing version {v}"))?;
        written.push((id, data));
    }
    // A name whose current version must survive the expiry of its older one.
    FileWriter::write_in(&c, dir, &keep, &b"old"[..])
        .await
        .ctx("writing keep")?;
    let keep_id = FileWriter::write_in(&c, dir, &keep, &b"new"[..])
        .await
        .ctx("overwriting keep")?;
    unlink(&c, dir, &f).await?;

    let edges = versions_of(&c, dir, &f).await?;
    let ids: Vec<InodeId> = written.iter().map(|w| w.0).collect();
    check_history(&edges, &ids)?;
    // Undelete an overwritten (not the newest) version.
    let old = versions / 2;
    restore_bit_exact(&c, dir, &f, &edges[old], &written[old]).await?;
    unlink(&c, dir, &f).await?;
    let before_expiry = versions_of(&c, dir, &f).await?;
    ensure!(
        before_expiry.iter().all(|e| !e.current) && before_expiry.len() > versions,
        "after the second delete: {before_expiry:?}"
    );

    let big = big_file_history(&c, dir, env.seed, env.count(2).max(2)).await?;
    let sub = undelete_directory(&c, dir, env.seed).await?;

    // Expire everything not current: a tiny age limit on this directory only.
    let policy = DirectoryInfo {
        snapshot: Some(SnapshotPolicy {
            delete_after_ns: 1_000_000,
            delete_after_versions: 0,
        }),
        ..rs_4_2_policy(SPAN, STRIPE)
    };
    c.set_directory_info(dir, policy)
        .await
        .ctx("setting the snapshot policy")?;
    let t0 = Instant::now();
    wait_expired(
        &c,
        dir,
        &[(&keep, keep_id), (&Name::new("sub").expect("valid"), sub)],
        t0,
    )
    .await?;
    let expired_in = t0.elapsed();
    let kept = c.read_file(keep_id).await.ctx("reading keep")?;
    ensure!(kept == b"new", "keep reads {kept:?} after expiry");
    for (name, edges) in [(&f, &edges), (&big.name, &big.edges)] {
        for e in edges.iter().filter(|e| !e.target_id.is_null()) {
            restore_fails(&c, dir, name, e).await?;
        }
    }
    let blocks_in = blocks_gone(&c, &big, t0).await?;
    // The undeleted directory outlived the expiry of its old (removed) edge.
    let st = c
        .shard_request(sub.shard(), StatDirectoryReq { id: sub })
        .await
        .ctx("stat sub after expiry")?;
    ensure!(
        st.owner_id == dir,
        "sub after expiry has owner {}",
        st.owner_id
    );
    Ok(format!(
        "{versions} versions + deletion marker listed in order, version {old} restored \
         bit-exact; {} versions of {} block spans ({} block files) the same; a removed \
         directory undeleted with its deleted file; all snapshots expired by eggsgc in {:.1} \
         s, undelete then SnapshotNotFound, blocks off the services in {:.1} s{}",
        big.ids.len(),
        big.spans,
        big.block_files.len(),
        expired_in.as_secs_f64(),
        blocks_in.as_secs_f64(),
        if big.block_files.is_empty() {
            " (block directories not local: checked through the shard only)"
        } else {
            ""
        }
    ))
}

/// What the block-backed part of the test left to check after expiry.
struct BigHistory {
    name: Name,
    /// The versions of `name`, deletion markers included.
    edges: Vec<Edge>,
    ids: Vec<InodeId>,
    /// Block spans over all versions.
    spans: usize,
    /// The services holding their blocks.
    services: BTreeSet<BlockServiceId>,
    /// Their block files, when the services' directories are on this machine.
    block_files: Vec<PathBuf>,
}

/// Versions of a few MiB each (RS(4,2) block spans): overwritten, deleted, the oldest restored
/// bit-exact and deleted again. Checks each version's blocks are on the services' disks.
async fn big_file_history(
    c: &Client,
    dir: InodeId,
    seed: u64,
    versions: usize,
) -> Result<BigHistory, TestError> {
    let name = Name::new("big").expect("valid");
    let services = block_service_processes(c)
        .await
        .ctx("listing block services")?;
    let mut big = BigHistory {
        name: name.clone(),
        edges: Vec::new(),
        ids: Vec::new(),
        spans: 0,
        services: BTreeSet::new(),
        block_files: Vec::new(),
    };
    let mut oldest = None;
    for v in 0..versions {
        let size = (2 << 20) + 100_003 * (v as u64 + 1);
        // The first write waits for the shard to know the block services (it writes the
        // stream of seed 1).
        let data_seed = if v == 0 {
            1
        } else {
            seed.wrapping_add(1000 + v as u64)
        };
        let id = if v == 0 {
            wait_writable(c, dir, &name, size, WRITABLE_TIMEOUT).await
        } else {
            FileWriter::write_in(c, dir, &name, PrngReader::new(data_seed, size)).await
        }
        .ctx(format!("writing big version {v}"))?;
        if v == 0 {
            oldest = Some((id, prng_bytes(data_seed, size as usize)));
        }
        let spans = span_blocks(c, id).await.ctx("listing spans")?;
        ensure!(
            spans.len() >= 2,
            "big version {v} ({size} bytes) has {} block spans, expected several",
            spans.len()
        );
        big.spans += spans.len();
        // The shard's block-service index knows the file (so its emptiness later means something).
        if let Some(&(svc, _)) = spans.first().and_then(|(_, blocks)| blocks.first()) {
            let listed = files_with_blocks_on(c, id, svc).await?;
            ensure!(
                listed.contains(&id),
                "the shard does not list big version {v} on {svc:?}"
            );
        }
        for (svc, block) in spans.iter().flat_map(|(_, blocks)| blocks) {
            big.services.insert(*svc);
            let Some((root, _)) = services.get(svc) else {
                continue;
            };
            if root.is_dir() {
                let path = block_path(root, *block);
                ensure!(path.is_file(), "block file {} missing", path.display());
                big.block_files.push(path);
            }
        }
        big.ids.push(id);
    }
    unlink(c, dir, &name).await?;
    let edges = versions_of(c, dir, &name).await?;
    check_history(&edges, &big.ids)?;
    let oldest = oldest.expect("at least one version");
    restore_bit_exact(c, dir, &name, &edges[0], &oldest).await?;
    unlink(c, dir, &name).await?;
    big.edges = versions_of(c, dir, &name).await?;
    Ok(big)
}

/// Removes a directory whose only file was deleted, undeletes it (the CDC's
/// `UndeleteDirectory`), and restores the file in it bit-exact. Returns the directory.
async fn undelete_directory(c: &Client, dir: InodeId, seed: u64) -> Result<InodeId, TestError> {
    let name = Name::new("sub").expect("valid");
    let inner = Name::new("inner").expect("valid");
    let sub = c.mkdir_in(dir, &name).await.ctx("mkdir sub")?;
    let data = prng_bytes(seed.wrapping_add(77), 3000);
    let id = FileWriter::write_in(c, sub, &inner, &data[..])
        .await
        .ctx("writing sub/inner")?;
    unlink(c, sub, &inner).await?;
    let e = c.lookup(dir, &name).await.ctx("lookup sub")?;
    let rm = RemoveDirectoryReq {
        owner_id: dir,
        target_id: sub,
        name: name.clone(),
        creation_time: e.creation_time,
    };
    c.cdc_request(rm).await.ctx("rmdir sub")?;
    match c.lookup(dir, &name).await {
        Err(e) if e.eggs() == Some(EggsError::NameNotFound) => {}
        other => ensure!(false, "sub after rmdir: {other:?}"),
    }
    let undelete = UndeleteDirectoryReq {
        owner_id: dir,
        name: name.clone(),
        target_id: sub,
    };
    c.cdc_request(undelete).await.ctx("undeleting sub")?;
    let back = c.lookup(dir, &name).await.ctx("lookup undeleted sub")?;
    ensure!(
        back.target_id == sub,
        "sub is {} after undelete, was {sub}",
        back.target_id
    );
    let st = c
        .shard_request(sub.shard(), StatDirectoryReq { id: sub })
        .await
        .ctx("stat sub")?;
    ensure!(
        st.owner_id == dir,
        "undeleted sub has owner {}",
        st.owner_id
    );
    let inside = versions_of(c, sub, &inner).await?;
    check_history(&inside, &[id])?;
    restore_bit_exact(c, sub, &inner, &inside[0], &(id, data)).await?;
    Ok(sub)
}

/// Restores the snapshot edge `e` of `name` and reads the file back: it must be `want`.
async fn restore_bit_exact(
    c: &Client,
    dir: InodeId,
    name: &Name,
    e: &Edge,
    want: &(InodeId, Vec<u8>),
) -> Result<(), TestError> {
    let r = c
        .shard_request(
            dir.shard(),
            RestoreSnapshotEdgeReq {
                dir_id: dir,
                name: name.clone(),
                creation_time: e.creation_time,
            },
        )
        .await
        .ctx(format!("restoring {name:?} of {}", e.creation_time.0))?;
    ensure!(
        r.target_id == want.0,
        "restoring {name:?} returned {}, that version was {}",
        r.target_id,
        want.0
    );
    let now = c.lookup(dir, name).await.ctx("lookup after restore")?;
    ensure!(
        now.target_id == want.0,
        "after restore {name:?} is {}, expected {}",
        now.target_id,
        want.0
    );
    let back = c.read_file(now.target_id).await.ctx("reading restored")?;
    ensure!(
        back == want.1,
        "restored {name:?}: {} bytes differ from the {} written",
        back.len(),
        want.1.len()
    );
    Ok(())
}

/// Waits until `dir` and its subdirectories among `current` hold only current edges, exactly
/// `current` in `dir`.
async fn wait_expired(
    c: &Client,
    dir: InodeId,
    current: &[(&Name, InodeId)],
    t0: Instant,
) -> Result<(), TestError> {
    loop {
        let mut all = c.full_readdir(dir).await.ctx("full_readdir")?;
        for (_, id) in current.iter().filter(|(_, id)| id.is_dir()) {
            all.extend(c.full_readdir(*id).await.ctx("full_readdir")?);
        }
        if all.iter().all(|e| e.current) {
            let mut got: Vec<(&Name, InodeId)> = all
                .iter()
                .filter(|e| current.iter().any(|(_, id)| *id == e.target_id))
                .map(|e| (&e.name, e.target_id))
                .collect();
            got.sort();
            let mut want = current.to_vec();
            want.sort();
            // The subdirectory's restored file is current too.
            ensure!(
                got == want && all.len() == current.len() + 1,
                "after expiry the directories hold {all:?}"
            );
            return Ok(());
        }
        ensure!(
            t0.elapsed() < EXPIRY_DEADLINE,
            "eggsgc did not expire the snapshots within {EXPIRY_DEADLINE:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn restore_fails(c: &Client, dir: InodeId, name: &Name, e: &Edge) -> Result<(), TestError> {
    let r = c
        .shard_request(
            dir.shard(),
            RestoreSnapshotEdgeReq {
                dir_id: dir,
                name: name.clone(),
                creation_time: e.creation_time,
            },
        )
        .await;
    match r {
        Err(err) if err.eggs() == Some(EggsError::SnapshotNotFound) => Ok(()),
        other => Err(TestError::Failed(format!(
            "restoring expired {name:?} of {} gave {other:?}, not SnapshotNotFound",
            e.creation_time.0
        ))),
    }
}

/// Waits until the big versions' block files are gone from the services' disks and the
/// shards list none of those files on any service that held their blocks.
async fn blocks_gone(c: &Client, big: &BigHistory, t0: Instant) -> Result<Duration, TestError> {
    loop {
        let on_disk: Vec<&PathBuf> = big.block_files.iter().filter(|p| p.exists()).collect();
        let mut listed = Vec::new();
        for svc in &big.services {
            for id in files_with_blocks_on(c, big.ids[0], *svc).await? {
                if big.ids.contains(&id) {
                    listed.push((*svc, id));
                }
            }
        }
        if on_disk.is_empty() && listed.is_empty() {
            return Ok(t0.elapsed());
        }
        ensure!(
            t0.elapsed() < EXPIRY_DEADLINE,
            "eggsgc left {} of {} block files on disk (first {:?}) and the shard lists blocks \
             of expired files {listed:?}",
            on_disk.len(),
            big.block_files.len(),
            on_disk.first()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The files of `file`'s shard with blocks on `svc` (the shard's `BlockServiceFiles`).
async fn files_with_blocks_on(
    c: &Client,
    file: InodeId,
    svc: BlockServiceId,
) -> Result<Vec<InodeId>, TestError> {
    let mut out = Vec::new();
    let mut start = InodeId::NULL;
    loop {
        let req = BlockServiceFilesReq {
            block_service_id: svc,
            start_file_id: start,
            mtu: MAX_UDP_MTU,
        };
        let r = c
            .shard_request(file.shard(), req)
            .await
            .ctx("listing a block service's files")?;
        out.extend(r.file_ids);
        match r.next_file_id {
            Some(next) => start = next,
            None => return Ok(out),
        }
    }
}

/// The versions of `name` must be the files written, oldest first, then a deletion marker.
fn check_history(edges: &[Edge], written: &[InodeId]) -> Result<(), TestError> {
    ensure!(
        edges.len() == written.len() + 1,
        "{} versions written and deleted, full_readdir lists {edges:?}",
        written.len()
    );
    for (i, (e, id)) in edges.iter().zip(written).enumerate() {
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
