//! A whole manifest held compactly: what a scan produces and a receiver keeps.
//!
//! A `Vec<Entry>` cost about 140 bytes per entry (the struct, 112 bytes, plus its
//! path's own allocation); a serve receiving a manifest held two of them (the
//! source's and its own scan) and more in maps, about 280 bytes per entry at peak.
//! Here an entry is one fixed 40-byte record, and its path, symlink target and hash
//! are bytes in one shared arena, addressed by a `u32` offset: about 40 bytes plus
//! the path per entry. [`Entries::get`] gives back an owned [`Entry`] for the code
//! that works on one entry at a time.
//!
//! The store is also where what a peer can make us keep is bounded: at most
//! [`MAX_ENTRIES`] entries and [`MAX_ARENA`] bytes of paths, targets and hashes
//! ([`Entries::push`] refuses more, naming the limit). See docs/SECURITY.md.

use crate::tree::manifest::{Entry, Kind, Mtime};
use crate::tree::path::RelPath;

/// Most entries a manifest may have (bounds memory against a hostile sender).
pub const MAX_ENTRIES: usize = 20_000_000;
/// Most bytes of paths, symlink targets and hashes a manifest may have (1 GiB).
pub const MAX_ARENA: usize = 1 << 30;

/// One entry without its bytes (40 bytes).
#[derive(Debug, Clone, Copy)]
struct Rec {
    size: u64,
    secs: i64,
    off: u32,
    uid: u32,
    gid: u32,
    nanos: u32,
    path_len: u16,
    target_len: u16,
    /// Permission bits; a mode wider than 07777 is kept whole in `wide_modes`.
    mode: u16,
    kind: u8,
    flags: u8,
}

const HAS_HASH: u8 = 1;
const WIDE_MODE: u8 = 2;

/// Why an entry was not stored.
#[derive(Debug, thiserror::Error)]
pub enum EntriesError {
    #[error("the manifest has more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error(
        "the manifest's paths and symlink targets take more than {} MiB",
        MAX_ARENA >> 20
    )]
    TooBig,
}

/// A manifest in wire order, compact (see the module docs).
#[derive(Debug, Default)]
pub struct Entries {
    recs: Vec<Rec>,
    arena: Vec<u8>,
    /// Modes that do not fit 16 bits (only from a hostile or broken peer; the
    /// validation refuses them, but it reports them as they were), by entry index.
    wide_modes: Vec<(u32, u32)>,
}

