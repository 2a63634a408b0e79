//! Block deltas: our own implementation of the rsync algorithm, with memory
//! that stays flat with file size.
//!
//! - The receiver signs its old copy: for every full block, a rolling weak
//!   checksum (rsync's two 16-bit sums) and a truncated xxh3-128 of the block.
//!   The file is read in chunks on two threads (blocks are independent).
//! - The sender diffs its new file window by window against the indexed
//!   signature. At each position it first tries the block that follows the
//!   previous match (one xxh3 per block on data that did not move, no weak
//!   checksum at all), else looks the rolling checksum up (a bitmap filter,
//!   then a hash map) and confirms with xxh3; bytes that match nothing become
//!   literal. The last `block - 1` bytes of a window, which cannot start a
//!   match inside it, are carried into the next window, so matches across
//!   window boundaries are found. While a window is diffed, a second thread
//!   hashes it (the caller's BLAKE3).
//! - The delta travels as our own `Copy{offset,len}` / `Data` messages and the
//!   receiver applies it by reading the base with `pread`, checking every copy
//!   against the base's length.
//!
//! Only full blocks are signed: the last partial block of the old copy (fewer
//! than `block` bytes) is never matched, which costs at most one block of
//! literal when the old copy's length is not a multiple of the block size.
//!
//! Signatures from the wire are validated before use (block size 0 would
//! never advance; hash size 0 would make every weak match "match"), and the
//! index bounds the work a hostile signature can cause: identical blocks are
//! indexed once, at most [`MAX_CANDIDATES`] blocks are tried per weak
//! checksum, and the hash map's keys are randomised.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::xxh3_128;

/// Signature header: magic, block size, hash size (big-endian u32 each).
const SIG_HEADER: usize = 12;
/// "hsx3": rsync weak checksum + xxh3-128. fast_rsync's MD4 format
/// (0x7273_0136, protocol major 1) is refused as an unknown format.
pub const SIG_MAGIC: u32 = 0x6873_7833;
/// Strong hash bytes per block (xxh3-128, truncated). With the 32-bit weak
/// checksum that is 80 bits per block; a false match is caught by the BLAKE3
/// check and the file is sent again whole. Fewer bytes per block keep the
/// signature (receiver -> sender) small: for a 256 MiB file, 160 KiB.
pub const HASH_SIZE: u32 = 6;
pub const MIN_BLOCK: u32 = 512;
pub const MAX_BLOCK: u32 = 1 << 20;
/// Largest signature we produce or accept.
pub const MAX_SIGNATURE: usize = 8 * 1024 * 1024;
/// Size of the sender's diff window.
pub const WINDOW: usize = 8 * 1024 * 1024;
/// Most blocks with the same weak checksum tried at one position.
pub const MAX_CANDIDATES: usize = 16;
/// After a window with no match, this many windows are sent literally without
/// a search (a search over data without matches is slower than sending it).
const SKIP_AFTER_MISS: u32 = 3;

/// Block size for a base file of `len` bytes: about sqrt(len) (like rsync), a
/// power of two between 1 KiB and 32 KiB, larger only to keep the signature
/// under [`MAX_SIGNATURE`]. sqrt balances the two costs of a changed region:
/// the signature grows as len/block, the literal overhead around each change
/// as block (16 KiB for 256 MiB: 160 KiB of signature, +16 KiB per change).
pub fn block_size_for(len: u64) -> u32 {
    let root = (len as f64).sqrt() as u64;
    let mut b = root.next_power_of_two().clamp(1024, 32 * 1024);
    while len / b * (4 + HASH_SIZE as u64) > (MAX_SIGNATURE - SIG_HEADER) as u64
        && b < MAX_BLOCK as u64
    {
        b *= 2;
    }
    b as u32
}

