//! zstd compression of frames (protocol 2.6): one stream per direction of a connection.
//!
//! When a session asked for it (`Link`, see `message.rs`), the writer may send any
//! frame as a `Zstd` frame (tag [`TAG_ZSTD`]) whose body is the original payload
//! (tag and fields) compressed with the connection's one zstd stream and flushed, so
//! each compressed frame decodes on its own while the window (what earlier frames
//! said) keeps working for the next: 3,000 small config files compress like one
//! archive, not like 3,000 archives. Both ends keep their stream for the whole
//! connection; the reader decodes `Zstd` frames in the order they come.
//!
//! What is not worth compressing goes raw, and costs no compression CPU:
//! - frames under [`MIN_COMPRESS`] bytes (`FileBegin`, `Want` without signature...)
//!   and `FileEnd` (a hash);
//! - a file whose first `Data` frame does not compress: a probe (the first 16 KiB
//!   at level 1, on its own) decides once per file, so sound files and archives are
//!   sent as they are; a file whose compressed frames stop paying (running ratio
//!   above [`KEEP_RATIO`]) sends the rest of it raw;
//! - any other frame of 1 KiB or more whose probe does not compress (signatures are
//!   hashes).
//!
//! The decoder never trusts the peer: the decoded payload is bounded by
//! [`super::frame::MAX_FRAME`] and the window by [`WINDOW_LOG_MAX`] (8 MiB), so a
//! hostile stream costs at most one frame and one window of memory.

use super::frame::{MAX_FRAME, ProtocolError, malformed};
use super::message::tag::{DATA, FILE_BEGIN, FILE_END};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

/// The tag of a compressed frame.
pub const TAG_ZSTD: u8 = 71;
/// The tag of a compressed batch (2.7): several frames (`u32 length | payload` each)
/// compressed in the stream with one flush at the end.
pub const TAG_BATCH: u8 = 72;
/// A batch is closed once this many payload bytes went in.
pub const BATCH_MAX: usize = 128 * 1024;
/// Frames from this size on are compressed on their own (a `Zstd` frame), as before
/// 2.7: their flush costs nothing next to them, and a file's running ratio is measured.
pub const BATCH_ALONE: usize = 64 * 1024;
/// Frames smaller than this go raw. Small enough that the receiver's `Item`s (code,
/// path) compress against the previous ones: the bytes back to the sender of a first
/// copy are mostly those.
pub const MIN_COMPRESS: usize = 24;
/// The level of `compress = "auto"`.
pub const DEFAULT_LEVEL: i32 = crate::node::config::DEFAULT_COMPRESS_LEVEL;
/// The largest level accepted.
pub const MAX_LEVEL: i32 = crate::node::config::MAX_COMPRESS_LEVEL;
/// Largest window a decoder accepts (2^23 = 8 MiB); the encoder never exceeds it up to level 19.
pub const WINDOW_LOG_MAX: u32 = 23;
/// A probe that shrinks the data to more than this fraction says "do not compress".
const PROBE_RATIO: f64 = 0.9;
/// A file whose compressed frames keep more than this fraction is sent raw from then on.
const KEEP_RATIO: f64 = 0.95;
/// How much of a frame the probe compresses.
const PROBE_LEN: usize = 16 * 1024;
/// Frames at least this long (other than `Data`) are probed before compressing.
const PROBE_MIN: usize = 1024;

/// The compressing side of one direction of a connection.
pub struct Compressor {
    cctx: CCtx<'static>,
    probe: CCtx<'static>,
    probe_buf: Vec<u8>,
    out: Vec<u8>,
    /// The file being sent (since its `FileBegin`) goes raw.
    file_raw: bool,
    /// The file being sent had its probe.
    file_probed: bool,
    /// Payload bytes of the file's compressed frames before and after.
    file_in: u64,
    file_out: u64,
    /// Payload bytes fed to the open batch (its output is in `out`); 0: none open.
    pending: usize,
}

fn zstd_error(c: zstd_safe::ErrorCode) -> std::io::Error {
    std::io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(c)))
}

/// What [`Compressor::add`] did with a frame.
pub enum Added {
    /// In the open batch.
    Queued,
    /// Not batched: the caller closes the batch, then sends the frame on its own
    /// ([`Compressor::frame`] decides compressed or raw).
    Alone,
}

