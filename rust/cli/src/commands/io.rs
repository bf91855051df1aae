//! File data in and out: `write` (stdin to a file) and `cat`, plus the adapters that let the
//! client's async data path stream from and to ordinary blocking readers and writers.

use crate::error::{CliError, Result};
use eggs_client::{Client, FileWriter};
use eggs_protocol::{EggsError, InodeId};
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes everything `input` yields to a new file at `path` (replacing a file there), one
/// span at a time: the size is not limited by memory.
pub async fn write(c: &Client, path: &str, input: &mut dyn Read) -> Result<()> {
    FileWriter::write_path(c, path, BlockingReader(input)).await?;
    Ok(())
}

/// Streams a file (inline or stored in blocks) to `out`.
pub async fn cat(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    if id.is_dir() {
        return Err(is_a_directory(path));
    }
    read_to(c, id, out, &mut |_| {}).await?;
    Ok(())
}

/// Streams file `id` to `out`, calling `progress` with the bytes written after each write.
pub(crate) async fn read_to(
    c: &Client,
    id: InodeId,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let w = BlockingWriter {
        inner: out,
        progress,
    };
    Ok(c.read_file_to(id, w).await?)
}

pub(crate) fn is_a_directory(path: &str) -> CliError {
    CliError::Client(eggs_client::ClientError::Eggs {
        what: path.to_string(),
        err: EggsError::IsADirectory,
    })
}

/// A blocking reader (a local file, stdin) as an `AsyncRead`. Reads block the thread, which
/// is what a command-line tool doing one thing at a time wants.
pub(crate) struct BlockingReader<R>(pub R);

impl<R: Read + Unpin> AsyncRead for BlockingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self.0.read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A blocking writer as an `AsyncWrite` that reports each write to `progress`.
pub(crate) struct BlockingWriter<'a, W: ?Sized> {
    pub inner: &'a mut W,
    pub progress: &'a mut dyn FnMut(u64),
}

impl<W: Write + ?Sized> AsyncWrite for BlockingWriter<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.inner.write(buf);
        if let Ok(n) = r {
            (self.progress)(n as u64);
        }
        Poll::Ready(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn adapters() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i & 0xff) as u8).collect();
        let mut back = Vec::new();
        BlockingReader(&data[..])
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, data);
        let mut out = Vec::new();
        let mut total = 0;
        let mut count = |n| total += n;
        let mut w = BlockingWriter {
            inner: &mut out,
            progress: &mut count,
        };
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(out, data);
        assert_eq!(total, data.len() as u64);
    }
}
