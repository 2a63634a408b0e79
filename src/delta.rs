//! Block deltas (rsync algorithm, via fast_rsync) with memory that stays flat.
//!
//! fast_rsync works on whole slices, so nothing here ever holds a whole file:
//! - the receiver computes the signature of its old copy chunk by chunk (blocks
//!   are independent, so chunked signatures concatenate exactly);
//! - the sender diffs its new file window by window against the indexed
//!   signature, carrying a window's trailing literal into the next window so
//!   that matches across window boundaries are still found;
//! - the delta travels as our own `Copy{offset,len}` / `Data` messages and the
//!   receiver applies it by reading the base with `pread`, checking every copy
//!   against the base's length (a copy outside the base is an error, not a read
//!   of something else).
//!
//! Signatures from the wire are validated before use (block size 0 makes
//! fast_rsync panic; hash size 0 makes every block "match").

use fast_rsync::{Signature, SignatureOptions};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Signature header: magic, block size, hash size.
const SIG_HEADER: usize = 12;
const MD4_MAGIC: u32 = 0x7273_0136;
/// Strong hash bytes per block (MD4, truncated). With the 32-bit rolling
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

/// Compute the signature of a whole file, reading it in chunks.
pub fn file_signature(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let block = block_size_for(len);
    let opts = SignatureOptions {
        block_size: block,
        crypto_hash_size: HASH_SIZE,
    };
    let chunk = (4 * 1024 * 1024 / block as usize).max(1) * block as usize;
    let mut buf = vec![0u8; chunk];
    let nblocks = len.div_ceil(block as u64) as usize;
    let mut sig = Vec::with_capacity(SIG_HEADER + nblocks * (4 + HASH_SIZE as usize));
    sig.extend_from_slice(&MD4_MAGIC.to_be_bytes());
    sig.extend_from_slice(&block.to_be_bytes());
    sig.extend_from_slice(&HASH_SIZE.to_be_bytes());
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(chunk);
        file.read_exact_at(&mut buf[..n], off)?;
        let part = Signature::calculate(&buf[..n], opts);
        sig.extend_from_slice(&part.serialized()[SIG_HEADER..]);
        off += n as u64;
    }
    Ok(sig)
}

/// Check a signature from the wire; returns it parsed, ready to index.
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
    if magic != MD4_MAGIC {
        return Err("signature has an unknown format".into());
    }
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block) {
        return Err(format!("signature block size {block} is out of bounds"));
    }
    if !(4..=16).contains(&hash) {
        return Err(format!("signature hash size {hash} is out of bounds"));
    }
    if !(bytes.len() - SIG_HEADER).is_multiple_of(4 + hash as usize) {
        return Err("signature length does not match its block count".into());
    }
    Signature::deserialize(bytes).map_err(|e| format!("bad signature: {e}"))
}

/// One delta instruction.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Copy { offset: u64, len: u64 },
    Literal(&'a [u8]),
}

/// Parse a fast_rsync (librsync format) delta into ops. The delta is our own
/// output, but it is parsed defensively anyway.
pub fn parse_delta(mut d: &[u8]) -> Result<Vec<Op<'_>>, String> {
    fn take<'a>(d: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if d.len() < n {
            return Err("truncated delta".into());
        }
        let (a, b) = d.split_at(n);
        *d = b;
        Ok(a)
    }
    fn int(d: &mut &[u8], n: usize) -> Result<u64, String> {
        let b = take(d, n)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }
    if int(&mut d, 4)? != 0x7273_0236 {
        return Err("bad delta magic".into());
    }
    let mut ops = Vec::new();
    loop {
        let cmd = int(&mut d, 1)? as u8;
        match cmd {
            0 => break,
            1..=0x40 => ops.push(Op::Literal(take(&mut d, cmd as usize)?)),
            0x41..=0x44 => {
                let n = int(&mut d, 1 << (cmd - 0x41))? as usize;
                ops.push(Op::Literal(take(&mut d, n)?));
            }
            0x45..=0x54 => {
                let mode = cmd - 0x45;
                let offset = int(&mut d, 1 << (mode / 4))?;
                let len = int(&mut d, 1 << (mode % 4))?;
                ops.push(Op::Copy { offset, len });
            }
            c => return Err(format!("unknown delta command {c:#x}")),
        }
    }
    Ok(ops)
}