impl Compressor {
    /// A compressor at `level` (1..=[`MAX_LEVEL`]).
    pub fn new(level: i32) -> Compressor {
        let mut cctx = CCtx::create();
        let mut probe = CCtx::create();
        let _ = probe.set_parameter(CParameter::CompressionLevel(1));
        let _ = cctx.set_parameter(CParameter::WindowLog(WINDOW_LOG_MAX));
        let mut c = Compressor {
            cctx,
            probe,
            probe_buf: Vec::with_capacity(zstd_safe::compress_bound(PROBE_LEN)),
            out: Vec::new(),
            file_raw: false,
            file_probed: false,
            file_in: 0,
            file_out: 0,
            pending: 0,
        };
        c.set_level(level);
        c
    }

    /// Ask for another level for the frames to come. zstd (single-threaded) only takes
    /// it before the stream's first byte: once a connection compressed, a later session
    /// of it asking for another level keeps the first one (the stream must go on, since
    /// the peer's decoder follows it).
    pub fn set_level(&mut self, level: i32) {
        let _ = self
            .cctx
            .set_parameter(CParameter::CompressionLevel(level.clamp(1, MAX_LEVEL)));
    }

    /// Put the payload `tag | body` into the open batch (2.7), when it is small and
    /// worth compressing: every small frame is, `FileBegin` and `FileEnd` included (in a
    /// batch they cost no flush), but not a file's `Data` that its probe found
    /// incompressible. The caller closes the batch with [`Compressor::end_batch`].
    /// A zstd error (memory, in practice) leaves the stream unusable: it ends the
    /// connection.
    pub fn add(&mut self, tag: u8, body: &[u8]) -> std::io::Result<Added> {
        self.new_file(tag);
        let len = 1 + body.len();
        if len >= BATCH_ALONE || self.pending + 4 + len > BATCH_MAX {
            return Ok(Added::Alone);
        }
        let probe = match tag {
            DATA if self.file_raw => return Ok(Added::Alone),
            DATA => !std::mem::replace(&mut self.file_probed, true),
            _ => body.len() >= PROBE_MIN,
        };
        if probe && !self.compresses(body) {
            self.file_raw |= tag == DATA;
            return Ok(Added::Alone);
        }
        if self.pending == 0 {
            self.out.clear();
        }
        let mut head = [tag; 5];
        head[..4].copy_from_slice(&(len as u32).to_be_bytes());
        self.feed(&head, body).map_err(zstd_error)?;
        self.pending += 4 + len;
        Ok(Added::Queued)
    }

    /// Payload bytes in the open batch.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Close the open batch: the body of its `Batch` frame, or `None` if none is open.
    pub fn end_batch(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.pending == 0 {
            return Ok(None);
        }
        self.pending = 0;
        self.finish_flush().map_err(zstd_error)?;
        Ok(Some(&self.out))
    }

    /// A `FileBegin` starts a file: its probe and running ratio start again.
    fn new_file(&mut self, tag: u8) {
        if tag == FILE_BEGIN {
            self.file_raw = false;
            self.file_probed = false;
            self.file_in = 0;
            self.file_out = 0;
        }
    }

    /// The compressed form of the payload `tag | body`, or `None` to send it raw.
    pub fn frame(&mut self, tag: u8, body: &[u8]) -> Option<&[u8]> {
        debug_assert_eq!(self.pending, 0, "a batch is open");
        self.new_file(tag);
        // Too small to pay, or so big that its compressed form might not fit a frame.
        if 1 + body.len() < MIN_COMPRESS
            || 1 + body.len() > MAX_FRAME - MAX_FRAME / 64
            || tag == FILE_END
        {
            return None;
        }
        let data = tag == DATA;
        if data && self.file_raw {
            return None;
        }
        let probe = if data {
            !std::mem::replace(&mut self.file_probed, true)
        } else {
            body.len() >= PROBE_MIN
        };
        if probe && !self.compresses(body) {
            self.file_raw |= data;
            return None;
        }
        self.compress(&[tag], body).ok()?;
        if data {
            self.file_in += 1 + body.len() as u64;
            self.file_out += self.out.len() as u64;
            if self.file_out as f64 > self.file_in as f64 * KEEP_RATIO {
                self.file_raw = true;
            }
        }
        Some(&self.out)
    }

