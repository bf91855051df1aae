//! What must be visible in the namespace, and the checks that compare it with what the
//! shards hold.
//!
//! Every change to a name `(directory, name)` happens on the directory's shard, which hands
//! out strictly increasing times; so the changes to one name are ordered by the times their
//! replies carry, whatever order the replies reach the clients in. The model keeps, per name,
//! the acknowledged change with the greatest such order (`Event::sort`). A cross-directory
//! move's removal of the old name carries no time of its own, but the old edge was locked
//! from before the move until it was removed, so it sorts right after the old edge's creation.
//!
//! Operations whose client gave up make their names uncertain until the next checkpoint,
//! where anything structurally sound is accepted for them and the model adopts what is there.

use eggs_client::span::{assemble, SpanLayout};
use eggs_protocol::shard::BlocksSpan;
use eggs_protocol::shard::{
    FileSpansReq, FullReadDirReq, ReadDirReq, ShardReq, ShardResp, SpanBody, StatDirectoryReq,
    StatDirectoryResp, StatFileReq, StatFileResp,
};
use eggs_protocol::{
    BlockId, BlockServiceId, EggsError, EggsTime, InodeAttrs, InodeId, InodeType, Name, ShardId,
    DEFAULT_UDP_MTU,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub type Key = (InodeId, Name);

/// A name's target and creation time; `None` when the name does not exist.
pub type EdgeState = Option<(InodeId, EggsTime)>;

/// What an acknowledged change must have left in the name's history (full listing).
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// An edge (or a deletion marker, with a null target) with exactly this time.
    Entry(InodeId, EggsTime),
    /// A deletion marker at a time the client does not know.
    AnyDeletion,
}

/// An acknowledged change of one name.
#[derive(Clone, Debug)]
pub struct Event {
    pub key: Key,
    pub sort: (u64, u8),
    /// The name's target and creation time afterwards, `None` if it no longer exists.
    pub state: EdgeState,
    pub expect: Expect,
}

/// A change whose client gave up waiting.
#[derive(Clone, Debug, Default)]
pub struct Unknown {
    pub keys: Vec<Key>,
    /// A move of `target` from `old` (created at the given time) to `new`: after it settles
    /// the target must be at exactly one of the two.
    pub rename: Option<(InodeId, Key, EggsTime, Key)>,
    /// A directory that may or may not have been removed or moved.
    pub dir: Option<InodeId>,
}

/// How an operation ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kind: &'static str,
    pub events: Vec<Event>,
    /// A directory an acknowledged rmdir removed.
    pub removed: Option<InodeId>,
    pub unknown: Option<Unknown>,
    /// A file whose data was all written before its link: id, length, CRC32C.
    pub file: Option<(InodeId, u64, u32)>,
    pub error: Option<EggsError>,
    /// Something the operation itself saw that can never be right.
    pub violation: Option<String>,
}

impl Outcome {
    pub fn new(kind: &'static str) -> Outcome {
        Outcome {
            kind,
            events: Vec::new(),
            removed: None,
            unknown: None,
            file: None,
            error: None,
            violation: None,
        }
    }
}

/// The expected namespace.
#[derive(Default)]
pub struct Model {
    /// Current edges as the acknowledged changes say, with the order of the change that set
    /// them; names without an entry do not exist (order (0, 0)).
    view: BTreeMap<Key, ((u64, u8), EdgeState)>,
    uncertain: BTreeSet<Key>,
    /// History entries acknowledged changes added since the last checkpoint.
    expected: BTreeMap<Key, Vec<Expect>>,
    /// Operations (acknowledged or not) that changed each name since the last checkpoint.
    touched: BTreeMap<Key, u32>,
    unknown_renames: Vec<(InodeId, Key, EggsTime, Key)>,
    uncertain_dirs: BTreeSet<InodeId>,
    removed: BTreeSet<InodeId>,
    /// Length and CRC32C of the data every created file must hold.
    files: BTreeMap<InodeId, (u64, u32)>,
    /// History of each name as of the last checkpoint: (target, time).
    seen: BTreeMap<Key, BTreeSet<(InodeId, EggsTime)>>,
}

