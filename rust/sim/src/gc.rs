//! A garbage-collection pass at checkpoints, with the requests `eggsgc` sends: transient
//! files past their deadline (creates that were given up on, or whose data went elsewhere)
//! are destroyed through the real shard cores, their blocks erased on the block services
//! with the certificates the shards sign.
//!
//! What it must preserve is checked around it: the model's checks before and after (no
//! linked file loses a byte or a block), and here that nothing expired is left behind.

use crate::blocks::BlockServices;
use eggs_protocol::shard::{
    PrepareSpanErasureReq, RemoveErasedSpanReq, RemoveTransientFileReq, ShardReq, ShardResp,
    VisitTransientFilesReq,
};
use eggs_protocol::{EggsError, EggsTime, InodeId, ShardId, DEFAULT_UDP_MTU};

/// A file never has more spans than this in the simulation (inline spans of at most 6000
/// bytes): a file still holding spans after as many removals is a bug.
const MAX_SPANS: usize = 64;

/// Sends one request to a shard core and returns its answer.
pub type Send<'a> = dyn FnMut(ShardId, ShardReq) -> Result<ShardResp, EggsError> + 'a;

/// What a pass did.
#[derive(Default, Debug)]
pub struct Collected {
    pub files: u64,
    pub blocks: u64,
}

/// Destroys every transient file past its deadline as of `now`; an error names what went
/// wrong.
pub fn collect_transient(
    send: &mut Send<'_>,
    blocks: &mut BlockServices,
    now: EggsTime,
) -> Result<Collected, String> {
    let mut out = Collected::default();
    for shard in ShardId::all() {
        for id in expired(send, shard, now)? {
            out.blocks += destroy(send, blocks, shard, id)?;
            out.files += 1;
        }
        if let Some(left) = expired(send, shard, now)?.first() {
            return Err(format!(
                "transient file {left:?} past its deadline survived GC"
            ));
        }
    }
    Ok(out)
}

/// The transient files of `shard` past their deadline.
fn expired(send: &mut Send<'_>, shard: ShardId, now: EggsTime) -> Result<Vec<InodeId>, String> {
    let mut ids = Vec::new();
    let mut start = InodeId::NULL;
    loop {
        let req = ShardReq::VisitTransientFiles(VisitTransientFilesReq {
            start_id: start,
            mtu: DEFAULT_UDP_MTU,
        });
        let r = match send(shard, req) {
            Ok(ShardResp::VisitTransientFiles(r)) => r,
            other => return Err(format!("visiting transient files of {shard}: {other:?}")),
        };
        ids.extend(r.files.iter().filter(|f| f.deadline <= now).map(|f| f.id));
        match r.next_id {
            Some(next) if next > start => start = next,
            Some(next) => return Err(format!("transient file listing went back to {next:?}")),
            None => return Ok(ids),
        }
    }
}

/// Erases and removes each span of `id`, then the file; returns the blocks erased.
fn destroy(
    send: &mut Send<'_>,
    blocks: &mut BlockServices,
    shard: ShardId,
    id: InodeId,
) -> Result<u64, String> {
    let mut erased = 0;
    for _ in 0..MAX_SPANS {
        let req = ShardReq::PrepareSpanErasure(PrepareSpanErasureReq { file_id: id });
        let prepared = match send(shard, req) {
            Ok(ShardResp::PrepareSpanErasure(r)) => r,
            other => return Err(format!("preparing the erasure of {id:?}: {other:?}")),
        };
        let Some(byte_offset) = prepared.byte_offset else {
            let req = ShardReq::RemoveTransientFile(RemoveTransientFileReq { file_id: id });
            return match send(shard, req) {
                Ok(ShardResp::RemoveTransientFile(_)) => Ok(erased),
                other => Err(format!("removing transient file {id:?}: {other:?}")),
            };
        };
        let mut proofs = Vec::with_capacity(prepared.blocks.len());
        for target in &prepared.blocks {
            let proof = blocks.erase(target).map_err(|e| {
                format!("a block service refused the erase certificate for {id:?}: {e:?}")
            })?;
            proofs.push(proof);
            erased += 1;
        }
        let req = ShardReq::RemoveErasedSpan(RemoveErasedSpanReq {
            file_id: id,
            byte_offset,
            proofs,
        });
        match send(shard, req) {
            Ok(ShardResp::RemoveErasedSpan(_)) => {}
            other => return Err(format!("removing an erased span of {id:?}: {other:?}")),
        }
    }
    Err(format!(
        "transient file {id:?} kept spans after {MAX_SPANS} removals"
    ))
}
