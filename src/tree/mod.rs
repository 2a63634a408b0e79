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
