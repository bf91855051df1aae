//! Span layout: which parity, storage class and cell size a span of a given size gets from its
//! directory's policies, and how its logical bytes map onto blocks (pure functions, no I/O).
//!
//! With `D` data blocks, `S` stripes and cells of `C` bytes, each block is `S * C` bytes and
//! stripe `s` is cell `s` of every block. Logical cell `k` (bytes `k*C..(k+1)*C` of the span) is
//! cell `k / D` of data block `k % D`. So a buffer holding the span's logical bytes, padded with
//! zeros to `D * S * C`, already *is* the data blocks, interleaved cell by cell: writers send
//! each data block as `S` slices of that buffer instead of copying it into block buffers.

use crate::rs::{ErasureCode, RsError};
use eggs_protocol::conv::fit;
use eggs_protocol::policy::{
    BlockPolicy, DirectoryInfo, Parity, SpanPolicy, StorageClass, StripePolicy,
};
use eggs_protocol::shard::BlocksSpan;
use std::ops::Range;

/// Cells are whole pages, the unit in which block services check CRCs.
pub const PAGE_SIZE: u32 = 4096;
/// `stripes` is a `u8` on the wire.
pub const MAX_STRIPES: u64 = u8::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the directory has no {0} policy")]
    MissingPolicy(&'static str),
    #[error("span of {size} bytes does not fit the policies (at most {max})")]
    TooLarge { size: u64, max: u64 },
    #[error("empty span")]
    Empty,
    #[error("no block policy entry covers blocks of {0} bytes")]
    NoStorageClass(u64),
    #[error("bad span shape: {0}")]
    BadShape(String),
    #[error(transparent)]
    Rs(#[from] RsError),
}

/// The parity of the first ladder entry that takes spans of `size` bytes.
pub fn pick_parity(policy: &SpanPolicy, size: u32) -> Option<Parity> {
    policy
        .entries
        .iter()
        .find(|e| e.max_span_size >= size)
        .map(|e| e.parity)
}

/// The storage class of the last entry whose minimum the block size reaches.
pub fn pick_storage_class(policy: &BlockPolicy, block_size: u32) -> Option<StorageClass> {
    policy
        .entries
        .iter()
        .rev()
        .find(|e| e.min_size <= block_size)
        .map(|e| e.storage_class)
}

/// A stripe of about `target_stripe_size` bytes: `target / D` rounded up to whole pages
/// (spans shorter than one stripe get smaller cells, see [`SpanLayout::for_span`]).
pub fn cell_size(policy: &StripePolicy, data_blocks: u8) -> u32 {
    let per_block = policy
        .target_stripe_size
        .div_ceil(data_blocks.max(1) as u32);
    per_block.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE
}

fn policies(
    info: &DirectoryInfo,
) -> Result<(&SpanPolicy, &BlockPolicy, &StripePolicy), LayoutError> {
    Ok((
        info.span
            .as_ref()
            .ok_or(LayoutError::MissingPolicy("span"))?,
        info.block
            .as_ref()
            .ok_or(LayoutError::MissingPolicy("block"))?,
        info.stripe
            .as_ref()
            .ok_or(LayoutError::MissingPolicy("stripe"))?,
    ))
}

/// The largest span writers make: the ladder's largest span, cut where a ladder entry could
/// not hold its spans in `MAX_STRIPES` stripes (so that every size up to it has a layout).
pub fn max_span_size(info: &DirectoryInfo) -> Result<u32, LayoutError> {
    let (spans, _, stripe) = policies(info)?;
    let mut limit = 0u64;
    for e in &spans.entries {
        let d = e.parity.data.max(1);
        let fits = MAX_STRIPES * d as u64 * cell_size(stripe, d) as u64;
        let cap = fits.min(e.max_span_size as u64);
        if cap <= limit {
            break;
        }
        limit = cap;
        if cap < e.max_span_size as u64 {
            break;
        }
    }
    // Blocks must also fit in a u32 (the wire's block size).
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    if limit == 0 {
        return Err(LayoutError::TooLarge { size: 1, max: 0 });
    }
    Ok(limit)
}

/// How one span is cut into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLayout {
    pub parity: Parity,
    pub storage_class: StorageClass,
    pub stripes: u8,
    pub cell_size: u32,
}

