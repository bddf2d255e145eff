//! Response bodies: whole ones (JSON, text, empty) and streamed ones fed from a channel
//! (logs, pulls), all boxed into one type.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// Every response's body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// A response.
pub type Resp = Response<Body>;

/// A response of `status` with `body` and its content type.
pub fn with(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    with(status, "application/json", bytes)
}

/// An empty response (`204 No Content` and the like).
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Empty::new().boxed());
    *r.status_mut() = status;
    r
}

/// A streamed response: what is sent on the returned channel, until it is dropped.
pub fn streamed(content_type: &'static str) -> (mpsc::Sender<Bytes>, Resp) {
    let (tx, rx) = mpsc::channel(64);
    let mut r = Response::new(ChannelBody { rx }.boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    (tx, r)
}

/// A body whose chunks arrive on a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
