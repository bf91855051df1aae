//! Spans stored in blocks: placement on block services, certificates and proofs.

use super::{ShardCore, Tx, R};
use crate::keys;
use crate::kv::Kv;
use crate::values::{self, BlockValue, BlocksValue, SpanStorage, SpanValue, TransientFileBody};
use eggs_common::crypto;
use eggs_protocol::policy::{Parity, StorageClass};
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::{flags, BlockServiceWithKey};
use eggs_protocol::{BlockId, BlockServiceId, EggsError, EggsTime, InodeId, ShardId};
use rand::Rng;

/// Flags that keep a block service from getting new blocks.
pub(super) const NO_NEW_BLOCKS: u8 =
    flags::NO_WRITE | flags::READ_ONLY | flags::DECOMMISSIONED | flags::STALE | flags::NO_READ;

impl<K: Kv> ShardCore<K> {
    pub(super) fn add_span_initiate(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &AddSpanInitiateReq,
    ) -> R<AddSpanInitiateResp> {
        let mut t = self.transient_for_write(shard, r.file_id, r.cookie)?;
        if t.uncertified_span.is_some() {
            return Err(EggsError::SpanNotCertified.into());
        }
        if r.byte_offset != t.size {
            return Err(EggsError::BadSpanOffset.into());
        }
        let block_size = check_span_shape(r)?;
        let chosen = self.place_blocks(r.storage_class, r.parity, &r.blacklist)?;
        // `check_span_shape` checked one CRC per block, `place_blocks` one service per block:
        // a mismatch would make the zip below drop blocks silently.
        assert_eq!(chosen.len(), r.block_crcs.len(), "services for a span");
        let mut targets = Vec::with_capacity(chosen.len());
        let mut blocks = Vec::with_capacity(chosen.len());
        for (service, &crc) in chosen.iter().zip(&r.block_crcs) {
            let block_id = self.new_block_id(shard, tx);
            let certificate = crypto::write_certificate(
                &service.secret_key,
                service.info.id,
                block_id,
                crc,
                block_size,
            );
            targets.push(BlockWriteTarget {
                block_service_id: service.info.id,
                addr: service.info.addr,
                block_id,
                certificate,
            });
            blocks.push(BlockValue {
                block_service_id: service.info.id,
                block_id,
                crc,
            });
        }
        let span = SpanValue {
            size: r.size,
            crc: r.crc,
            storage: SpanStorage::Blocks(BlocksValue {
                parity: r.parity,
                storage_class: r.storage_class,
                stripes: r.stripes,
                cell_size: r.cell_size,
                blocks,
                certified: false,
            }),
        };
        self.put_span(tx, r.file_id, r.byte_offset, None, &span);
        // A u32 per span on a size that counts real spans: never near 2^64.
        let Some(size) = t.size.checked_add(u64::from(r.size)) else {
            panic!(
                "file {} size {} + span {} overflows",
                r.file_id, t.size, r.size
            );
        };
        t.size = size;
        t.uncertified_span = Some(r.byte_offset);
        self.touch_transient(tx, r.file_id, t);
        Ok(AddSpanInitiateResp { blocks: targets })
    }

    pub(super) fn add_span_certify(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &AddSpanCertifyReq,
    ) -> R<AddSpanCertifyResp> {
        let mut t = self.transient_for_write(shard, r.file_id, r.cookie)?;
        let (_, mut span) = self.get_span(r.file_id, r.byte_offset)?;
        let SpanStorage::Blocks(b) = &mut span.storage else {
            return Err(EggsError::BadSpanOffset.into());
        };
        if b.certified {
            return Ok(AddSpanCertifyResp {});
        }
        if r.proofs.len() != b.blocks.len() {
            return Err(EggsError::BadCertificate.into());
        }
        // Only the last span can be uncertified (nothing is added after it).
        assert_eq!(
            t.uncertified_span,
            Some(r.byte_offset),
            "uncertified span elsewhere"
        );
        for (blk, proof) in b.blocks.iter().zip(&r.proofs) {
            let service = self.service(blk.block_service_id)?;
            let expected =
                crypto::write_proof(&service.secret_key, blk.block_service_id, blk.block_id);
            if !crypto::verify(&expected, proof) {
                return Err(EggsError::BadCertificate.into());
            }
        }
        b.certified = true;
        // Same blocks: the index does not change.
        tx.put(keys::span(r.file_id, r.byte_offset), &span);
        t.uncertified_span = None;
        self.touch_transient(tx, r.file_id, t);
        Ok(AddSpanCertifyResp {})
    }