impl SpanLayout {
    /// The layout the directory's (resolved) policies give a span of `size` bytes.
    pub fn for_span(info: &DirectoryInfo, size: u32) -> Result<SpanLayout, LayoutError> {
        let (spans, blocks, stripe) = policies(info)?;
        if size == 0 {
            return Err(LayoutError::Empty);
        }
        let too_large = || LayoutError::TooLarge {
            size: size as u64,
            max: max_span_size(info).unwrap_or(0) as u64,
        };
        let parity = pick_parity(spans, size).ok_or_else(too_large)?;
        // A span shorter than a stripe gets smaller cells rather than blocks of padding.
        let needed = size.div_ceil(parity.data.max(1) as u32).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let cell = cell_size(stripe, parity.data).min(needed);
        let stripe_bytes = parity.data as u64 * cell as u64;
        let stripes = (size as u64).div_ceil(stripe_bytes);
        let block_size = stripes * cell as u64;
        if stripes > MAX_STRIPES || block_size > u32::MAX as u64 {
            return Err(too_large());
        }
        let storage_class = pick_storage_class(blocks, fit::<u32, u64>(block_size))
            .ok_or(LayoutError::NoStorageClass(block_size))?;
        let layout = SpanLayout {
            parity,
            storage_class,
            stripes: fit::<u8, u64>(stripes),
            cell_size: cell,
        };
        layout.check(size)?;
        Ok(layout)
    }

    /// The layout of a span read from a shard, checked so that later arithmetic on it cannot
    /// go wrong (it comes from the network).
    pub fn from_fetched(span: &BlocksSpan, size: u32) -> Result<SpanLayout, LayoutError> {
        let layout = SpanLayout {
            parity: span.parity,
            storage_class: span.storage_class,
            stripes: span.stripes,
            cell_size: span.cell_size,
        };
        layout.check(size)?;
        if span.blocks.len() != layout.total_blocks() {
            return Err(LayoutError::BadShape(format!(
                "{} blocks for parity {}+{}",
                span.blocks.len(),
                layout.parity.data,
                layout.parity.parity
            )));
        }
        Ok(layout)
    }

    fn check(&self, size: u32) -> Result<(), LayoutError> {
        let bad = |why: String| Err(LayoutError::BadShape(why));
        if !self.parity.is_valid() {
            return bad(format!(
                "parity {}+{}",
                self.parity.data, self.parity.parity
            ));
        }
        if self.stripes == 0 || self.cell_size == 0 {
            return bad(format!("{} stripes of {}", self.stripes, self.cell_size));
        }
        let block = self.stripes as u64 * self.cell_size as u64;
        if block > u32::MAX as u64 {
            return bad(format!("blocks of {block} bytes"));
        }
        if size as u64 > self.capacity() as u64 {
            return bad(format!(
                "{size} bytes in {} bytes of blocks",
                self.capacity()
            ));
        }
        Ok(())
    }

    pub fn data_blocks(&self) -> usize {
        self.parity.data as usize
    }

    pub fn parity_blocks(&self) -> usize {
        self.parity.parity as usize
    }

    pub fn total_blocks(&self) -> usize {
        self.data_blocks() + self.parity_blocks()
    }

    pub fn cell(&self) -> usize {
        self.cell_size as usize
    }

    pub fn block_size(&self) -> usize {
        self.stripes as usize * self.cell()
    }

    /// Logical bytes in one stripe.
    pub fn stripe_size(&self) -> usize {
        self.data_blocks() * self.cell()
    }

