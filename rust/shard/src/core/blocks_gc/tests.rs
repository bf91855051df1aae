//! The block service -> files index, the file walk and block replacement, on an in-memory
//! store.

// Test code: casts of test patterns and sizes need no checking.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::super::{ShardCore, ShardOptions};
use crate::kv::MemKv;
use eggs_common::crypto;
use eggs_protocol::codec::RequestBody;
use eggs_protocol::policy::{Parity, StorageClass};
use eggs_protocol::shard::*;
use eggs_protocol::shuckle::{flags, BlockServiceInfo, BlockServiceWithKey};
use eggs_protocol::{
    Addr, BlockId, BlockServiceId, EggsError, EggsTime, InodeId, InodeType, Name, RequestHeader,
    ShardId,
};
use std::collections::HashSet;

const S0: ShardId = ShardId(0);

struct T {
    core: ShardCore<MemKv>,
    next_id: u64,
    now: u64,
    services: Vec<BlockServiceWithKey>,
}

/// `n` flash services, service `i` in failure domain `i % domains`.
fn services(n: u64, domains: u64) -> Vec<BlockServiceWithKey> {
    (0..n)
        .map(|i| BlockServiceWithKey {
            info: BlockServiceInfo {
                id: BlockServiceId(100 + i),
                addr: Addr {
                    ip: [127, 0, 0, 1],
                    port: 2000 + i as u16,
                },
                storage_class: StorageClass::Flash,
                failure_domain: [(i % domains) as u8; 16],
                flags: 0,
                capacity_bytes: 1 << 30,
                available_bytes: 1 << 29,
                blocks: 0,
                path: String::new(),
                last_seen: EggsTime(1),
            },
            secret_key: [i as u8 + 1; 16],
        })
        .collect()
}

impl T {
    fn new(services: Vec<BlockServiceWithKey>) -> T {
        let all: Vec<ShardId> = (0..=255).map(ShardId).collect();
        let mut core =
            ShardCore::open(MemKv::default(), &all, ShardOptions::default(), EggsTime(1)).unwrap();
        core.set_block_services(services.clone());
        T {
            core,
            next_id: 1,
            now: 1_000_000,
            services,
        }
    }

    fn req<B: RequestBody<Req = ShardReq, Resp = ShardResp>>(
        &mut self,
        b: B,
    ) -> Result<B::RespBody, EggsError> {
        self.next_id += 1;
        self.now += 1000;
        let req = ShardRequest {
            header: RequestHeader {
                request_id: self.next_id,
                client_id: 7,
            },
            shard: S0,
            body: b.into_req(),
        };
        let resp = self.core.handle(&req, EggsTime(self.now)).unwrap();
        resp.result
            .map(|r| B::from_resp(r).expect("response kind matches"))
    }

    fn key(&self, id: BlockServiceId) -> [u8; 16] {
        self.services
            .iter()
            .find(|s| s.info.id == id)
            .unwrap()
            .secret_key
    }

    fn proof(&self, t: &BlockWriteTarget) -> [u8; 8] {
        crypto::write_proof(
            &self.key(t.block_service_id),
            t.block_service_id,
            t.block_id,
        )
    }

    fn transient(&mut self) -> ConstructFileResp {
        self.req(ConstructFileReq {
            typ: InodeType::File,
            attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
            rdev: 0,
        })
        .unwrap()
    }

    /// Adds a certified RS(4,2) span of 2 stripes of 4 KiB at `offset`.
    fn add_span(&mut self, f: &ConstructFileResp, offset: u64) -> Vec<BlockWriteTarget> {
        let r = self
            .req(AddSpanInitiateReq {
                file_id: f.id,
                cookie: f.cookie,
                byte_offset: offset,
                size: 5 * 4096,
                crc: 1234,
                storage_class: StorageClass::Flash,
                parity: Parity { data: 4, parity: 2 },
                stripes: 2,
                cell_size: 4096,
                block_crcs: vec![1, 2, 3, 4, 5, 6],
                blacklist: vec![],
            })
            .unwrap();
        let proofs = r.blocks.iter().map(|b| self.proof(b)).collect();
        self.req(AddSpanCertifyReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: offset,
            proofs,
        })
        .unwrap();
        r.blocks
    }

    fn link(&mut self, f: &ConstructFileResp, name: &str) {
        self.req(LinkFileReq {
            file_id: f.id,
            cookie: f.cookie,
            owner_id: InodeId::ROOT,
            name: Name::new(name).unwrap(),
        })
        .unwrap();
    }

    /// Every file listed for a service, following pages.
    fn files_of(&mut self, bs: BlockServiceId) -> Vec<InodeId> {
        let mut out = Vec::new();
        let mut start = InodeId(0);
        loop {
            let r = self
                .req(BlockServiceFilesReq {
                    block_service_id: bs,
                    start_file_id: start,
                    mtu: 1472,
                })
                .unwrap();
            out.extend(r.file_ids);
            match r.next_file_id {
                Some(n) => start = n,
                None => return out,
            }
        }
    }

    fn blocks(&mut self, file: InodeId, offset: u64) -> Vec<FetchedBlock> {
        let r = self
            .req(FileSpansReq {
                file_id: file,
                byte_offset: offset,
                mtu: 1472,
            })
            .unwrap();
        match &r.spans[0].body {
            SpanBody::Blocks(b) => b.blocks.clone(),
            SpanBody::Inline(_) => panic!("block span expected"),
        }
    }
}

