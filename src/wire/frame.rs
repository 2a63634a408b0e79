//! Length-prefixed frames and the bounded byte codec used inside them.
//!
//! On the wire every message is `u32 length (big-endian) | payload`, and the
//! length is checked against [`MAX_FRAME`] before a single byte of payload is
//! buffered. Inside a payload, [`Dec`] reads fields and checks every length and
//! count against what is left in the frame and against the caller's bound, so
//! a hostile peer can make us allocate at most one frame's worth of memory.

use super::compress::{Added, Compressor, Decompressor, TAG_BATCH, TAG_ZSTD};
use std::io::{self, Read, Write};

/// Largest frame accepted or sent (payload bytes).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why bytes from the peer could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection to the peer lost: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    FrameTooLarge(u64),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

pub(crate) fn malformed(what: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(what.into())
}

/// A batch of at least this many payload bytes goes on to the peer at once, not when
/// the buffer below fills: a sender that has many requests queued (and so does not
/// flush) starts the link after its first batch, not after 256 KiB of compressed data.
const BATCH_PUSH: usize = 32 * 1024;

/// Writes frames to a byte stream. Callers flush when they are about to wait.
pub struct FrameWriter<W: Write> {
    inner: W,
    /// Bytes written (on the wire, after compression).
    pub bytes: u64,
    /// The same frames before compression (equal to `bytes` without it).
    pub raw_bytes: u64,
    /// Set once a session asked for compression (protocol 2.6); the stream lasts
    /// as long as the connection.
    z: Option<Box<Compressor>>,
    /// Compress from now on (the level of the last `set_compression`).
    z_on: bool,
    /// The peer reads batches (2.7): small frames share one flush ([`TAG_BATCH`]).
    batching: bool,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            bytes: 0,
            raw_bytes: 0,
            z: None,
            z_on: false,
            batching: false,
        }
    }

    /// The peer reads compressed batches (protocol 2.7): set before compression starts.
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Compress the frames to come at `level`, or stop (`None`). Only once the peer
    /// knows (it asked, or was told with `Link`).
    pub fn set_compression(&mut self, level: Option<i32>) {
        self.z_on = level.is_some();
        if let Some(l) = level {
            match &mut self.z {
                Some(z) => z.set_level(l),
                None => self.z = Some(Box::new(Compressor::new(l))),
            }
        }
    }

    /// Write one frame whose payload is `payload`.
    pub fn write_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        assert!(
            payload.len() <= MAX_FRAME,
            "frame too large: {}",
            payload.len()
        );
        match payload.split_first() {
            Some((&tag, body)) => self.write_tagged(tag, body),
            None => {
                self.end_batch()?;
                self.inner.write_all(&0u32.to_be_bytes())?;
                self.bytes += 4;
                self.raw_bytes += 4;
                Ok(())
            }
        }
    }

    /// Write one frame made of a tag byte and a body, without copying the body.
    pub fn write_tagged(&mut self, tag: u8, body: &[u8]) -> io::Result<()> {
        let len = 1 + body.len();
        assert!(len <= MAX_FRAME, "frame too large: {len}");
        self.raw_bytes += 4 + len as u64;
        if self.z_on && self.batching {
            if self.batch(tag, body)? {
                return Ok(());
            }
        } else {
            self.end_batch()?;
        }
        if self.z_on
            && let Some(z) = self.z.as_mut()
            && let Some(packed) = z.frame(tag, body)
        {
            let zlen = 1 + packed.len();
            self.inner.write_all(&(zlen as u32).to_be_bytes())?;
            self.inner.write_all(&[TAG_ZSTD])?;
            self.inner.write_all(packed)?;
            self.bytes += 4 + zlen as u64;
            return Ok(());
        }
        self.inner.write_all(&(len as u32).to_be_bytes())?;
        self.inner.write_all(&[tag])?;
        self.inner.write_all(body)?;
        self.bytes += 4 + len as u64;
        Ok(())
    }

    /// Queue the frame in the open batch (true), else close the batch so that the
    /// frame can go on its own, in order (false).
    fn batch(&mut self, tag: u8, body: &[u8]) -> io::Result<bool> {
        let Some(z) = self.z.as_mut() else {
            return Ok(false);
        };
        if let Added::Queued = z.add(tag, body)? {
            return Ok(true);
        }
        if z.pending() == 0 {
            return Ok(false);
        }
        // Full, or the frame goes alone: close the batch, then try a new one.
        self.end_batch()?;
        let z = self.z.as_mut().expect("checked above");
        Ok(matches!(z.add(tag, body)?, Added::Queued))
    }

    /// Write the open batch, if any, as one `Batch` frame.
    fn end_batch(&mut self) -> io::Result<()> {
        let Some(z) = self.z.as_mut() else {
            return Ok(());
        };
        let big = z.pending() >= BATCH_PUSH;
        if let Some(packed) = z.end_batch()? {
            let zlen = 1 + packed.len();
            self.inner.write_all(&(zlen as u32).to_be_bytes())?;
            self.inner.write_all(&[TAG_BATCH])?;
            self.inner.write_all(packed)?;
            self.bytes += 4 + zlen as u64;
            if big {
                self.inner.flush()?;
            }
        }
        Ok(())
    }

    /// Close the open batch and flush: everything written so far goes to the peer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.end_batch()?;
        self.inner.flush()
    }

    /// Write bytes with no framing (tests of malformed input only).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)
    }
}