/// Read access to the shards (real requests, handled by the cores) and the CDC.
pub trait Cluster {
    fn read(&mut self, shard: ShardId, req: ShardReq) -> Result<ShardResp, EggsError>;
    /// Whether a current edge is locked; `None` if it does not exist.
    fn edge_locked(&mut self, dir: InodeId, name: &Name) -> Option<bool>;
    /// A block as the block service holds it; `None` if it has no such block.
    fn read_block(&self, service: BlockServiceId, block: BlockId) -> Option<Vec<u8>>;
    /// Directory counters the CDC has handed out are `1..next_dir_counter`.
    fn next_dir_counter(&self) -> u64;
}

/// What a checkpoint found.
#[derive(Default, Debug)]
pub struct Observed {
    pub current: BTreeMap<Key, (InodeId, EggsTime)>,
    pub history: BTreeMap<Key, BTreeSet<(InodeId, EggsTime)>>,
    pub dirs: usize,
    pub files: usize,
}

impl Model {
    /// Applies an operation's outcome.
    pub fn record(&mut self, o: &Outcome) {
        for e in &o.events {
            let slot = self.view.entry(e.key.clone()).or_insert(((0, 0), None));
            if e.sort > slot.0 {
                *slot = (e.sort, e.state);
            }
            self.expected
                .entry(e.key.clone())
                .or_default()
                .push(e.expect.clone());
            *self.touched.entry(e.key.clone()).or_default() += 1;
        }
        if let Some((id, len, crc)) = o.file {
            self.files.insert(id, (len, crc));
        }
        if let Some(d) = o.removed {
            self.removed.insert(d);
        }
        if let Some(u) = &o.unknown {
            for k in &u.keys {
                self.uncertain.insert(k.clone());
                *self.touched.entry(k.clone()).or_default() += 1;
            }
            if let Some(r) = &u.rename {
                self.unknown_renames.push(r.clone());
            }
            if let Some(d) = u.dir {
                self.uncertain_dirs.insert(d);
            }
        }
    }

    /// Directories the model believes exist and are linked (the root first).
    pub fn live_dirs(&self) -> Vec<InodeId> {
        let mut out = vec![InodeId::ROOT];
        out.extend(
            self.view
                .values()
                .filter_map(|(_, s)| s.map(|(t, _)| t))
                .filter(|t| t.is_dir()),
        );
        out
    }

    /// Names the model believes exist, with their targets.
    pub fn live_edges(&self) -> Vec<(Key, InodeId)> {
        self.view
            .iter()
            .filter_map(|(k, (_, s))| s.map(|(t, _)| (k.clone(), t)))
            .collect()
    }

    /// Compares the quiescent cluster with the model, then adopts what it found (which
    /// settles the uncertain names). Returns every violation found.
    pub fn checkpoint(&mut self, c: &mut dyn Cluster) -> Result<Observed, Vec<String>> {
        let mut bad = Vec::new();
        // Directories whose histories the model may have expectations about.
        let mut dirs: BTreeSet<InodeId> =
            self.removed.union(&self.uncertain_dirs).copied().collect();
        dirs.extend(self.expected.keys().chain(self.view.keys()).map(|k| k.0));
        let obs = observe(c, &dirs, &mut bad);
        self.compare_current(&obs, &mut bad);
        self.compare_history(&obs, &mut bad);
        self.check_unknown_renames(&obs, &mut bad);
        self.check_contents(c, &obs, &mut bad);
        for &d in &self.removed {
            if self.uncertain_dirs.contains(&d) {
                continue;
            }
            match stat_dir(c, d).map(|s| s.owner_id) {
                Ok(owner) if owner.is_null() => {}
                Ok(owner) => bad.push(format!("removed directory {d:?} has owner {owner:?}")),
                Err(e) => bad.push(format!("removed directory {d:?}: {e}")),
            }
        }
        if !bad.is_empty() {
            return Err(bad);
        }
        self.view = obs
            .current
            .iter()
            .map(|(k, &(t, ct))| (k.clone(), ((ct.0, 0), Some((t, ct)))))
            .collect();
        self.seen = obs.history.clone();
        self.uncertain.clear();
        self.expected.clear();
        self.touched.clear();
        self.unknown_renames.clear();
        self.uncertain_dirs.clear();
        Ok(obs)
    }

    fn compare_current(&self, obs: &Observed, bad: &mut Vec<String>) {
        let keys: BTreeSet<&Key> = self.view.keys().chain(obs.current.keys()).collect();
        for k in keys {
            if self.uncertain.contains(k) {
                continue;
            }
            let want = self.view.get(k).and_then(|s| s.1);
            let got = obs.current.get(k).copied();
            if want != got {
                bad.push(format!(
                    "name {:?}/{}: expected {want:?}, found {got:?} (history {:?})",
                    k.0,
                    k.1,
                    obs.history.get(k)
                ));
            }
        }
    }