    pub(super) fn remove_span(
        &mut self,
        shard: ShardId,
        tx: &mut Tx,
        r: &RemoveSpanReq,
    ) -> R<RemoveSpanResp> {
        let mut t = self.transient_for_write(shard, r.file_id, r.cookie)?;
        let (_, span) = self.get_span(r.file_id, r.byte_offset)?;
        // Only the last span can go: files never have holes.
        if r.byte_offset + span.size as u64 != t.size {
            return Err(EggsError::BadSpanOffset.into());
        }
        let mut blocks = Vec::new();
        if let SpanStorage::Blocks(b) = &span.storage {
            // A service we no longer know cannot be asked to erase; GC will retry.
            blocks.extend(
                b.blocks
                    .iter()
                    .filter_map(|blk| self.erase_target(blk).ok()),
            );
        }
        self.delete_span(tx, r.file_id, r.byte_offset, &span)?;
        // The span ends at the file's size (checked above), so this cannot go below zero.
        let Some(size) = t.size.checked_sub(u64::from(span.size)) else {
            panic!(
                "file {}: span of {} beyond its size {}",
                r.file_id, span.size, t.size
            );
        };
        t.size = size;
        t.uncertified_span = None;
        self.touch_transient(tx, r.file_id, t);
        Ok(RemoveSpanResp { blocks })
    }

    /// Stores the span at `offset` of `file`, whose previous value was `old`, and keeps the
    /// block service -> files index (`keys::BS_FILES`) in step. Every write of a span that
    /// changes its blocks must come through here (or [`Self::delete_span`]).
    pub(super) fn put_span(
        &self,
        tx: &mut Tx,
        file: InodeId,
        offset: u64,
        old: Option<&SpanValue>,
        new: &SpanValue,
    ) {
        assert!(!file.is_dir(), "span of directory {file}");
        let before = blocks_per_service(old);
        let after = blocks_per_service(Some(new));
        for (service, _) in before.iter().filter(|(s, _)| !after.contains_key(s)) {
            tx.changes
                .delete(keys::bs_file_span(*service, file, offset));
        }
        for (service, n) in &after {
            if before.get(service) != Some(n) {
                tx.changes
                    .put(keys::bs_file_span(*service, file, offset), vec![*n]);
            }
        }
        tx.put(keys::span(file, offset), new);
    }

    /// Deletes the span at `offset` of `file` (whose value is `old`), its index entries and
    /// any block replacement in progress on it. Every removal of a span must come through
    /// here (file destruction included), or the index would point at spans that are gone.
    pub(super) fn delete_span(
        &self,
        tx: &mut Tx,
        file: InodeId,
        offset: u64,
        old: &SpanValue,
    ) -> R<()> {
        assert!(!file.is_dir(), "span of directory {file}");
        for service in blocks_per_service(Some(old)).keys() {
            tx.changes
                .delete(keys::bs_file_span(*service, file, offset));
        }
        let prefix = keys::block_replace_prefix(file, offset);
        let mut pending = Vec::new();
        self.kv.scan(&prefix, &prefix, &mut |k, _| {
            pending.push(k.to_vec());
            true
        })?;
        for k in pending {
            tx.changes.delete(k);
        }
        tx.changes.delete(keys::span(file, offset));
        Ok(())
    }

    fn touch_transient(&self, tx: &mut Tx, id: InodeId, mut t: TransientFileBody) {
        assert!(!id.is_dir(), "directory {id} as a transient file");
        t.mtime = tx.now;
        t.deadline = EggsTime(tx.now.0 + self.opts.transient_deadline_ns);
        tx.put(keys::transient(id), &t);
    }

    pub(super) fn get_span(&self, file: InodeId, offset: u64) -> R<(Vec<u8>, SpanValue)> {
        let key = keys::span(file, offset);
        match self.kv.get(&key)? {
            Some(v) => {
                let span = values::decode(&key, &v)?;
                Ok((key, span))
            }
            None => Err(EggsError::BadSpanOffset.into()),
        }
    }

    pub(super) fn service(&self, id: BlockServiceId) -> R<&BlockServiceWithKey> {
        self.block_services
            .get(&id)
            .ok_or(EggsError::BlockServiceNotFound.into())
    }

    /// Where and with what certificate `blk` can be erased: the one place erase certificates
    /// are made (span removal, span erasure by the GC, blocks replaced by scrubbing).
    /// `BlockServiceNotFound` for a service the shard no longer knows.
    pub(super) fn erase_target(&self, blk: &BlockValue) -> R<BlockWriteTarget> {
        let service = self.service(blk.block_service_id)?;
        Ok(BlockWriteTarget {
            block_service_id: blk.block_service_id,
            addr: service.info.addr,
            block_id: blk.block_id,
            certificate: crypto::erase_certificate(
                &service.secret_key,
                blk.block_service_id,
                blk.block_id,
            ),
        })
    }