    /// Logical bytes the data blocks hold (the span plus its zero padding).
    pub fn capacity(&self) -> usize {
        self.stripes as usize * self.stripe_size()
    }

    /// The stripes that hold logical bytes `range` of the span.
    pub fn stripes_of(&self, range: &Range<usize>) -> Range<usize> {
        if range.is_empty() {
            return 0..0;
        }
        range.start / self.stripe_size()..range.end.div_ceil(self.stripe_size())
    }

    pub fn code(&self) -> Result<ErasureCode, RsError> {
        ErasureCode::new(self.parity)
    }
}

/// A span ready to be written: its padded logical bytes (which hold the data blocks
/// interleaved, see the module doc), its parity blocks and every CRC the shard wants.
pub struct EncodedSpan {
    pub layout: SpanLayout,
    /// Logical bytes (before padding).
    pub size: u32,
    /// CRC-32C of the logical bytes.
    pub crc: u32,
    /// CRC-32C of each block, data blocks first.
    pub block_crcs: Vec<u32>,
    data: Vec<u8>,
    /// Empty when mirroring: parity blocks are then the data block itself.
    parity: Vec<Vec<u8>>,
}

impl EncodedSpan {
    /// Takes `data` holding exactly the span's logical bytes and `parity_bufs` (any buffers,
    /// reused to avoid allocations), pads the data and computes parity and CRCs.
    pub fn encode(
        layout: SpanLayout,
        mut data: Vec<u8>,
        mut parity_bufs: Vec<Vec<u8>>,
    ) -> Result<EncodedSpan, LayoutError> {
        let size = u32::try_from(data.len())
            .map_err(|_| LayoutError::BadShape(format!("{} byte span", data.len())))?;
        layout.check(size)?;
        let crc = crc32c::crc32c(&data);
        data.resize(layout.capacity(), 0);
        let code = layout.code()?;
        let mirrored = layout.data_blocks() == 1;
        parity_bufs.resize_with(if mirrored { 0 } else { layout.parity_blocks() }, Vec::new);
        for p in &mut parity_bufs {
            p.resize(layout.block_size(), 0);
        }
        if !mirrored {
            encode_stripes(&layout, &code, &data, &mut parity_bufs)?;
        }
        let mut span = EncodedSpan {
            layout,
            size,
            crc,
            block_crcs: Vec::with_capacity(layout.total_blocks()),
            data,
            parity: parity_bufs,
        };
        span.block_crcs = (0..layout.total_blocks())
            .map(|i| {
                span.block_pieces(i)
                    .iter()
                    .fold(0, |c, piece| crc32c::crc32c_append(c, piece))
            })
            .collect();
        Ok(span)
    }

    /// The slices that make up block `i` (data blocks first), to be sent one after the other.
    pub fn block_pieces(&self, i: usize) -> Vec<&[u8]> {
        let l = &self.layout;
        if l.data_blocks() == 1 {
            // Mirroring: every block is the whole (contiguous) data block.
            return vec![&self.data[..l.block_size()]];
        }
        if i < l.data_blocks() {
            (0..l.stripes as usize)
                .map(|s| cell(&self.data, l, s, i))
                .collect()
        } else {
            vec![&self.parity[i - l.data_blocks()][..]]
        }
    }

    pub fn block_size(&self) -> u32 {
        fit::<u32, usize>(self.layout.block_size())
    }

    /// Gives the buffers back for the next span.
    pub fn into_buffers(self) -> (Vec<u8>, Vec<Vec<u8>>) {
        (self.data, self.parity)
    }
}

/// Logical cell `(stripe, block)` of a padded logical buffer.
fn cell<'a>(data: &'a [u8], l: &SpanLayout, stripe: usize, block: usize) -> &'a [u8] {
    let start = (stripe * l.data_blocks() + block) * l.cell();
    &data[start..start + l.cell()]
}