    /// Does the start of `body` compress on its own at level 1?
    fn compresses(&mut self, body: &[u8]) -> bool {
        let sample = &body[..body.len().min(PROBE_LEN)];
        self.probe_buf.clear();
        match self.probe.compress2(&mut self.probe_buf, sample) {
            Ok(n) => (n as f64) < sample.len() as f64 * PROBE_RATIO,
            Err(_) => false,
        }
    }

    /// Feed `head` then `body` to the stream and flush it into `self.out`. An error
    /// (only memory, in practice) leaves the stream unusable: the caller must not go on
    /// compressing after one, so it is mapped to a panic-free "send raw" only before
    /// any byte was produced.
    fn compress(&mut self, head: &[u8], body: &[u8]) -> Result<(), zstd_safe::ErrorCode> {
        self.out.clear();
        self.feed(head, body)?;
        self.finish_flush()
    }

    /// Feed `head` then `body` to the stream; what it outputs is appended to `self.out`.
    fn feed(&mut self, head: &[u8], body: &[u8]) -> Result<(), zstd_safe::ErrorCode> {
        self.out
            .reserve(zstd_safe::compress_bound(head.len() + body.len()) + 64);
        for part in [head, body] {
            let mut inb = InBuffer::around(part);
            while inb.pos() < part.len() {
                self.grow();
                let len = self.out.len();
                let mut outb = OutBuffer::around_pos(&mut self.out, len);
                self.cctx.compress_stream2(
                    &mut outb,
                    &mut inb,
                    zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                )?;
            }
        }
        Ok(())
    }

    /// Flush the stream into `self.out`: what was fed so far decodes on its own.
    fn finish_flush(&mut self) -> Result<(), zstd_safe::ErrorCode> {
        loop {
            self.grow();
            let mut inb = InBuffer::around(&[]);
            let len = self.out.len();
            let mut outb = OutBuffer::around_pos(&mut self.out, len);
            let left = self.cctx.compress_stream2(
                &mut outb,
                &mut inb,
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
            )?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    fn grow(&mut self) {
        if self.out.capacity() - self.out.len() < 64 * 1024 {
            self.out.reserve(128 * 1024);
        }
    }
}

/// The decompressing side of one direction of a connection.
pub struct Decompressor {
    dctx: DCtx<'static>,
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    pub fn new() -> Decompressor {
        let mut dctx = DCtx::create();
        let _ = dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX));
        Decompressor { dctx }
    }