    /// Every acknowledged change left exactly its entries in the history, and nothing else
    /// appeared (a retried request applied twice would leave extra entries).
    fn compare_history(&self, obs: &Observed, bad: &mut Vec<String>) {
        let empty = BTreeSet::new();
        let keys: BTreeSet<&Key> = self.expected.keys().chain(obs.history.keys()).collect();
        for k in keys {
            if self.uncertain.contains(k) {
                continue;
            }
            let seen = self.seen.get(k).unwrap_or(&empty);
            let mut new: Vec<(InodeId, EggsTime)> = obs
                .history
                .get(k)
                .unwrap_or(&empty)
                .difference(seen)
                .copied()
                .collect();
            let mut expect = self.expected.get(k).cloned().unwrap_or_default();
            // Exact entries first, then deletions of unknown time.
            expect.sort_by_key(|e| matches!(e, Expect::AnyDeletion));
            for e in expect {
                let pos = match e {
                    Expect::Entry(t, ct) => new.iter().position(|&x| x == (t, ct)),
                    Expect::AnyDeletion => new.iter().position(|x| x.0.is_null()),
                };
                match pos {
                    Some(i) => {
                        new.remove(i);
                    }
                    None => bad.push(format!(
                        "name {:?}/{}: acknowledged change {e:?} missing from its history {:?}",
                        k.0,
                        k.1,
                        obs.history.get(k)
                    )),
                }
            }
            if !new.is_empty() {
                bad.push(format!(
                    "name {:?}/{}: history entries {new:?} that no acknowledged change made",
                    k.0, k.1
                ));
            }
        }
    }

    fn check_unknown_renames(&self, obs: &Observed, bad: &mut Vec<String>) {
        for (target, old, c0, new) in &self.unknown_renames {
            // Only when nothing else changed either name: otherwise anything may have happened.
            if self.touched.get(old) != Some(&1) || self.touched.get(new) != Some(&1) {
                continue;
            }
            let at_old = obs.current.get(old) == Some(&(*target, *c0));
            let at_new = obs.current.get(new).is_some_and(|e| e.0 == *target);
            if at_old == at_new {
                bad.push(format!(
                    "rename of {target:?} from {:?}/{} to {:?}/{} with unknown outcome is half \
                     applied: at old name {at_old}, at new name {at_new}",
                    old.0, old.1, new.0, new.1
                ));
            }
        }
    }
}

impl Model {
    /// Every linked file holds exactly the data its client wrote.
    fn check_contents(&self, c: &mut dyn Cluster, obs: &Observed, bad: &mut Vec<String>) {
        for &(target, _) in obs.current.values() {
            let Some(&(len, crc)) = self.files.get(&target) else {
                if !target.is_dir() {
                    bad.push(format!("file {target:?} was never created by a client"));
                }
                continue;
            };
            match read_file(c, target) {
                Ok(data) if data.len() as u64 == len && crc32c::crc32c(&data) == crc => {}
                Ok(data) => bad.push(format!(
                    "file {target:?} holds {} bytes (CRC {:08x}), written were {len} (CRC {crc:08x})",
                    data.len(),
                    crc32c::crc32c(&data)
                )),
                Err(e) => bad.push(format!("reading file {target:?}: {e}")),
            }
        }
    }
}

/// A file's data, from its inline spans and its block spans (read from the block services).
fn read_file(c: &mut dyn Cluster, id: InodeId) -> Result<Vec<u8>, EggsError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let req = ShardReq::FileSpans(FileSpansReq {
            file_id: id,
            byte_offset: offset,
            mtu: DEFAULT_UDP_MTU,
        });
        let ShardResp::FileSpans(r) = c.read(id.shard(), req)? else {
            return Err(EggsError::InternalError);
        };
        for s in r.spans {
            if s.byte_offset != out.len() as u64 {
                return Err(EggsError::InternalError);
            }
            match s.body {
                SpanBody::Inline(d) => out.extend(d),
                SpanBody::Blocks(b) => out.extend(read_block_span(c, &b, s.size, s.crc)?),
            }
        }
        match r.next_offset {
            Some(o) if o > offset => offset = o,
            Some(_) => return Err(EggsError::InternalError),
            None => return Ok(out),
        }
    }
}