/// rsync's weak checksum of `data` as its two running sums:
/// s1 = sum of bytes, s2 = sum of (len - i) * byte (both mod 2^32).
/// Written so that the compiler vectorises it.
fn weak_sums(data: &[u8]) -> (u32, u32) {
    let n = data.len() as u32;
    let (mut s1, mut t) = (0u32, 0u32);
    // t = sum of i * byte; s2 = n * s1 - t.
    let mut base = 0u32;
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        let (mut a, mut w) = (0u32, 0u32);
        for (i, &x) in c.iter().enumerate() {
            a += x as u32;
            w += i as u32 * x as u32;
        }
        s1 = s1.wrapping_add(a);
        t = t.wrapping_add(w).wrapping_add(base.wrapping_mul(a));
        base = base.wrapping_add(64);
    }
    for (i, &x) in chunks.remainder().iter().enumerate() {
        s1 = s1.wrapping_add(x as u32);
        t = t.wrapping_add((base + i as u32).wrapping_mul(x as u32));
    }
    (s1, n.wrapping_mul(s1).wrapping_sub(t))
}

#[inline]
fn weak_of(s1: u32, s2: u32) -> u32 {
    (s1 & 0xffff) | (s2 << 16)
}

#[inline]
fn strong_of(data: &[u8]) -> [u8; 16] {
    xxh3_128(data).to_le_bytes()
}

/// Append the signature entries of `data` (whole blocks only) to `out`.
fn sign_blocks(data: &[u8], block: usize, out: &mut Vec<u8>) {
    for b in data.chunks_exact(block) {
        let (s1, s2) = weak_sums(b);
        out.extend_from_slice(&weak_of(s1, s2).to_be_bytes());
        out.extend_from_slice(&strong_of(b)[..HASH_SIZE as usize]);
    }
}

/// Signature entries of blocks `first..last` of `file`, read in chunks.
fn sign_range(file: &File, block: usize, first: u64, last: u64) -> io::Result<Vec<u8>> {
    let per_chunk = (4 * 1024 * 1024 / block).max(1) as u64;
    let mut buf = vec![0u8; (per_chunk.min(last - first) as usize) * block];
    let mut out = Vec::with_capacity((last - first) as usize * (4 + HASH_SIZE as usize));
    let mut k = first;
    while k < last {
        let n = per_chunk.min(last - k) as usize * block;
        file.read_exact_at(&mut buf[..n], k * block as u64)?;
        sign_blocks(&buf[..n], block, &mut out);
        k += (n / block) as u64;
    }
    Ok(out)
}

/// Compute the signature of a whole file, reading it in chunks (on two
/// threads for a file of more than a few MiB).
pub fn file_signature(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let block = block_size_for(len);
    let nblocks = len / block as u64;
    let mut sig = Vec::with_capacity(SIG_HEADER + nblocks as usize * (4 + HASH_SIZE as usize));
    sig.extend_from_slice(&SIG_MAGIC.to_be_bytes());
    sig.extend_from_slice(&block.to_be_bytes());
    sig.extend_from_slice(&HASH_SIZE.to_be_bytes());
    if len < 8 * 1024 * 1024 {
        sig.extend_from_slice(&sign_range(file, block as usize, 0, nblocks)?);
        return Ok(sig);
    }
    let mid = nblocks / 2;
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| sign_range(file, block as usize, mid, nblocks));
        let a = sign_range(file, block as usize, 0, mid);
        let b = other
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("signature thread panicked")));
        (a, b)
    });
    sig.extend_from_slice(&a?);
    sig.extend_from_slice(&b?);
    Ok(sig)
}

/// A parsed signature: per block, a weak checksum and `hash_size` bytes of
/// strong hash.
#[derive(Debug, Clone)]
pub struct Signature {
    block: u32,
    hash_size: usize,
    weak: Vec<u32>,
    strong: Vec<u8>,
}

