//! The TCP socket under an SSH session, with quick ACKs while the session is set up.
//!
//! OpenSSH's sshd writes with Nagle's algorithm on until a session starts. After
//! authentication it sends two small packets back to back (a debug message, the
//! host keys), then the answer to our channel open: the later ones wait in its
//! kernel until the first is acknowledged. Our kernel delays that ACK (40 ms on
//! Linux) because we have nothing to send while we wait for the answer. That was
//! 40-45 ms of each connection on loopback, where the rest of the set-up takes
//! about 30 ms. So for the first [`QUICKACK_BYTES`] read, every read re-arms
//! `TCP_QUICKACK` (the kernel drops it by itself), and the ACK goes at once. Past
//! the set-up, sshd has `TCP_NODELAY` on and delayed ACKs cost nothing; they are
//! left alone.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read with quick ACKs: key exchange, authentication, channel open and the
/// first frames of the session take under 16 KiB.
pub(crate) const QUICKACK_BYTES: u64 = 64 * 1024;

/// A connected TCP stream that acknowledges at once for its first [`QUICKACK_BYTES`].
pub(crate) struct QuickAckStream {
    inner: TcpStream,
    /// Bytes still to read with quick ACKs.
    quick_left: u64,
}

impl QuickAckStream {
    /// Connects to `addr` with `TCP_NODELAY` (our own small writes go at once).
    pub async fn connect(host: &str, port: u16) -> io::Result<QuickAckStream> {
        let inner = TcpStream::connect((host, port)).await?;
        inner.set_nodelay(true)?;
        let s = QuickAckStream {
            inner,
            quick_left: QUICKACK_BYTES,
        };
        s.quickack();
        Ok(s)
    }

    /// Re-arm quick ACKs; a failure only costs the delay, so it is ignored.
    fn quickack(&self) {
        let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.quick_left > 0 && matches!(r, Poll::Ready(Ok(()))) {
            let n = (buf.filled().len() - before) as u64;
            self.quick_left = self.quick_left.saturating_sub(n.max(1));
            self.quickack();
        }
        r
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_bytes_both_ways_and_counts_down_its_quick_acks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&vec![7u8; 100_000]).await.unwrap();
            b
        });
        let mut c = QuickAckStream::connect("127.0.0.1", port).await.unwrap();
        assert!(c.inner.nodelay().unwrap());
        c.write_all(b"hello").await.unwrap();
        let mut got = vec![0u8; 100_000];
        c.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&b| b == 7));
        assert_eq!(c.quick_left, 0, "100,000 bytes read: past the set-up");
        assert_eq!(&server.await.unwrap(), b"hello");
    }
}