/// A block span's logical bytes from its data blocks, each checked against the CRC the
/// shard recorded for it, and the whole against the span's CRC.
fn read_block_span(
    c: &dyn Cluster,
    b: &BlocksSpan,
    size: u32,
    crc: u32,
) -> Result<Vec<u8>, EggsError> {
    let layout = SpanLayout::from_fetched(b, size).map_err(|_| EggsError::InternalError)?;
    let mut data = Vec::with_capacity(layout.data_blocks());
    for blk in &b.blocks[..layout.data_blocks()] {
        let bytes = c
            .read_block(blk.block_service_id, blk.block_id)
            .ok_or(EggsError::BlockNotFound)?;
        if crc32c::crc32c(&bytes) != blk.crc {
            return Err(EggsError::BadBlockCrc);
        }
        data.push(bytes);
    }
    // Parity blocks must be there too (a wrongly erased one is lost redundancy).
    for blk in &b.blocks[layout.data_blocks()..] {
        if c.read_block(blk.block_service_id, blk.block_id).is_none() {
            return Err(EggsError::BlockNotFound);
        }
    }
    let out = assemble(&layout, &data, size as usize);
    if crc32c::crc32c(&out) != crc {
        return Err(EggsError::BadSpanCrc);
    }
    Ok(out)
}

fn stat_dir(c: &mut dyn Cluster, d: InodeId) -> Result<StatDirectoryResp, EggsError> {
    match c.read(
        d.shard(),
        ShardReq::StatDirectory(StatDirectoryReq { id: d }),
    )? {
        ShardResp::StatDirectory(s) => Ok(s),
        _ => Err(EggsError::InternalError),
    }
}

/// The simulated clients make every inode as root's with the default modes and never change
/// attributes, and every change that moves an inode's mtime moves its ctime too: other
/// attributes, or a ctime behind the mtime, are a violation.
fn check_dir_attrs(d: InodeId, s: &StatDirectoryResp, bad: &mut Vec<String>) {
    if s.attrs != InodeAttrs::ROOT_DIR || s.ctime < s.mtime {
        bad.push(format!(
            "directory {d:?}: attributes {:?}, mtime {:?}, ctime {:?}",
            s.attrs, s.mtime, s.ctime
        ));
    }
}

/// As [`check_dir_attrs`], for files (all regular: the clients make no special files).
fn check_file_attrs(f: InodeId, s: &StatFileResp, bad: &mut Vec<String>) {
    if s.attrs != InodeAttrs::ROOT_FILE || s.rdev != 0 || s.ctime < s.mtime {
        bad.push(format!(
            "file {f:?}: attributes {:?}, rdev {}, mtime {:?}, ctime {:?}",
            s.attrs, s.rdev, s.mtime, s.ctime
        ));
    }
}

fn read_dir(c: &mut dyn Cluster, d: InodeId) -> Result<Vec<(Name, InodeId, EggsTime)>, EggsError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let req = ShardReq::ReadDir(ReadDirReq {
            dir_id: d,
            start,
            mtu: DEFAULT_UDP_MTU,
        });
        let ShardResp::ReadDir(r) = c.read(d.shard(), req)? else {
            return Err(EggsError::InternalError);
        };
        out.extend(
            r.entries
                .into_iter()
                .map(|e| (e.name, e.target_id, e.creation_time)),
        );
        match r.next {
            Some(n) => start = Some(n),
            None => return Ok(out),
        }
    }
}

fn full_read_dir(
    c: &mut dyn Cluster,
    d: InodeId,
) -> Result<Vec<(Name, InodeId, EggsTime, bool)>, EggsError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let req = ShardReq::FullReadDir(FullReadDirReq {
            dir_id: d,
            start,
            mtu: DEFAULT_UDP_MTU,
        });
        let ShardResp::FullReadDir(r) = c.read(d.shard(), req)? else {
            return Err(EggsError::InternalError);
        };
        out.extend(
            r.entries
                .into_iter()
                .map(|e| (e.name, e.target_id, e.creation_time, e.current)),
        );
        match r.next {
            Some(n) => start = Some(n),
            None => return Ok(out),
        }
    }
}