impl Signature {
    pub fn blocks(&self) -> usize {
        self.weak.len()
    }
    fn strong(&self, k: usize) -> &[u8] {
        &self.strong[k * self.hash_size..(k + 1) * self.hash_size]
    }
    /// Index the blocks by weak checksum, ready for [`diff_file`].
    pub fn index(&self) -> Index<'_> {
        let n = self.weak.len();
        // Blocks sorted by (weak, strong), identical ones kept once.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            (self.weak[a as usize], self.strong(a as usize), a).cmp(&(
                self.weak[b as usize],
                self.strong(b as usize),
                b,
            ))
        });
        order.dedup_by(|b, a| {
            self.weak[*a as usize] == self.weak[*b as usize]
                && self.strong(*a as usize) == self.strong(*b as usize)
        });
        let bits = (n.max(1).next_power_of_two().trailing_zeros() + 4).clamp(10, 24);
        let mut filter = vec![0u64; 1 << (bits - 6)];
        let mut map: HashMap<u32, (u32, u32)> = HashMap::with_capacity(order.len());
        let mut i = 0;
        while i < order.len() {
            let w = self.weak[order[i] as usize];
            let mut j = i + 1;
            while j < order.len() && self.weak[order[j] as usize] == w {
                j += 1;
            }
            let f = filter_bit(w, bits);
            filter[f >> 6] |= 1 << (f & 63);
            map.insert(w, (i as u32, (j - i) as u32));
            i = j;
        }
        Index {
            sig: self,
            bits,
            filter,
            map,
            order,
        }
    }
}

#[inline]
fn filter_bit(w: u32, bits: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
}

/// A signature indexed by weak checksum.
pub struct Index<'a> {
    sig: &'a Signature,
    bits: u32,
    filter: Vec<u64>,
    map: HashMap<u32, (u32, u32)>,
    order: Vec<u32>,
}

impl Index<'_> {
    /// A block whose weak checksum is `w` and whose strong hash matches `data`.
    #[inline]
    fn find(&self, w: u32, data: &[u8]) -> Option<u32> {
        let f = filter_bit(w, self.bits);
        if self.filter[f >> 6] & (1 << (f & 63)) == 0 {
            return None;
        }
        let &(start, count) = self.map.get(&w)?;
        let h = strong_of(data);
        let h = &h[..self.sig.hash_size];
        self.order[start as usize..(start + count) as usize]
            .iter()
            .take(MAX_CANDIDATES)
            .copied()
            .find(|&k| self.sig.strong(k as usize) == h)
    }

    /// Whether block `k` matches `data` (strong hash only).
    #[inline]
    fn is_block(&self, k: usize, data: &[u8]) -> bool {
        k < self.sig.weak.len() && strong_of(data)[..self.sig.hash_size] == *self.sig.strong(k)
    }
}

/// Check a signature from the wire and parse it. Order of the checks: length
/// bounds, block size, hash size, format (magic), then the block count.
pub fn parse_signature(bytes: Vec<u8>) -> Result<Signature, String> {
    if bytes.len() < SIG_HEADER || bytes.len() > MAX_SIGNATURE {
        return Err(format!(
            "signature of {} bytes is out of bounds",
            bytes.len()
        ));
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4"));
    let block = u32::from_be_bytes(bytes[4..8].try_into().expect("4"));
    let hash = u32::from_be_bytes(bytes[8..12].try_into().expect("4"));
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block) {
        return Err(format!("signature block size {block} is out of bounds"));
    }
    if !(4..=16).contains(&hash) {
        return Err(format!("signature hash size {hash} is out of bounds"));
    }
    if magic != SIG_MAGIC {
        return Err(format!(
            "signature has an unknown format (magic {magic:#010x}, expected {SIG_MAGIC:#010x})"
        ));
    }
    let entry = 4 + hash as usize;
    let body = &bytes[SIG_HEADER..];
    if !body.len().is_multiple_of(entry) {
        return Err("signature length does not match its block count".into());
    }
    let n = body.len() / entry;
    let mut weak = Vec::with_capacity(n);
    let mut strong = Vec::with_capacity(n * hash as usize);
    for e in body.chunks_exact(entry) {
        weak.push(u32::from_be_bytes(e[..4].try_into().expect("4")));
        strong.extend_from_slice(&e[4..]);
    }
    Ok(Signature {
        block,
        hash_size: hash as usize,
        weak,
        strong,
    })
}

/// One delta instruction.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Copy { offset: u64, len: u64 },
    Literal(&'a [u8]),
}

