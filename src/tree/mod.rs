//! What a tree is, as both sides of a sync and the wire see it: relative paths made
//! safe ([`path`]), the manifest of entries ([`manifest`], held compactly in
//! [`entries`]), the report of what a run changed ([`report`]), the exclude patterns
//! with git's semantics ([`excludes`]), and the pool of data buffers that frames and
//! file transfers share ([`bufpool`]). Pure data; it depends on no other domain.

pub mod bufpool;
pub mod entries;
pub mod excludes;
pub mod manifest;
pub mod path;
pub mod report;

/// Deterministic incompressible bytes for unit tests (xorshift), shared by the delta
/// and compression tests.
#[cfg(test)]
pub(crate) fn pseudo_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