#[test]
fn index_follows_spans_added_and_removed() {
    let mut t = T::new(services(8, 8));
    let a = t.transient();
    let mut a_blocks = t.add_span(&a, 0);
    a_blocks.extend(t.add_span(&a, 5 * 4096));
    t.link(&a, "a");
    let b = t.transient();
    let b_blocks = t.add_span(&b, 0);
    for blk in &a_blocks {
        assert!(t.files_of(blk.block_service_id).contains(&a.id));
    }
    let a_services: HashSet<_> = a_blocks.iter().map(|b| b.block_service_id).collect();
    for blk in &b_blocks {
        assert!(t.files_of(blk.block_service_id).contains(&b.id));
    }
    // Files appear once however many of their spans use the service.
    for s in &t.services.clone() {
        let files = t.files_of(s.info.id);
        let unique: HashSet<_> = files.iter().collect();
        assert_eq!(unique.len(), files.len());
    }
    // Removing b's only span drops it from the index.
    t.req(RemoveSpanReq {
        file_id: b.id,
        cookie: b.cookie,
        byte_offset: 0,
    })
    .unwrap();
    for blk in &b_blocks {
        let files = t.files_of(blk.block_service_id);
        assert!(!files.contains(&b.id));
        assert_eq!(
            files.contains(&a.id),
            a_services.contains(&blk.block_service_id)
        );
    }
    let visited = t
        .req(VisitFilesReq {
            start_file_id: InodeId(0),
            mtu: 1472,
        })
        .unwrap();
    assert_eq!(visited.file_ids, vec![a.id]);
    assert_eq!(visited.next_file_id, None);
}

