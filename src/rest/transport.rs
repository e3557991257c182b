//! Refusals the HTTP/1 parser (hyper) answers by itself, before axum or any tower layer runs: a
//! request line or URI too long (414), a header section too large or with too many headers
//! (431), an unparsable request (400). hyper writes them with an empty body; Stripe's clients
//! expect its JSON envelope on every error. The listener's connections are wrapped so that such
//! an automatic response head, recognised on its way out (a 400/414/431 with no content type and
//! no body, which no handler ever sends), is replaced by the same status with the envelope. hyper
//! closes the connection after these, so nothing follows on the wire.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::envelope_body;
use crate::error::{Error, ErrorKind};

/// A listener whose connections render hyper's automatic refusals in Stripe's envelope.
pub struct EnvelopeListener<L>(pub L);

impl<L: Listener> Listener for EnvelopeListener<L> {
    type Io = EnvelopeIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (
            EnvelopeIo {
                inner: io,
                pending: Vec::new(),
                written: 0,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's automatic refusals (see the module docs).
pub struct EnvelopeIo<T> {
    inner: T,
    /// A replacement response still being written, and how much of it is out.
    pending: Vec<u8>,
    written: usize,
}

/// The replacement for an automatic refusal's head, or `None` for any other bytes.
pub fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = if head.starts_with(b"HTTP/1.1 414 ") {
        (414, "The request URI is too long.")
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (431, "The request's headers are too large or too many.")
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        (400, "The HTTP request could not be parsed.")
    } else {
        return None;
    };
    let end = head.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head_text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let empty_body = !head_text.contains("content-type:")
        && head_text
            .lines()
            .filter_map(|line| line.strip_prefix("content-length:"))
            .all(|length| length.trim() == "0");
    if !empty_body {
        return None;
    }
    let reason = &head_text[..head_text.find("\r\n").unwrap_or(head_text.len())];
    let reason = &reason["http/1.1 400 ".len()..];
    let body = envelope_body(&Error::new(ErrorKind::InvalidRequest, message));
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nstripe-version: {}\r\n\r\n",
        title_case(reason),
        body.len(),
        super::STRIPE_API_VERSION,
    )
    .into_bytes();
    response.extend_from_slice(&body);
    Some(response)
}

fn title_case(reason: &str) -> String {
    reason
        .split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl<T: AsyncWrite + Unpin> EnvelopeIo<T> {
    /// Writes out the pending replacement, if any.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EnvelopeIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EnvelopeIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_empty() {
            match replacement(buf) {
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
                Some(response) => {
                    self.pending = response;
                    self.written = 0;
                }
            }
        }
        // The replaced head (and anything after it in this buffer) counts as written once the
        // replacement is out; hyper closes the connection next.
        std::task::ready!(self.poll_drain(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_automatic_refusals_are_replaced() {
        let automatic =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = String::from_utf8(replacement(automatic).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let body = &replaced[replaced.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(replacement(b"HTTP/1.1 414 URI Too Long\r\n\r\n").is_some());
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
