//! An in-memory model of what one worker must see in the namespace, and a driver that applies
//! random operations to both the cluster and the model.
//!
//! Several workers share a few directories, but each only creates, renames and removes names
//! with its own prefix (`w<k>-`), and only inside the shared directories and the directories
//! it made itself. So each worker's model is exact however the workers interleave, while the
//! servers still see conflicting transactions on the same directories.
//!
//! An operation whose outcome is unknown (a time-out, or any error while processes are being
//! killed) is resolved by looking at the names it touches: they must show either the state
//! before it or the state after it, never a mix (a file in both places, or in neither).

use crate::{prng_crc, FastRng, HashSink, PrngReader};
use eggs_client::{Client, ClientError, FileWriter, Stat};
use eggs_protocol::{cdc, shard, EggsError, EggsTime, InodeId, Name, MAX_INLINE_SPAN};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a name points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// A file whose bytes are the first `size` bytes of the PRNG stream of `seed`.
    File {
        id: InodeId,
        seed: u64,
        size: u64,
    },
    Dir {
        id: InodeId,
    },
}

impl Node {
    pub fn id(&self) -> InodeId {
        match self {
            Node::File { id, .. } | Node::Dir { id } => *id,
        }
    }
}

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker number: its names start with `w<k>-`.
    pub worker: usize,
    /// Distinct names per directory (few, so that operations collide).
    pub names: usize,
    /// Files up to this size; above [`MAX_INLINE_SPAN`] they go to block services.
    pub max_file_bytes: u64,
    /// Share of files (0..=100) that may be large (block-backed); the rest stay inline.
    pub large_file_percent: u64,
    /// Whether every error is a possible fault artefact to resolve by looking (processes are
    /// being killed) rather than a failure when the model did not expect it.
    pub faults: bool,
    pub seed: u64,
}

/// Why a model check failed.
#[derive(Debug)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

type R<T> = Result<T, ModelError>;

fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(ModelError(msg.into()))
}

/// Counts of what a worker did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ops: u64,
    pub ok: u64,
    pub expected_errors: u64,
    /// Outcomes resolved by looking: (applied, not applied).
    pub resolved: (u64, u64),
    pub files_checked: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.ok += o.ok;
        self.expected_errors += o.expected_errors;
        self.resolved.0 += o.resolved.0;
        self.resolved.1 += o.resolved.1;
        self.files_checked += o.files_checked;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops ({} ok, {} expected errors, {} unknown outcomes: {} applied, {} not), {} \
             files read back",
            self.ops,
            self.ok,
            self.expected_errors,
            self.resolved.0 + self.resolved.1,
            self.resolved.0,
            self.resolved.1,
            self.files_checked
        )
    }
}

/// One worker's view of the namespace.
pub struct Worker {
    cfg: WorkerConfig,
    client: Arc<Client>,
    rng: FastRng,
    /// Every directory this worker tracks: the shared ones (only its own names in them) and
    /// its own.
    dirs: HashMap<InodeId, BTreeMap<String, Node>>,
    /// Owner of each of its own directories (shared ones have none here).
    parent: HashMap<InodeId, InodeId>,
    shared: Vec<InodeId>,
    next_seed: u64,
    pub stats: Stats,
}

/// A slot's state: what `(dir, name)` points at.
type Slot = (InodeId, String);

/// The state an operation leads to, for one slot: `Some(None)` = known absent,
/// `Some(Some(id))` = known target, and `New` = a new inode not known yet (a create whose
/// reply was lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Absent,
    Is(InodeId),
    NewFile { seed: u64, size: u64 },
    NewDir,
}

enum Op {
    Create {
        dir: InodeId,
        name: String,
        seed: u64,
        size: u64,
    },
    Mkdir {
        dir: InodeId,
        name: String,
    },
    Rename {
        from: InodeId,
        name: String,
        to: InodeId,
        new_name: String,
    },
    Unlink {
        dir: InodeId,
        name: String,
    },
    Rmdir {
        dir: InodeId,
        name: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create {
                dir,
                name,
                seed,
                size,
            } => write!(f, "create {dir}/{name} ({size} bytes, seed {seed})"),
            Op::Mkdir { dir, name } => write!(f, "mkdir {dir}/{name}"),
            Op::Rename {
                from,
                name,
                to,
                new_name,
            } => write!(f, "rename {from}/{name} -> {to}/{new_name}"),
            Op::Unlink { dir, name } => write!(f, "unlink {dir}/{name}"),
            Op::Rmdir { dir, name } => write!(f, "rmdir {dir}/{name}"),
        }
    }
}

