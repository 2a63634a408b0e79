//! Row-level patches between two replay scripts: how an hour's dump travels when the
//! slave already holds the previous one.
//!
//! A block delta (the sync engine's) needs whole unchanged blocks; with 1% of the rows
//! changed and scattered, nearly every block of a dump holds one, so nearly everything
//! is sent again. A replay script is made of lines (one row per line inside `COPY`
//! blocks, rows sorted by [`super::script`]), so the master diffs *lines* instead, and
//! it can do so alone: it kept the script it shipped last time, which is the base the
//! slave staged. No signature crosses the wire, only the patch:
//!
//! - [`make`] (master) hashes the base's lines (64-bit) and walks the new script: a line
//!   found in the base, near where the last match left off or (for one line in eight)
//!   anywhere, becomes (part of) a `Copy` of base bytes, any other line `Literal` bytes.
//!   Runs of consecutive lines coalesce into one op. A hash collision cannot corrupt
//!   anything: the slave checks the rebuilt file's BLAKE3.
//! - [`Applier`] (slave) checks that its staged base has the BLAKE3 the master based the
//!   patch on, rebuilds the new script into a temp file beside it (every copy bounded by
//!   the base's length, the output by the announced length), checks the result's BLAKE3
//!   and renames it over the staged file. Any mismatch leaves the staged file as it was
//!   and the master falls back to the sync engine's block delta.
//!
//! Ops are encoded in chunks of whole ops (each chunk one `DbPatchOps` frame): tag 0
//! `Copy` (varint offset, varint length), tag 1 `Literal` (varint length, bytes).

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use crate::wire::db::{PATCH_CHUNK as CHUNK, PATCH_MAX_LITERAL as MAX_LITERAL};
/// Bases with more lines than this are not indexed (the index costs ~20 bytes a line):
/// the block delta ships those.
pub const MAX_LINES: usize = 25_000_000;

/// A new line is looked for among the next NEAR lines of the base (rows deleted, rows
/// changed in place), then, if its hash is a multiple of SAMPLE, anywhere (a long jump:
/// many rows deleted, tables in another order). Indexing only one line in SAMPLE keeps the
/// map small and its building cheap; after a long jump, the lines until the next sampled
/// one travel as literals.
const NEAR: usize = 32;
const SAMPLE: u64 = 8;

const OP_COPY: u8 = 0;
const OP_LITERAL: u8 = 1;

/// What [`make`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    /// BLAKE3 of the base the patch applies to.
    pub base_hash: [u8; 32],
    pub literal: u64,
    pub copied: u64,
    pub ops_bytes: u64,
    pub chunks: u64,
}

/// Identity hasher for keys that already are hashes.
#[derive(Default)]
struct PreHashed(u64);
impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A fast 64-bit hash of a line (a multiply-rotate over 8-byte words, then a final mix).
/// Not collision-resistant, and it need not be: a collision makes a wrong `Copy`, which
/// the slave's BLAKE3 check of the result catches (the block delta then ships the script).
fn line_hash(l: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let step = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut h = (l.len() as u64) ^ 0x243F_6A88_85A3_08D3;
    let mut words = l.chunks_exact(8);
    for w in &mut words {
        h = step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(b));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^ (h >> 33)
}

/// Calls `f(offset, line)` for each line of `file` (with its `\n`; the last one may
/// lack it), reading 4 MiB at a time, and feeds every byte to `whole` if given. Stops
/// early (returning `false`) when `f` returns `false`.
fn for_each_line(
    file: &File,
    mut whole: Option<&mut blake3::Hasher>,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 4 << 20];
    // buf[..filled] holds unread bytes; the first starts at file offset `base`.
    let (mut filled, mut base, mut pos) = (0usize, 0u64, 0u64);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0); // a line longer than the buffer
        }
        let n = file.read_at(&mut buf[filled..], pos)?;
        pos += n as u64;
        if let Some(h) = whole.as_deref_mut() {
            h.update(&buf[filled..filled + n]);
        }
        filled += n;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buf[..filled]) {
            if !f(base + start as u64, &buf[start..=end])? {
                return Ok(false);
            }
            start = end + 1;
        }
        if n == 0 {
            if start < filled && !f(base + start as u64, &buf[start..filled])? {
                return Ok(false);
            }
            return Ok(true);
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        base += start as u64;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(d: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = d.split_first().ok_or("truncated patch op")?;
        *d = rest;
        if i == 9 && b > 1 {
            return Err("patch varint overflows 64 bits".into());
        }
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("patch varint is too long".into())
}

/// Builds chunks of ops, coalescing copies and literals.
struct OpWriter<'a> {
    chunk: Vec<u8>,
    copy: Option<(u64, u64)>,
    literal: Vec<u8>,
    made: Made,
    sink: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
}