#[test]
fn visiting_files_pages_through_all_of_them_once() {
    let mut t = T::new(services(8, 8));
    let mut want = Vec::new();
    for i in 0..400 {
        let f = t.transient();
        t.req(AddInlineSpanReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 0,
            data: vec![i as u8; 10],
            crc: crc32c::crc32c(&[i as u8; 10]),
        })
        .unwrap();
        t.req(AddInlineSpanReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 10,
            data: vec![1; 10],
            crc: crc32c::crc32c(&[1; 10]),
        })
        .unwrap();
        want.push(f.id);
    }
    // An empty file has no spans and is not visited.
    t.transient();
    let mut got = Vec::new();
    let mut start = InodeId(0);
    let mut pages = 0;
    loop {
        let r = t
            .req(VisitFilesReq {
                start_file_id: start,
                mtu: 1472,
            })
            .unwrap();
        pages += 1;
        got.extend(r.file_ids);
        match r.next_file_id {
            Some(n) => start = n,
            None => break,
        }
    }
    assert!(pages > 1, "400 files fit in one page of 1472 bytes?");
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn replacing_a_block_is_idempotent_and_keeps_the_index() {
    // 8 failure domains of two services: the spare domains are 6 and 7 at first.
    let mut t = T::new(services(16, 8));
    let f = t.transient();
    let blocks = t.add_span(&f, 0);
    t.link(&f, "f");
    let old = blocks[2].clone();
    let init = |blacklist: Vec<BlockServiceId>| ReplaceBlockInitiateReq {
        file_id: f.id,
        byte_offset: 0,
        block_index: 2,
        old_block_id: old.block_id,
        blacklist,
    };
    let r1 = t.req(init(vec![])).unwrap();
    assert_eq!((r1.size, r1.crc), (8192, 3));
    let domain = |id: BlockServiceId| (id.0 - 100) % 8;
    let others: HashSet<u64> = blocks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, b)| domain(b.block_service_id))
        .collect();
    assert!(!others.contains(&domain(r1.target.block_service_id)));
    assert_ne!(r1.target.block_service_id, old.block_service_id);
    let cert = crypto::write_certificate(
        &t.key(r1.target.block_service_id),
        r1.target.block_service_id,
        r1.target.block_id,
        3,
        8192,
    );
    assert_eq!(cert, r1.target.certificate);
    // Asked again (a re-run, or a second GC): the same target.
    assert_eq!(t.req(init(vec![])).unwrap(), r1);
    // Its service failed for the caller: another target; the first one is abandoned.
    let r2 = t.req(init(vec![r1.target.block_service_id])).unwrap();
    assert_ne!(r2.target.block_service_id, r1.target.block_service_id);
    assert!(!others.contains(&domain(r2.target.block_service_id)));
    let certify = |new: &BlockWriteTarget, proof: [u8; 8]| ReplaceBlockCertifyReq {
        file_id: f.id,
        byte_offset: 0,
        block_index: 2,
        old_block_id: old.block_id,
        new_block_id: new.block_id,
        proof,
    };
    let mut bad = t.proof(&r1.target);
    bad[0] ^= 1;
    assert_eq!(
        t.req(certify(&r1.target, bad)),
        Err(EggsError::BadCertificate)
    );
    let stranger = BlockWriteTarget {
        block_id: BlockId(999_999),
        ..r1.target.clone()
    };
    assert_eq!(
        t.req(certify(&stranger, t.proof(&stranger))),
        Err(EggsError::NoPendingReplacement)
    );
    // The abandoned copy was written after all: it is accepted, and the other one erased.
    let done = t.req(certify(&r1.target, t.proof(&r1.target))).unwrap();
    let erased: HashSet<(BlockServiceId, BlockId)> = done
        .erase
        .iter()
        .map(|e| (e.block_service_id, e.block_id))
        .collect();
    assert_eq!(
        erased,
        HashSet::from([
            (old.block_service_id, old.block_id),
            (r2.target.block_service_id, r2.target.block_id)
        ])
    );
    let e = &done
        .erase
        .iter()
        .find(|e| e.block_id == old.block_id)
        .unwrap();
    assert_eq!(
        e.certificate,
        crypto::erase_certificate(
            &t.key(old.block_service_id),
            old.block_service_id,
            old.block_id
        )
    );
    let now = t.blocks(f.id, 0);
    assert_eq!(now[2].block_service_id, r1.target.block_service_id);
    assert_eq!(now[2].block_id, r1.target.block_id);
    assert_eq!(now[2].crc, 3);
    assert!(!t.files_of(old.block_service_id).contains(&f.id));
    assert!(t.files_of(r1.target.block_service_id).contains(&f.id));
    // A second certify (another GC, or a re-run with a new request id) is a no-op.
    let again = t.req(certify(&r1.target, t.proof(&r1.target))).unwrap();
    assert!(again.erase.is_empty());
    // The loser of two concurrent GCs learns the block moved on.
    assert_eq!(
        t.req(certify(&r2.target, t.proof(&r2.target))),
        Err(EggsError::BlockNotInSpan)
    );
    assert_eq!(t.req(init(vec![])), Err(EggsError::BlockNotInSpan));
}

#[test]
fn replacement_needs_a_free_failure_domain_and_a_certified_span() {
    // Exactly 6 domains for RS(4,2): only the old block's own domain is free.
    let mut svcs = services(12, 6);
    let mut t = T::new(svcs.clone());
    let f = t.transient();
    let blocks = t.add_span(&f, 0);
    let old = blocks[0].clone();
    let init = ReplaceBlockInitiateReq {
        file_id: f.id,
        byte_offset: 0,
        block_index: 0,
        old_block_id: old.block_id,
        blacklist: vec![],
    };
    let r = t.req(init.clone()).unwrap();
    let domain = |id: BlockServiceId| (id.0 - 100) % 6;
    assert_eq!(
        domain(r.target.block_service_id),
        domain(old.block_service_id)
    );
    // The sibling of the old service is decommissioned too: nowhere to go.
    for s in &mut svcs {
        if domain(s.info.id) == domain(old.block_service_id) {
            s.info.flags = flags::DECOMMISSIONED;
        }
    }
    t.core.set_block_services(svcs);
    assert_eq!(t.req(init), Err(EggsError::NotEnoughBlockServices));
    // An uncertified span belongs to its writer.
    let r = t
        .req(AddSpanInitiateReq {
            file_id: f.id,
            cookie: f.cookie,
            byte_offset: 5 * 4096,
            size: 5 * 4096,
            crc: 1,
            storage_class: StorageClass::Flash,
            parity: Parity { data: 1, parity: 1 },
            stripes: 5,
            cell_size: 4096,
            block_crcs: vec![1, 1],
            blacklist: vec![],
        })
        .unwrap();
    assert_eq!(
        t.req(ReplaceBlockInitiateReq {
            file_id: f.id,
            byte_offset: 5 * 4096,
            block_index: 0,
            old_block_id: r.blocks[0].block_id,
            blacklist: vec![],
        }),
        Err(EggsError::SpanNotCertified)
    );
    assert_eq!(
        t.req(ReplaceBlockInitiateReq {
            file_id: f.id,
            byte_offset: 0,
            block_index: 6,
            old_block_id: old.block_id,
            blacklist: vec![],
        }),
        Err(EggsError::MalformedRequest)
    );
}
