//! Reply budgets, computed from the codec: how large a reply may be ([`reply_limit`]) and
//! how many entries a listing may put in it ([`Page`]). A listing's fixed part is measured
//! on its largest empty reply (the longest cursor it could return), and each entry is
//! measured with `encoded_len()` before it is taken, so a reply that exceeds its limit cannot
//! be built; the server asserts it anyway when it encodes the reply.

use eggs_protocol::policy::{Parity, StorageClass};
use eggs_protocol::shard::*;
use eggs_protocol::{codec, EggsTime, EncodedLen, InodeId, Name};
use eggs_protocol::{DEFAULT_UDP_MTU, MAX_INLINE_SPAN, MAX_UDP_MTU};
use std::sync::LazyLock;

/// The largest encoded reply `req` may get. Listings get the `mtu` they ask for (at least
/// `DEFAULT_UDP_MTU`, at most `MAX_UDP_MTU`); file spans at least enough for the largest span
/// there is, since a span cannot be split across replies; everything else fits in any
/// datagram.
pub fn reply_limit(req: &ShardReq) -> usize {
    match req {
        ShardReq::ReadDir(r) => listing_limit(r.mtu),
        ShardReq::FullReadDir(r) => listing_limit(r.mtu),
        ShardReq::FileSpans(r) => spans_limit(r.mtu),
        ShardReq::BlockServiceFiles(r) => listing_limit(r.mtu),
        ShardReq::VisitFiles(r) => listing_limit(r.mtu),
        ShardReq::VisitDirectories(r) => listing_limit(r.mtu),
        ShardReq::VisitReleasedFiles(r) => listing_limit(r.mtu),
        ShardReq::VisitTransientFiles(r) => listing_limit(r.mtu),
        _ => MAX_UDP_MTU as usize,
    }
}

pub(super) fn listing_limit(mtu: u16) -> usize {
    mtu.clamp(DEFAULT_UDP_MTU, MAX_UDP_MTU) as usize
}

pub(super) fn spans_limit(mtu: u16) -> usize {
    listing_limit(mtu).max(*ONE_SPAN_REPLY)
}

/// Room left for entries in one listing reply.
pub(super) struct Page {
    left: usize,
}

impl Page {
    /// A page of a reply of at most `limit` bytes whose largest entry-less form is `empty`.
    pub(super) fn new(limit: usize, empty: ShardResp) -> Page {
        let fixed = reply_len(empty);
        // Limits are at least DEFAULT_UDP_MTU, and every fixed part is far smaller (the
        // `fixed_parts_leave_room` test).
        assert!(
            fixed <= limit,
            "a reply's fixed part ({fixed} bytes) exceeds {limit}"
        );
        Page {
            left: limit - fixed,
        }
    }

    /// Takes `entry` if it still fits.
    pub(super) fn take(&mut self, entry: &impl EncodedLen) -> bool {
        let len = entry.encoded_len();
        if len > self.left {
            return false;
        }
        self.left -= len;
        true
    }

    pub(super) fn left(&self) -> usize {
        self.left
    }
}

/// The encoded length of a successful reply holding `resp`.
fn reply_len(resp: ShardResp) -> usize {
    codec::message_len(&ShardResponse {
        request_id: 0,
        result: Ok(resp),
    })
}

fn longest_name() -> Name {
    match Name::new(vec![b'x'; Name::MAX_LEN]) {
        Ok(n) => n,
        Err(e) => unreachable!("a name of Name::MAX_LEN bytes is valid: {e}"),
    }
}

/// The longest cursor of `ReadDir` and `CollectDirectory`.
pub(super) fn longest_dir_cursor() -> DirCursor {
    DirCursor {
        name_hash: 0,
        name: longest_name(),
    }
}

pub(super) fn longest_full_dir_cursor() -> FullDirCursor {
    FullDirCursor {
        name_hash: 0,
        name: longest_name(),
        creation_time: EggsTime(0),
    }
}

/// The smallest `FullReadDir` entry (a one-byte name), to bound how many can fit.
pub(super) fn shortest_edge_len() -> usize {
    let name = match Name::new(&b"x"[..]) {
        Ok(n) => n,
        Err(e) => unreachable!("\"x\" is a valid name: {e}"),
    };
    Edge {
        name_hash: 0,
        name,
        target_id: InodeId::NULL,
        creation_time: EggsTime(0),
        current: false,
    }
    .encoded_len()
}

/// The largest span a shard stores: the biggest inline span or a span with the most blocks.
fn largest_span() -> FetchedSpan {
    let inline = FetchedSpan {
        byte_offset: 0,
        size: 0,
        crc: 0,
        body: SpanBody::Inline(vec![0; MAX_INLINE_SPAN]),
    };
    let block = FetchedBlock {
        block_service_id: eggs_protocol::BlockServiceId(0),
        addr: Default::default(),
        block_id: eggs_protocol::BlockId(0),
        crc: 0,
    };
    let blocks = FetchedSpan {
        body: SpanBody::Blocks(BlocksSpan {
            parity: Parity {
                data: Parity::MAX_DATA,
                parity: Parity::MAX_PARITY,
            },
            storage_class: StorageClass::Flash,
            stripes: 0,
            cell_size: 0,
            blocks: vec![block; (Parity::MAX_DATA + Parity::MAX_PARITY) as usize],
        }),
        ..inline.clone()
    };
    if inline.encoded_len() >= blocks.encoded_len() {
        inline
    } else {
        blocks
    }
}

/// A `FileSpans` reply holding just the largest span: the least every such reply may take.
static ONE_SPAN_REPLY: LazyLock<usize> = LazyLock::new(|| {
    let len = reply_len(ShardResp::FileSpans(FileSpansResp {
        next_offset: Some(0),
        spans: vec![largest_span()],
    }));
    assert!(
        len <= MAX_UDP_MTU as usize,
        "the largest span does not fit in a datagram"
    );
    len
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_parts_leave_room() {
        // The smallest page of the largest listing still takes the longest entry.
        let c = longest_full_dir_cursor();
        let longest = Edge {
            name_hash: c.name_hash,
            name: c.name.clone(),
            target_id: InodeId::NULL,
            creation_time: c.creation_time,
            current: true,
        };
        let empty = ShardResp::FullReadDir(FullReadDirResp {
            next: Some(c),
            entries: vec![],
        });
        let mut page = Page::new(listing_limit(0), empty);
        assert!(page.take(&longest));
        assert!(*ONE_SPAN_REPLY <= MAX_UDP_MTU as usize);
        assert!(spans_limit(0) >= *ONE_SPAN_REPLY);
        assert_eq!(listing_limit(0), DEFAULT_UDP_MTU as usize);
        assert_eq!(listing_limit(u16::MAX), MAX_UDP_MTU as usize);
    }
}