/// Diff one window of new data. Returns the ops and how many bytes of `data`
/// they cover: all of it when `last`, else at least `len - block + 1` (the
/// rest cannot start a match here and is carried into the next window).
/// `hint` is the block expected at the start (the one after the previous
/// window's last match), updated for the next window.
fn diff_window<'a>(
    ix: &Index<'_>,
    data: &'a [u8],
    last: bool,
    hint: &mut Option<u32>,
) -> (Vec<Op<'a>>, usize) {
    let b = ix.sig.block as usize;
    let n = data.len();
    let mut ops: Vec<Op<'a>> = Vec::new();
    let mut lit = 0usize;
    let mut pos = 0usize;
    let mut predicted = hint.take();
    let mut sums: Option<(u32, u32)> = None;
    let push_copy = |ops: &mut Vec<Op<'a>>, lit: usize, pos: usize, k: u32| {
        if lit < pos {
            ops.push(Op::Literal(&data[lit..pos]));
        }
        let offset = k as u64 * b as u64;
        if let Some(Op::Copy { offset: o, len }) = ops.last_mut()
            && *o + *len == offset
        {
            *len += b as u64;
        } else {
            ops.push(Op::Copy {
                offset,
                len: b as u64,
            });
        }
    };
    while pos + b <= n {
        let here = &data[pos..pos + b];
        if let Some(k) = predicted.take()
            && ix.is_block(k as usize, here)
        {
            push_copy(&mut ops, lit, pos, k);
            pos += b;
            lit = pos;
            predicted = Some(k + 1);
            sums = None;
            continue;
        }
        let (s1, s2) = *sums.get_or_insert_with(|| weak_sums(here));
        if let Some(k) = ix.find(weak_of(s1, s2), here) {
            push_copy(&mut ops, lit, pos, k);
            pos += b;
            lit = pos;
            predicted = Some(k + 1);
            sums = None;
            continue;
        }
        // Roll one byte forward.
        if pos + b < n {
            let (out, inn) = (data[pos] as u32, data[pos + b] as u32);
            let s1n = s1.wrapping_sub(out).wrapping_add(inn);
            let s2n = s2
                .wrapping_sub((b as u32).wrapping_mul(out))
                .wrapping_add(s1n);
            sums = Some((s1n, s2n));
        }
        pos += 1;
    }
    let end = if last { n } else { pos.max(lit) };
    if lit < end {
        ops.push(Op::Literal(&data[lit..end]));
    }
    if lit == end && end == pos {
        *hint = predicted;
    }
    (ops, end)
}