    /// Decode the body of one `Zstd` frame into `out` (cleared first): the original
    /// payload, at most [`MAX_FRAME`] bytes.
    pub fn frame(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.clear();
        let mut inb = InBuffer::around(input);
        loop {
            if out.capacity() - out.len() < 64 * 1024 {
                out.reserve(256 * 1024);
            }
            let len = out.len();
            self.dctx
                .decompress_stream(&mut OutBuffer::around_pos(out, len), &mut inb)
                .map_err(|c| {
                    malformed(format!(
                        "compressed frame: {}",
                        zstd_safe::get_error_name(c)
                    ))
                })?;
            if out.len() > MAX_FRAME {
                return Err(malformed(format!(
                    "compressed frame decodes to more than {MAX_FRAME} bytes"
                )));
            }
            // All input used and room left in the output: zstd holds nothing more of
            // this flush point.
            if inb.pos() == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.is_empty() {
            return Err(malformed("compressed frame decodes to nothing"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let words = [
            "asterisk",
            "context",
            "exten",
            "sip",
            "peer",
            "=",
            "\n",
            "[general]",
        ];
        let mut x = seed;
        let mut v = Vec::new();
        while v.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
            v.push(b' ');
        }
        v.truncate(n);
        v
    }

    use crate::tree::pseudo_bytes as random;

    #[test]
    fn frames_round_trip_in_order_and_text_shrinks() {
        let mut c = Compressor::new(DEFAULT_LEVEL);
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        let (mut raw, mut wire) = (0, 0);
        for i in 0..50 {
            let body = text(7000, i);
            let z = c.frame(21, &body).expect("text compresses").to_vec();
            d.frame(&z, &mut out).unwrap();
            assert_eq!(out[0], 21);
            assert_eq!(&out[1..], &body[..]);
            raw += body.len();
            wire += z.len();
        }
        assert!(wire * 3 < raw, "text: {wire} of {raw}");
    }

    #[test]
    fn incompressible_files_go_raw_after_one_probe_and_small_frames_always() {
        let mut c = Compressor::new(DEFAULT_LEVEL);
        assert!(c.frame(20, &[0; 10]).is_none(), "small frame");
        assert!(c.frame(21, &random(1 << 20, 7)).is_none());
        // The rest of that file is not even probed: still raw, even if it would compress.
        assert!(c.frame(21, &[0; 1 << 16]).is_none());
        // The next file starts afresh.
        c.frame(20, &[0; 10]);
        assert!(c.frame(21, &[0; 1 << 16]).is_some());
        // A signature-like frame (hashes) is probed and goes raw.
        assert!(c.frame(12, &random(8192, 9)).is_none());
    }

    #[test]
    fn hostile_streams_are_refused_without_panic_or_bomb() {
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        assert!(d.frame(b"not zstd at all", &mut out).is_err());
        // A bomb: 64 MiB of zeros in one frame decodes past MAX_FRAME and is refused.
        let mut buf = Vec::with_capacity(1 << 20);
        zstd_safe::compress(&mut buf, &vec![0u8; 64 << 20], 3).unwrap();
        let mut d = Decompressor::new();
        let e = d.frame(&buf, &mut out).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn link_round_trips_and_a_bad_level_is_refused() {
        use crate::wire::Msg;
        let m = Msg::Link {
            compress: 3,
            bwlimit: 1 << 20,
        };
        assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        let bad = Msg::Link {
            compress: 40,
            bwlimit: 0,
        };
        assert!(Msg::decode(&bad.encode()).is_err());
    }

    #[test]
    fn frames_through_writer_and_reader_count_both_sizes() {
        use crate::wire::frame::{Frame, FrameReader, FrameWriter};
        use crate::wire::message::tag;
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out);
        w.set_compression(Some(DEFAULT_LEVEL));
        let body = text(200_000, 3);
        w.write_tagged(tag::FILE_BEGIN, &[0; 5]).unwrap();
        w.write_tagged(tag::DATA, &body).unwrap();
        w.write_frame(&[tag::WANTS_END]).unwrap();
        let (bytes, raw) = (w.bytes, w.raw_bytes);
        drop(w);
        assert_eq!(raw, 4 + 6 + 4 + 1 + 200_000 + 4 + 1);
        assert!(bytes * 2 < raw, "{bytes} of {raw}");
        assert_eq!(bytes, out.len() as u64);
        // A reader that did not negotiate compression refuses the frame.
        let mut r = FrameReader::new(&out[..]);
        r.read_frame().unwrap();
        assert!(r.read_frame().is_err());
        let mut r = FrameReader::new(&out[..]);
        r.accept_compressed();
        assert_eq!(r.read_frame().unwrap()[0], tag::FILE_BEGIN);
        match r.read_frame_or_body(tag::DATA, 1 << 20).unwrap() {
            Frame::Body(b) => assert_eq!(b, body),
            Frame::Payload(_) => panic!("data expected"),
        }
        assert_eq!(r.read_frame().unwrap(), &[tag::WANTS_END]);
        assert_eq!((r.bytes, r.raw_bytes), (bytes, raw));
    }

    /// The frames of a first copy (per file `FileBegin`, `Data`, `FileEnd`), some files
    /// of random bytes, an empty frame and a big `Data` frame, written with batching
    /// and without, to `Vec`s; with the `--json` counters of each writer.
    fn session(batching: bool) -> (Vec<u8>, u64, u64, Vec<Vec<u8>>) {
        use crate::wire::frame::FrameWriter;
        use crate::wire::message::tag;
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for i in 0..60u64 {
            let data = if i % 10 == 9 {
                random(8000, i)
            } else {
                text(6000, i)
            };
            frames.push([&[tag::FILE_BEGIN][..], &i.to_be_bytes()].concat());
            frames.push([&[tag::DATA][..], &data].concat());
            frames.push([&[tag::FILE_END][..], &random(32, 100 + i)].concat());
        }
        frames.push(Vec::new());
        frames.push([&[tag::DATA][..], &text(200_000, 5)].concat());
        frames.push(vec![tag::WANTS_END]);
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out);
        w.set_batching(batching);
        w.set_compression(Some(DEFAULT_LEVEL));
        for (n, f) in frames.iter().enumerate() {
            w.write_frame(f).unwrap();
            if n == 100 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        let (bytes, raw) = (w.bytes, w.raw_bytes);
        drop(w);
        (out, bytes, raw, frames)
    }

    #[test]
    fn batches_read_back_in_order_and_cost_fewer_bytes_than_a_flush_per_frame() {
        use crate::wire::frame::{Frame, FrameReader};
        use crate::wire::message::tag;
        let (single, single_bytes, raw, _) = session(false);
        let (out, bytes, raw_b, frames) = session(true);
        assert_eq!(raw, raw_b);
        assert_eq!(bytes, out.len() as u64);
        assert_eq!(single_bytes, single.len() as u64);
        assert!(
            bytes < single_bytes,
            "batched {bytes} bytes, one flush per frame {single_bytes}"
        );
        let (mut pos, mut batches, mut outer) = (0, 0, 0);
        while pos < out.len() {
            let len = u32::from_be_bytes(out[pos..pos + 4].try_into().unwrap()) as usize;
            batches += (len > 0 && out[pos + 4] == TAG_BATCH) as usize;
            outer += 1;
            pos += 4 + len;
        }
        assert!(
            batches > 0 && outer < frames.len() / 2,
            "{outer} frames, {batches} batches"
        );
        let mut r = FrameReader::new(&out[..]);
        r.accept_compressed();
        for (n, f) in frames.iter().enumerate() {
            let got = match r.read_frame_or_body(tag::DATA, 1 << 20).unwrap() {
                Frame::Body(b) => [&[tag::DATA][..], &b].concat(),
                Frame::Payload(p) => p.to_vec(),
            };
            assert_eq!(&got, f, "frame {n}");
        }
        assert!(r.read_frame().is_err(), "nothing after the last frame");
        assert_eq!((r.bytes, r.raw_bytes), (bytes, raw));
        // A reader that did not negotiate compression refuses a batch.
        let mut r = FrameReader::new(&out[..]);
        let refused = (0..frames.len()).any(|_| r.read_frame().is_err());
        assert!(refused);
    }

    /// A batch frame whose decoded content is `inner`, compressed by a fresh stream.
    fn batch_of(inner: &[u8]) -> Vec<u8> {
        let mut z = Vec::with_capacity(zstd_safe::compress_bound(inner.len()));
        zstd_safe::compress(&mut z, inner, 3).unwrap();
        let mut f = ((1 + z.len()) as u32).to_be_bytes().to_vec();
        f.push(TAG_BATCH);
        f.extend_from_slice(&z);
        f
    }

    #[test]
    fn hostile_batches_are_refused() {
        use crate::wire::frame::FrameReader;
        let frame = |payload: &[u8]| {
            let mut v = (payload.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(payload);
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                [frame(&[13]), (1000u32).to_be_bytes().to_vec(), vec![13]].concat(),
                "bad frame length",
            ),
            ([frame(&[13]), vec![0, 0]].concat(), "truncated"),
            ([frame(&[13]), frame(&[])].concat(), "bad frame length"),
            ([frame(&[13]), frame(&[TAG_ZSTD, 1, 2])].concat(), "inside"),
            (frame(&[TAG_BATCH, 1]), "inside"),
        ];
        for (inner, what) in cases {
            let wire = batch_of(&inner);
            let mut r = FrameReader::new(&wire[..]);
            r.accept_compressed();
            let mut err = None;
            for _ in 0..3 {
                if let Err(e) = r.read_frame() {
                    err = Some(e.to_string());
                    break;
                }
            }
            let e = err.unwrap_or_else(|| panic!("accepted: {what}"));
            assert!(e.contains(what), "{what}: {e}");
        }
    }
}