/// How long an unknown outcome may take to settle (a transaction resuming after a restart).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Worker {
    pub fn new(client: Arc<Client>, shared: Vec<InodeId>, cfg: WorkerConfig) -> Worker {
        let dirs = shared.iter().map(|d| (*d, BTreeMap::new())).collect();
        Worker {
            rng: FastRng::new(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
            next_seed: cfg.seed.wrapping_mul(1 << 20),
            cfg,
            client,
            dirs,
            parent: HashMap::new(),
            shared,
            stats: Stats::default(),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn pick_dir(&mut self) -> InodeId {
        let mut all: Vec<InodeId> = self.dirs.keys().copied().collect();
        all.sort();
        all[self.below(all.len())]
    }

    fn pick_name(&mut self) -> String {
        let k = self.below(self.cfg.names);
        format!("w{}-{k}", self.cfg.worker)
    }

    fn lookup_model(&self, dir: InodeId, name: &str) -> Option<Node> {
        self.dirs.get(&dir).and_then(|d| d.get(name)).copied()
    }

    /// Whether `dir` is `anc` or below it.
    fn is_under(&self, mut dir: InodeId, anc: InodeId) -> bool {
        loop {
            if dir == anc {
                return true;
            }
            match self.parent.get(&dir) {
                Some(p) => dir = *p,
                None => return false,
            }
        }
    }

    fn pick_op(&mut self) -> Op {
        let dir = self.pick_dir();
        let existing: Vec<(String, Node)> = self.dirs[&dir]
            .iter()
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        let roll = self.below(100);
        if roll < 30 || existing.is_empty() {
            let name = self.pick_name();
            if roll.is_multiple_of(4) {
                return Op::Mkdir { dir, name };
            }
            let seed = self.next_seed;
            self.next_seed += 1;
            let large = self.below(100) < self.cfg.large_file_percent as usize;
            let max = if large {
                self.cfg.max_file_bytes
            } else {
                self.cfg.max_file_bytes.min(MAX_INLINE_SPAN as u64)
            };
            let size = self.rng.next_u64() % (max + 1);
            return Op::Create {
                dir,
                name,
                seed,
                size,
            };
        }
        let (name, node) = existing[self.below(existing.len())].clone();
        match (roll, node) {
            (30..=74, _) => {
                let to = if self.below(2) == 0 {
                    dir
                } else {
                    self.pick_dir()
                };
                let new_name = self.pick_name();
                Op::Rename {
                    from: dir,
                    name,
                    to,
                    new_name,
                }
            }
            (_, Node::File { .. }) => Op::Unlink { dir, name },
            (_, Node::Dir { .. }) => Op::Rmdir { dir, name },
        }
    }

    /// What the model says `op` does: the slots it changes (before, after), or `None` if it
    /// must fail.
    fn expect(&self, op: &Op) -> Option<Vec<(Slot, Want, Want)>> {
        let here = |d: InodeId, n: &str| match self.lookup_model(d, n) {
            Some(node) => Want::Is(node.id()),
            None => Want::Absent,
        };
        match op {
            Op::Create {
                dir,
                name,
                seed,
                size,
            } => match self.lookup_model(*dir, name) {
                Some(Node::Dir { .. }) => None,
                _ => Some(vec![(
                    (*dir, name.clone()),
                    here(*dir, name),
                    Want::NewFile {
                        seed: *seed,
                        size: *size,
                    },
                )]),
            },
            Op::Mkdir { dir, name } => match self.lookup_model(*dir, name) {
                Some(_) => None,
                None => Some(vec![((*dir, name.clone()), Want::Absent, Want::NewDir)]),
            },
            Op::Rename {
                from,
                name,
                to,
                new_name,
            } => {
                let src = self.lookup_model(*from, name)?;
                if from == to && name == new_name {
                    // The client answers this itself: nothing to do.
                    return Some(Vec::new());
                }
                let dst = self.lookup_model(*to, new_name);
                match (src, dst) {
                    (_, None) | (Node::File { .. }, Some(Node::File { .. })) => {}
                    _ => return None,
                }
                if let Node::Dir { id } = src {
                    if from != to && self.is_under(*to, id) {
                        return None;
                    }
                }
                Some(vec![
                    ((*from, name.clone()), Want::Is(src.id()), Want::Absent),
                    (
                        (*to, new_name.clone()),
                        here(*to, new_name),
                        Want::Is(src.id()),
                    ),
                ])
            }
            Op::Unlink { dir, name } => {
                let n = self.lookup_model(*dir, name)?;
                Some(vec![((*dir, name.clone()), Want::Is(n.id()), Want::Absent)])
            }
            Op::Rmdir { dir, name } => {
                let Some(Node::Dir { id }) = self.lookup_model(*dir, name) else {
                    return None;
                };
                if !self.dirs.get(&id).is_none_or(|c| c.is_empty()) {
                    return None;
                }
                Some(vec![((*dir, name.clone()), Want::Is(id), Want::Absent)])
            }
        }
    }

    /// Runs one random operation against the cluster and the model.
    pub async fn step(&mut self) -> R<()> {
        let op = self.pick_op();
        self.stats.ops += 1;
        let expected = self.expect(&op);
        let result = self.perform(&op).await;
        match (result, expected) {
            (Ok(new_id), Some(changes)) => {
                self.stats.ok += 1;
                self.apply(&op, &changes, new_id);
                Ok(())
            }
            (Ok(_), None) => fail(format!("{op} succeeded but the model says it must fail")),
            (Err(e), None) => {
                self.stats.expected_errors += 1;
                if self.cfg.faults || is_unknown(&e) {
                    // Whatever the answer was, it must have changed nothing.
                    self.settle(&op, &self.unchanged(&op)).await?;
                }
                Ok(())
            }
            (Err(e), Some(changes)) if self.cfg.faults || is_unknown(&e) => {
                match self.settle(&op, &changes).await? {
                    Some(new_id) => {
                        self.stats.resolved.0 += 1;
                        self.apply(&op, &changes, new_id);
                    }
                    None => self.stats.resolved.1 += 1,
                }
                Ok(())
            }
            (Err(e), _) => fail(format!("{op}: unexpected error {e}")),
        }
    }

    /// For an operation that must fail: the slots it names, unchanged.
    fn unchanged(&self, op: &Op) -> Vec<(Slot, Want, Want)> {
        let slot = |d: InodeId, n: &String| {
            let w = match self.lookup_model(d, n) {
                Some(node) => Want::Is(node.id()),
                None => Want::Absent,
            };
            ((d, n.clone()), w, w)
        };
        match op {
            Op::Create { dir, name, .. }
            | Op::Mkdir { dir, name }
            | Op::Unlink { dir, name }
            | Op::Rmdir { dir, name } => vec![slot(*dir, name)],
            Op::Rename {
                from,
                name,
                to,
                new_name,
            } => vec![slot(*from, name), slot(*to, new_name)],
        }
    }

    /// Sends the operation; returns the new inode for creates.
    async fn perform(&self, op: &Op) -> eggs_client::Result<Option<InodeId>> {
        let c = &self.client;
        let name = |n: &str| Name::new(n).expect("model names are valid");
        match op {
            Op::Create {
                dir,
                name: n,
                seed,
                size,
            } => {
                let data = PrngReader::new(*seed, *size);
                Ok(Some(FileWriter::write_in(c, *dir, &name(n), data).await?))
            }
            Op::Mkdir { dir, name: n } => Ok(Some(c.mkdir_in(*dir, &name(n)).await?)),
            Op::Rename {
                from,
                name: n,
                to,
                new_name,
            } => {
                // Operations are only ever picked on names the model holds.
                let Some(src) = self.lookup_model(*from, n) else {
                    return Err(ClientError::Eggs {
                        what: format!("model: no {from}/{n}"),
                        err: EggsError::NameNotFound,
                    });
                };
                let ctime = self.edge_time(*from, n, src.id()).await?;
                c.rename_edge(src.id(), *from, &name(n), ctime, *to, &name(new_name))
                    .await?;
                Ok(None)
            }
            Op::Unlink { dir, name: n } => {
                let e = c.lookup(*dir, &name(n)).await?;
                c.shard_request(
                    dir.shard(),
                    shard::SoftUnlinkFileReq {
                        dir_id: *dir,
                        target_id: e.target_id,
                        name: name(n),
                        creation_time: e.creation_time,
                    },
                )
                .await?;
                Ok(None)
            }
            Op::Rmdir { dir, name: n } => {
                let e = c.lookup(*dir, &name(n)).await?;
                c.cdc_request(cdc::RemoveDirectoryReq {
                    owner_id: *dir,
                    target_id: e.target_id,
                    name: name(n),
                    creation_time: e.creation_time,
                })
                .await?;
                Ok(None)
            }
        }
    }

    /// The creation time of the edge `dir/name`, which must point at `id`.
    async fn edge_time(&self, dir: InodeId, n: &str, id: InodeId) -> eggs_client::Result<EggsTime> {
        let name = Name::new(n).expect("model names are valid");
        let e = self.client.lookup(dir, &name).await?;
        if e.target_id != id {
            return Err(ClientError::Eggs {
                what: format!("model: {dir}/{n} points at {} not {id}", e.target_id),
                err: EggsError::MismatchingTarget,
            });
        }
        Ok(e.creation_time)
    }

    fn apply(&mut self, op: &Op, changes: &[(Slot, Want, Want)], new_id: Option<InodeId>) {
        let moved = match op {
            Op::Rename { from, name, .. } => self.lookup_model(*from, name),
            _ => None,
        };
        for ((dir, name), _, after) in changes {
            let entries = self.dirs.entry(*dir).or_default();
            match after {
                Want::Absent => {
                    if let Some(Node::Dir { id }) = entries.remove(name) {
                        if !matches!(op, Op::Rename { .. }) {
                            self.dirs.remove(&id);
                            self.parent.remove(&id);
                        }
                    }
                }
                Want::Is(_) => {
                    if let Some(node) = moved {
                        entries.insert(name.clone(), node);
                        if let Node::Dir { id } = node {
                            self.parent.insert(id, *dir);
                        }
                    }
                }
                Want::NewFile { seed, size } => {
                    if let Some(id) = new_id {
                        let f = Node::File {
                            id,
                            seed: *seed,
                            size: *size,
                        };
                        entries.insert(name.clone(), f);
                    }
                }
                Want::NewDir => {
                    if let Some(id) = new_id {
                        entries.insert(name.clone(), Node::Dir { id });
                        self.dirs.insert(id, BTreeMap::new());
                        self.parent.insert(id, *dir);
                    }
                }
            }
        }
    }

    /// What `dir/name` points at now (retrying transport errors while processes restart).
    async fn observe(&self, dir: InodeId, name: &str) -> R<Option<InodeId>> {
        let n = Name::new(name).expect("model names are valid");
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match self.client.lookup(dir, &n).await {
                Ok(e) => return Ok(Some(e.target_id)),
                Err(e) if e.eggs() == Some(EggsError::NameNotFound) => return Ok(None),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("observing {dir}/{name}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return fail(format!("cannot look up {dir}/{name}: {e}")),
            }
        }
    }

    /// Waits until the slots show the state before or after the operation (twice in a row,
    /// so that a transaction still running is not mistaken for one that never ran). Returns
    /// `Some(new inode)` if it was applied, `None` if not.
    async fn settle(&self, op: &Op, changes: &[(Slot, Want, Want)]) -> R<Option<Option<InodeId>>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = None;
        loop {
            let mut seen = Vec::new();
            for ((dir, name), _, _) in changes {
                seen.push(self.observe(*dir, name).await?);
            }
            let verdict = self.judge(changes, &seen).await?;
            if verdict.is_some() && last.as_ref() == Some(&seen) {
                return Ok(verdict);
            }
            if Instant::now() >= deadline {
                return fail(format!(
                    "{op} is half-applied: expected {:?} or {:?}, found {seen:?}",
                    changes.iter().map(|c| c.1).collect::<Vec<_>>(),
                    changes.iter().map(|c| c.2).collect::<Vec<_>>()
                ));
            }
            last = Some(seen);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `Some(None)` if `seen` is the state before, `Some(Some(new))` if it is the state after
    /// (with the new inode of a create), `None` if neither.
    async fn judge(
        &self,
        changes: &[(Slot, Want, Want)],
        seen: &[Option<InodeId>],
    ) -> R<Option<Option<InodeId>>> {
        let matches = |w: &Want, s: &Option<InodeId>| match (w, s) {
            (Want::Absent, None) => true,
            (Want::Is(a), Some(b)) => a == b,
            _ => false,
        };
        if changes.iter().zip(seen).all(|(c, s)| matches(&c.1, s)) {
            return Ok(Some(None));
        }
        let mut new_id = None;
        for ((_, before, after), s) in changes.iter().zip(seen) {
            match (after, s) {
                (Want::NewFile { seed, size }, Some(id))
                    if Want::Is(*id) != *before && !id.is_dir() =>
                {
                    self.check_file(*id, *seed, *size).await?;
                    new_id = Some(*id);
                }
                (Want::NewDir, Some(id)) if id.is_dir() => new_id = Some(*id),
                (w, s) if matches(w, s) => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(new_id))
    }

    /// Reads a file back and compares it with the PRNG stream it was written from.
    async fn check_file(&self, id: InodeId, seed: u64, size: u64) -> R<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut sink = HashSink::default();
            match self.client.read_file_to(id, &mut sink).await {
                Ok(_) => {
                    let want = tokio::task::spawn_blocking(move || prng_crc(seed, size))
                        .await
                        .map_err(|e| ModelError(format!("crc task: {e}")))?;
                    if sink.len != size || sink.crc != want {
                        return fail(format!(
                            "file {id} (seed {seed}): read {} bytes with CRC {:08x}, wrote \
                             {size} with {want:08x}",
                            sink.len, sink.crc
                        ));
                    }
                    return Ok(());
                }
                Err(e) if self.cfg.faults && Instant::now() < deadline => {
                    tracing::debug!("reading {id}: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return fail(format!("reading file {id} (seed {seed}): {e}")),
            }
        }
    }

    /// Compares the whole model with the cluster: every tracked directory lists exactly the
    /// model's names (its own names, in shared directories), every own directory has the
    /// right owner, and every file reads back bit-exact.
    pub async fn verify(&mut self) -> R<()> {
        let prefix = format!("w{}-", self.cfg.worker);
        let mut dirs: Vec<InodeId> = self.dirs.keys().copied().collect();
        dirs.sort();
        for dir in dirs {
            let listed = self.readdir(dir).await?;
            let actual: BTreeMap<String, InodeId> = listed
                .into_iter()
                .filter(|(n, _)| !self.shared.contains(&dir) || n.starts_with(&prefix))
                .collect();
            let model: BTreeMap<String, InodeId> = self.dirs[&dir]
                .iter()
                .map(|(n, v)| (n.clone(), v.id()))
                .collect();
            if actual != model {
                return fail(format!(
                    "directory {dir} lists {actual:?}, the model has {model:?}"
                ));
            }
            if let Some(parent) = self.parent.get(&dir) {
                match self.client.stat(dir).await {
                    Ok(Stat::Directory { owner_id, .. }) if owner_id == *parent => {}
                    other => {
                        return fail(format!(
                            "directory {dir} should be owned by {parent}: {other:?}"
                        ))
                    }
                }
            }
        }
        let files: Vec<(InodeId, u64, u64)> = self
            .dirs
            .values()
            .flat_map(|d| d.values())
            .filter_map(|n| match n {
                Node::File { id, seed, size } => Some((*id, *seed, *size)),
                Node::Dir { .. } => None,
            })
            .collect();
        for (id, seed, size) in files {
            self.check_file(id, seed, size).await?;
            self.stats.files_checked += 1;
        }
        Ok(())
    }

    async fn readdir(&self, dir: InodeId) -> R<Vec<(String, InodeId)>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match self.client.readdir(dir).await {
                Ok(v) => {
                    return Ok(v
                        .into_iter()
                        .map(|e| (e.name.to_string(), e.target_id))
                        .collect())
                }
                Err(e) if e.eggs().is_none() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return fail(format!("listing {dir}: {e}")),
            }
        }
    }

    /// Files the model holds: `(id, seed, size)`.
    pub fn file_count(&self) -> usize {
        self.dirs
            .values()
            .flat_map(|d| d.values())
            .filter(|n| matches!(n, Node::File { .. }))
            .count()
    }
}

/// Whether the request may or may not have been applied (no definite answer came back).
fn is_unknown(e: &ClientError) -> bool {
    matches!(e, ClientError::Timeout { .. } | ClientError::Io { .. })
}
