//! MACs that authorise block writes and erasures.
//!
//! Every block service has a 16-byte secret key, which it gives only to shuckle (shards get it
//! from there). A shard that decides where a block goes signs a *certificate* with that key;
//! the block service refuses a write or an erasure whose certificate does not verify, so a
//! client cannot write or erase blocks the shard did not allocate or release. Once done, the
//! block service answers with a *proof*, which the shard checks before it believes the block
//! was written (or erased).
//!
//! The MAC is SipHash-2-4 keyed with the 16-byte key (a PRF designed for short inputs, with
//! an 8-byte output, and cheap enough to run per request) over a message made of a one-byte
//! domain tag followed by fixed-width little-endian fields:
//!
//! | MAC | tag | fields after the tag |
//! |---|---|---|
//! | [`write_certificate`] | `w` (0x77) | block service id `u64`, block id `u64`, crc `u32`, size `u32` |
//! | [`write_proof`] | `W` (0x57) | block service id `u64`, block id `u64` |
//! | [`erase_certificate`] | `e` (0x65) | block service id `u64`, block id `u64` |
//! | [`erase_proof`] | `E` (0x45) | block service id `u64`, block id `u64` |
//!
//! The tag keeps the four domains apart: a proof can never be replayed as a certificate of
//! another kind, even for equal fields. The 8-byte result is SipHash's `u64` in little-endian.
//! Fixed-width fields make every message of one domain the same length, so no two field
//! tuples share an encoding.

use eggs_protocol::{BlockId, BlockServiceId};
use siphasher::sip::SipHasher24;

/// A block service's secret key.
pub type BlockServiceKey = [u8; 16];

const WRITE_CERTIFICATE: u8 = b'w';
const WRITE_PROOF: u8 = b'W';
const ERASE_CERTIFICATE: u8 = b'e';
const ERASE_PROOF: u8 = b'E';

/// The certificate a shard signs to let a client write `size` bytes with CRC `crc` as block
/// `block_id` on the given block service.
pub fn write_certificate(
    key: &BlockServiceKey,
    block_service_id: BlockServiceId,
    block_id: BlockId,
    crc: u32,
    size: u32,
) -> [u8; 8] {
    let mut msg = [0u8; 25];
    msg[..17].copy_from_slice(&ids_message(WRITE_CERTIFICATE, block_service_id, block_id));
    msg[17..21].copy_from_slice(&crc.to_le_bytes());
    msg[21..25].copy_from_slice(&size.to_le_bytes());
    mac(key, &msg)
}

/// What a block service answers once the block is durably written.
pub fn write_proof(
    key: &BlockServiceKey,
    block_service_id: BlockServiceId,
    block_id: BlockId,
) -> [u8; 8] {
    mac(key, &ids_message(WRITE_PROOF, block_service_id, block_id))
}

/// The certificate a shard signs to let a client (usually GC) erase a block.
pub fn erase_certificate(
    key: &BlockServiceKey,
    block_service_id: BlockServiceId,
    block_id: BlockId,
) -> [u8; 8] {
    mac(
        key,
        &ids_message(ERASE_CERTIFICATE, block_service_id, block_id),
    )
}

/// What a block service answers once the block is durably gone.
pub fn erase_proof(
    key: &BlockServiceKey,
    block_service_id: BlockServiceId,
    block_id: BlockId,
) -> [u8; 8] {
    mac(key, &ids_message(ERASE_PROOF, block_service_id, block_id))
}

/// Compares two MACs in time independent of where they differ, so that a forger cannot
/// learn a valid MAC byte by byte from response times.
pub fn verify(expected: &[u8; 8], got: &[u8; 8]) -> bool {
    let diff = expected
        .iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    // black_box keeps the optimiser from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
}

fn ids_message(tag: u8, block_service_id: BlockServiceId, block_id: BlockId) -> [u8; 17] {
    let mut msg = [0u8; 17];
    msg[0] = tag;
    msg[1..9].copy_from_slice(&block_service_id.0.to_le_bytes());
    msg[9..17].copy_from_slice(&block_id.0.to_le_bytes());
    msg
}

fn mac(key: &BlockServiceKey, msg: &[u8]) -> [u8; 8] {
    SipHasher24::new_with_key(key).hash(msg).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const KEY: BlockServiceKey = *b"0123456789abcdef";
    const BS: BlockServiceId = BlockServiceId(0x1122_3344_5566_7788);
    const BLOCK: BlockId = BlockId(0x99aa_bbcc_ddee_ff00);

    #[test]
    fn siphash_reference_vector() {
        // From the SipHash paper (appendix A): key 00..0f, message 00..0e.
        let key: [u8; 16] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(mac(&key, &msg), 0xa129_ca61_49be_45e5u64.to_le_bytes());
    }

    #[test]
    fn write_certificate_depends_on_every_field_and_the_key() {
        let base = write_certificate(&KEY, BS, BLOCK, 7, 4096);
        let mut other_key = KEY;
        other_key[15] ^= 1;
        let variants = [
            write_certificate(&other_key, BS, BLOCK, 7, 4096),
            write_certificate(&KEY, BlockServiceId(BS.0 ^ 1), BLOCK, 7, 4096),
            write_certificate(&KEY, BS, BlockId(BLOCK.0 ^ 1), 7, 4096),
            write_certificate(&KEY, BS, BLOCK, 6, 4096),
            write_certificate(&KEY, BS, BLOCK, 7, 4097),
            // Swapping crc and size must not collide either.
            write_certificate(&KEY, BS, BLOCK, 4096, 7),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert_eq!(write_certificate(&KEY, BS, BLOCK, 7, 4096), base);
    }

    #[test]
    fn id_macs_depend_on_every_field_and_the_key() {
        type IdMac = fn(&BlockServiceKey, BlockServiceId, BlockId) -> [u8; 8];
        let macs: [IdMac; 3] = [write_proof, erase_certificate, erase_proof];
        let mut other_key = KEY;
        other_key[0] ^= 0x80;
        for f in macs {
            let base = f(&KEY, BS, BLOCK);
            assert_eq!(f(&KEY, BS, BLOCK), base, "deterministic");
            assert_ne!(f(&other_key, BS, BLOCK), base);
            assert_ne!(f(&KEY, BlockServiceId(BS.0 + 1), BLOCK), base);
            assert_ne!(f(&KEY, BS, BlockId(BLOCK.0 + 1)), base);
            // The two ids are not interchangeable.
            assert_ne!(f(&KEY, BlockServiceId(BLOCK.0), BlockId(BS.0)), base);
        }
    }

    #[test]
    fn domains_never_collide_for_equal_fields() {
        for (bs, block) in [(0, 0), (1, 2), (BS.0, BLOCK.0), (u64::MAX, u64::MAX)] {
            let (bs, block) = (BlockServiceId(bs), BlockId(block));
            let all = [
                write_certificate(&KEY, bs, block, 0, 0),
                write_proof(&KEY, bs, block),
                erase_certificate(&KEY, bs, block),
                erase_proof(&KEY, bs, block),
            ];
            let distinct: HashSet<[u8; 8]> = all.iter().copied().collect();
            assert_eq!(distinct.len(), all.len(), "collision for {bs:?} {block:?}");
        }
    }

    #[test]
    fn verify_compares_all_bytes() {
        let mac = erase_proof(&KEY, BS, BLOCK);
        assert!(verify(&mac, &mac));
        for i in 0..8 {
            let mut bad = mac;
            bad[i] ^= 0x01;
            assert!(!verify(&mac, &bad), "byte {i}");
        }
        assert!(!verify(&mac, &[0; 8]));
    }
}
