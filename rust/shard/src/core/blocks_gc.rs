//! Maintenance of blocks already written: listing what a block service holds (migration),
//! walking every file with spans (scrubbing), and replacing one block of a span by a copy on
//! another service.
//!
//! A replacement is two requests so that the GC never holds state the shard does not: the
//! initiate records the chosen target under `keys::block_replace`, the certify swaps the
//! block in the span only if the span still holds the old block and the proof is for the
//! recorded target. Re-running either step (after a crash, or by a second GC at the same
//! time) converges on one outcome; see `docs` of each function for the exact rules.

use super::page::{self, Page};
use super::spans::NO_NEW_BLOCKS;
use super::{ShardCore, Tx, R};
use crate::keys;
use crate::kv::Kv;
use crate::values::{self, BlockValue, PendingReplaceBody, SpanStorage};
use eggs_common::crypto;
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::BlockServiceWithKey;
use eggs_protocol::{BlockServiceId, EggsError, InodeId, ShardId};

/// Abandoned targets remembered per pending replacement; more than this many failed attempts
/// on one block means something else is wrong, and the oldest are forgotten (their blocks,
/// if any were written, become leftovers).
const MAX_ABANDONED: usize = 16;

impl<K: Kv> ShardCore<K> {
    pub(super) fn block_service_files(
        &self,
        shard: ShardId,
        r: &BlockServiceFilesReq,
    ) -> R<BlockServiceFilesResp> {
        let prefix = keys::bs_files_prefix(shard, r.block_service_id);
        let empty = ShardResp::BlockServiceFiles(BlockServiceFilesResp {
            next_file_id: Some(InodeId::NULL),
            file_ids: Vec::new(),
        });
        let page = Page::new(page::listing_limit(r.mtu), empty);
        let (next_file_id, file_ids) = self.distinct_files(&prefix, r.start_file_id, page)?;
        Ok(BlockServiceFilesResp {
            next_file_id,
            file_ids,
        })
    }

    pub(super) fn visit_files(&self, shard: ShardId, r: &VisitFilesReq) -> R<VisitFilesResp> {
        let prefix = keys::spans_of_shard(shard);
        let empty = ShardResp::VisitFiles(VisitFilesResp {
            next_file_id: Some(InodeId::NULL),
            file_ids: Vec::new(),
        });
        let page = Page::new(page::listing_limit(r.mtu), empty);
        let (next_file_id, file_ids) = self.distinct_files(&prefix, r.start_file_id, page)?;
        Ok(VisitFilesResp {
            next_file_id,
            file_ids,
        })
    }