impl Entries {
    pub fn new() -> Entries {
        Entries::default()
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Append `e`, or refuse it when a bound would be passed.
    pub fn push(&mut self, e: &Entry) -> Result<(), EntriesError> {
        if self.recs.len() >= MAX_ENTRIES {
            return Err(EntriesError::TooMany);
        }
        let path = e.path.as_bytes();
        let extra = path.len() + e.target.len() + if e.hash.is_some() { 32 } else { 0 };
        if self.arena.len() + extra > MAX_ARENA {
            return Err(EntriesError::TooBig);
        }
        let mut flags = 0;
        if e.hash.is_some() {
            flags |= HAS_HASH;
        }
        if e.mode > u32::from(u16::MAX) {
            flags |= WIDE_MODE;
            self.wide_modes.push((self.recs.len() as u32, e.mode));
        }
        let rec = Rec {
            size: e.size,
            secs: e.mtime.secs,
            off: self.arena.len() as u32,
            uid: e.uid,
            gid: e.gid,
            nanos: e.mtime.nanos(),
            // Both at most MAX_PATH (4095): a RelPath and a validated or scanned target.
            path_len: path.len() as u16,
            target_len: e.target.len().min(usize::from(u16::MAX)) as u16,
            mode: e.mode as u16,
            kind: e.kind.code(),
            flags,
        };
        self.arena.extend_from_slice(path);
        self.arena
            .extend_from_slice(&e.target[..usize::from(rec.target_len)]);
        if let Some(h) = &e.hash {
            self.arena.extend_from_slice(h);
        }
        self.recs.push(rec);
        Ok(())
    }

    /// The path of entry `i`, as bytes.
    pub fn path(&self, i: usize) -> &[u8] {
        let r = &self.recs[i];
        &self.arena[r.off as usize..r.off as usize + usize::from(r.path_len)]
    }

    pub fn kind(&self, i: usize) -> Kind {
        Kind::from_code(self.recs[i].kind).expect("stored from a Kind")
    }

    pub fn size(&self, i: usize) -> u64 {
        self.recs[i].size
    }

    /// Entry `i`, owned.
    pub fn get(&self, i: usize) -> Entry {
        let r = &self.recs[i];
        let start = r.off as usize + usize::from(r.path_len);
        let end = start + usize::from(r.target_len);
        let hash = (r.flags & HAS_HASH != 0).then(|| {
            let mut h = [0; 32];
            h.copy_from_slice(&self.arena[end..end + 32]);
            h
        });
        let mode = match r.flags & WIDE_MODE {
            0 => u32::from(r.mode),
            _ => self
                .wide_modes
                .iter()
                .find(|w| w.0 == i as u32)
                .map_or(u32::MAX, |w| w.1),
        };
        Entry {
            path: RelPath::from_stored(self.path(i)),
            kind: self.kind(i),
            size: r.size,
            mtime: Mtime::new(r.secs, r.nanos.into()).expect("stored from an Mtime"),
            mode,
            uid: r.uid,
            gid: r.gid,
            target: self.arena[start..end].to_vec(),
            hash,
        }
    }

    /// Set the hash of entry `i` (its old hash, if any, stays in the arena unused).
    pub fn set_hash(&mut self, i: usize, hash: [u8; 32]) -> Result<(), EntriesError> {
        let e = self.get(i);
        // Re-append the entry's bytes with the hash and point the record at them.
        let off = self.arena.len();
        if off + e.path.as_bytes().len() + e.target.len() + 32 > MAX_ARENA {
            return Err(EntriesError::TooBig);
        }
        self.arena.extend_from_slice(e.path.as_bytes());
        self.arena.extend_from_slice(&e.target);
        self.arena.extend_from_slice(&hash);
        let r = &mut self.recs[i];
        r.off = off as u32;
        r.flags |= HAS_HASH;
        Ok(())
    }

    /// Every entry, owned, in order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Bytes held (for tests and the logs).
    pub fn heap_bytes(&self) -> usize {
        self.recs.capacity() * std::mem::size_of::<Rec>() + self.arena.capacity()
    }
}

impl FromIterator<Entry> for Entries {
    /// Collects entries built locally (tests, small trees); panics past the bounds.
    fn from_iter<I: IntoIterator<Item = Entry>>(it: I) -> Entries {
        let mut s = Entries::new();
        for e in it {
            s.push(&e).expect("within the manifest bounds");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind) -> Entry {
        Entry {
            path: RelPath::from_wire(p.as_bytes()).unwrap(),
            kind,
            size: 7,
            mtime: Mtime::new(10_413_792_000, 5).unwrap(),
            mode: 0o4755,
            uid: 1000,
            gid: u32::MAX,
            target: if kind == Kind::Symlink {
                b"../t".to_vec()
            } else {
                vec![]
            },
            hash: None,
        }
    }

    #[test]
    fn entries_come_back_as_they_went_in() {
        let mut hashed = e("d/f", Kind::File);
        hashed.hash = Some([3; 32]);
        let mut wide = e("w", Kind::File);
        wide.mode = 0o170777;
        let v = vec![
            e("", Kind::Dir),
            e("d", Kind::Dir),
            hashed,
            e("d/l", Kind::Symlink),
            wide,
        ];
        let s: Entries = v.iter().cloned().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), v);
        assert_eq!(std::mem::size_of::<Rec>(), 40);
        let mut s = s;
        s.set_hash(3, [9; 32]).unwrap();
        assert_eq!(s.get(3).hash, Some([9; 32]));
        assert_eq!(s.get(3).target, b"../t");
        assert_eq!(s.get(4).hash, None);
    }
}
