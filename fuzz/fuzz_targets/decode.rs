//! Feeds arbitrary bytes to the decoder of every top-level message type.
//!
//! Decoding must never panic. Whenever it succeeds, the message must re-encode to exactly the
//! input bytes (every message has a single encoding) and decode again to an equal value.

#![no_main]

use eggs_protocol::blocks::{BlocksRequest, BlocksResponse};
use eggs_protocol::cdc::{CdcRequest, CdcResponse};
use eggs_protocol::shard::{ShardRequest, ShardResponse};
use eggs_protocol::shuckle::{ShuckleRequest, ShuckleResponse};
use eggs_protocol::{decode, encode, Message};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

fn check<M: Message + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(m) = decode::<M>(bytes) else {
        return;
    };
    let again = encode(&m);
    assert_eq!(again, bytes, "{m:?} re-encodes differently");
    match decode::<M>(&again) {
        Ok(m2) => assert_eq!(m2, m),
        Err(e) => panic!("{m:?} re-encodes to bytes that do not decode: {e}"),
    }
}

/// Decodes `body` as the message type picked by `selector`, with that type's magic in front,
/// so that the fuzzer need not discover the magics before it can explore message bodies.
fn check_with_magic(selector: u8, body: &[u8]) {
    fn go<M: Message + PartialEq + Debug>(body: &[u8]) {
        let mut bytes = M::MAGIC.to_vec();
        bytes.extend_from_slice(body);
        check::<M>(&bytes);
    }
    match selector % 8 {
        0 => go::<ShardRequest>(body),
        1 => go::<ShardResponse>(body),
        2 => go::<CdcRequest>(body),
        3 => go::<CdcResponse>(body),
        4 => go::<ShuckleRequest>(body),
        5 => go::<ShuckleResponse>(body),
        6 => go::<BlocksRequest>(body),
        _ => go::<BlocksResponse>(body),
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw input, for every type (this also exercises magic and length checks).
    check::<ShardRequest>(data);
    check::<ShardResponse>(data);
    check::<CdcRequest>(data);
    check::<CdcResponse>(data);
    check::<ShuckleRequest>(data);
    check::<ShuckleResponse>(data);
    check::<BlocksRequest>(data);
    check::<BlocksResponse>(data);
    // The first byte picks a type, the rest is its body.
    if let Some((&selector, body)) = data.split_first() {
        check_with_magic(selector, body);
    }
});
