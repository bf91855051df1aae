//! Writing files: construct a transient file, append its spans, link it.
//!
//! [`FileWriter`] is the only writer. Its input goes into a span buffer which (padded) already
//! holds the data blocks (see `span.rs`); a full span is stored by a task of its own while the
//! next one fills, so memory stays at about two spans plus parity whatever the file size.
//! Files of at most `MAX_INLINE_SPAN` bytes are stored inline in the shard; the others go to
//! block services: `AddSpanInitiate` (the shard picks the services and signs a
//! certificate per block), all blocks written in parallel, `AddSpanCertify` with the services'
//! proofs. A span whose blocks cannot all be written is removed and written again elsewhere,
//! avoiding the services that failed.

use crate::blocks::BlockPool;
use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::span::{max_span_size, EncodedSpan, LayoutError, SpanLayout};
use eggs_protocol::blocks::{EraseBlockReq, WriteBlockReq};
use eggs_protocol::conv::{fit, usize_of};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::posix;
use eggs_protocol::shard::{self, BlockWriteTarget};
use eggs_protocol::{
    BlockServiceId, EggsError, InodeAttrs, InodeId, InodeType, Name, MAX_INLINE_SPAN,
};
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
        let layout = SpanLayout::for_span(info, fit::<u32, usize>(data.len()))
            .map_err(|e| layout_error(file.id, e))?;
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

/// The one way to write a file: bytes are appended (from memory or a reader) into a buffer of
/// up to one span, and each full span is stored by a background task while the next one
/// fills, so at most two spans (plus parity) are in memory whatever the file size.
/// [`FileWriter::finish`] stores the rest and links the file; dropping the writer without
/// finishing leaves a transient file that GC removes after its deadline. The CLI, FUSE, GC's
/// tools and the tests all write through it ([`FileWriter::write_in`] and
/// [`FileWriter::write_path`] for a whole file from a reader).
pub struct FileWriter {
    client: Client,
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
    /// Bytes of the spans whose task finished (what a progress report may count as stored).
    stored: u64,
    inflight: Option<tokio::task::JoinHandle<Result<SpanDone>>>,
    parity: ParityBuffers,
    blacklist: Vec<BlockServiceId>,
}

/// What a finished background span gives back for the next one.
type SpanDone = (Vec<u8>, ParityBuffers, Vec<BlockServiceId>);

/// Called with the bytes stored so far, after each span and once more when the file is
/// linked (then with its size).
pub type Progress<'a> = &'a mut (dyn FnMut(u64) + Send);

impl FileWriter {
    /// Creates the transient file on the shard of `owner_id`, the directory it will be
    /// linked into, as this process would create it (its uid and gid, mode 0666 less its
    /// umask for a file, 0777 for a symlink, the directory's group where it has setgid).
    pub async fn new(client: &Client, owner_id: InodeId, typ: InodeType) -> Result<Self> {
        let mode = match typ {
            InodeType::Symlink => posix::S_IFLNK | 0o777,
            _ => posix::S_IFREG | (0o666 & !client.umask()),
        };
        let attrs = client.new_attrs(owner_id, client.caller(), mode).await?;
        Self::with_attrs(client, owner_id, typ, attrs, 0).await
    }

    /// Creates the transient file with exactly `attrs` (and device number `rdev`, for a
    /// special file that will get no contents).
    pub async fn with_attrs(
        client: &Client,
        owner_id: InodeId,
        typ: InodeType,
        attrs: InodeAttrs,
        rdev: u64,
    ) -> Result<Self> {
        let req = shard::ConstructFileReq { typ, attrs, rdev };
        let f = client.shard_request(owner_id.shard(), req).await?;
        Ok(FileWriter {
            client: client.clone(),
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
            stored: 0,
            inflight: None,
            parity: ParityBuffers::new(),
            blacklist: Vec::new(),
        })
    }

    /// Writes everything `reader` yields as a new file at `path` (replacing a file there) and
    /// returns its id.
    pub async fn write_path(
        client: &Client,
        path: &str,
        reader: impl AsyncRead + Unpin,
    ) -> Result<InodeId> {
        let (owner_id, name) = client.resolve_parent(path).await?;
        Self::write_in(client, owner_id, &name, reader)
            .await
            .map_err(|e| e.with_context(&format!("writing {path}")))
    }

    /// Writes everything `reader` yields as a new file `name` in the directory `owner_id`
    /// (replacing a file of that name) and returns its id.
    pub async fn write_in(
        client: &Client,
        owner_id: InodeId,
        name: &Name,
        reader: impl AsyncRead + Unpin,
    ) -> Result<InodeId> {
        Self::write_in_with_progress(client, owner_id, name, reader, &mut |_| {}).await
    }

