//! The read path: a cache of file span lists and of file chunks, with readahead.
//!
//! Linked files never change, so whatever is cached stays right. A file is read in chunks of
//! whole stripes (about [`CHUNK_TARGET`] bytes, never across a span), each fetched from the
//! data blocks in parallel by the client library (rebuilding from parity when blocks are
//! unreadable). Concurrent reads of one chunk share one fetch. Sequential readers get the next
//! [`READAHEAD_CHUNKS`] chunks fetched in the background. Chunks are evicted oldest first once
//! the cache holds more than its byte budget.

use eggs_client::span::SpanLayout;
use eggs_client::{Client, ClientError};
use eggs_protocol::conv::usize_of;
use eggs_protocol::shard::{FetchedSpan, SpanBody};
use eggs_protocol::InodeId;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::OnceCell;

/// Bytes a chunk aims at: big enough that each block fetch is large.
pub const CHUNK_TARGET: usize = 8 << 20;
/// Chunks fetched ahead of a sequential reader.
pub const READAHEAD_CHUNKS: usize = 3;
/// Span lists kept; past this the map is cleared (they are cheap to fetch again).
const MAX_SPAN_LISTS: usize = 100_000;

type Shared<T> = Arc<OnceCell<Arc<T>>>;

#[derive(Default)]
struct Chunks {
    map: HashMap<(u64, u64), Shared<Vec<u8>>>,
    /// Insertion order, for eviction.
    order: VecDeque<(u64, u64)>,
    /// Bytes of the loaded chunks.
    bytes: usize,
}

pub struct ReadCache {
    client: Arc<Client>,
    max_bytes: usize,
    spans: Mutex<HashMap<u64, Shared<Vec<FetchedSpan>>>>,
    chunks: Mutex<Chunks>,
    /// Where each file's last read ended, to spot sequential readers.
    last_end: Mutex<HashMap<u64, u64>>,
}

/// One chunk: logical bytes `range` of the span at index `span` of the file.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ChunkRef {
    span: usize,
    /// Offset of the chunk in the file.
    start: u64,
    len: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReadCache {
    pub fn new(client: Arc<Client>, max_bytes: usize) -> ReadCache {
        ReadCache {
            client,
            max_bytes,
            spans: Mutex::new(HashMap::new()),
            chunks: Mutex::new(Chunks::default()),
            last_end: Mutex::new(HashMap::new()),
        }
    }

    /// Drops what is cached of `id`: it was read while it was still being written (its span
    /// list then lacked what its link stored), or it is a replaced file's inode.
    pub fn forget(&self, id: InodeId) {
        lock(&self.spans).remove(&id.0);
        lock(&self.last_end).remove(&id.0);
        let mut c = lock(&self.chunks);
        let gone: Vec<(u64, u64)> = c.map.keys().filter(|k| k.0 == id.0).copied().collect();
        for k in gone {
            if let Some(cell) = c.map.remove(&k) {
                if let Some(data) = cell.get() {
                    c.bytes = c.bytes.saturating_sub(data.len());
                }
            }
        }
        c.order.retain(|k| k.0 != id.0);
    }

    async fn spans(&self, id: InodeId) -> Result<Arc<Vec<FetchedSpan>>, ClientError> {
        let cell = {
            let mut m = lock(&self.spans);
            if m.len() >= MAX_SPAN_LISTS {
                m.clear();
            }
            m.entry(id.0).or_default().clone()
        };
        let spans = cell
            .get_or_try_init(|| async { self.client.file_spans(id).await.map(Arc::new) })
            .await?;
        Ok(spans.clone())
    }

    /// Up to `size` bytes at `offset` (fewer at the end of the file).
    pub async fn read(
        self: &Arc<Self>,
        id: InodeId,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let spans = self.spans(id).await?;
        let file_size = spans
            .last()
            .map_or(0, |s| s.byte_offset + u64::from(s.size));
        let end = offset.saturating_add(size as u64).min(file_size);
        let mut out = Vec::with_capacity(usize_of(end.saturating_sub(offset)));
        let mut pos = offset;
        let mut last = None;
        while pos < end {
            let Some(c) = chunk_at(&spans, pos) else {
                break;
            };
            let data = self.chunk(id, &spans, c).await?;
            let from = usize_of(pos - c.start);
            let to = usize_of(end - c.start).min(data.len());
            if from >= to {
                break;
            }
            out.extend_from_slice(&data[from..to]);
            pos = c.start + to as u64;
            last = Some(c);
        }
        if let Some(c) = last {
            if self.sequential(id, offset, pos) {
                self.readahead(id, spans, c);
            }
        }
        Ok(out)
    }

    /// Records the read and says whether it continues the previous one (kernel readahead
    /// sends neighbouring reads, not always in order).
    fn sequential(&self, id: InodeId, offset: u64, end: u64) -> bool {
        let mut m = lock(&self.last_end);
        if m.len() >= MAX_SPAN_LISTS {
            m.clear();
        }
        let prev = m.insert(id.0, end);
        offset == 0 || prev.is_some_and(|p| offset.abs_diff(p) <= CHUNK_TARGET as u64 * 2)
    }

    fn readahead(self: &Arc<Self>, id: InodeId, spans: Arc<Vec<FetchedSpan>>, after: ChunkRef) {
        let mut c = after;
        for _ in 0..READAHEAD_CHUNKS {
            let Some(next) = chunk_at(&spans, c.start + c.len as u64) else {
                return;
            };
            c = next;
            let present = lock(&self.chunks)
                .map
                .get(&(id.0, c.start))
                .is_some_and(|cell| cell.initialized());
            if present {
                continue;
            }
            let (me, spans) = (self.clone(), spans.clone());
            tokio::spawn(async move {
                if let Err(e) = me.chunk(id, &spans, next).await {
                    tracing::debug!("readahead of {id} at {}: {e}", next.start);
                }
            });
        }
    }

    async fn chunk(
        &self,
        id: InodeId,
        spans: &[FetchedSpan],
        c: ChunkRef,
    ) -> Result<Arc<Vec<u8>>, ClientError> {
        let key = (id.0, c.start);
        let cell = {
            let mut chunks = lock(&self.chunks);
            match chunks.map.entry(key) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(e) => {
                    let cell = e.insert(Shared::default()).clone();
                    chunks.order.push_back(key);
                    cell
                }
            }
        };
        let span = &spans[c.span];
        let mut loaded_here = false;
        let data = cell
            .get_or_try_init(|| async {
                loaded_here = true;
                let from = usize_of(c.start - span.byte_offset);
                self.client
                    .read_span_range(id, span, from..from + c.len)
                    .await
                    .map(Arc::new)
            })
            .await?
            .clone();
        if loaded_here {
            self.evict(data.len());
        }
        Ok(data)
    }

    /// Counts a newly loaded chunk and drops the oldest ones while over budget.
    fn evict(&self, added: usize) {
        let mut chunks = lock(&self.chunks);
        chunks.bytes += added;
        while chunks.bytes > self.max_bytes {
            let Some(key) = chunks.order.pop_front() else {
                break;
            };
            if let Some(cell) = chunks.map.remove(&key) {
                chunks.bytes -= cell.get().map_or(0, |d| d.len());
            }
        }
        // Keys whose fetch failed stay unloaded: forget them now and then, so that the
        // map cannot grow without bound.
        if chunks.map.len() > 100_000 {
            let Chunks { map, order, .. } = &mut *chunks;
            map.retain(|_, c| c.initialized());
            order.retain(|k| map.contains_key(k));
        }
    }
}