/// Diff a file against an indexed signature, window by window, calling `emit`
/// with each op and `consumed` with each span of new data (in order, exactly
/// once over the whole file) so the caller can hash it. `consumed` runs on a
/// second thread while the window is diffed.
pub fn diff_file(
    ix: &Index<'_>,
    file: &File,
    len: u64,
    buf: &mut Vec<u8>,
    emit: impl FnMut(Op<'_>) -> io::Result<()>,
    consumed: impl FnMut(&[u8]) + Send,
) -> io::Result<()> {
    diff_file_windowed(ix, file, len, buf, WINDOW, emit, consumed)
}

/// Windows smaller than this are hashed inline: a thread costs more than it saves.
const DIFF_HASH_THREAD_MIN: usize = 1 << 20;

/// Feeds `data` to `consumed` (the file's hash) while `work` runs: on a second thread
/// for big spans, inline for small ones (a thread costs more than it saves there).
fn hash_alongside<R>(
    consumed: &mut (impl FnMut(&[u8]) + Send),
    data: &[u8],
    work: impl FnOnce() -> R,
) -> io::Result<R> {
    if data.len() < DIFF_HASH_THREAD_MIN {
        consumed(data);
        return Ok(work());
    }
    std::thread::scope(|s| {
        let h = s.spawn(|| consumed(data));
        let r = work();
        h.join()
            .map(|_| r)
            .map_err(|_| io::Error::other("hash thread panicked"))
    })
}

/// [`diff_file`] with a given window size (at least one block).
fn diff_file_windowed(
    ix: &Index<'_>,
    file: &File,
    len: u64,
    buf: &mut Vec<u8>,
    window: usize,
    mut emit: impl FnMut(Op<'_>) -> io::Result<()>,
    mut consumed: impl FnMut(&[u8]) + Send,
) -> io::Result<()> {
    let b = ix.sig.block as usize;
    let window = window.max(b);
    let mut start = 0u64;
    let mut skip_windows = 0u32;
    let mut hint = None;
    while start < len {
        let n = ((len - start) as usize).min(window);
        buf.resize(n, 0);
        file.read_exact_at(buf, start)?;
        let last = start + n as u64 == len;
        let data: &[u8] = buf;
        if skip_windows > 0 || n < b {
            skip_windows = skip_windows.saturating_sub(1);
            hint = None;
            hash_alongside(&mut consumed, data, || emit(Op::Literal(data)))??;
            start += n as u64;
            continue;
        }
        // Bytes surely covered by this window's ops: hashed while it is diffed.
        let sure = if last { n } else { n + 1 - b };
        let (ops, used) = hash_alongside(&mut consumed, &data[..sure], || {
            diff_window(ix, data, last, &mut hint)
        })?;
        let matched = ops.iter().any(|o| matches!(o, Op::Copy { .. }));
        if !matched && !last {
            skip_windows = SKIP_AFTER_MISS;
        }
        for op in ops {
            emit(op)?;
        }
        if used > sure {
            consumed(&data[sure..used]);
        }
        start += used as u64;
    }
    Ok(())
}

/// Diff `new` against `base` (both in memory, through temp files) and return
/// the rebuilt data and the literal byte count. For tests and fuzzing.
pub fn roundtrip(base: &[u8], new: &[u8]) -> io::Result<(Vec<u8>, u64)> {
    roundtrip_windowed(base, new, WINDOW)
}

fn roundtrip_windowed(base: &[u8], new: &[u8], window: usize) -> io::Result<(Vec<u8>, u64)> {
    use std::io::Write;
    let mut bf = tempfile::tempfile()?;
    bf.write_all(base)?;
    let mut nf = tempfile::tempfile()?;
    nf.write_all(new)?;
    let sig = parse_signature(file_signature(&bf, base.len() as u64)?).map_err(io::Error::other)?;
    let ix = sig.index();
    let mut out = Vec::new();
    let mut literal = 0u64;
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    diff_file_windowed(
        &ix,
        &nf,
        new.len() as u64,
        &mut buf,
        window,
        |op| {
            match op {
                Op::Copy { offset, len } => {
                    let end = offset
                        .checked_add(len)
                        .filter(|&e| e <= base.len() as u64)
                        .ok_or_else(|| io::Error::other("copy outside the base"))?;
                    out.extend_from_slice(&base[offset as usize..end as usize]);
                }
                Op::Literal(l) => {
                    literal += l.len() as u64;
                    out.extend_from_slice(l);
                }
            }
            Ok(())
        },
        |d| seen.extend_from_slice(d),
    )?;
    if seen != new {
        return Err(io::Error::other(
            "consumed spans do not cover the file exactly once",
        ));
    }
    Ok((out, literal))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tree::pseudo_bytes as pseudo;

    fn header(magic: u32, block: u32, hash: u32) -> Vec<u8> {
        let mut s = magic.to_be_bytes().to_vec();
        s.extend_from_slice(&block.to_be_bytes());
        s.extend_from_slice(&hash.to_be_bytes());
        s
    }

    #[test]
    fn rolling_checksum_equals_the_direct_one() {
        let d = pseudo(5000, 3);
        let b = 1024;
        let (mut s1, mut s2) = weak_sums(&d[..b]);
        for p in 1..d.len() - b {
            let (out, inn) = (d[p - 1] as u32, d[p + b - 1] as u32);
            s1 = s1.wrapping_sub(out).wrapping_add(inn);
            s2 = s2.wrapping_sub(b as u32 * out).wrapping_add(s1);
            assert_eq!((s1, s2), weak_sums(&d[p..p + b]), "at {p}");
        }
        // The naive definition, on lengths that are not a multiple of 64.
        for n in [0, 1, 63, 64, 65, 1000] {
            let x = &d[..n];
            let s1: u32 = x.iter().map(|&v| v as u32).sum();
            let s2: u32 = x
                .iter()
                .enumerate()
                .map(|(i, &v)| (n - i) as u32 * v as u32)
                .sum();
            assert_eq!(weak_sums(x), (s1, s2), "n = {n}");
        }
    }

    #[test]
    fn windowed_delta_rebuilds_exactly_and_stays_small() {
        let base = pseudo(20 * 1024 * 1024 + 777, 1);
        let mut new = base.clone();
        for i in 0..16 {
            let at = i * 1_300_000 + 12345;
            new[at..at + 65536].copy_from_slice(&pseudo(65536, 100 + i as u64));
        }
        new.splice(5_000_000..5_000_000, pseudo(3333, 7)); // insertion
        new.drain(9_000_000..9_000_100); // deletion
        let (out, literal) = roundtrip(&base, &new).unwrap();
        assert!(out == new, "rebuilt exactly");
        // 16 x 64 KiB + a block each side, plus the insertion and deletion.
        let b = block_size_for(base.len() as u64) as u64;
        assert!(literal < 16 * (65536 + 2 * b) + 4 * b, "literal {literal}");
    }

    #[test]
    fn an_unchanged_file_is_all_copies() {
        let base = pseudo(3 * 1024 * 1024, 9);
        let (out, literal) = roundtrip(&base, &base).unwrap();
        assert!(out == base);
        assert_eq!(literal, 0);
        // With a partial last block: only that tail is literal.
        let base = pseudo(3 * 1024 * 1024 + 100, 9);
        let (out, literal) = roundtrip(&base, &base).unwrap();
        assert!(out == base);
        assert_eq!(literal, 100);
    }

    #[test]
    fn shifts_across_window_boundaries_are_found() {
        // Small windows (16 blocks of 1 KiB) so that edits land on and around boundaries.
        let base = pseudo(256 * 1024, 2);
        let b = block_size_for(base.len() as u64) as usize;
        assert_eq!(b, 1024);
        let window = 16 * b;
        type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let edits: Vec<Edit> = vec![
            Box::new(|v| {
                v.splice(window..window, pseudo(7, 1));
            }),
            Box::new(|v| {
                v.splice(window - 3..window - 3, pseudo(5000, 2));
            }),
            Box::new(|v| {
                v.drain(2 * window - 10..2 * window + 10);
            }),
            Box::new(|v| {
                v.drain(0..1);
            }),
            Box::new(|v| v[3 * window - 1] ^= 0xff),
            Box::new(|v| {
                v[window + 500..window + 2 * 1024 + 7].copy_from_slice(&pseudo(2 * 1024 - 493, 3))
            }),
            Box::new(|v| {
                let tail = v.split_off(100_000);
                v.truncate(60_000);
                v.extend_from_slice(&tail); // a move: blocks now earlier
            }),
            Box::new(|v| v.truncate(5 * window + 1)),
            Box::new(|v| v.extend_from_slice(&pseudo(3 * window, 4))),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut new = base.clone();
            edit(&mut new);
            let changed = new.len().abs_diff(base.len()) as u64;
            let (out, literal) = roundtrip_windowed(&base, &new, window).unwrap();
            assert!(out == new, "edit {i}: rebuilt exactly");
            assert!(
                literal <= changed + 4 * b as u64 + 5000,
                "edit {i}: literal {literal}"
            );
        }
    }

    #[test]
    fn repetitive_data_rebuilds() {
        let base = vec![0u8; 200_000];
        let mut new = vec![0u8; 300_000];
        new[150_000] = 1;
        let (out, literal) = roundtrip_windowed(&base, &new, 8 * 1024).unwrap();
        assert!(out == new);
        assert!(literal < 4 * 1024, "literal {literal}");
        // New data with no match at all: everything literal, windows skipped.
        let new = pseudo(400_000, 77);
        let (out, literal) = roundtrip_windowed(&base, &new, 8 * 1024).unwrap();
        assert!(out == new);
        assert_eq!(literal, new.len() as u64);
    }

    #[test]
    fn hostile_signatures_are_refused() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("block size 0", header(SIG_MAGIC, 0, 6), "block size"),
            ("block size 1", header(SIG_MAGIC, 1, 6), "block size"),
            ("huge block", header(SIG_MAGIC, u32::MAX, 6), "block size"),
            ("hash size 0", header(SIG_MAGIC, 2048, 0), "hash size"),
            ("hash size 17", header(SIG_MAGIC, 2048, 17), "hash size"),
            (
                "cut header",
                header(SIG_MAGIC, 2048, 6)[..11].to_vec(),
                "bounds",
            ),
            ("old MD4 format", header(0x7273_0136, 2048, 6), "format"),
            ("wrong magic", header(0, 2048, 6), "format"),
            (
                "ragged",
                {
                    let mut s = header(SIG_MAGIC, 2048, 6);
                    s.extend_from_slice(&[1; 11]);
                    s
                },
                "length",
            ),
            (
                "oversized",
                {
                    let mut s = header(SIG_MAGIC, 2048, 6);
                    s.resize(MAX_SIGNATURE + 10, 0);
                    s
                },
                "bounds",
            ),
        ];
        for (name, sig, expect) in cases {
            let err = parse_signature(sig).expect_err(name);
            assert!(err.contains(expect), "{name}: {err}");
        }
        let mut ok = header(SIG_MAGIC, 2048, 6);
        ok.extend_from_slice(&[7; 20]);
        assert_eq!(parse_signature(ok).unwrap().blocks(), 2);
    }

    #[test]
    fn a_hostile_signature_costs_bounded_work() {
        // 800,000 blocks with one weak checksum and distinct strong hashes, and
        // new data made of blocks with that same weak checksum (all zeros).
        let mut sig = header(SIG_MAGIC, 512, 6);
        let w = weak_of(0, 0);
        for i in 0..800_000u32 {
            sig.extend_from_slice(&w.to_be_bytes());
            sig.extend_from_slice(&[(i >> 16) as u8, (i >> 8) as u8, i as u8, 1, 2, 3]);
        }
        let sig = parse_signature(sig).unwrap();
        let ix = sig.index();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &vec![0u8; 4 << 20]).unwrap();
        let t = std::time::Instant::now();
        let mut lit = 0;
        diff_file(
            &ix,
            &f,
            4 << 20,
            &mut Vec::new(),
            |op| {
                if let Op::Literal(l) = op {
                    lit += l.len();
                }
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(lit, 4 << 20);
        assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size_for(0), 1024);
        assert_eq!(block_size_for(256 << 20), 16384);
        assert!(block_size_for(1 << 40) > 32 * 1024);
        let sig = file_signature(&tempfile::tempfile().unwrap(), 0).unwrap();
        assert_eq!(parse_signature(sig).unwrap().blocks(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn random_edits_rebuild_exactly(
            seed in 0u64..1_000_000,
            len in 0usize..200_000,
            edits in proptest::collection::vec((0usize..200_000, 0usize..3000, 0u8..3), 0..8),
            window_blocks in 1usize..40,
        ) {
            let base = pseudo(len, seed);
            let mut new = base.clone();
            for (i, &(at, n, kind)) in edits.iter().enumerate() {
                let at = at.min(new.len());
                match kind {
                    0 => { new.splice(at..at, pseudo(n, seed + i as u64 + 1)); }
                    1 => { let end = (at + n).min(new.len()); new.drain(at..end); }
                    _ => {
                        let end = (at + n).min(new.len());
                        new[at..end].copy_from_slice(&pseudo(end - at, seed + 99 + i as u64));
                    }
                }
            }
            let b = block_size_for(base.len() as u64) as usize;
            let (out, literal) = roundtrip_windowed(&base, &new, window_blocks * b).unwrap();
            proptest::prop_assert!(out == new);
            // Each edit costs at most its size and two blocks around it, plus the tail.
            let bound: usize = edits.iter().map(|e| e.1 + 2 * b).sum::<usize>() + b;
            proptest::prop_assert!(literal as usize <= bound.max(new.len().min(b)) || literal as usize <= new.len(),
                "literal {} bound {}", literal, bound);
        }
    }
}