    /// Like [`FileWriter::write_in`], reporting the bytes stored as it goes.
    pub async fn write_in_with_progress(
        client: &Client,
        owner_id: InodeId,
        name: &Name,
        mut reader: impl AsyncRead + Unpin,
        progress: Progress<'_>,
    ) -> Result<InodeId> {
        let mut w = FileWriter::new(client, owner_id, InodeType::File).await?;
        let id = w.id();
        w.append_from(&mut reader, progress).await?;
        let size = w.size();
        w.finish(name).await?;
        progress(size);
        Ok(id)
    }

    /// The transient file's id (it keeps it once linked).
    pub fn id(&self) -> InodeId {
        self.file.id
    }

    /// The transient file's cookie, which authorises changes to it until it is linked
    /// (`Client::set_attr` on a file still being written).
    pub fn cookie(&self) -> u64 {
        self.file.cookie
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
            self.reserve_span();
            let n = self.room().min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.start_full_spans().await?;
        }
        Ok(())
    }

    /// Appends everything `reader` yields, reading straight into the span buffer (no copy),
    /// and calls `progress` with the bytes stored after each span. Returns the bytes read.
    pub async fn append_from(
        &mut self,
        reader: &mut (impl AsyncRead + Unpin),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let before = self.size();
        if self.info.is_none() {
            // One byte more than fits inline tells whether the file does.
            fill(reader, &mut self.buf, MAX_INLINE_SPAN + 1).await?;
            if self.buf.len() <= MAX_INLINE_SPAN {
                return Ok(self.size() - before);
            }
            // Only files stored in blocks need the policies, which cost a walk to the root.
            self.ensure_policy().await?;
        }
        loop {
            self.start_full_spans().await?;
            progress(self.stored);
            self.reserve_span();
            fill(reader, &mut self.buf, self.max_span).await?;
            if self.buf.len() < self.max_span {
                // The reader is done; what is buffered is stored by `finish`.
                return Ok(self.size() - before);
            }
        }
    }

    /// Cuts the file to `size` bytes (only within what is still buffered) or extends it with
    /// zeros. Returns false when `size` is below what was already stored.
    pub async fn truncate(&mut self, size: u64) -> Result<bool> {
        if size < self.flushed {
            return Ok(false);
        }
        if size <= self.size() {
            self.buf.truncate(usize_of(size - self.flushed));
            return Ok(true);
        }
        let mut left = size - self.size();
        let zeros = vec![0u8; 1 << 20];
        while left > 0 {
            let n = usize_of(left.min(zeros.len() as u64));
            self.append(&zeros[..n]).await?;
            left -= n as u64;
        }
        Ok(true)
    }

    /// Stores what is buffered and links the file as `name` in its directory (replacing a
    /// file of that name, which stays as a snapshot edge).
    pub async fn finish(self, name: &Name) -> Result<shard::LinkFileResp> {
        let owner_id = self.owner_id;
        self.finish_in(owner_id, name).await
    }

    /// Like [`FileWriter::finish`], into another directory of the same shard (the file
    /// was renamed before it was linked).
    pub async fn finish_in(
        mut self,
        owner_id: InodeId,
        name: &Name,
    ) -> Result<shard::LinkFileResp> {
        assert_eq!(
            owner_id.shard(),
            self.owner_id.shard(),
            "a file is linked on the shard it was made on"
        );
        self.store_rest().await?;
        self.client
            .shard_request(
                owner_id.shard(),
                shard::LinkFileReq {
                    file_id: self.file.id,
                    cookie: self.file.cookie,
                    owner_id,
                    name: name.clone(),
                },
            )
            .await
    }

    /// Bytes the current span buffer can still take.
    fn room(&self) -> usize {
        self.max_span.saturating_sub(self.buf.len())
    }

    /// Gives the span buffer room for a full span with its padding: the previous span's
    /// buffer when it is free, so that a large file allocates it once.
    fn reserve_span(&mut self) {
        if self.buf.capacity() >= self.padded {
            return;
        }
        if self.buf.is_empty() && self.spare.capacity() >= self.padded {
            self.buf = std::mem::take(&mut self.spare);
            self.buf.clear();
        } else {
            self.buf.reserve_exact(self.padded - self.buf.len());
        }
    }

    /// Hands every full span in the buffer to a span task (the policy is known).
    async fn start_full_spans(&mut self) -> Result<()> {
        while self.max_span > 0 && self.buf.len() >= self.max_span {
            // Only when the policy's spans are smaller than what was read to rule out an
            // inline file is there an excess to keep for the next span.
            let excess = self.buf.split_off(self.max_span);
            let span = std::mem::replace(&mut self.buf, excess);
            self.start_span(span).await?;
        }
        Ok(())
    }

    async fn store_rest(&mut self) -> Result<()> {
        if self.flushed == 0 && self.buf.len() <= MAX_INLINE_SPAN {
            let data = std::mem::take(&mut self.buf);
            self.client.add_inline(&self.file, data).await?;
            return Ok(());
        }
        self.ensure_policy().await?;
        self.start_full_spans().await?;
        if !self.buf.is_empty() {
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
            self.padded = SpanLayout::for_span(&info, fit::<u32, usize>(self.max_span))
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
            self.stored = self.flushed;
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