    /// The distinct file ids among keys `prefix, file id, ...` from `start`, as many as fit
    /// in `page`, and where to continue. Each file costs one seek, however many spans it has.
    fn distinct_files(
        &self,
        prefix: &[u8],
        start: InodeId,
        mut page: Page,
    ) -> R<(Option<InodeId>, Vec<InodeId>)> {
        let mut ids = Vec::new();
        let mut from = start.0;
        loop {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&from.to_be_bytes());
            let mut found = None;
            self.kv.scan(prefix, &key, &mut |k, _| {
                found = keys::be_u64(&k[prefix.len()..]);
                false
            })?;
            let Some(id) = found else {
                return Ok((None, ids));
            };
            // Each seek starts past the last file: the scan must move forward.
            assert!(id >= from, "file scan went back");
            if !page.take(&InodeId(id)) {
                return Ok((Some(InodeId(id)), ids));
            }
            ids.push(InodeId(id));
            match id.checked_add(1) {
                Some(n) => from = n,
                None => return Ok((None, ids)),
            }
        }
    }

    /// Picks (or re-offers) where the copy of a span's block goes. Rules:
    /// - the span must exist, be certified and still hold `old_block_id` at `block_index`;
    /// - a pending replacement of the same old block whose target is neither blacklisted nor
    ///   unusable now is offered again (two GCs, or a GC re-run after a crash, write the same
    ///   copy rather than two);
    /// - otherwise a new target replaces it, and the previous target is kept as abandoned so
    ///   that whatever was written there is erased when the replacement completes.
    pub(super) fn replace_block_initiate(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &ReplaceBlockInitiateReq,
    ) -> R<ReplaceBlockInitiateResp> {
        self.check_file_exists(shard, r.file_id)?;
        let (_, span) = self.get_span(r.file_id, r.byte_offset)?;
        let SpanStorage::Blocks(b) = &span.storage else {
            return Err(EggsError::BadSpanOffset.into());
        };
        if !b.certified {
            return Err(EggsError::SpanNotCertified.into());
        }
        let idx = r.block_index as usize;
        let Some(old) = b.blocks.get(idx) else {
            return Err(EggsError::MalformedRequest.into());
        };
        if old.block_id != r.old_block_id {
            return Err(EggsError::BlockNotInSpan.into());
        }
        let size = (b.stripes as u32).saturating_mul(b.cell_size);
        let crc = old.crc;
        let pending_key = keys::block_replace(r.file_id, r.byte_offset, r.block_index);
        let pending: Option<PendingReplaceBody> = match self.kv.get(&pending_key)? {
            Some(v) => Some(values::decode(&pending_key, &v)?),
            None => None,
        }
        .filter(|p: &PendingReplaceBody| p.old_block_id == old.block_id);
        if let Some(p) = &pending {
            let usable = self
                .block_services
                .get(&p.new.block_service_id)
                .is_some_and(|s| s.info.flags & NO_NEW_BLOCKS == 0);
            if usable && !r.blacklist.contains(&p.new.block_service_id) {
                let target = self.write_target(&p.new, size)?;
                return Ok(ReplaceBlockInitiateResp { target, size, crc });
            }
        }
        let service = self.place_replacement(b, idx, &r.blacklist)?;
        let block_id = self.new_block_id(shard, tx);
        let new = BlockValue {
            block_service_id: service.info.id,
            block_id,
            crc,
        };
        let mut abandoned = Vec::new();
        if let Some(p) = pending {
            abandoned = p.abandoned;
            abandoned.push(p.new);
            let excess = abandoned.len().saturating_sub(MAX_ABANDONED);
            abandoned.drain(..excess);
        }
        assert!(abandoned.len() <= MAX_ABANDONED);
        let target = self.write_target(&new, size)?;
        let body = PendingReplaceBody {
            old_block_id: old.block_id,
            new,
            abandoned,
        };
        tx.put(pending_key, &body);
        Ok(ReplaceBlockInitiateResp { target, size, crc })
    }

    /// Swaps the new block into the span. Rules:
    /// - if the span already holds `new_block_id` at `block_index`, it is done: success with
    ///   nothing to erase (the first certify returned the erase certificates);
    /// - else the span must still hold `old_block_id` (`BlockNotInSpan`), and `new_block_id`
    ///   must be the pending target or one of its abandoned ones (`NoPendingReplacement`),
    ///   with a valid write proof from its service (`BadCertificate`);
    /// - the reply carries erase certificates for the old block and every other target of
    ///   the replacement (a copy may have been written to each).
    pub(super) fn replace_block_certify(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &ReplaceBlockCertifyReq,
    ) -> R<ReplaceBlockCertifyResp> {
        self.check_file_exists(shard, r.file_id)?;
        let (_, span) = self.get_span(r.file_id, r.byte_offset)?;
        let SpanStorage::Blocks(b) = &span.storage else {
            return Err(EggsError::BadSpanOffset.into());
        };
        let idx = r.block_index as usize;
        let Some(current) = b.blocks.get(idx) else {
            return Err(EggsError::MalformedRequest.into());
        };
        if current.block_id == r.new_block_id {
            return Ok(ReplaceBlockCertifyResp { erase: Vec::new() });
        }
        if current.block_id != r.old_block_id {
            return Err(EggsError::BlockNotInSpan.into());
        }
        let pending_key = keys::block_replace(r.file_id, r.byte_offset, r.block_index);
        let Some(v) = self.kv.get(&pending_key)? else {
            return Err(EggsError::NoPendingReplacement.into());
        };
        let pending: PendingReplaceBody = values::decode(&pending_key, &v)?;
        if pending.old_block_id != r.old_block_id {
            return Err(EggsError::NoPendingReplacement.into());
        }
        let mut targets = pending.abandoned;
        targets.push(pending.new);
        let Some(pos) = targets.iter().position(|t| t.block_id == r.new_block_id) else {
            return Err(EggsError::NoPendingReplacement.into());
        };
        let new = targets.remove(pos);
        let service = self.service(new.block_service_id)?;
        let expected = crypto::write_proof(&service.secret_key, new.block_service_id, new.block_id);
        if !crypto::verify(&expected, &r.proof) {
            return Err(EggsError::BadCertificate.into());
        }
        let mut updated = span.clone();
        let SpanStorage::Blocks(ub) = &mut updated.storage else {
            unreachable!("a copy of a span with blocks has none");
        };
        ub.blocks[idx] = new;
        targets.push(current.clone());
        // Nobody can erase on a service the shard no longer knows: those are left out.
        let erase = targets
            .iter()
            .filter_map(|blk| self.erase_target(blk).ok())
            .collect();
        self.put_span(tx, r.file_id, r.byte_offset, Some(&span), &updated);
        tx.changes.delete(pending_key);
        Ok(ReplaceBlockCertifyResp { erase })
    }

    /// The file must be linked or transient (a destroyed file's spans are not repaired).
    fn check_file_exists(&self, shard: ShardId, id: InodeId) -> R<()> {
        Self::check_owned(shard, id, Some(false))?;
        if self.kv.get(&keys::file(id))?.is_none() && self.kv.get(&keys::transient(id))?.is_none() {
            return Err(EggsError::FileNotFound.into());
        }
        Ok(())
    }

    /// A usable service of the span's class, in a failure domain that no other block of the
    /// span uses and holding none of its blocks, at random weighted by free space.
    fn place_replacement(
        &mut self,
        b: &crate::values::BlocksValue,
        idx: usize,
        blacklist: &[BlockServiceId],
    ) -> R<BlockServiceWithKey> {
        let used_domains: Vec<[u8; 16]> = b
            .blocks
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != idx)
            .filter_map(|(_, blk)| self.block_services.get(&blk.block_service_id))
            .map(|s| s.info.failure_domain)
            .collect();
        let mut candidates: Vec<&BlockServiceWithKey> = self
            .block_services
            .values()
            .filter(|s| {
                s.info.storage_class == b.storage_class
                    && s.info.flags & NO_NEW_BLOCKS == 0
                    && !blacklist.contains(&s.info.id)
                    && !used_domains.contains(&s.info.failure_domain)
                    && !b.blocks.iter().any(|blk| blk.block_service_id == s.info.id)
            })
            .collect();
        if candidates.is_empty() {
            return Err(EggsError::NotEnoughBlockServices.into());
        }
        // Deterministic order before the random choice, so a seeded run replays exactly.
        candidates.sort_by_key(|s| s.info.id);
        let i = super::spans::pick_by_free_space(&mut self.rng, &candidates);
        let chosen = candidates[i].clone();
        assert!(
            !used_domains.contains(&chosen.info.failure_domain),
            "domain taken"
        );
        Ok(chosen)
    }

    fn write_target(&self, blk: &BlockValue, size: u32) -> R<BlockWriteTarget> {
        let service = self.service(blk.block_service_id)?;
        Ok(BlockWriteTarget {
            block_service_id: blk.block_service_id,
            addr: service.info.addr,
            block_id: blk.block_id,
            certificate: crypto::write_certificate(
                &service.secret_key,
                blk.block_service_id,
                blk.block_id,
                blk.crc,
                size,
            ),
        })
    }
}

#[cfg(test)]
mod tests;