    /// Block ids are unique across shards: a per-shard counter with the shard in the low byte.
    pub(super) fn new_block_id(&mut self, shard: ShardId, tx: &mut Tx) -> BlockId {
        let counter = &mut self.next_block_counter[shard.0 as usize];
        // Asserts that the counter fits: 2^56 blocks per shard is never reached, and `open`
        // refuses a stored counter beyond it.
        let id = BlockId::new(shard, *counter);
        *counter += 1;
        tx.changes.put(
            keys::meta(shard, keys::META_NEXT_BLOCK_COUNTER),
            counter.to_be_bytes().to_vec(),
        );
        id
    }

    /// Picks `data + parity` usable services of `class`, each in a different failure domain,
    /// at random weighted by free space so that disks fill evenly.
    fn place_blocks(
        &mut self,
        class: StorageClass,
        parity: Parity,
        blacklist: &[BlockServiceId],
    ) -> R<Vec<BlockServiceWithKey>> {
        let want = (parity.data + parity.parity) as usize;
        let mut candidates: Vec<&BlockServiceWithKey> = self
            .block_services
            .values()
            .filter(|s| {
                s.info.storage_class == class
                    && s.info.flags & NO_NEW_BLOCKS == 0
                    && !blacklist.contains(&s.info.id)
            })
            .collect();
        // Deterministic order before random choices, so a seeded run replays exactly.
        candidates.sort_by_key(|s| s.info.id);
        let mut chosen: Vec<BlockServiceWithKey> = Vec::with_capacity(want);
        while chosen.len() < want {
            candidates.retain(|c| {
                !chosen
                    .iter()
                    .any(|s| s.info.failure_domain == c.info.failure_domain)
            });
            if candidates.is_empty() {
                return Err(EggsError::NotEnoughBlockServices.into());
            }
            let i = pick_by_free_space(&mut self.rng, &candidates);
            chosen.push(candidates[i].clone());
        }
        let mut domains: Vec<_> = chosen.iter().map(|s| s.info.failure_domain).collect();
        domains.sort_unstable();
        domains.dedup();
        assert_eq!(
            domains.len(),
            want,
            "two blocks of a span in one failure domain"
        );
        Ok(chosen)
    }
}

/// Checks that the span's shape is consistent; returns the size of each block.
fn check_span_shape(r: &AddSpanInitiateReq) -> R<u32> {
    let bad = || EggsError::MalformedRequest.into();
    if !r.parity.is_valid() || r.storage_class == StorageClass::Inline {
        return Err(bad());
    }
    if r.block_crcs.len() != (r.parity.data + r.parity.parity) as usize {
        return Err(bad());
    }
    if r.cell_size == 0 || !r.cell_size.is_multiple_of(4096) || r.stripes == 0 || r.size == 0 {
        return Err(bad());
    }
    let block_size = (r.stripes as u64) * (r.cell_size as u64);
    let capacity = block_size * r.parity.data as u64;
    if block_size > u32::MAX as u64 || (r.size as u64) > capacity {
        return Err(bad());
    }
    // The last stripe must hold data: no block is pure padding.
    if (r.size as u64) <= capacity - (r.cell_size as u64) * (r.parity.data as u64) {
        return Err(bad());
    }
    // Checked against u32::MAX above.
    Ok(eggs_protocol::conv::fit::<u32, u64>(block_size))
}

/// How many blocks of a span each block service holds (normally one: a span's blocks are in
/// distinct failure domains).
fn blocks_per_service(span: Option<&SpanValue>) -> std::collections::BTreeMap<BlockServiceId, u8> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(SpanValue {
        storage: SpanStorage::Blocks(b),
        ..
    }) = span
    {
        for blk in &b.blocks {
            let n: &mut u8 = out.entry(blk.block_service_id).or_default();
            *n = n.saturating_add(1);
        }
    }
    out
}

/// Index of one of `candidates` (not empty) chosen at random, weighted by free space, so
/// that disks fill evenly. Shared by block placement and block replacement.
pub(super) fn pick_by_free_space(
    rng: &mut rand::rngs::StdRng,
    candidates: &[&BlockServiceWithKey],
) -> usize {
    assert!(!candidates.is_empty(), "no candidate to pick from");
    let weights: Vec<u64> = candidates
        .iter()
        .map(|c| c.info.available_bytes / 4096 + 1)
        .collect();
    // Free space is what block services report: a huge sum must not overflow. Saturated,
    // the total is below the true sum, so the walk below still ends within `weights`.
    let total = weights.iter().fold(0u64, |a, &w| a.saturating_add(w));
    let mut pick = rng.gen_range(0..total);
    let mut i = 0;
    while pick >= weights[i] {
        pick -= weights[i];
        i += 1;
    }
    assert!(i < candidates.len());
    i
}