/// The chunk holding byte `pos` of the file.
fn chunk_at(spans: &[FetchedSpan], pos: u64) -> Option<ChunkRef> {
    let i = spans.partition_point(|s| s.byte_offset + s.size as u64 <= pos);
    let span = spans.get(i)?;
    if pos < span.byte_offset {
        return None;
    }
    let chunk = chunk_size(span);
    let within = usize_of(pos - span.byte_offset);
    let first = within / chunk * chunk;
    Some(ChunkRef {
        span: i,
        start: span.byte_offset + first as u64,
        len: chunk.min(span.size as usize - first),
    })
}

/// A whole number of stripes of about [`CHUNK_TARGET`] bytes; inline spans are one chunk.
fn chunk_size(span: &FetchedSpan) -> usize {
    let size = (span.size as usize).max(1);
    match &span.body {
        SpanBody::Inline(_) => size,
        SpanBody::Blocks(b) => match SpanLayout::from_fetched(b, span.size) {
            Ok(l) => {
                let stripe = l.stripe_size().max(1);
                (CHUNK_TARGET / stripe).max(1) * stripe
            }
            Err(_) => size,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(at: u64, size: u32) -> FetchedSpan {
        FetchedSpan {
            byte_offset: at,
            size,
            crc: 0,
            body: SpanBody::Inline(vec![0; size as usize]),
        }
    }

    #[test]
    fn chunks_follow_spans() {
        let spans = vec![inline(0, 10), inline(10, 5), inline(15, 1)];
        assert_eq!(chunk_at(&spans, 0).unwrap().len, 10);
        let c = chunk_at(&spans, 12).unwrap();
        assert_eq!((c.span, c.start, c.len), (1, 10, 5));
        assert_eq!(chunk_at(&spans, 15).unwrap().span, 2);
        assert!(chunk_at(&spans, 16).is_none());
        assert!(chunk_at(&[], 0).is_none());
    }
}
