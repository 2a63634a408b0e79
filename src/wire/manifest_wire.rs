//! The two wire encodings of a manifest batch (`Msg::Manifest`).
//!
//! The manifest is most of a no-change run's bytes, so since protocol 2.2 it is
//! sent compact (`MANIFEST_COMPACT`). Each entry is coded against the entry before
//! it in the same frame (the first against an empty one), so a frame decodes on
//! its own:
//!
//! ```text
//! flags   u8      bits 0-1 kind, 2 same mode, 3 same uid and gid,
//!                 4 symlink target follows, 5 hash follows, 6 nanoseconds follow
//! shared  uvar    bytes of the path shared with the previous entry's path
//! suffix  uvar n, then n bytes: the rest of the path
//! size    uvar
//! secs    uvar    zigzag of (mtime seconds - previous entry's mtime seconds), the
//!                 difference taken modulo 2^64 (so any two i64 seconds code exactly)
//! nanos   u32     only with flag 6 (else 0)
//! mode    uvar    only without flag 2
//! uid gid uvar x2 only without flag 3
//! target  uvar n, then n bytes, only with flag 4
//! hash    32 bytes, only with flag 5
//! ```
//!
//! Since 2.4 the seconds are any `i64`, as the file system holds them. A 2.2/2.3
//! decoder turned them into nanoseconds in an `i64` and refuses a time outside
//! 1677-2262, so such a peer is sent the nearest time it can hold
//! ([`Form::CompactNs`], [`Mtime::clamped_to_nanos`]); the sender warns about each
//! such entry ([`needs_clamp`]), it is never silent. The fixed-width form carries
//! nanoseconds in an `i64` and is clamped the same way.
//!
//! A file in a typical tree costs about 20 bytes plus its name's new part, against
//! 38 plus its whole path in the fixed-width `MANIFEST` of protocol 2.0/2.1, which
//! is still sent to a peer older than 2.2 (so one node can be upgraded at a time)
//! and still accepted. Decoding bounds every length before it allocates, and the
//! rebuilt path is validated as a [`RelPath`] like any path from the wire.

use super::frame::{Dec, Enc, ProtocolError, malformed};
use super::message::tag;
use crate::tree::manifest::{Entry, Kind, Mtime, shared_prefix};
use crate::tree::path::{MAX_PATH, RelPath, escape_bytes};

/// The first protocol minor version that understands `MANIFEST_COMPACT`.
pub const MINOR_COMPACT_MANIFEST: u16 = 2;
/// The first protocol minor version that reads any `i64` seconds of an mtime
/// (older ones only 1677-2262, the range of nanoseconds in an `i64`).
pub const MINOR_FAR_MTIME: u16 = 4;

/// The manifest encoding a peer reads, by its protocol minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Protocol 2.0/2.1: fixed width, mtimes as `i64` nanoseconds (clamped).
    Fixed,
    /// Protocol 2.2/2.3: compact, mtimes clamped to the `i64` nanosecond range.
    CompactNs,
    /// Protocol 2.4 on: compact, any mtime.
    Compact,
}

impl Form {
    pub fn for_minor(minor: u16) -> Form {
        if minor >= MINOR_FAR_MTIME {
            Form::Compact
        } else if minor >= MINOR_COMPACT_MANIFEST {
            Form::CompactNs
        } else {
            Form::Fixed
        }
    }

    /// The mtime this form carries for `m`.
    fn mtime(self, m: Mtime) -> Mtime {
        match self {
            Form::Compact => m,
            Form::Fixed | Form::CompactNs => m.clamped_to_nanos(),
        }
    }
}

/// Whether `form` cannot carry `m` exactly (the sender then warns: the peer gets
/// the nearest time it can hold and the file will look changed on every run).
pub fn needs_clamp(form: Form, m: Mtime) -> bool {
    form.mtime(m) != m
}

const SAME_MODE: u8 = 1 << 2;
const SAME_OWNER: u8 = 1 << 3;
const HAS_TARGET: u8 = 1 << 4;
const HAS_HASH: u8 = 1 << 5;
const HAS_NANOS: u8 = 1 << 6;
const KIND_MASK: u8 = 0b11;