impl OpWriter<'_> {
    fn copy(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.flush_literal()?;
        match &mut self.copy {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => {
                self.flush_copy()?;
                self.copy = Some((off, len));
            }
        }
        self.made.copied += len;
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush_copy()?;
        self.made.literal += data.len() as u64;
        for part in data.chunks(MAX_LITERAL) {
            if self.literal.len() + part.len() > MAX_LITERAL {
                self.flush_literal()?;
            }
            self.literal.extend_from_slice(part);
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> io::Result<()> {
        if let Some((off, len)) = self.copy.take() {
            self.chunk.push(OP_COPY);
            put_varint(&mut self.chunk, off);
            put_varint(&mut self.chunk, len);
            self.maybe_send()?;
        }
        Ok(())
    }

    fn flush_literal(&mut self) -> io::Result<()> {
        if !self.literal.is_empty() {
            self.chunk.push(OP_LITERAL);
            put_varint(&mut self.chunk, self.literal.len() as u64);
            self.chunk.extend_from_slice(&self.literal);
            self.literal.clear();
            self.maybe_send()?;
        }
        Ok(())
    }

    fn maybe_send(&mut self) -> io::Result<()> {
        if self.chunk.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.chunk.is_empty() {
            (self.sink)(&self.chunk)?;
            self.made.ops_bytes += self.chunk.len() as u64;
            self.made.chunks += 1;
            self.chunk.clear();
        }
        Ok(())
    }
}

/// Diffs `new` against `base` line by line, handing each chunk of ops to `sink`.
/// Returns `None` (having stopped early) when a patch is not worth it: the base has more
/// than [`MAX_LINES`] lines, or more than `max_literal` bytes of `new` are not in it.
pub fn make(
    base: &File,
    new: &File,
    max_literal: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Option<Made>> {
    // Index the base: each line's start and hash, and a sparse map (the lines whose hash
    // is a multiple of SAMPLE) from hash to first line, for long jumps.
    let expect = (base.metadata()?.len() / 32) as usize;
    let mut starts: Vec<u64> = Vec::with_capacity(expect.min(MAX_LINES) + 1);
    let mut hashes: Vec<u64> = Vec::with_capacity(expect.min(MAX_LINES));
    let mut sampled: HashMap<u64, u32, BuildHasherDefault<PreHashed>> =
        HashMap::with_capacity_and_hasher(
            expect.min(MAX_LINES) / SAMPLE as usize,
            Default::default(),
        );
    let mut whole = blake3::Hasher::new();
    let mut end = 0u64;
    let indexed = for_each_line(base, Some(&mut whole), |off, line| {
        if starts.len() >= MAX_LINES {
            return Ok(false);
        }
        let h = line_hash(line);
        if h.is_multiple_of(SAMPLE) {
            sampled.entry(h).or_insert(starts.len() as u32);
        }
        starts.push(off);
        hashes.push(h);
        end = off + line.len() as u64;
        Ok(true)
    })?;
    if !indexed {
        return Ok(None);
    }
    starts.push(end);
    let line_len = |i: usize| starts[i + 1] - starts[i];

    let mut w = OpWriter {
        chunk: Vec::with_capacity(CHUNK + MAX_LITERAL + 64),
        copy: None,
        literal: Vec::new(),
        made: Made {
            base_hash: *whole.finalize().as_bytes(),
            ..Default::default()
        },
        sink,
    };
    // The base line after the last one matched: where the new script most likely goes on.
    let mut anchor = 0usize;
    let complete = for_each_line(new, None, |_, line| {
        let (h, n) = (line_hash(line), line.len() as u64);
        let same = |i: usize| hashes[i] == h && line_len(i) == n;
        let near = anchor..(anchor + NEAR).min(hashes.len());
        let at = near.into_iter().find(|&i| same(i)).or_else(|| {
            (h.is_multiple_of(SAMPLE))
                .then(|| sampled.get(&h).map(|&i| i as usize))
                .flatten()
                .filter(|&i| same(i))
        });
        match at {
            Some(i) => {
                w.copy(starts[i], n)?;
                anchor = i + 1;
            }
            None => {
                w.literal(line)?;
                if w.made.literal > max_literal {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })?;
    if !complete {
        return Ok(None);
    }
    w.flush_copy()?;
    w.flush_literal()?;
    w.send()?;
    Ok(Some(w.made))
}

/// The slave's side: rebuilds the new script from its staged base and the patch chunks.
pub struct Applier {
    base: File,
    base_len: u64,
    out: tempfile::NamedTempFile,
    written: u64,
    len: u64,
    hash: [u8; 32],
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Applier {
    /// `base` is the staged file (already opened without following links); the patch
    /// must be based on content hashing to `base_hash`, and produce `len` bytes hashing
    /// to `hash`, written into a temp file in `dir`.
    pub fn new(
        mut base: File,
        base_hash: &[u8; 32],
        dir: &std::path::Path,
        len: u64,
        hash: [u8; 32],
    ) -> Result<Applier, String> {
        let md = base.metadata().map_err(|e| e.to_string())?;
        if !md.is_file() {
            return Err("the staged dump is not a regular file".into());
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut base).map_err(|e| e.to_string())?;
        if h.finalize().as_bytes() != base_hash {
            return Err("the staged dump is not the one this patch is based on".into());
        }
        let out = tempfile::Builder::new()
            .prefix(".patch-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot create a temp file in {}: {e}", dir.display()))?;
        Ok(Applier {
            base,
            base_len: md.len(),
            out,
            written: 0,
            len,
            hash,
            hasher: blake3::Hasher::new(),
            buf: Vec::new(),
        })
    }

    fn emit(&mut self, data_len: u64) -> Result<(), String> {
        if self.written + data_len > self.len {
            return Err(format!(
                "the patch produces more than the announced {} bytes",
                self.len
            ));
        }
        self.written += data_len;
        Ok(())
    }

    /// Applies one chunk of ops.
    pub fn apply(&mut self, mut d: &[u8]) -> Result<(), String> {
        let io = |e: io::Error| format!("cannot write the patched dump: {e}");
        while let Some((&op, rest)) = d.split_first() {
            d = rest;
            match op {
                OP_COPY => {
                    let off = get_varint(&mut d)?;
                    let len = get_varint(&mut d)?;
                    if off.checked_add(len).is_none_or(|end| end > self.base_len) {
                        return Err(format!(
                            "patch copies {len} bytes at {off}, outside the {}-byte base",
                            self.base_len
                        ));
                    }
                    self.emit(len)?;
                    let mut done = 0u64;
                    while done < len {
                        let n = ((len - done) as usize).min(1 << 20);
                        self.buf.resize(n, 0);
                        self.base
                            .read_exact_at(&mut self.buf, off + done)
                            .map_err(|e| format!("cannot read the staged dump: {e}"))?;
                        self.hasher.update(&self.buf);
                        self.out.write_all(&self.buf).map_err(io)?;
                        done += n as u64;
                    }
                }
                OP_LITERAL => {
                    let len = get_varint(&mut d)?;
                    if len > d.len() as u64 {
                        return Err("truncated patch literal".into());
                    }
                    self.emit(len)?;
                    let (lit, rest) = d.split_at(len as usize);
                    d = rest;
                    self.hasher.update(lit);
                    self.out.write_all(lit).map_err(io)?;
                }
                t => return Err(format!("unknown patch op {t}")),
            }
        }
        Ok(())
    }

    /// Checks the result and puts it in place of `target` (fsynced first).
    pub fn finish(self, target: &std::path::Path) -> Result<(), String> {
        if self.written != self.len || self.hasher.finalize().as_bytes() != &self.hash {
            return Err(
                "the patched dump does not have the content the master announced (length or \
                 BLAKE3 mismatch)"
                    .into(),
            );
        }
        self.out
            .as_file()
            .sync_all()
            .map_err(|e| format!("cannot flush the patched dump: {e}"))?;
        self.out
            .persist(target)
            .map_err(|e| format!("cannot replace {}: {}", target.display(), e.error))?;
        Ok(())
    }
}

/// Reads the chunks a [`make`] sink wrote as `u32 length | bytes` records.
pub fn read_chunks(
    mut r: impl Read,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut buf)?;
        each(&buf)?;
    }
}

/// A [`make`] sink writing `u32 length | bytes` records to `w`.
pub fn chunk_writer(w: &mut impl Write) -> impl FnMut(&[u8]) -> io::Result<()> + '_ {
    move |c: &[u8]| {
        w.write_all(&(c.len() as u32).to_be_bytes())?;
        w.write_all(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, data: &[u8]) -> File {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        File::open(p).unwrap()
    }

    /// Patch base -> new, apply it, return (rebuilt bytes, stats).
    fn roundtrip(base: &[u8], new: &[u8]) -> (Vec<u8>, Made) {
        let d = tempfile::tempdir().unwrap();
        let (b, n) = (file(d.path(), "b", base), file(d.path(), "n", new));
        let mut chunks = Vec::new();
        let made = make(&b, &n, u64::MAX, &mut |c| {
            assert!(c.len() <= crate::wire::db::PATCH_CHUNK_MAX);
            chunks.push(c.to_vec());
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(made.base_hash, *blake3::hash(base).as_bytes());
        let hash = *blake3::hash(new).as_bytes();
        let mut a = Applier::new(
            File::open(d.path().join("b")).unwrap(),
            &made.base_hash,
            d.path(),
            new.len() as u64,
            hash,
        )
        .unwrap();
        for c in &chunks {
            a.apply(c).unwrap();
        }
        let target = d.path().join("staged");
        a.finish(&target).unwrap();
        (std::fs::read(target).unwrap(), made)
    }

    fn rows(n: usize, changed: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut s = String::from("COPY public.t (id, v) FROM stdin;\n");
        for i in 0..n {
            let v = if changed(i) { "changed" } else { "value" };
            s.push_str(&format!("{i}\t{v}-{}\n", i * 7));
        }
        s.push_str("\\.\n\nSELECT pg_catalog.setval('t_id_seq', 1, true);\n");
        s.into_bytes()
    }

    #[test]
    fn scattered_row_changes_cost_about_the_changed_rows() {
        let base = rows(100_000, |_| false);
        // 1% changed, 0.2% deleted, 0.2% inserted, scattered.
        let mut new = String::from_utf8(rows(100_000, |i| i % 100 == 7)).unwrap();
        new = new
            .lines()
            .enumerate()
            .filter(|(i, _)| i % 500 != 3)
            .flat_map(|(i, l)| {
                let mut v = vec![l.to_string()];
                if i % 500 == 250 {
                    v.push(format!("{}\tinserted", 1_000_000 + i));
                }
                v
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let (got, made) = roundtrip(&base, new.as_bytes());
        assert_eq!(got, new.as_bytes());
        assert!(
            made.ops_bytes * 20 < new.len() as u64,
            "{made:?} for {} bytes",
            new.len()
        );
        assert!(made.literal < 1200 * 25, "{made:?}");
    }

    #[test]
    fn edge_cases_rebuild_exactly() {
        let cases: Vec<(&[u8], &[u8])> = vec![
            (b"", b""),
            (b"", b"a\nb\n"),
            (b"a\nb\n", b""),
            (b"a\nb", b"a\nb"),              // no final newline
            (b"a\nb", b"a\nb\nc"),           // the base's last line gets a newline
            (b"x\nx\nx\n", b"x\nx\nx\nx\n"), // repeated lines
            (b"1\n2\n3\n", b"3\n2\n1\n"),    // reordered
        ];
        for (b, n) in cases {
            assert_eq!(roundtrip(b, n).0, n, "{b:?} -> {n:?}");
        }
        // Long literal lines are split into ops that fit a chunk.
        let long = vec![b'z'; 3 * MAX_LITERAL + 5];
        assert_eq!(roundtrip(b"a\n", &long).0, long);
        // Lines longer than the read buffer (a big bytea row) are found whole.
        let mut big = vec![b'y'; 9 << 20];
        big.push(b'\n');
        let base = [b"a\n".as_slice(), &big, b"b\n"].concat();
        let new = [b"c\n".as_slice(), &big, b"b\n"].concat();
        let (got, made) = roundtrip(&base, &new);
        assert_eq!(got, new);
        assert_eq!(made.literal, 2, "{made:?}");
    }

    #[test]
    fn too_many_new_bytes_is_not_worth_a_patch() {
        let d = tempfile::tempdir().unwrap();
        let (b, n) = (
            file(d.path(), "b", b"a\n"),
            file(d.path(), "n", &rows(1000, |_| true)),
        );
        assert_eq!(make(&b, &n, 100, &mut |_| Ok(())).unwrap(), None);
    }

    #[test]
    fn hostile_patches_are_refused_and_leave_the_staged_file() {
        let d = tempfile::tempdir().unwrap();
        let base = b"hello\nworld\n";
        let bp = d.path().join("staged");
        std::fs::write(&bp, base).unwrap();
        let bh = *blake3::hash(base).as_bytes();
        let new = b"hello\n";
        let nh = *blake3::hash(new).as_bytes();
        let mk = || Applier::new(File::open(&bp).unwrap(), &bh, d.path(), 6, nh).unwrap();
        // Wrong base.
        let e = Applier::new(File::open(&bp).unwrap(), &[0; 32], d.path(), 6, nh)
            .err()
            .unwrap();
        assert!(e.contains("not the one"), "{e}");
        // A copy outside the base, an overflowing copy, too much output, junk.
        for bad in [
            vec![OP_COPY, 10, 5],
            vec![
                OP_COPY, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1,
            ],
            vec![OP_LITERAL, 7, b'a', b'b', b'c', b'd', b'e', b'f', b'g'],
            vec![OP_LITERAL, 9, b'a'],
            vec![7],
            vec![OP_COPY],
        ] {
            assert!(mk().apply(&bad).is_err(), "{bad:?}");
        }
        // Right length, wrong content.
        let mut a = mk();
        a.apply(&[OP_LITERAL, 6, b'h', b'e', b'l', b'l', b'o', b'!'])
            .unwrap();
        assert!(a.finish(&bp).is_err());
        // Short output.
        let mut a = mk();
        a.apply(&[OP_COPY, 0, 3]).unwrap();
        assert!(a.finish(&bp).is_err());
        assert_eq!(std::fs::read(&bp).unwrap(), base);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temp files are removed");
        // And the honest patch works.
        let mut a = mk();
        a.apply(&[OP_COPY, 0, 6]).unwrap();
        a.finish(&bp).unwrap();
        assert_eq!(std::fs::read(&bp).unwrap(), new);
    }

    #[test]
    fn chunk_records_roundtrip() {
        let mut buf = Vec::new();
        {
            let mut w = chunk_writer(&mut buf);
            w(b"abc").unwrap();
            w(b"").unwrap();
            w(b"de").unwrap();
        }
        let mut got = Vec::new();
        read_chunks(&buf[..], |c| {
            got.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![b"abc".to_vec(), vec![], b"de".to_vec()]);
    }
}
