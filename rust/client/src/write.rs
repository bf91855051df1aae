//! Writing files: construct a transient file, append its spans, link it.
//!
//! The input is read one span at a time into one buffer, which (padded) already holds the data
//! blocks (see `span.rs`), so memory stays at about one span plus its parity blocks whatever
//! the file size. Files of at most `MAX_INLINE_SPAN` bytes are stored inline in the shard; the
//! others go to block services: `AddSpanInitiate` (the shard picks the services and signs a
//! certificate per block), all blocks written in parallel, `AddSpanCertify` with the services'
//! proofs. A span whose blocks cannot all be written is removed and written again elsewhere,
//! avoiding the services that failed.

use crate::blocks::BlockPool;
use crate::error::{ClientError, Result};
use crate::fs::Client;
use crate::span::{max_span_size, EncodedSpan, LayoutError, SpanLayout};
use eggs_protocol::blocks::{EraseBlockReq, WriteBlockReq};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard::{self, BlockWriteTarget};
use eggs_protocol::{BlockServiceId, EggsError, InodeId, InodeType, Name, MAX_INLINE_SPAN};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

/// Attempts at writing one span, each on services other than those that failed before.
const SPAN_ATTEMPTS: usize = 4;

/// A transient file being written.
struct Transient {
    id: InodeId,
    cookie: u64,
}

/// Parity buffers kept between spans, so that a large file allocates them once.
type ParityBuffers = Vec<Vec<u8>>;

impl Client {
    /// Writes everything `reader` yields as a new file at `path` (replacing a file there) and
    /// returns its id.
    pub async fn write_file(&self, path: &str, reader: impl AsyncRead + Unpin) -> Result<InodeId> {
        let (owner_id, name) = self.resolve_parent(path).await?;
        self.write_file_in(owner_id, &name, reader)
            .await
            .map_err(|e| e.with_context(&format!("writing {path}")))
    }

    /// Writes a new file named `name` in the directory `owner_id`.
    pub async fn write_file_in(
        &self,
        owner_id: InodeId,
        name: &Name,
        reader: impl AsyncRead + Unpin,
    ) -> Result<InodeId> {
        self.write_file_with_progress(owner_id, name, reader, &mut |_| {})
            .await
    }