/// Smallest compact entry: flags, shared, suffix length, size, seconds.
pub const COMPACT_ENTRY_MIN: usize = 5;
/// Smallest fixed-width entry: path len + kind + size + mtime + mode + uid + gid +
/// target len + hash flag.
pub const ENTRY_MIN: usize = 4 + 1 + 8 + 8 + 4 + 4 + 4 + 4 + 1;

/// The frame payload of one manifest batch, compact when the peer understands it.
pub fn encode(entries: &[Entry], form: Form) -> Vec<u8> {
    let compact = form != Form::Fixed;
    let per_entry = if compact { 16 } else { 48 };
    let size: usize = entries
        .iter()
        .map(|x| per_entry + x.path.as_bytes().len() + x.target.len())
        .sum();
    let mut e = Enc(Vec::with_capacity(5 + size));
    if compact {
        e.u8(tag::MANIFEST_COMPACT).u32(entries.len() as u32);
        let mut prev: Option<&Entry> = None;
        for x in entries {
            encode_compact(&mut e, x, prev, form);
            prev = Some(x);
        }
    } else {
        e.u8(tag::MANIFEST).u32(entries.len() as u32);
        for x in entries {
            encode_fixed(&mut e, x, form);
        }
    }
    e.0
}

/// Decodes the entries of a `MANIFEST` (`compact` false) or `MANIFEST_COMPACT`
/// frame; the tag has been read.
pub fn decode(d: &mut Dec, compact: bool, max: usize) -> Result<Vec<Entry>, ProtocolError> {
    let mut v: Vec<Entry> = Vec::new();
    decode_each(d, compact, max, |e| {
        v.push(e.clone());
        Ok::<(), ProtocolError>(())
    })?;
    Ok(v)
}