fn encode_stripes(
    l: &SpanLayout,
    code: &ErasureCode,
    data: &[u8],
    parity: &mut [Vec<u8>],
) -> Result<(), RsError> {
    for s in 0..l.stripes as usize {
        let cells: Vec<&[u8]> = (0..l.data_blocks()).map(|b| cell(data, l, s, b)).collect();
        let range = s * l.cell()..(s + 1) * l.cell();
        let mut out: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[range.clone()]).collect();
        code.encode(&cells, &mut out)?;
    }
    Ok(())
}

/// The pieces of logical bytes `range` (offsets within the span), in order, out of data-block
/// buffers that each hold stripes `first_stripe..` of their block.
pub fn logical_pieces<'a, B: AsRef<[u8]>>(
    layout: &SpanLayout,
    data_blocks: &'a [B],
    first_stripe: usize,
    range: Range<usize>,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let (cell, d) = (layout.cell(), layout.data_blocks());
    let cells = if range.is_empty() {
        0..0
    } else {
        range.start / cell..range.end.div_ceil(cell)
    };
    cells.map(move |k| {
        let (stripe, block) = (k / d, k % d);
        let at = (stripe - first_stripe) * cell;
        let from = range.start.max(k * cell) - k * cell;
        let to = range.end.min((k + 1) * cell) - k * cell;
        &data_blocks[block].as_ref()[at + from..at + to]
    })
}

/// All `D + P` blocks of a span as separate buffers (copies; for tests and tools).
pub fn split(layout: SpanLayout, data: &[u8]) -> Result<Vec<Vec<u8>>, LayoutError> {
    let span = EncodedSpan::encode(layout, data.to_vec(), Vec::new())?;
    Ok((0..layout.total_blocks())
        .map(|i| span.block_pieces(i).concat())
        .collect())
}

/// The logical bytes of a span from its data blocks.
pub fn assemble<B: AsRef<[u8]>>(layout: &SpanLayout, data_blocks: &[B], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    for piece in logical_pieces(layout, data_blocks, 0, 0..size) {
        out.extend_from_slice(piece);
    }
    out
}