    /// Like [`Client::write_file_in`], calling `progress` with the number of bytes stored so
    /// far after each span.
    pub async fn write_file_with_progress(
        &self,
        owner_id: InodeId,
        name: &Name,
        mut reader: impl AsyncRead + Unpin,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<InodeId> {
        // Read one byte more than fits inline, to know whether the file does.
        let mut buf = Vec::new();
        fill(&mut reader, &mut buf, MAX_INLINE_SPAN + 1).await?;
        let f = self
            .shard_request(
                owner_id.shard(),
                shard::ConstructFileReq {
                    typ: InodeType::File,
                },
            )
            .await?;
        let file = Transient {
            id: f.id,
            cookie: f.cookie,
        };
        let written = if buf.len() <= MAX_INLINE_SPAN {
            self.add_inline(&file, buf).await?
        } else {
            // Only files stored in blocks need the policies, which cost a walk to the root.
            let info = self.effective_directory_info(owner_id).await?;
            self.add_block_spans(&file, &info, buf, &mut reader, progress)
                .await?
        };
        progress(written);
        self.shard_request(
            owner_id.shard(),
            shard::LinkFileReq {
                file_id: file.id,
                cookie: file.cookie,
                owner_id,
                name: name.clone(),
            },
        )
        .await?;
        Ok(file.id)
    }

    async fn add_inline(&self, file: &Transient, data: Vec<u8>) -> Result<u64> {
        let len = data.len() as u64;
        if data.is_empty() {
            return Ok(0);
        }
        let crc = crc32c::crc32c(&data);
        self.shard_request(
            file.id.shard(),
            shard::AddInlineSpanReq {
                file_id: file.id,
                cookie: file.cookie,
                byte_offset: 0,
                data,
                crc,
            },
        )
        .await?;
        Ok(len)
    }

    /// Writes spans of `max_span` bytes (the last one shorter) until the reader is done;
    /// `buf` holds what was read already. Returns the file size.
    async fn add_block_spans(
        &self,
        file: &Transient,
        info: &DirectoryInfo,
        mut buf: Vec<u8>,
        reader: &mut (impl AsyncRead + Unpin),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        let max_span = max_span_size(info).map_err(|e| layout_error(file.id, e))? as usize;
        let mut offset = 0u64;
        let mut parity = ParityBuffers::new();
        // Services that failed for this file are avoided for its later spans too.
        let mut blacklist = Vec::new();
        // Room for the padding of a full span, so that encoding never reallocates (copies).
        let padded = SpanLayout::for_span(info, max_span as u32).map_or(max_span, |l| l.capacity());
        buf.reserve(padded.saturating_sub(buf.len()));
        loop {
            fill(reader, &mut buf, max_span).await?;
            if buf.is_empty() {
                return Ok(offset);
            }
            // Only when the policy's spans are smaller than what was read to rule out an
            // inline file: keep the excess for the next span.
            let excess = (buf.len() > max_span).then(|| buf.split_off(max_span));
            let len = buf.len() as u64;
            let (data, par) = self
                .add_span(file, info, offset, buf, parity, &mut blacklist)
                .await?;
            offset += len;
            progress(offset);
            (buf, parity) = (data, par);
            buf.clear();
            if let Some(excess) = excess {
                buf.extend_from_slice(&excess);
            }
        }
    }

    /// Encodes and stores one span; gives its buffers back for the next one.
    async fn add_span(
        &self,
        file: &Transient,
        info: &DirectoryInfo,
        offset: u64,
        data: Vec<u8>,
        parity: ParityBuffers,
        blacklist: &mut Vec<BlockServiceId>,
    ) -> Result<(Vec<u8>, ParityBuffers)> {
        let layout =
            SpanLayout::for_span(info, data.len() as u32).map_err(|e| layout_error(file.id, e))?;
        // Reed-Solomon over a large span takes a while: keep it off the async workers.
        let span = tokio::task::spawn_blocking(move || EncodedSpan::encode(layout, data, parity))
            .await
            .map_err(|e| internal(file.id, format!("encoding task: {e}")))?
            .map_err(|e| layout_error(file.id, e))?;
        let span = Arc::new(span);
        self.store_span(file, offset, &span, blacklist).await?;
        // The write tasks are done, so this is the only reference left.
        Ok(Arc::try_unwrap(span)
            .map(EncodedSpan::into_buffers)
            .unwrap_or_default())
    }

    /// Places the span's blocks, writes them and certifies the span; a span whose blocks
    /// could not all be written is removed and placed again, avoiding the services that failed.
    async fn store_span(
        &self,
        file: &Transient,
        offset: u64,
        span: &Arc<EncodedSpan>,
        blacklist: &mut Vec<BlockServiceId>,
    ) -> Result<()> {
        let mut last_errors = Vec::new();
        for attempt in 1..=SPAN_ATTEMPTS {
            let Some(targets) = self.initiate(file, offset, span, blacklist).await? else {
                continue;
            };
            let (proofs, failures) = write_blocks(self.block_pool(), span, &targets).await;
            if failures.is_empty() {
                return self.certify(file, offset, proofs).await;
            }
            for (i, e) in &failures {
                tracing::warn!(
                    "file {}: span at {offset}, attempt {attempt}: block {i} failed: {e}",
                    file.id
                );
                blacklist.push(targets[*i].block_service_id);
            }
            self.undo_span(file, offset, &proofs).await?;
            last_errors = failures;
        }
        Err(ClientError::BadResponse {
            what: format!("writing span at {offset} of {}", file.id),
            why: format!(
                "block writes failed in {SPAN_ATTEMPTS} attempts; last: {}",
                describe(&last_errors)
            ),
        })
    }

    /// Asks the shard where to write the span's blocks. `None` when there are not enough
    /// services once the blacklist is taken out: the blacklist is then emptied (those services
    /// may have failed only for a moment) and the caller tries again.
    async fn initiate(
        &self,
        file: &Transient,
        offset: u64,
        span: &EncodedSpan,
        blacklist: &mut Vec<BlockServiceId>,
    ) -> Result<Option<Vec<BlockWriteTarget>>> {
        match self.initiate_once(file, offset, span, blacklist).await {
            Err(e)
                if e.eggs() == Some(EggsError::NotEnoughBlockServices) && !blacklist.is_empty() =>
            {
                tracing::warn!("file {}: {e}; trying blacklisted services again", file.id);
                blacklist.clear();
                Ok(None)
            }
            r => r.map(Some),
        }
    }

    async fn initiate_once(
        &self,
        file: &Transient,
        offset: u64,
        span: &EncodedSpan,
        blacklist: &[BlockServiceId],
    ) -> Result<Vec<BlockWriteTarget>> {
        let l = &span.layout;
        let r = self
            .shard_request(
                file.id.shard(),
                shard::AddSpanInitiateReq {
                    file_id: file.id,
                    cookie: file.cookie,
                    byte_offset: offset,
                    size: span.size,
                    crc: span.crc,
                    storage_class: l.storage_class,
                    parity: l.parity,
                    stripes: l.stripes,
                    cell_size: l.cell_size,
                    block_crcs: span.block_crcs.clone(),
                    blacklist: blacklist.to_vec(),
                },
            )
            .await?;
        if r.blocks.len() != l.total_blocks() {
            return Err(ClientError::BadResponse {
                what: format!("AddSpanInitiate for {} at {offset}", file.id),
                why: format!("{} blocks for {} wanted", r.blocks.len(), l.total_blocks()),
            });
        }
        Ok(r.blocks)
    }

    async fn certify(
        &self,
        file: &Transient,
        offset: u64,
        proofs: Vec<Option<[u8; 8]>>,
    ) -> Result<()> {
        self.shard_request(
            file.id.shard(),
            shard::AddSpanCertifyReq {
                file_id: file.id,
                cookie: file.cookie,
                byte_offset: offset,
                proofs: proofs.into_iter().map(|p| p.unwrap_or_default()).collect(),
            },
        )
        .await?;
        Ok(())
    }

    /// Removes a span whose blocks could not all be written, and erases the blocks that were
    /// (best effort: GC erases whatever is left).
    async fn undo_span(
        &self,
        file: &Transient,
        offset: u64,
        written: &[Option<[u8; 8]>],
    ) -> Result<()> {
        let r = self
            .shard_request(
                file.id.shard(),
                shard::RemoveSpanReq {
                    file_id: file.id,
                    cookie: file.cookie,
                    byte_offset: offset,
                },
            )
            .await?;
        for (b, _) in r.blocks.iter().zip(written).filter(|(_, w)| w.is_some()) {
            let req = EraseBlockReq {
                block_service_id: b.block_service_id,
                block_id: b.block_id,
                certificate: b.certificate,
            };
            if let Err(e) = self
                .block_pool()
                .erase_block(b.addr.to_socket_addr(), &req)
                .await
            {
                tracing::debug!("erasing block of a removed span: {e}");
            }
        }
        Ok(())
    }
}

/// A file written piece by piece as data arrives (the FUSE client's writes): bytes are
/// buffered up to one span, and each full span is stored by a background task while the next
/// one fills, so at most two spans (plus parity) are in memory. [`FileWriter::finish`] stores
/// the rest and links the file; dropping the writer without finishing leaves a transient file
/// that GC removes after its deadline.
pub struct FileWriter {
    client: Arc<Client>,
    owner_id: InodeId,
    file: Transient,
    /// The owner's resolved policies, fetched once the file outgrows an inline span.
    info: Option<DirectoryInfo>,
    max_span: usize,
    /// Bytes a full span's buffer needs with its padding (so encoding never reallocates).
    padded: usize,
    buf: Vec<u8>,
    /// The buffer of the last stored span, for the next one.
    spare: Vec<u8>,
    /// Bytes handed to span tasks (stored, or being stored).
    flushed: u64,
    inflight: Option<tokio::task::JoinHandle<Result<SpanDone>>>,
    parity: ParityBuffers,
    blacklist: Vec<BlockServiceId>,
}

/// What a finished background span gives back for the next one.
type SpanDone = (Vec<u8>, ParityBuffers, Vec<BlockServiceId>);

impl FileWriter {
    /// Creates the transient file on the shard of `owner_id`, the directory it will be
    /// linked into.
    pub async fn new(client: Arc<Client>, owner_id: InodeId, typ: InodeType) -> Result<Self> {
        let f = client
            .shard_request(owner_id.shard(), shard::ConstructFileReq { typ })
            .await?;
        Ok(FileWriter {
            client,
            owner_id,
            file: Transient {
                id: f.id,
                cookie: f.cookie,
            },
            info: None,
            max_span: 0,
            padded: 0,
            buf: Vec::new(),
            spare: Vec::new(),
            flushed: 0,
            inflight: None,
            parity: ParityBuffers::new(),
            blacklist: Vec::new(),
        })
    }