/// [`decode`] without a vector of the batch: each entry goes to `each` as it is
/// decoded (a receiver stores it compactly at once).
pub fn decode_each<E: From<ProtocolError>>(
    d: &mut Dec,
    compact: bool,
    max: usize,
    mut each: impl FnMut(&Entry) -> Result<(), E>,
) -> Result<(), E> {
    let min = if compact {
        COMPACT_ENTRY_MIN
    } else {
        ENTRY_MIN
    };
    let n = d.count(max, min, "manifest entries")?;
    let mut prev: Option<Entry> = None;
    for _ in 0..n {
        let x = if compact {
            decode_compact(d, prev.as_ref())?
        } else {
            decode_fixed(d)?
        };
        each(&x)?;
        prev = Some(x);
    }
    Ok(())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn encode_compact(e: &mut Enc, x: &Entry, prev: Option<&Entry>, form: Form) {
    let (prev_path, prev_secs) = prev.map_or((&[][..], 0), |p| {
        (p.path.as_bytes(), form.mtime(p.mtime).secs)
    });
    let path = x.path.as_bytes();
    let mtime = form.mtime(x.mtime);
    let (secs, nanos) = (mtime.secs, mtime.nanos());
    let mut flags = x.kind.code();
    if prev.is_some_and(|p| p.mode == x.mode) {
        flags |= SAME_MODE;
    }
    if prev.is_some_and(|p| p.uid == x.uid && p.gid == x.gid) {
        flags |= SAME_OWNER;
    }
    if !x.target.is_empty() {
        flags |= HAS_TARGET;
    }
    if x.hash.is_some() {
        flags |= HAS_HASH;
    }
    if nanos != 0 {
        flags |= HAS_NANOS;
    }
    let shared = shared_prefix(prev_path, path);
    e.u8(flags)
        .uvar(shared as u64)
        .uvar((path.len() - shared) as u64);
    e.0.extend_from_slice(&path[shared..]);
    // Modulo 2^64: exact for any two i64 (the decoder adds it back the same way);
    // for times within +-9.3e9 s (all a 2.2/2.3 peer gets) it never wraps.
    e.uvar(x.size).uvar(zigzag(secs.wrapping_sub(prev_secs)));
    if nanos != 0 {
        e.u32(nanos);
    }
    if flags & SAME_MODE == 0 {
        e.uvar(u64::from(x.mode));
    }
    if flags & SAME_OWNER == 0 {
        e.uvar(u64::from(x.uid)).uvar(u64::from(x.gid));
    }
    if !x.target.is_empty() {
        e.uvar(x.target.len() as u64);
        e.0.extend_from_slice(&x.target);
    }
    if let Some(h) = &x.hash {
        e.0.extend_from_slice(h);
    }
}

/// A varint that must fit `max` (a length or a u32 field).
fn bounded(d: &mut Dec, max: u64, what: &str) -> Result<u64, ProtocolError> {
    let v = d.uvar(what)?;
    if v > max {
        return Err(malformed(format!("{what}: {v} exceeds {max}")));
    }
    Ok(v)
}

fn decode_compact(d: &mut Dec, prev: Option<&Entry>) -> Result<Entry, ProtocolError> {
    let flags = d.u8("entry flags")?;
    if flags & 0x80 != 0 {
        return Err(malformed(format!("entry flags {flags:#x}: unknown bit")));
    }
    let kind = Kind::from_code(flags & KIND_MASK).ok_or_else(|| malformed("bad entry kind"))?;
    if prev.is_none() && flags & (SAME_MODE | SAME_OWNER) != 0 {
        return Err(malformed("first entry of a batch refers to a previous one"));
    }
    let prev_path = prev.map_or(&[][..], |p| p.path.as_bytes());
    let shared = bounded(d, prev_path.len() as u64, "entry path prefix")? as usize;
    let suffix_len = bounded(d, (MAX_PATH - shared) as u64, "entry path")? as usize;
    let mut raw = Vec::with_capacity(shared + suffix_len);
    raw.extend_from_slice(&prev_path[..shared]);
    raw.extend_from_slice(d.fixed_slice(suffix_len, "entry path")?);
    let path = RelPath::from_wire_vec(raw)
        .map_err(|(e, raw)| malformed(format!("entry path {}: {e}", escape_bytes(&raw))))?;
    let size = d.uvar("size")?;
    let prev_secs = prev.map_or(0, |p| p.mtime.secs);
    let secs = prev_secs.wrapping_add(unzigzag(d.uvar("mtime")?));
    let nanos = match flags & HAS_NANOS != 0 {
        true => d.u32("mtime nanoseconds")?,
        false => 0,
    };
    let mtime = Mtime::new(secs, nanos.into())
        .ok_or_else(|| malformed(format!("mtime nanoseconds {nanos} out of range")))?;
    let u32_field =
        |d: &mut Dec, what: &str| bounded(d, u64::from(u32::MAX), what).map(|v| v as u32);
    let mode = match prev {
        Some(p) if flags & SAME_MODE != 0 => p.mode,
        _ => u32_field(d, "mode")?,
    };
    let (uid, gid) = match prev {
        Some(p) if flags & SAME_OWNER != 0 => (p.uid, p.gid),
        _ => (u32_field(d, "uid")?, u32_field(d, "gid")?),
    };
    let target = if flags & HAS_TARGET != 0 {
        let n = bounded(d, MAX_PATH as u64, "symlink target")? as usize;
        d.fixed_slice(n, "symlink target")?.to_vec()
    } else {
        Vec::new()
    };
    let hash = if flags & HAS_HASH != 0 {
        Some(d.fixed::<32>("hash")?)
    } else {
        None
    };
    Ok(Entry {
        path,
        kind,
        size,
        mtime,
        mode,
        uid,
        gid,
        target,
        hash,
    })
}

fn encode_fixed(e: &mut Enc, x: &Entry, form: Form) {
    let ns = form
        .mtime(x.mtime)
        .as_nanos()
        .expect("clamped to i64 nanoseconds");
    e.bytes(x.path.as_bytes())
        .u8(x.kind.code())
        .u64(x.size)
        .i64(ns)
        .u32(x.mode)
        .u32(x.uid)
        .u32(x.gid);
    e.bytes(&x.target);
    e.bool(x.hash.is_some());
    if let Some(h) = &x.hash {
        e.0.extend_from_slice(h);
    }
}

fn decode_fixed(d: &mut Dec) -> Result<Entry, ProtocolError> {
    let raw = d.bytes(MAX_PATH, "entry path")?;
    let path = RelPath::from_wire(raw)
        .map_err(|e| malformed(format!("entry path {}: {e}", escape_bytes(raw))))?;
    let kind = Kind::from_code(d.u8("kind")?).ok_or_else(|| malformed("bad entry kind"))?;
    let size = d.u64("size")?;
    let mtime = Mtime::from_nanos(d.i64("mtime")?);
    let mode = d.u32("mode")?;
    let uid = d.u32("uid")?;
    let gid = d.u32("gid")?;
    let target = d.bytes(MAX_PATH, "symlink target")?.to_vec();
    let hash = if d.bool("hash flag")? {
        Some(d.fixed::<32>("hash")?)
    } else {
        None
    };
    Ok(Entry {
        path,
        kind,
        size,
        mtime,
        mode,
        uid,
        gid,
        target,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, mtime_ns: i64, mode: u32, uid: u32) -> Entry {
        let mtime = Mtime::from_nanos(mtime_ns);
        Entry {
            path: RelPath::from_wire(path.as_bytes()).unwrap(),
            kind,
            size: path.len() as u64 * 1000,
            mtime,
            mode,
            uid,
            gid: uid + 1,
            target: Vec::new(),
            hash: None,
        }
    }

    fn sample() -> Vec<Entry> {
        let mut link = entry("d/link", Kind::Symlink, -1, 0o777, 0);
        link.target = b"../x y".to_vec();
        let mut hashed = entry(
            "d/sub/file",
            Kind::File,
            1_700_000_000_123_456_789,
            0o644,
            0,
        );
        hashed.hash = Some([9; 32]);
        vec![
            entry("", Kind::Dir, 1_700_000_000_000_000_000, 0o755, 0),
            entry("d", Kind::Dir, 1_600_000_000_999_999_999, 0o755, 0),
            entry("d/a", Kind::File, 1_700_000_001_000_000_000, 0o644, 1000),
            entry("d/ab", Kind::File, 1_700_000_001_000_000_001, 0o644, 1000),
            link,
            hashed,
            entry("e", Kind::File, i64::MIN, 0o7777, u32::MAX - 1),
            entry("f", Kind::File, i64::MAX, 0, 0),
        ]
    }

    fn roundtrip(entries: &[Entry], form: Form) -> usize {
        let bytes = encode(entries, form);
        let compact = form != Form::Fixed;
        let mut d = Dec::new(&bytes[1..]);
        assert_eq!(decode(&mut d, compact, 1000).unwrap(), entries);
        d.end("manifest").unwrap();
        // Every strict prefix is refused, never a panic.
        for cut in 1..bytes.len() {
            let mut d = Dec::new(&bytes[1..cut]);
            assert!(decode(&mut d, compact, 1000).is_err() || d.end("m").is_err());
        }
        bytes.len()
    }

    #[test]
    fn both_encodings_round_trip_including_extreme_times_and_owners() {
        let s = sample();
        let compact = roundtrip(&s, Form::Compact);
        roundtrip(&s, Form::CompactNs);
        let fixed = roundtrip(&s, Form::Fixed);
        assert!(
            compact * 3 < fixed * 2,
            "compact {compact} vs fixed {fixed}"
        );
    }

    #[test]
    fn a_typical_file_costs_about_twenty_bytes() {
        let entries: Vec<Entry> = (0..1000)
            .map(|i| {
                let mut x = entry(
                    &format!("dir007/file{i:05}.dat"),
                    Kind::File,
                    1_700_000_000_000_000_000 + i * 7_919_000_017,
                    0o644,
                    0,
                );
                x.size = 7000 + i as u64;
                x
            })
            .collect();
        let per = encode(&entries, Form::Compact).len() / entries.len();
        assert!(per <= 20, "{per} bytes per entry");
    }

    #[test]
    fn hostile_compact_entries_are_refused() {
        let frame = |f: &dyn Fn(&mut Enc)| {
            let mut e = Enc::default();
            f(&mut e);
            let mut d = Dec::new(&e.0);
            decode(&mut d, true, 1000)
        };
        let path = |e: &mut Enc, p: &[u8]| {
            e.uvar(0).uvar(p.len() as u64);
            e.0.extend_from_slice(p);
        };
        for bad in [&b"../x"[..], b"/etc/x", b"a/../../x", b"a\0b"] {
            let r = frame(&|e| {
                e.u32(1).u8(0);
                path(e, bad);
                e.uvar(0).uvar(0).uvar(0o644).uvar(0).uvar(0);
            });
            assert!(r.is_err(), "{bad:?} accepted");
        }
        // A prefix longer than the previous path, or a first entry sharing one.
        let r = frame(&|e| {
            e.u32(1).u8(0).uvar(1).uvar(1).u8(b'a');
            e.uvar(0).uvar(0).uvar(0o644).uvar(0).uvar(0);
        });
        assert!(r.is_err());
        // A path that grows past MAX_PATH is refused before it is allocated.
        let r = frame(&|e| {
            e.u32(1).u8(0).uvar(0).uvar(u64::MAX);
        });
        assert!(r.is_err());
        // "same mode" with no previous entry; nanoseconds of a second or more;
        // a mode wider than 32 bits; an unknown flag.
        for f in [
            &(|e: &mut Enc| {
                e.u32(1).u8(SAME_MODE).uvar(0).uvar(1).u8(b'a');
                e.uvar(0).uvar(0).uvar(0).uvar(0);
            }) as &dyn Fn(&mut Enc),
            &|e| {
                e.u32(1).u8(HAS_NANOS).uvar(0).uvar(1).u8(b'a');
                e.uvar(0).uvar(0).u32(1_000_000_000).uvar(0).uvar(0).uvar(0);
            },
            &|e| {
                e.u32(1).u8(0).uvar(0).uvar(1).u8(b'a');
                e.uvar(0).uvar(0).uvar(1 << 32).uvar(0).uvar(0);
            },
            &|e| {
                e.u32(1).u8(0x80).uvar(0).uvar(1).u8(b'a');
                e.uvar(0).uvar(0).uvar(0).uvar(0).uvar(0);
            },
        ] {
            assert!(frame(f).is_err());
        }
    }
}

#[cfg(test)]
mod far_mtimes {
    use super::*;

    fn at(path: &str, secs: i64, nanos: i64) -> Entry {
        Entry {
            path: RelPath::from_wire(path.as_bytes()).unwrap(),
            kind: Kind::File,
            size: 1,
            mtime: Mtime::new(secs, nanos).unwrap(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            target: Vec::new(),
            hash: None,
        }
    }

    fn decoded(bytes: &[u8]) -> Vec<Entry> {
        let mut d = Dec::new(&bytes[1..]);
        let v = decode(&mut d, bytes[0] == tag::MANIFEST_COMPACT, 1000).unwrap();
        d.end("manifest").unwrap();
        v
    }

    /// 1901, 1938, 2100, 2300, the ends of i64 seconds, next to each other (the
    /// seconds are coded as differences: i64::MIN after i64::MAX wraps).
    #[test]
    fn any_i64_seconds_round_trip_exactly_from_2_4() {
        let entries = vec![
            at("a", -2_147_385_600, 1),
            at("b", -1_009_843_200, 999_999_999),
            at("c", 4_102_444_800, 0),
            at("d", 10_413_792_000, 123_456_789),
            at("e", i64::MAX, 999_999_999),
            at("f", i64::MIN, 0),
            at("g", i64::MAX, 0),
        ];
        assert_eq!(decoded(&encode(&entries, Form::Compact)), entries);
    }

    /// A 2.2/2.3 or 2.0/2.1 peer gets the nearest time it can hold, never a wrapped one.
    #[test]
    fn older_forms_clamp_and_say_so() {
        let e2300 = at("d", 10_413_792_000, 5);
        let e1600 = at("e", -11_676_096_000, 0);
        let e2000 = at("f", 946_684_800, 7);
        for form in [Form::CompactNs, Form::Fixed] {
            let got = decoded(&encode(
                &[e2300.clone(), e1600.clone(), e2000.clone()],
                form,
            ));
            assert_eq!(got[0].mtime.as_nanos(), Some(i64::MAX), "{form:?}");
            assert_eq!(got[1].mtime.as_nanos(), Some(i64::MIN), "{form:?}");
            assert_eq!(got[2], e2000, "{form:?}");
            assert!(needs_clamp(form, e2300.mtime) && needs_clamp(form, e1600.mtime));
            assert!(!needs_clamp(form, e2000.mtime));
        }
        assert!(!needs_clamp(Form::Compact, e2300.mtime));
        assert_eq!(Form::for_minor(3), Form::CompactNs);
        assert_eq!(Form::for_minor(4), Form::Compact);
        assert_eq!(Form::for_minor(1), Form::Fixed);
    }
}
