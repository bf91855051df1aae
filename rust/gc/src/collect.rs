//! Directory collection: expire snapshot edges past their directory's policy, complete
//! cross-shard file releases, delete removed directories that are empty and old enough.

use crate::{for_each, for_each_shard, GcOptions};
use eggs_client::Client;
use eggs_protocol::policy::SnapshotPolicy;
use eggs_protocol::shard::*;
use eggs_protocol::{EggsError, InodeId, ShardId, MAX_UDP_MTU};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectStats {
    pub directories: u64,
    pub removed_edges: u64,
    pub released_files: u64,
    /// Releases of files on other shards completed (`MakeFileTransient`).
    pub remote_releases: u64,
    pub destroyed_directories: u64,
    /// Directories skipped this pass (policy not resolvable yet, e.g. created meanwhile).
    pub skipped: u64,
    pub errors: u64,
}

impl std::ops::AddAssign for CollectStats {
    fn add_assign(&mut self, o: CollectStats) {
        self.directories += o.directories;
        self.removed_edges += o.removed_edges;
        self.released_files += o.released_files;
        self.remote_releases += o.remote_releases;
        self.destroyed_directories += o.destroyed_directories;
        self.skipped += o.skipped;
        self.errors += o.errors;
    }
}

impl std::fmt::Display for CollectStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "directories={} removed_edges={} released_files={} remote_releases={} destroyed_directories={} skipped={} errors={}",
            self.directories,
            self.removed_edges,
            self.released_files,
            self.remote_releases,
            self.destroyed_directories,
            self.skipped,
            self.errors
        )
    }
}

/// Owner and own snapshot policy of every directory.
type DirMap = HashMap<InodeId, (InodeId, Option<SnapshotPolicy>)>;

/// One pass over every directory of every shard.
pub async fn collect_pass(client: &Arc<Client>, opts: &GcOptions) -> CollectStats {
    let (dirs, mut stats) = visit_all_directories(client, opts).await;
    let dirs = Arc::new(dirs);
    let root_policy = dirs
        .get(&InodeId::ROOT)
        .and_then(|(_, p)| p.clone())
        // Without the root (its shard did not answer) nothing expires by inheritance.
        .unwrap_or(SnapshotPolicy {
            delete_after_ns: 0,
            delete_after_versions: 0,
        });
    let per_shard = Arc::new(group_by_shard(&dirs));
    let opts2 = opts.clone();
    stats += for_each_shard(opts.shard_parallelism, |shard| {
        let client = client.clone();
        let dirs = dirs.clone();
        let per_shard = per_shard.clone();
        let root_policy = root_policy.clone();
        let opts = opts2.clone();
        async move {
            let mine = per_shard.get(&shard).cloned().unwrap_or_default();
            let mut s = for_each(opts.item_parallelism, mine, |dir| {
                let client = client.clone();
                let dirs = dirs.clone();
                let root_policy = root_policy.clone();
                async move { collect_one(&client, &dirs, &root_policy, dir).await }
            })
            .await;
            s += complete_releases(&client, shard).await;
            s
        }
    })
    .await;
    stats
}