impl<W: Write> Drop for FrameWriter<W> {
    /// Frames queued in a batch reach the inner writer (whose own drop may flush them).
    fn drop(&mut self) {
        let _ = self.end_batch();
    }
}

/// Reads frames from a byte stream into a reused buffer.
pub struct FrameReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes read (on the wire, compressed frames as they came).
    pub bytes: u64,
    /// The same frames decompressed (equal to `bytes` without compression).
    pub raw_bytes: u64,
    /// Set once compression was negotiated: `Zstd` frames are refused before.
    z: Option<Box<Decompressor>>,
    zin: Vec<u8>,
    /// An `Open` was sent without waiting for its answer: [`super::recv`] takes the
    /// `OpenOk` out of the stream (or hands back the `Error` that replaced it).
    pub(super) open_pending: bool,
    /// The decoded frames of the last `Batch` (2.7), served from `batch_pos` on.
    batch: Vec<u8>,
    batch_pos: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            bytes: 0,
            raw_bytes: 0,
            z: None,
            zin: Vec::new(),
            open_pending: false,
            batch: Vec::new(),
            batch_pos: 0,
        }
    }

    /// The peer's answer to an `Open` sent just now is still to come: the next message
    /// must be `OpenOk` (skipped by [`super::recv`]) or an `Error` (returned).
    pub fn expect_open_ok(&mut self) {
        self.open_pending = true;
    }

    /// Whether the answer to a pipelined `Open` was not read yet.
    pub fn open_pending(&self) -> bool {
        self.open_pending
    }

    /// Accept compressed frames from now on (the session negotiated compression).
    pub fn accept_compressed(&mut self) {
        if self.z.is_none() {
            self.z = Some(Box::default());
        }
    }

    /// Read the next frame's payload. A clean end of stream before a frame starts is `Closed`.
    pub fn read_frame(&mut self) -> Result<&[u8], ProtocolError> {
        if self.next_batched()? {
            return Ok(&self.buf);
        }
        let len = self.read_len()?;
        self.buf.clear();
        read_body(&mut self.inner, len, &mut self.buf)?;
        self.bytes += 4 + len as u64;
        match self.buf.first() {
            Some(&TAG_ZSTD) => self.unpack()?,
            Some(&TAG_BATCH) => {
                self.unbatch()?;
                return Ok(&self.buf);
            }
            _ => {}
        }
        self.raw_bytes += 4 + self.buf.len() as u64;
        Ok(&self.buf)
    }

    /// Decode the `Batch` frame in `self.buf` and put its first frame there.
    fn unbatch(&mut self) -> Result<(), ProtocolError> {
        let Some(z) = self.z.as_mut() else {
            return Err(ProtocolError::Unexpected(
                "a compressed batch, but this session did not ask for compression".into(),
            ));
        };
        std::mem::swap(&mut self.buf, &mut self.zin);
        z.frame(&self.zin[1..], &mut self.batch)?;
        self.batch_pos = 0;
        self.next_batched()?;
        Ok(())
    }

    /// Move the next frame of the current batch, if any is left, into `self.buf`.
    /// Each is `u32 length | payload` like on the wire; an empty, truncated or
    /// compressed one refuses the batch.
    fn next_batched(&mut self) -> Result<bool, ProtocolError> {
        let rest = &self.batch[self.batch_pos.min(self.batch.len())..];
        if rest.is_empty() {
            return Ok(false);
        }
        let Some((head, rest)) = rest.split_first_chunk::<4>() else {
            return Err(malformed("truncated frame header in a compressed batch"));
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len == 0 || len > rest.len() {
            return Err(malformed("bad frame length in a compressed batch"));
        }
        if matches!(rest[0], TAG_ZSTD | TAG_BATCH) {
            return Err(malformed("a compressed frame inside a compressed batch"));
        }
        self.buf.clear();
        self.buf.extend_from_slice(&rest[..len]);
        self.batch_pos += 4 + len;
        self.raw_bytes += 4 + len as u64;
        Ok(true)
    }

    /// Replace the `Zstd` frame in `self.buf` by the payload it carries.
    fn unpack(&mut self) -> Result<(), ProtocolError> {
        let Some(z) = self.z.as_mut() else {
            return Err(ProtocolError::Unexpected(
                "a compressed frame, but this session did not ask for compression".into(),
            ));
        };
        std::mem::swap(&mut self.buf, &mut self.zin);
        z.frame(&self.zin[1..], &mut self.buf)?;
        if matches!(self.buf[0], TAG_ZSTD | TAG_BATCH) {
            return Err(malformed("a compressed frame inside a compressed frame"));
        }
        Ok(())
    }

    /// Like [`Self::read_frame`], but the body of a frame tagged `tag` (at most
    /// `max` bytes after the tag) comes back as its own buffer, without the tag
    /// and without a copy: the way file data is received.
    pub fn read_frame_or_body(&mut self, tag: u8, max: usize) -> Result<Frame<'_>, ProtocolError> {
        if self.next_batched()? {
            return self.decoded(tag, max);
        }
        let len = self.read_len()?;
        self.buf.clear();
        if len == 0 {
            self.bytes += 4;
            self.raw_bytes += 4;
            return Ok(Frame::Payload(&self.buf));
        }
        read_body(&mut self.inner, 1, &mut self.buf)?;
        if matches!(self.buf[0], TAG_ZSTD | TAG_BATCH) {
            read_body(&mut self.inner, len - 1, &mut self.buf)?;
            self.bytes += 4 + len as u64;
            if self.buf[0] == TAG_BATCH {
                self.unbatch()?;
            } else {
                self.unpack()?;
                self.raw_bytes += 4 + self.buf.len() as u64;
            }
            return self.decoded(tag, max);
        }
        if self.buf[0] != tag {
            read_body(&mut self.inner, len - 1, &mut self.buf)?;
            self.bytes += 4 + len as u64;
            self.raw_bytes += 4 + len as u64;
            return Ok(Frame::Payload(&self.buf));
        }
        if len - 1 > max {
            return Err(malformed("frame body too large"));
        }
        let mut body = crate::tree::bufpool::take(len - 1);
        read_body(&mut self.inner, len - 1, &mut body)?;
        self.bytes += 4 + len as u64;
        self.raw_bytes += 4 + len as u64;
        Ok(Frame::Body(body))
    }

    /// A decoded payload in `self.buf`, as [`Self::read_frame_or_body`] returns it.
    fn decoded(&mut self, tag: u8, max: usize) -> Result<Frame<'_>, ProtocolError> {
        if self.buf[0] != tag {
            return Ok(Frame::Payload(&self.buf));
        }
        if self.buf.len() - 1 > max {
            return Err(malformed("frame body too large"));
        }
        let mut body = crate::tree::bufpool::take(self.buf.len() - 1);
        body.extend_from_slice(&self.buf[1..]);
        Ok(Frame::Body(body))
    }

    /// A frame header: the payload's length, checked against [`MAX_FRAME`].
    fn read_len(&mut self) -> Result<usize, ProtocolError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Err(ProtocolError::Closed),
                Ok(0) => return Err(malformed("truncated frame header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge(len as u64));
        }
        Ok(len)
    }
}