    /// The transient file's id (it keeps it once linked).
    pub fn id(&self) -> InodeId {
        self.file.id
    }

    /// Bytes appended so far.
    pub fn size(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Bytes already handed to block services; [`FileWriter::truncate`] cannot go below.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// Appends `data`; waits for the previous span's task when a new span is full.
    pub async fn append(&mut self, mut data: &[u8]) -> Result<()> {
        if self.info.is_none() && self.buf.len() + data.len() <= MAX_INLINE_SPAN {
            // Perhaps an inline file: no policy needed yet.
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.ensure_policy().await?;
        while !data.is_empty() {
            if self.buf.capacity() < self.padded {
                if self.buf.is_empty() && self.spare.capacity() >= self.padded {
                    self.buf = std::mem::take(&mut self.spare);
                    self.buf.clear();
                } else {
                    self.buf.reserve_exact(self.padded - self.buf.len());
                }
            }
            let n = (self.max_span - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() >= self.max_span {
                let span = std::mem::take(&mut self.buf);
                self.start_span(span).await?;
            }
        }
        Ok(())
    }

    /// Cuts the file to `size` bytes (only within what is still buffered) or extends it with
    /// zeros. Returns false when `size` is below what was already stored.
    pub async fn truncate(&mut self, size: u64) -> Result<bool> {
        if size < self.flushed {
            return Ok(false);
        }
        if size <= self.size() {
            self.buf.truncate((size - self.flushed) as usize);
            return Ok(true);
        }
        let mut left = size - self.size();
        let zeros = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.append(&zeros[..n]).await?;
            left -= n as u64;
        }
        Ok(true)
    }

    /// Stores what is buffered and links the file as `name` in its directory (replacing a
    /// file of that name, which stays as a snapshot edge).
    pub async fn finish(mut self, name: &Name) -> Result<shard::LinkFileResp> {
        self.store_rest().await?;
        self.client
            .shard_request(
                self.owner_id.shard(),
                shard::LinkFileReq {
                    file_id: self.file.id,
                    cookie: self.file.cookie,
                    owner_id: self.owner_id,
                    name: name.clone(),
                },
            )
            .await
    }

    async fn store_rest(&mut self) -> Result<()> {
        if self.flushed == 0 && self.buf.len() <= MAX_INLINE_SPAN {
            let data = std::mem::take(&mut self.buf);
            self.client.add_inline(&self.file, data).await?;
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.ensure_policy().await?;
            let span = std::mem::take(&mut self.buf);
            self.start_span(span).await?;
        }
        self.wait_inflight().await
    }

    async fn ensure_policy(&mut self) -> Result<()> {
        if self.info.is_none() {
            let info = self.client.effective_directory_info(self.owner_id).await?;
            self.max_span =
                max_span_size(&info).map_err(|e| layout_error(self.file.id, e))? as usize;
            self.padded = SpanLayout::for_span(&info, self.max_span as u32)
                .map_or(self.max_span, |l| l.capacity().max(self.max_span));
            self.info = Some(info);
        }
        Ok(())
    }

    async fn wait_inflight(&mut self) -> Result<()> {
        if let Some(task) = self.inflight.take() {
            let (buf, parity, blacklist) = task
                .await
                .map_err(|e| internal(self.file.id, format!("span task: {e}")))??;
            // The next span reuses the buffers, so that a large file allocates them once.
            self.spare = buf;
            self.parity = parity;
            self.blacklist = blacklist;
        }
        Ok(())
    }

    /// Waits for the previous span, then stores `span` in the background.
    async fn start_span(&mut self, span: Vec<u8>) -> Result<()> {
        self.wait_inflight().await?;
        let offset = self.flushed;
        self.flushed += span.len() as u64;
        let info = self.info.clone().unwrap_or_default();
        let client = self.client.clone();
        let file = Transient {
            id: self.file.id,
            cookie: self.file.cookie,
        };
        let parity = std::mem::take(&mut self.parity);
        let mut blacklist = std::mem::take(&mut self.blacklist);
        self.inflight = Some(tokio::spawn(async move {
            let (data, parity) = client
                .add_span(&file, &info, offset, span, parity, &mut blacklist)
                .await?;
            Ok((data, parity, blacklist))
        }));
        Ok(())
    }
}

/// Writes every block of `span` to its target in parallel. Returns the proofs (in block
/// order, `None` where the write failed) and the failures.
async fn write_blocks(
    pool: &Arc<BlockPool>,
    span: &Arc<EncodedSpan>,
    targets: &[BlockWriteTarget],
) -> (Vec<Option<[u8; 8]>>, Vec<(usize, ClientError)>) {
    let mut tasks = JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let (pool, span, t) = (pool.clone(), span.clone(), t.clone());
        tasks.spawn(async move {
            let req = WriteBlockReq {
                block_service_id: t.block_service_id,
                block_id: t.block_id,
                crc: span.block_crcs[i],
                size: span.block_size(),
                certificate: t.certificate,
            };
            let pieces = span.block_pieces(i);
            (
                i,
                pool.write_block(t.addr.to_socket_addr(), &req, &pieces)
                    .await,
            )
        });
    }
    let mut proofs = vec![None; targets.len()];
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(proof))) => proofs[i] = Some(proof),
            Ok((i, Err(e))) => failures.push((i, e)),
            // A task that panicked: its block is the one without a proof.
            Err(e) => tracing::error!("block write task: {e}"),
        }
    }
    for (i, p) in proofs.iter().enumerate() {
        if p.is_none() && !failures.iter().any(|(j, _)| *j == i) {
            failures.push((
                i,
                ClientError::BadResponse {
                    what: format!("writing block {i}"),
                    why: "write task failed".into(),
                },
            ));
        }
    }
    (proofs, failures)
}

/// Reads until `buf` holds `target` bytes or the reader ends.
async fn fill(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    target: usize,
) -> Result<()> {
    while buf.len() < target {
        // Reading into spare capacity avoids zeroing the buffer first.
        buf.reserve(target - buf.len());
        let want = (target - buf.len()) as u64;
        let n = (&mut *reader)
            .take(want)
            .read_buf(buf)
            .await
            .map_err(|e| ClientError::io("reading the input", e))?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

fn describe(errors: &[(usize, ClientError)]) -> String {
    errors
        .iter()
        .map(|(i, e)| format!("block {i}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn layout_error(id: InodeId, e: LayoutError) -> ClientError {
    ClientError::BadResponse {
        what: format!("span layout for {id}"),
        why: e.to_string(),
    }
}

fn internal(id: InodeId, why: String) -> ClientError {
    ClientError::BadResponse {
        what: format!("writing {id}"),
        why,
    }
}
