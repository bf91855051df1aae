//! Talking to shuckle over TCP: one connection per request, which keeps the client free of
//! connection state; shuckle traffic is rare (address refreshes and status).

use crate::error::{ClientError, Result};
use eggs_common::frame::{read_frame, write_frame};
use eggs_protocol::codec::RequestBody;
use eggs_protocol::shuckle::{ShuckleReq, ShuckleRequest, ShuckleResp, ShuckleResponse};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Clone, Debug)]
pub struct ShuckleClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl ShuckleClient {
    pub fn new(addr: SocketAddr) -> ShuckleClient {
        ShuckleClient {
            addr,
            timeout: Duration::from_secs(5),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn request<B>(&self, body: B) -> Result<B::RespBody>
    where
        B: RequestBody<Req = ShuckleReq, Resp = ShuckleResp>,
    {
        let req = ShuckleRequest {
            body: body.into_req(),
        };
        let what = format!("shuckle {} {}", self.addr, req.body.kind());
        let fut = async {
            let mut stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| ClientError::io(&what, e))?;
            stream.set_nodelay(true).ok();
            write_frame(&mut stream, &req)
                .await
                .map_err(|e| bad(&what, e))?;
            let resp: Option<ShuckleResponse> =
                read_frame(&mut stream).await.map_err(|e| bad(&what, e))?;
            resp.ok_or_else(|| ClientError::BadResponse {
                what: what.clone(),
                why: "connection closed".into(),
            })
        };
        let resp = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                what: what.clone(),
                attempts: 1,
                elapsed_ms: eggs_protocol::conv::millis_of(self.timeout),
            })??;
        match resp.result {
            Ok(r) => B::from_resp(r).ok_or_else(|| ClientError::BadResponse {
                what,
                why: "response of the wrong kind".into(),
            }),
            Err(err) => Err(ClientError::Eggs { what, err }),
        }
    }
}

fn bad(what: &str, e: eggs_common::frame::FrameError) -> ClientError {
    match e {
        eggs_common::frame::FrameError::Io(io) => ClientError::io(what, io),
        other => ClientError::BadResponse {
            what: what.into(),
            why: other.to_string(),
        },
    }
}
