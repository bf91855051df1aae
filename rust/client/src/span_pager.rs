//! Listing a file's spans: the one loop over `FileSpans` pages, used by the read path, the
//! FUSE read cache, GC's scrub and migration, the CLI's `stat` and the tests.

use crate::client::Client;
use crate::error::{ClientError, Result};
use eggs_protocol::shard::{self, FetchedSpan};
use eggs_protocol::InodeId;
use std::collections::VecDeque;

/// The spans of a file in order, page by page, checking that they follow each other: a page
/// that is empty though more follow, a gap or overlap between spans, an empty span, or (when
/// listing from 0) a first span elsewhere than at 0 is an error, never an endless loop.
pub struct SpanPager {
    file_id: InodeId,
    page: VecDeque<FetchedSpan>,
    /// Where the next page starts; `None` once the shard said there is no more.
    next_page: Option<u64>,
    /// Where the next span must start (once the first one is known; 0 from the start).
    expected: Option<u64>,
}

impl SpanPager {
    /// The spans of `file_id` from the one holding `byte_offset` on.
    pub fn new(file_id: InodeId, byte_offset: u64) -> SpanPager {
        SpanPager {
            file_id,
            page: VecDeque::new(),
            next_page: Some(byte_offset),
            expected: (byte_offset == 0).then_some(0),
        }
    }

    /// The next span, fetching the next page when this one is used up; `None` at the end.
    pub async fn next(&mut self, client: &Client) -> Result<Option<FetchedSpan>> {
        while self.page.is_empty() {
            let Some(offset) = self.next_page else {
                return Ok(None);
            };
            let r = client
                .shard_request(
                    self.file_id.shard(),
                    shard::FileSpansReq {
                        file_id: self.file_id,
                        byte_offset: offset,
                        mtu: client.options().mtu,
                    },
                )
                .await?;
            if r.spans.is_empty() && r.next_offset.is_some() {
                return Err(bad_listing(self.file_id, offset, "empty page of spans"));
            }
            self.next_page = r.next_offset;
            self.page.extend(r.spans);
        }
        let span = self.page.pop_front();
        if let Some(s) = &span {
            if self.expected.is_some_and(|e| e != s.byte_offset) || s.size == 0 {
                return Err(bad_listing(
                    self.file_id,
                    s.byte_offset,
                    "spans do not follow each other",
                ));
            }
            self.expected = Some(s.byte_offset.saturating_add(s.size as u64));
        }
        Ok(span)
    }
}

impl Client {
    /// Every span of a file, in order, checked to follow each other from offset 0.
    pub async fn file_spans(&self, file_id: InodeId) -> Result<Vec<FetchedSpan>> {
        let mut pager = SpanPager::new(file_id, 0);
        let mut out = Vec::new();
        while let Some(span) = pager.next(self).await? {
            out.push(span);
        }
        Ok(out)
    }
}

fn bad_listing(file_id: InodeId, offset: u64, why: &str) -> ClientError {
    ClientError::BadResponse {
        what: format!("listing the spans of {file_id} at {offset}"),
        why: why.into(),
    }
}