/// Rebuilds the absent blocks (`present[i] == false`) in place from any `D` present ones;
/// with `data_only`, only data blocks. Buffers must all be the same length (whole blocks, or
/// the same stripes of every block).
pub fn rebuild(
    layout: &SpanLayout,
    blocks: &mut [Vec<u8>],
    present: &mut [bool],
    data_only: bool,
) -> Result<(), LayoutError> {
    let mut shards: Vec<(&mut [u8], bool)> = blocks
        .iter_mut()
        .zip(present.iter())
        .map(|(b, &p)| (&mut b[..], p))
        .collect();
    layout.code()?.reconstruct(&mut shards, data_only)?;
    for (p, (_, now)) in present.iter_mut().zip(shards) {
        *p = now;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::conv::low_byte;
    use eggs_protocol::policy::{BlockPolicyEntry, SpanPolicyEntry};

    /// RS(4,2) up to 64 KiB stripes; mirroring for small spans; flash for small blocks.
    fn info(target_stripe_size: u32) -> DirectoryInfo {
        DirectoryInfo {
            snapshot: None,
            span: Some(SpanPolicy {
                entries: vec![
                    SpanPolicyEntry {
                        max_span_size: 16 << 10,
                        parity: Parity { data: 1, parity: 2 },
                    },
                    SpanPolicyEntry {
                        max_span_size: 1 << 20,
                        parity: Parity { data: 4, parity: 2 },
                    },
                ],
            }),
            block: Some(BlockPolicy {
                entries: vec![
                    BlockPolicyEntry {
                        min_size: 0,
                        storage_class: StorageClass::Flash,
                    },
                    BlockPolicyEntry {
                        min_size: 64 << 10,
                        storage_class: StorageClass::Hdd,
                    },
                ],
            }),
            stripe: Some(StripePolicy { target_stripe_size }),
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| low_byte((i * 7 + i / 251) as u64)).collect()
    }

    #[test]
    fn policy_choices() {
        let i = info(64 << 10);
        let l = SpanLayout::for_span(&i, 1).unwrap();
        assert_eq!(l.parity, Parity { data: 1, parity: 2 });
        // Shorter than a stripe: one page, not a 64 KiB cell of padding.
        assert_eq!((l.cell_size, l.stripes), (4096, 1));
        let l = SpanLayout::for_span(&i, (12 << 10) + 1).unwrap();
        assert_eq!((l.cell_size, l.stripes), (16 << 10, 1));
        let l = SpanLayout::for_span(&i, (16 << 10) + 1).unwrap();
        assert_eq!(l.parity, Parity { data: 4, parity: 2 });
        assert_eq!((l.cell_size, l.stripes), (8 << 10, 1));
        assert_eq!(l.storage_class, StorageClass::Flash);
        let l = SpanLayout::for_span(&i, 200 << 10).unwrap();
        assert_eq!((l.cell_size, l.stripes), (16 << 10, 4));
        // Blocks of 64 KiB reach the second block policy entry.
        assert_eq!(l.storage_class, StorageClass::Hdd);
        let l = SpanLayout::for_span(&i, 1 << 20).unwrap();
        assert_eq!((l.stripes, l.block_size()), (16, 256 << 10));
        assert_eq!(l.storage_class, StorageClass::Hdd);
        assert!(matches!(
            SpanLayout::for_span(&i, (1 << 20) + 1),
            Err(LayoutError::TooLarge { .. })
        ));
        assert_eq!(SpanLayout::for_span(&i, 0), Err(LayoutError::Empty));
        assert_eq!(max_span_size(&i).unwrap(), 1 << 20);
        // Cells round up to pages.
        assert_eq!(
            cell_size(
                &StripePolicy {
                    target_stripe_size: 1 << 20
                },
                10
            ),
            106_496
        );
        assert_eq!(
            cell_size(
                &StripePolicy {
                    target_stripe_size: 4096
                },
                16
            ),
            4096
        );
    }

    #[test]
    fn span_size_is_capped_by_stripes() {
        // 4 KiB stripes: at most 255 stripes of 4 data cells of 4 KiB, below the ladder's 8 MiB.
        let mut i = info(4096);
        i.span.as_mut().unwrap().entries[1].max_span_size = 8 << 20;
        assert_eq!(max_span_size(&i).unwrap(), 255 * 4 * 4096);
        let l = SpanLayout::for_span(&i, 255 * 4 * 4096).unwrap();
        assert_eq!(l.stripes, 255);
        assert!(SpanLayout::for_span(&i, 255 * 4 * 4096 + 1).is_err());
        let root = DirectoryInfo::root_default();
        assert_eq!(max_span_size(&root).unwrap(), 100 << 20);
        let l = SpanLayout::for_span(&root, 100 << 20).unwrap();
        assert_eq!((l.parity.data, l.stripes), (10, 99));
        // A mirrored entry whose spans cannot fit stops the ladder there.
        let mut small = info(4096);
        small.span.as_mut().unwrap().entries[0].max_span_size = 2 << 20;
        small.span.as_mut().unwrap().entries[1].max_span_size = 4 << 20;
        assert_eq!(max_span_size(&small).unwrap(), 255 * 4096);
        assert!(SpanLayout::for_span(&small, 255 * 4096).is_ok());
        assert!(SpanLayout::for_span(&small, 255 * 4096 + 1).is_err());
    }

    /// Every block, every loss pattern of up to P blocks, and the logical bytes back.
    fn round_trip(i: &DirectoryInfo, size: usize) {
        let data = bytes(size);
        let layout = SpanLayout::for_span(i, u32::try_from(size).unwrap()).unwrap();
        let span = EncodedSpan::encode(layout, data.clone(), Vec::new()).unwrap();
        assert_eq!(span.crc, crc32c::crc32c(&data));
        let blocks = split(layout, &data).unwrap();
        for (b, crc) in blocks.iter().zip(&span.block_crcs) {
            assert_eq!(b.len(), layout.block_size());
            assert_eq!(crc32c::crc32c(b), *crc);
        }
        assert_eq!(
            assemble(&layout, &blocks[..layout.data_blocks()], size),
            data
        );
        let n = layout.total_blocks();
        for lost in 0u32..(1 << n) {
            if lost.count_ones() as usize > layout.parity_blocks() {
                continue;
            }
            let mut bufs: Vec<Vec<u8>> = blocks
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    if lost & (1 << k) != 0 {
                        vec![0xee; b.len()]
                    } else {
                        b.clone()
                    }
                })
                .collect();
            let mut present: Vec<bool> = (0..n).map(|k| lost & (1 << k) == 0).collect();
            rebuild(&layout, &mut bufs, &mut present, false).unwrap();
            assert_eq!(bufs, blocks, "size {size} lost {lost:b}");
            assert!(present.iter().all(|&p| p));
        }
    }

    #[test]
    fn round_trips_at_edge_sizes() {
        let i = info(16 << 10);
        let stripe = 4 * 4096;
        for size in [
            1,
            4095,
            4096,
            4097,
            (16 << 10) - 1,
            16 << 10,
            (16 << 10) + 1,
            3 * stripe,
            3 * stripe + 1,
            (1 << 20) - 1,
            1 << 20,
        ] {
            round_trip(&i, size);
        }
    }

    #[test]
    fn more_than_p_losses_fail() {
        let i = info(16 << 10);
        let data = bytes(100_000);
        let layout = SpanLayout::for_span(&i, 100_000).unwrap();
        let mut blocks = split(layout, &data).unwrap();
        let mut present = vec![false, true, false, true, false, true];
        assert!(rebuild(&layout, &mut blocks, &mut present, true).is_err());
    }

    #[test]
    fn pieces_of_ranges() {
        let i = info(16 << 10);
        let size = 200_000;
        let data = bytes(size);
        let layout = SpanLayout::for_span(&i, u32::try_from(size).unwrap()).unwrap();
        let blocks = split(layout, &data).unwrap();
        for range in [
            0..1,
            5000..70_000,
            16_383..16_385,
            199_999..200_000,
            0..size,
            7..7,
        ] {
            // Only the stripes the range needs, as a ranged fetch returns them.
            let stripes = layout.stripes_of(&range);
            let cut: Vec<&[u8]> = blocks[..layout.data_blocks()]
                .iter()
                .map(|b| &b[stripes.start * layout.cell()..stripes.end * layout.cell()])
                .collect();
            let got: Vec<u8> = logical_pieces(&layout, &cut, stripes.start, range.clone())
                .flatten()
                .copied()
                .collect();
            assert_eq!(got, &data[range]);
        }
    }

    #[test]
    fn fetched_layouts_are_checked() {
        let span = |stripes, cell_size, blocks| BlocksSpan {
            parity: Parity { data: 2, parity: 1 },
            storage_class: StorageClass::Flash,
            stripes,
            cell_size,
            blocks: vec![
                eggs_protocol::shard::FetchedBlock {
                    block_service_id: eggs_protocol::BlockServiceId(1),
                    addr: Default::default(),
                    block_id: eggs_protocol::BlockId(1),
                    crc: 0,
                };
                blocks
            ],
        };
        assert!(SpanLayout::from_fetched(&span(1, 4096, 3), 8192).is_ok());
        assert!(SpanLayout::from_fetched(&span(1, 4096, 3), 8193).is_err());
        assert!(SpanLayout::from_fetched(&span(1, 4096, 2), 10).is_err());
        assert!(SpanLayout::from_fetched(&span(0, 4096, 3), 0).is_err());
        assert!(SpanLayout::from_fetched(&span(255, u32::MAX, 3), 10).is_err());
    }
}
