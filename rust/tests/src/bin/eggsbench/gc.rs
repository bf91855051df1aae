//! `eggsbench gc`: how long eggsgc needs to collect many deleted files, against a running
//! cluster (start one with `eggsrun --no-gc`, so that the background GC does not compete).
//!
//! Creates `--files` small files spread over `--dirs` new directories, deletes them, sets a
//! snapshot policy that expires them at once, and times one collection pass and one
//! destruction pass.

use crate::BoxError;
use eggs_client::{Client, ClientOptions, FileWriter};
use eggs_gc::{collect, destroy, GcOptions};
use eggs_protocol::policy::{DirectoryInfo, SnapshotPolicy};
use eggs_protocol::{InodeId, Name};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    #[arg(long, env = "EGGS_SHUCKLE", default_value = eggs_client::DEFAULT_SHUCKLE_ADDR)]
    shuckle: SocketAddr,
    /// Deleted files to collect.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Directories they are spread over (one per shard at most helps parallelism).
    #[arg(long, default_value_t = 1)]
    dirs: usize,
    /// Bytes per file (up to 4096 are stored inline in the metadata).
    #[arg(long, default_value_t = 100)]
    file_bytes: usize,
    /// Requests in flight while creating and deleting.
    #[arg(long, default_value_t = 256)]
    parallel: usize,
    #[arg(long, default_value_t = 16)]
    shard_parallelism: usize,
    #[arg(long, default_value_t = 32)]
    item_parallelism: usize,
}

pub async fn run(args: GcArgs) -> Result<(), BoxError> {
    let c = Arc::new(Client::new(args.shuckle, ClientOptions::default()).await?);
    let base = format!("/gcbench-{:08x}", rand_u32());
    c.mkdir(&base).await?;
    let mut dirs = Vec::new();
    for d in 0..args.dirs.max(1) {
        dirs.push(c.mkdir(&format!("{base}/d{d}")).await?);
    }
    let dirs = Arc::new(dirs);
    let payload = Arc::new(vec![0x5au8; args.file_bytes]);
    let t = Instant::now();
    let ids = in_parallel(args.files, args.parallel, |i| {
        let (c, dirs, payload) = (c.clone(), dirs.clone(), payload.clone());
        async move {
            let dir = dirs[i % dirs.len()];
            let name = Name::new(format!("f{i}")).map_err(|e| e.to_string())?;
            let id = FileWriter::write_in(&c, dir, &name, &payload[..])
                .await
                .map_err(|e| e.to_string())?;
            Ok((dir, name, id))
        }
    })
    .await?;
    report("create", args.files, t);
    let ids = Arc::new(ids);
    let t = Instant::now();
    in_parallel(args.files, args.parallel, |i| {
        let (c, ids) = (c.clone(), ids.clone());
        async move {
            let (dir, name, id) = &ids[i];
            let l = c.lookup(*dir, name).await.map_err(|e| e.to_string())?;
            let req = eggs_protocol::shard::SoftUnlinkFileReq {
                dir_id: *dir,
                target_id: *id,
                name: name.clone(),
                creation_time: l.creation_time,
            };
            c.shard_request(dir.shard(), req)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await?;
    report("delete", args.files, t);
    let info = DirectoryInfo {
        snapshot: Some(SnapshotPolicy {
            delete_after_ns: 1,
            delete_after_versions: 0,
        }),
        ..Default::default()
    };
    let base_id: InodeId = c.resolve(&base).await?;
    c.set_directory_info(base_id, info).await?;
    let opts = GcOptions {
        shard_parallelism: args.shard_parallelism,
        item_parallelism: args.item_parallelism,
    };
    let t = Instant::now();
    let cs = collect::collect_pass(&c, &opts).await;
    report("gc collect pass", args.files, t);
    println!("  {cs}");
    let t = Instant::now();
    let ds = destroy::destroy_pass(&c, &opts).await;
    report("gc destroy pass", args.files, t);
    println!("  {ds}");
    Ok(())
}

fn report(what: &str, n: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "{what}: {n} files in {s:.2} s ({:.0} files/s)",
        n as f64 / s
    );
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Runs `f(0..n)` with at most `parallel` in flight; results in index order.
async fn in_parallel<T, F, Fut>(n: usize, parallel: usize, f: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    loop {
        while next < n && set.len() < parallel.max(1) {
            let fut = f(next);
            let i = next;
            set.spawn(async move { (i, fut.await) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, r))) => out[i] = Some(r?),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    Ok(out.into_iter().flatten().collect())
}
