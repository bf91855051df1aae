//! TCP framing: 4-byte magic, little-endian `u32` body length, body.

use eggs_protocol::{codec, Message, MAX_TCP_MESSAGE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("{0}")]
    Decode(#[from] codec::DecodeError),
}

/// Reads one framed message. Returns `Ok(None)` on a clean end of stream before a frame.
pub async fn read_frame<M: Message, R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<M>, FrameError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    // Check the magic before allocating anything, so a stranger cannot make us reserve
    // memory just by connecting.
    if head[..4] != M::MAGIC {
        return Err(codec::DecodeError::BadMagic([head[0], head[1], head[2], head[3]]).into());
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_TCP_MESSAGE {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; 4 + len as usize];
    buf[..4].copy_from_slice(&head[..4]);
    r.read_exact(&mut buf[4..]).await?;
    Ok(Some(codec::decode(&buf)?))
}

/// Writes one framed message (without flushing buffered writers).
pub async fn write_frame<M: Message, W: AsyncWrite + Unpin>(
    w: &mut W,
    m: &M,
) -> Result<(), FrameError> {
    let encoded = codec::encode(m);
    // The peer would refuse it: fail here, where the cause is known.
    let body_len = u32::try_from(encoded.len() - 4).unwrap_or(u32::MAX);
    if body_len > MAX_TCP_MESSAGE {
        return Err(FrameError::TooLarge(body_len));
    }
    let mut buf = Vec::with_capacity(encoded.len() + 4);
    buf.extend_from_slice(&encoded[..4]);
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&encoded[4..]);
    w.write_all(&buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::shuckle::{ShardsReq, ShuckleReq, ShuckleRequest};

    #[tokio::test]
    async fn frame_round_trip_and_limits() {
        let m = ShuckleRequest {
            body: ShuckleReq::Shards(ShardsReq {}),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &m).await.unwrap();
        let mut r = &buf[..];
        let got: Option<ShuckleRequest> = read_frame(&mut r).await.unwrap();
        assert_eq!(got, Some(m));
        let got: Option<ShuckleRequest> = read_frame(&mut r).await.unwrap();
        assert_eq!(got, None);
        let mut huge = b"SHU\x01".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = read_frame::<ShuckleRequest, _>(&mut &huge[..]).await;
        assert!(matches!(err, Err(FrameError::TooLarge(_))));
    }
}