/// Diff a file against an indexed signature, window by window, calling `emit`
/// with each op and `consumed` with each span of new data (in order, exactly
/// once over the whole file) so the caller can hash it.
///
/// Windows are diffed two at a time on two threads (fast_rsync's diff checks
/// every matching block with MD4, which makes it the sender's bottleneck on a
/// big file). The second window of a pair carries its trailing literal into the
/// next pair, so a match across that boundary is still found; across the
/// boundary inside a pair, a shifted match can cost up to one block of literal.
pub fn diff_file(
    sig: &fast_rsync::IndexedSignature<'_>,
    file: &File,
    len: u64,
    buf: &mut Vec<u8>,
    delta: &mut Vec<u8>,
    mut emit: impl FnMut(Op<'_>) -> io::Result<()>,
    mut consumed: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut start = 0u64;
    // After a window with no match at all, send a few windows literally: diffing
    // data without matches is ten times slower than sending it.
    let mut skip_windows = 0u32;
    let (mut buf2, mut delta2) = (Vec::new(), Vec::new());
    while start < len {
        let n = ((len - start) as usize).min(WINDOW);
        buf.resize(n, 0);
        file.read_exact_at(buf, start)?;
        let last = start + n as u64 == len;
        if skip_windows > 0 {
            skip_windows -= 1;
            emit(Op::Literal(buf))?;
            consumed(buf);
            start += n as u64;
            continue;
        }
        if last {
            // One window left: diff it alone.
            let ops = diff_window(sig, buf, delta)?;
            if matched(&ops) == 0 {
                skip_windows = 3;
            }
            for op in ops {
                emit(op)?;
            }
            consumed(buf);
            start += n as u64;
            continue;
        }
        // A pair: this window and the next, diffed in parallel.
        let start2 = start + n as u64;
        let n2 = ((len - start2) as usize).min(WINDOW);
        buf2.resize(n2, 0);
        file.read_exact_at(&mut buf2, start2)?;
        let last2 = start2 + n2 as u64 == len;
        let (first, second) = std::thread::scope(|s| {
            let other = s.spawn(|| diff_window(sig, &buf2, &mut delta2));
            let first = diff_window(sig, buf, delta);
            let second = other
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("diff thread panicked")));
            (first, second)
        });
        let (first, second) = (first?, second?);
        if matched(&first) == 0 && matched(&second) == 0 && !last2 {
            skip_windows = 3;
        }
        for op in first {
            emit(op)?;
        }
        consumed(buf);
        // Carry the second window's trailing literal into the next pair, unless it
        // is the whole window.
        let mut used = n2;
        let mut ops_to_emit = second.len();
        if !last2
            && let Some(Op::Literal(l)) = second.last()
            && l.len() < n2
            && second.len() > 1
        {
            used -= l.len();
            ops_to_emit -= 1;
        }
        for op in second.into_iter().take(ops_to_emit) {
            emit(op)?;
        }
        consumed(&buf2[..used]);
        start = start2 + used as u64;
    }
    Ok(())
}

/// fast_rsync's diff of one window, parsed into ops.
fn diff_window<'a>(
    sig: &fast_rsync::IndexedSignature<'_>,
    data: &'a [u8],
    delta: &'a mut Vec<u8>,
) -> io::Result<Vec<Op<'a>>> {
    delta.clear();
    fast_rsync::diff(sig, data, &mut *delta)
        .map_err(|e| io::Error::other(format!("diff failed: {e}")))?;
    parse_delta(delta).map_err(io::Error::other)
}

/// Bytes of the old copy reused by `ops`.
fn matched(ops: &[Op<'_>]) -> u64 {
    ops.iter()
        .map(|o| {
            if let Op::Copy { len, .. } = o {
                *len
            } else {
                0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn apply(base: &[u8], ops: &[(bool, u64, u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (is_copy, off, len, lit) in ops {
            if *is_copy {
                out.extend_from_slice(&base[*off as usize..(*off + *len) as usize]);
            } else {
                out.extend_from_slice(lit);
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
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
        let dir = tempfile::tempdir().unwrap();
        let (bp, np) = (dir.path().join("b"), dir.path().join("n"));
        std::fs::File::create(&bp)
            .unwrap()
            .write_all(&base)
            .unwrap();
        std::fs::File::create(&np).unwrap().write_all(&new).unwrap();
        let sigb = file_signature(&File::open(&bp).unwrap(), base.len() as u64).unwrap();
        let sig = parse_signature(sigb).unwrap();
        let idx = sig.index();
        let (mut buf, mut delta) = (Vec::new(), Vec::new());
        let mut ops = Vec::new();
        let mut seen = Vec::new();
        diff_file(
            &idx,
            &File::open(&np).unwrap(),
            new.len() as u64,
            &mut buf,
            &mut delta,
            |op| {
                ops.push(match op {
                    Op::Copy { offset, len } => (true, offset, len, vec![]),
                    Op::Literal(l) => (false, 0, 0, l.to_vec()),
                });
                Ok(())
            },
            |d| seen.extend_from_slice(d),
        )
        .unwrap();
        assert_eq!(seen, new, "consumed spans cover the file exactly once");
        assert_eq!(apply(&base, &ops), new);
        let literal: usize = ops.iter().map(|o| o.3.len()).sum();
        assert!(literal < 16 * 65536 * 2, "literal {literal}");
    }

    #[test]
    fn hostile_signatures_are_refused() {
        let mut s = Vec::new();
        s.extend_from_slice(&MD4_MAGIC.to_be_bytes());
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&8u32.to_be_bytes());
        assert!(parse_signature(s.clone()).is_err(), "block size 0");
        s[4..8].copy_from_slice(&2048u32.to_be_bytes());
        s[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert!(parse_signature(s.clone()).is_err(), "hash size 0");
        s[8..12].copy_from_slice(&8u32.to_be_bytes());
        s.push(1);
        assert!(parse_signature(s).is_err(), "ragged length");
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size_for(0), 1024);
        assert_eq!(block_size_for(256 << 20), 16384);
        assert!(block_size_for(1 << 40) > 32 * 1024);
    }
}