fn group_by_shard(dirs: &DirMap) -> HashMap<ShardId, Vec<InodeId>> {
    let mut out: HashMap<ShardId, Vec<InodeId>> = HashMap::new();
    for &id in dirs.keys() {
        out.entry(id.shard()).or_default().push(id);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

async fn visit_all_directories(client: &Arc<Client>, opts: &GcOptions) -> (DirMap, CollectStats) {
    #[derive(Default)]
    struct Acc(Vec<VisitedDirectory>, CollectStats);
    impl std::ops::AddAssign for Acc {
        fn add_assign(&mut self, o: Acc) {
            self.0.extend(o.0);
            self.1 += o.1;
        }
    }
    let acc = for_each_shard(opts.shard_parallelism, |shard| {
        let client = client.clone();
        async move {
            let mut acc = Acc::default();
            let mut start = InodeId::NULL;
            loop {
                let req = VisitDirectoriesReq {
                    start_id: start,
                    mtu: MAX_UDP_MTU,
                };
                match client.shard_request(shard, req).await {
                    Ok(r) => {
                        acc.0.extend(r.dirs);
                        match r.next_id {
                            Some(n) => start = n,
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::warn!("visiting the directories of shard {shard}: {e}");
                        acc.1.errors += 1;
                        break;
                    }
                }
            }
            acc
        }
    })
    .await;
    let map = acc
        .0
        .into_iter()
        .map(|d| (d.id, (d.owner_id, d.snapshot)))
        .collect();
    (map, acc.1)
}

/// The snapshot policy in force in `dir`: its own, or the nearest ancestor's. A removed
/// directory (no owner) inherits from nobody: its own policy, or the root's.
pub fn effective_policy(
    dirs: &DirMap,
    root: &SnapshotPolicy,
    dir: InodeId,
) -> Option<SnapshotPolicy> {
    let mut id = dir;
    // Bounded: a loop (never expected) must not hang the GC.
    for _ in 0..4096 {
        let (owner, own) = dirs.get(&id)?;
        if let Some(p) = own {
            return Some(p.clone());
        }
        if owner.is_null() {
            return Some(root.clone());
        }
        id = *owner;
    }
    None
}

async fn collect_one(
    client: &Client,
    dirs: &DirMap,
    root: &SnapshotPolicy,
    dir: InodeId,
) -> CollectStats {
    let mut s = CollectStats {
        directories: 1,
        ..Default::default()
    };
    let Some(policy) = effective_policy(dirs, root, dir) else {
        s.skipped += 1;
        return s;
    };
    let mut start = None;
    loop {
        let req = CollectDirectoryReq {
            dir_id: dir,
            policy: policy.clone(),
            start,
        };
        match client.shard_request(dir.shard(), req).await {
            Ok(r) => {
                s.removed_edges += r.removed_edges as u64;
                s.released_files += r.released_files as u64;
                match r.next {
                    Some(c) => start = Some(c),
                    None => break,
                }
            }
            Err(e) if e.eggs() == Some(EggsError::DirectoryNotFound) => return s,
            Err(e) => {
                tracing::warn!("collecting directory {dir}: {e}");
                s.errors += 1;
                return s;
            }
        }
    }
    let removed = dirs.get(&dir).is_some_and(|(o, _)| o.is_null()) && dir != InodeId::ROOT;
    if removed {
        let req = DestroyDirectoryReq {
            dir_id: dir,
            delete_after_ns: policy.delete_after_ns,
        };
        match client.shard_request(dir.shard(), req).await {
            Ok(_) => s.destroyed_directories += 1,
            Err(e) => match e.eggs() {
                // Not yet: it still has edges, is too young, or was re-attached.
                Some(
                    EggsError::NotExpiredYet
                    | EggsError::DirectoryNotEmpty
                    | EggsError::DirectoryNotRemoved,
                ) => {}
                _ => {
                    tracing::warn!("destroying removed directory {dir}: {e}");
                    s.errors += 1;
                }
            },
        }
    }
    s
}

/// Makes the files released by `shard` transient on their own shards, then forgets the
/// release records (in that order: a crash in between only repeats idempotent work).
async fn complete_releases(client: &Client, shard: ShardId) -> CollectStats {
    let mut s = CollectStats::default();
    let mut start = InodeId::NULL;
    loop {
        let req = VisitReleasedFilesReq {
            start_id: start,
            mtu: MAX_UDP_MTU,
        };
        let r = match client.shard_request(shard, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("visiting the released files of shard {shard}: {e}");
                s.errors += 1;
                return s;
            }
        };
        for file_id in r.file_ids {
            let made = client
                .shard_request(file_id.shard(), MakeFileTransientReq { file_id })
                .await;
            let forgot = match made {
                Ok(_) => {
                    client
                        .shard_request(shard, ForgetReleasedFileReq { file_id })
                        .await
                }
                Err(e) => Err(e),
            };
            match forgot {
                Ok(_) => s.remote_releases += 1,
                Err(e) => {
                    tracing::warn!("releasing file {file_id} (recorded by shard {shard}): {e}");
                    s.errors += 1;
                }
            }
        }
        match r.next_id {
            Some(n) => start = n,
            None => return s,
        }
    }
}