/// Reads the whole namespace and checks what must hold whatever the clients did: one tree
/// from the root, every directory's owner matching the edge to it, every file in at most one
/// directory, no locked edge, no directory created but neither linked nor removed.
fn observe(c: &mut dyn Cluster, extra: &BTreeSet<InodeId>, bad: &mut Vec<String>) -> Observed {
    let mut obs = Observed::default();
    let mut parent: BTreeMap<InodeId, InodeId> = BTreeMap::new();
    let mut files: BTreeMap<InodeId, Key> = BTreeMap::new();
    let mut queue = VecDeque::from([InodeId::ROOT]);
    let mut visited = BTreeSet::from([InodeId::ROOT]);
    while let Some(d) = queue.pop_front() {
        obs.dirs += 1;
        let entries = match read_dir(c, d) {
            Ok(e) => e,
            Err(e) => {
                bad.push(format!("readdir of reachable directory {d:?}: {e}"));
                continue;
            }
        };
        for (name, target, ct) in entries {
            let key = (d, name.clone());
            if c.edge_locked(d, &name) != Some(false) {
                bad.push(format!(
                    "edge {d:?}/{name} -> {target:?} is locked after the CDC settled"
                ));
            }
            if target.is_dir() {
                if !visited.insert(target) {
                    bad.push(format!(
                        "directory {target:?} is linked twice (again at {d:?}/{name})"
                    ));
                    continue;
                }
                parent.insert(target, d);
                queue.push_back(target);
            } else {
                obs.files += 1;
                if let Some(other) = files.insert(target, key.clone()) {
                    bad.push(format!(
                        "file {target:?} is in two places: {:?}/{} and {d:?}/{name}",
                        other.0, other.1
                    ));
                }
                match c.read(
                    target.shard(),
                    ShardReq::StatFile(StatFileReq { id: target }),
                ) {
                    Ok(ShardResp::StatFile(s)) => check_file_attrs(target, &s, bad),
                    Ok(_) => bad.push(format!("file {target:?}: not a StatFile reply")),
                    Err(e) => bad.push(format!("file {target:?} at {d:?}/{name}: {e}")),
                }
            }
            obs.current.insert(key, (target, ct));
        }
    }
    for (&d, &p) in &parent {
        match stat_dir(c, d).map(|s| s.owner_id) {
            Ok(owner) if owner == p => {}
            Ok(owner) => bad.push(format!(
                "directory {d:?} is linked from {p:?} but its owner is {owner:?}"
            )),
            Err(e) => bad.push(format!("directory {d:?} linked from {p:?}: {e}")),
        }
    }
    check_all_directories(c, &visited, bad);
    // History of every directory that may hold names the model knows.
    let mut listed: BTreeSet<InodeId> = visited.clone();
    listed.extend(extra.iter().copied());
    for d in listed {
        let entries = match full_read_dir(c, d) {
            Ok(e) => e,
            Err(EggsError::DirectoryNotFound) => continue,
            Err(e) => {
                bad.push(format!("full readdir of {d:?}: {e}"));
                continue;
            }
        };
        for (name, target, ct, current) in entries {
            if current && !visited.contains(&d) {
                bad.push(format!(
                    "removed or unlinked directory {d:?} has current edge {name}"
                ));
            }
            obs.history
                .entry((d, name))
                .or_default()
                .insert((target, ct));
        }
    }
    obs
}

/// Every directory id the CDC ever handed out is either gone (never linked: rolled back),
/// removed (no owner, not linked), or linked from its owner.
fn check_all_directories(c: &mut dyn Cluster, linked: &BTreeSet<InodeId>, bad: &mut Vec<String>) {
    for counter in 1..c.next_dir_counter() {
        let shard = ShardId(eggs_protocol::conv::low_byte(counter));
        let d = InodeId::new(InodeType::Directory, shard, counter);
        let stat = stat_dir(c, d);
        if let Ok(s) = &stat {
            check_dir_attrs(d, s, bad);
        }
        match stat.map(|s| s.owner_id) {
            Err(EggsError::DirectoryNotFound) => {}
            Err(e) => bad.push(format!("stat of directory {d:?}: {e}")),
            Ok(owner) if owner.is_null() && linked.contains(&d) => {
                bad.push(format!("removed directory {d:?} is still linked"))
            }
            Ok(owner) if !owner.is_null() && !linked.contains(&d) => bad.push(format!(
                "directory {d:?} has owner {owner:?} but is not linked from the root (lost parent)"
            )),
            Ok(_) => {}
        }
    }
}
