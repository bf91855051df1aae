//! The crash policy at the edges: what outsiders send or stored data holds gets an error,
//! never one of the core's assertions.

use super::*;
use crate::kv::MemKv;
use eggs_protocol::policy::{Parity, StorageClass};
use eggs_protocol::shuckle::BlockServiceInfo;
use eggs_protocol::{Addr, BlockServiceId, Message, RequestHeader};
use rand::{Rng, SeedableRng};

fn core() -> ShardCore<MemKv> {
    let all: Vec<ShardId> = (0..=255).map(ShardId).collect();
    ShardCore::open(
        MemKv::default(),
        &all,
        ShardOptions::default(),
        EggsTime(1000),
    )
    .unwrap()
}

fn request(id: u64, body: ShardReq) -> ShardRequest {
    ShardRequest {
        header: RequestHeader {
            request_id: id,
            client_id: 9,
        },
        shard: ShardId(0),
        body,
    }
}

/// Random bytes shaped like a request (valid magic, header, shard and kind tag, then a body
/// of mostly small bytes so that lengths and options often decode): every one that decodes
/// is answered, and each write leaves exactly one dedup entry (asserted inside `handle`).
#[test]
fn garbage_requests_get_answers_not_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut c = core();
    let mut kinds = std::collections::BTreeSet::new();
    let mut now = 1_000_000;
    for i in 0..200_000u64 {
        let mut bytes = ShardRequest::MAGIC.to_vec();
        bytes.extend_from_slice(&i.to_le_bytes());
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&rng.gen_range(0u32..48).to_le_bytes());
        for _ in 0..rng.gen_range(0..80) {
            bytes.push(if rng.gen_bool(0.6) { 0 } else { rng.gen() });
        }
        let Ok(req) = codec::decode::<ShardRequest>(&bytes) else {
            continue;
        };
        kinds.insert(req.body.kind());
        now += 1000;
        let resp = c.handle(&req, EggsTime(now)).expect("no internal failure");
        assert_eq!(resp.request_id, i);
    }
    // The inputs reach most request kinds, not just the small ones.
    assert!(
        kinds.len() >= 25,
        "only {} kinds decoded: {kinds:?}",
        kinds.len()
    );
}

fn service(i: u64, available_bytes: u64) -> BlockServiceWithKey {
    BlockServiceWithKey {
        info: BlockServiceInfo {
            id: BlockServiceId(100 + i),
            addr: Addr {
                ip: [127, 0, 0, 1],
                port: 2000 + u16::try_from(i).unwrap(),
            },
            storage_class: StorageClass::Flash,
            failure_domain: [u8::try_from(i).unwrap(); 16],
            flags: 0,
            capacity_bytes: u64::MAX,
            available_bytes,
            blocks: 0,
            path: String::new(),
            last_seen: EggsTime(1),
        },
        secret_key: [u8::try_from(i).unwrap(); 16],
    }
}

/// Free space is what block services say about themselves: sums beyond u64 still place.
#[test]
fn placement_survives_absurd_free_space() {
    let mut c = core();
    c.set_block_services((0..6).map(|i| service(i, u64::MAX - i)).collect());
    let f = c
        .handle(
            &request(
                1,
                ShardReq::ConstructFile(ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                }),
            ),
            EggsTime(2000),
        )
        .unwrap();
    let Ok(ShardResp::ConstructFile(f)) = f.result else {
        panic!("construct failed: {f:?}");
    };
    let initiate = AddSpanInitiateReq {
        file_id: f.id,
        cookie: f.cookie,
        byte_offset: 0,
        size: 4 * 4096,
        crc: 1,
        storage_class: StorageClass::Flash,
        parity: Parity { data: 4, parity: 2 },
        stripes: 1,
        cell_size: 4096,
        block_crcs: vec![1; 6],
        blacklist: vec![],
    };
    let resp = c
        .handle(
            &request(2, ShardReq::AddSpanInitiate(initiate)),
            EggsTime(3000),
        )
        .unwrap();
    let Ok(ShardResp::AddSpanInitiate(r)) = resp.result else {
        panic!("initiate failed: {resp:?}");
    };
    assert_eq!(r.blocks.len(), 6);
}

/// Stored id counters beyond what a shard ever hands out are refused at open (a counter
/// would otherwise trip the overflow assertion at the next allocation, or wrap).
#[test]
fn corrupt_counters_are_refused_at_open() {
    for (field, bad) in [
        (keys::META_NEXT_FILE_COUNTER, InodeId::MAX_FILE_SEQ + 2),
        (keys::META_NEXT_BLOCK_COUNTER, BlockId::MAX_COUNTER + 2),
        (keys::META_NEXT_FILE_COUNTER, 0),
    ] {
        let kv = MemKv::default();
        let mut changes = Changes::default();
        changes.put(keys::meta(ShardId(3), field), bad.to_be_bytes().to_vec());
        kv.apply(changes).unwrap();
        let opened = ShardCore::open(kv, &[ShardId(3)], ShardOptions::default(), EggsTime(1));
        assert!(
            matches!(opened, Err(ShardError::Corrupt { .. })),
            "counter {field} = {bad}"
        );
    }
    // The largest counter a shard can still use opens (file and symlink counters stop
    // below the file kind bits of the id).
    let kv = MemKv::default();
    let mut changes = Changes::default();
    let last = InodeId::MAX_FILE_SEQ.to_be_bytes().to_vec();
    changes.put(keys::meta(ShardId(3), keys::META_NEXT_FILE_COUNTER), last);
    kv.apply(changes).unwrap();
    ShardCore::open(kv, &[ShardId(3)], ShardOptions::default(), EggsTime(1)).unwrap();
}

/// A dedup entry holding the answer of another request (corruption, or a key collision) is
/// an error, never an answer sent to the wrong request.
#[test]
fn a_dedup_entry_of_another_request_is_refused() {
    let mut c = core();
    let construct = || {
        ShardReq::ConstructFile(ConstructFileReq {
            typ: InodeType::File,
            attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
            rdev: 0,
        })
    };
    let resp = c.handle(&request(1, construct()), EggsTime(2000)).unwrap();
    let key = keys::dedup(ShardId(0), 9, 1);
    let stored = c.kv().get_dedup(&key).unwrap().expect("remembered");
    let mut changes = Changes::default();
    changes.put_dedup(keys::dedup(ShardId(0), 9, 2), stored);
    c.kv().apply(changes).unwrap();
    assert!(resp.result.is_ok());
    let again = c.handle(&request(2, construct()), EggsTime(3000));
    assert!(
        matches!(again, Err(ShardError::Corrupt { .. })),
        "{again:?}"
    );
}
