//! Every error the node sends is JSON, including those hyper writes on its
//! own: a request it cannot parse (400), a URI too long (414) or headers too
//! large (431) never reach the router, and hyper answers them with an empty
//! body before it closes the connection. [`JsonFramingErrors`] wraps a
//! connection's stream and replaces such an automatic answer, recognised by
//! its status line and its empty body, with the same status carrying the
//! node's `{"error": {"code", "message"}}` body.
//!
//! The router's own responses never match: every error it returns carries a
//! JSON body (see `api::errors::json_errors`), and response bodies cannot
//! contain a bare CRLF-framed status line (they are JSON, server-sent events or Prometheus text).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream whose automatic error answers come out as JSON.
#[derive(Debug)]
pub struct JsonFramingErrors<S> {
    inner: S,
    /// A replacement being written: its bytes, how many are out, and the
    /// length of the original write it stands for.
    replacing: Option<Replacement>,
}

#[derive(Debug)]
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

impl<S> JsonFramingErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonFramingErrors {
            inner,
            replacing: None,
        }
    }
}

/// The JSON answer for one of hyper's automatic error heads, if `head` is
/// one: a complete head with a 4xx status and no body.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 4")?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != head.len() {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if !lower.windows(21).any(|w| w == b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (status, code, message) = match rest.get(..2)? {
        b"00" => (
            "400 Bad Request",
            "bad-request",
            "the request is not valid HTTP/1.1",
        ),
        b"14" => (
            "414 URI Too Long",
            "uri-too-long",
            "the request target is longer than the node accepts",
        ),
        b"31" => (
            "431 Request Header Fields Too Large",
            "headers-too-large",
            "the request's headers are larger, or more, than the node accepts",
        ),
        _ => return None,
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonFramingErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonFramingErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match replacement_for(buf) {
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
                Some(bytes) => {
                    this.replacing = Some(Replacement {
                        bytes,
                        written: 0,
                        stands_for: buf.len(),
                    })
                }
            }
        }
        // hyper calls again with the same bytes until told they are out.
        let replacement = this.replacing.as_mut().expect("set above");
        while replacement.written < replacement.bytes.len() {
            let n = ready!(
                Pin::new(&mut this.inner).poll_write(cx, &replacement.bytes[replacement.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacement.written += n;
        }
        let stands_for = replacement.stands_for;
        this.replacing = None;
        Poll::Ready(Ok(stands_for))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands over each response as one buffer, so
    // an automatic answer's head is seen whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_automatic_error_heads_are_replaced() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(replacement_for(head).unwrap()).unwrap();
        assert!(json.starts_with("HTTP/1.1 431 "));
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"]["code"], "headers-too-large");
        assert!(
            replacement_for(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some()
        );
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"output\": \"HTTP/1.1 400\"}",
        ] {
            assert!(
                replacement_for(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