/// What [`FrameReader::read_frame_or_body`] read.
pub enum Frame<'a> {
    /// A whole payload, tag included.
    Payload(&'a [u8]),
    /// The body of a frame with the asked-for tag.
    Body(Vec<u8>),
}

/// Append exactly `len` bytes from `inner` to `buf`, growing it as bytes actually
/// arrive (not to the announced length up front): a peer that announces 16 MiB
/// and sends 4 bytes costs 4 bytes.
fn read_body<R: Read>(inner: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let got = inner.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(malformed("truncated frame"));
    }
    Ok(())
}

/// Builds a payload.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn tag(t: u8) -> Self {
        Enc(vec![t])
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Length-prefixed (u32) bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// An unsigned LEB128 varint: 7 bits a byte, low bits first, 1 to 10 bytes.
    pub fn uvar(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
}

/// Reads a payload; every read is bounds-checked.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() - self.pos < n {
            return Err(malformed(format!("truncated {what}")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn bool(&mut self, what: &str) -> Result<bool, ProtocolError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(malformed(format!("{what}: bad boolean {v}"))),
        }
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn i64(&mut self, what: &str) -> Result<i64, ProtocolError> {
        Ok(i64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    /// An unsigned LEB128 varint (see [`Enc::uvar`]); more than 64 bits is refused.
    pub fn uvar(&mut self, what: &str) -> Result<u64, ProtocolError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            // The tenth byte holds only the 64th bit.
            if i == 9 && b > 1 {
                return Err(malformed(format!("{what}: varint exceeds 64 bits")));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed(format!("{what}: varint exceeds 64 bits")))
    }
    /// Length-prefixed bytes, at most `max` long.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(malformed(format!("{what}: length {n} exceeds {max}")));
        }
        self.take(n, what)
    }
    pub fn string(&mut self, max: usize, what: &str) -> Result<String, ProtocolError> {
        let b = self.bytes(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(format!("{what}: not UTF-8")))
    }
    /// A count of following items, each at least `min_item` bytes: bounded by what is left.
    pub fn count(
        &mut self,
        max: usize,
        min_item: usize,
        what: &str,
    ) -> Result<usize, ProtocolError> {
        let n = self.u32(what)? as usize;
        let left = self.buf.len() - self.pos;
        if n > max || n.saturating_mul(min_item.max(1)) > left {
            return Err(malformed(format!("{what}: count {n} impossible")));
        }
        Ok(n)
    }
    /// The next `n` bytes (`n` already bounded by the caller).
    pub fn fixed_slice(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        self.take(n, what)
    }
    pub fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ProtocolError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }
    /// Everything left in the frame.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Whether the whole frame has been read (optional trailing fields follow otherwise).
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
    /// Fail if bytes are left over.
    pub fn end(&self, what: &str) -> Result<(), ProtocolError> {
        if self.pos != self.buf.len() {
            return Err(malformed(format!(
                "{what}: {} trailing bytes",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut e = Enc::default();
            e.uvar(v);
            assert!(e.0.len() <= 10);
            let mut d = Dec::new(&e.0);
            assert_eq!(d.uvar("v").unwrap(), v);
            d.end("v").unwrap();
            assert!(Dec::new(&e.0[..e.0.len() - 1]).uvar("v").is_err());
        }
        // An 11-byte varint, and a 10th byte carrying more than the 64th bit.
        assert!(Dec::new(&[0x80; 11]).uvar("v").is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(Dec::new(&too_big).uvar("v").is_err());
    }

    #[test]
    fn frame_round_trip_and_limits() {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out);
        w.write_frame(b"hello").unwrap();
        w.write_frame(b"").unwrap();
        drop(w);
        let mut r = FrameReader::new(&out[..]);
        assert_eq!(r.read_frame().unwrap(), b"hello");
        assert_eq!(r.read_frame().unwrap(), b"");
        assert!(matches!(r.read_frame(), Err(ProtocolError::Closed)));

        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        let mut r = FrameReader::new(&huge[..]);
        assert!(matches!(
            r.read_frame(),
            Err(ProtocolError::FrameTooLarge(_))
        ));

        let truncated = [0u8, 0, 0, 10, 1, 2];
        let mut r = FrameReader::new(&truncated[..]);
        assert!(matches!(r.read_frame(), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn a_tagged_body_comes_back_on_its_own_and_other_frames_whole() {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out);
        w.write_tagged(7, b"body").unwrap();
        w.write_tagged(8, b"other").unwrap();
        w.write_frame(b"").unwrap();
        w.write_tagged(7, &[0; 11]).unwrap();
        w.write_raw(&[0, 0, 0, 9, 7, 1, 2]).unwrap(); // 8 body bytes announced, 2 sent
        drop(w);
        let mut r = FrameReader::new(&out[..]);
        assert!(matches!(r.read_frame_or_body(7, 10), Ok(Frame::Body(b)) if b == b"body"));
        assert!(matches!(r.read_frame_or_body(7, 10), Ok(Frame::Payload(p)) if p == b"\x08other"));
        assert!(matches!(r.read_frame_or_body(7, 10), Ok(Frame::Payload(p)) if p.is_empty()));
        assert!(matches!(
            r.read_frame_or_body(7, 10),
            Err(ProtocolError::Malformed(_))
        ));
        let mut r = FrameReader::new(&out[out.len() - 7..]);
        assert!(matches!(
            r.read_frame_or_body(7, 10),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn decoder_bounds() {
        let mut e = Enc::default();
        e.u32(1_000_000).u8(1);
        let mut d = Dec::new(&e.0);
        assert!(d.count(10, 1, "n").is_err());
        let mut d = Dec::new(&e.0);
        assert!(d.bytes(usize::MAX, "b").is_err());
    }
}
