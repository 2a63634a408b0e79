//! Relative paths as they travel on the wire, and the rules that make them safe.
//!
//! A protocol path is a byte string (Unix file names need not be UTF-8) made of
//! `/`-separated components relative to a sync root. Every path that arrives from
//! a peer goes through [`RelPath::from_wire`] before anything uses it: no empty,
//! `.` or `..` component, no leading `/`, no NUL, each component at most 255 bytes
//! and the whole at most 4095. The empty path names the root itself.
//! Validation is the first line of defence; the second is that the file system
//! layer (`fsops`) opens everything beneath the root without following symlinks.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest path accepted, in bytes (Linux PATH_MAX minus the NUL).
pub const MAX_PATH: usize = 4095;
/// Longest file name component accepted, in bytes (Linux NAME_MAX).
pub const MAX_NAME: usize = 255;

/// A validated relative path (`a/b/c`), or the root itself (empty).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

/// Why a path from the wire was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is absolute")]
    Absolute,
    #[error("path has a '..' component")]
    DotDot,
    #[error("path has an empty or '.' component")]
    EmptyComponent,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("a file name is longer than {MAX_NAME} bytes")]
    NameTooLong,
}

impl RelPath {
    /// The root of the tree.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Validate bytes received from a peer (or built locally) as a relative path.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, PathError> {
        Self::check(bytes)?;
        Ok(RelPath(bytes.to_vec()))
    }

    /// [`RelPath::from_wire`] of bytes already in a vector of their own (no copy); on
    /// an error the bytes come back, for the message.
    pub fn from_wire_vec(bytes: Vec<u8>) -> Result<Self, (PathError, Vec<u8>)> {
        match Self::check(&bytes) {
            Ok(()) => Ok(RelPath(bytes)),
            Err(e) => Err((e, bytes)),
        }
    }

    /// The rules of [`RelPath::from_wire`].
    fn check(bytes: &[u8]) -> Result<(), PathError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul);
        }
        if bytes[0] == b'/' {
            return Err(PathError::Absolute);
        }
        for comp in bytes.split(|&b| b == b'/') {
            match comp {
                b".." => return Err(PathError::DotDot),
                b"" | b"." => return Err(PathError::EmptyComponent),
                c if c.len() > MAX_NAME => return Err(PathError::NameTooLong),
                _ => {}
            }
        }
        Ok(())
    }

    /// Bytes that were a `RelPath` before (kept in a [`crate::tree::entries::Entries`]
    /// arena), without checking them again.
    pub(crate) fn from_stored(bytes: &[u8]) -> Self {
        debug_assert!(RelPath::from_wire(bytes).is_ok());
        RelPath(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as an OS path (relative; `.` for the root).
    pub fn as_path(&self) -> &Path {
        if self.0.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(&self.0))
        }
    }

    /// The parent path and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some((RelPath(self.0[..i].to_vec()), &self.0[i + 1..])),
            None => Some((RelPath::root(), &self.0[..])),
        }
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }

    /// True if `self` is `other` or lies beneath it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// `self/name`.
    pub fn join(&self, name: &[u8]) -> RelPath {
        // One allocation of the exact size (a clone then two pushes reallocated twice:
        // a fifth of the user time of a scan).
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }
}

/// Renders a path for people: control characters and invalid UTF-8 are escaped
/// (`\n`, `\x1b`, `\xff`), so a hostile file name cannot forge log lines or
/// terminal escapes.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        f.write_str(&escape_bytes(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({self})")
    }
}

/// Escape control characters, backslashes and invalid UTF-8 for display.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Escape the control characters of a message for display (`\n`, `\r`, `\t`,
/// `\x1b`, ... and C1 controls): for text that may carry names from the peer or
/// the file system (error messages, log lines), so none can forge output lines
/// or send terminal escapes. Unlike [`escape_bytes`], backslashes are kept as
/// they are, so text that already holds escaped names is not escaped twice.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_controls_leaves_no_control_character() {
        assert_eq!(
            escape_controls("a\nb\x1b[31m\r\t\x01\x7f\u{85}ok \\n é"),
            "a\\nb\\x1b[31m\\r\\t\\x01\\x7f\\x85ok \\n é"
        );
        assert_eq!(escape_controls("plain"), "plain");
    }

    #[test]
    fn accepts_normal_paths() {
        assert!(RelPath::from_wire(b"a/b/c").is_ok());
        assert!(RelPath::from_wire(b"-rf").is_ok());
        assert!(RelPath::from_wire(b"with space/\xff\xfe").is_ok());
        assert!(RelPath::from_wire(b"..a/b..").is_ok());
        assert!(RelPath::from_wire(b"").unwrap().is_root());
    }

    #[test]
    fn refuses_hostile_paths() {
        assert_eq!(RelPath::from_wire(b"../x"), Err(PathError::DotDot));
        assert_eq!(RelPath::from_wire(b"a/../../x"), Err(PathError::DotDot));
        assert_eq!(RelPath::from_wire(b"/etc/x"), Err(PathError::Absolute));
        assert_eq!(RelPath::from_wire(b"a\0b"), Err(PathError::Nul));
        assert_eq!(RelPath::from_wire(b"a//b"), Err(PathError::EmptyComponent));
        assert_eq!(RelPath::from_wire(b"a/./b"), Err(PathError::EmptyComponent));
        assert_eq!(RelPath::from_wire(b"a/"), Err(PathError::EmptyComponent));
        assert_eq!(
            RelPath::from_wire(&[b'a'; 256]),
            Err(PathError::NameTooLong)
        );
        assert_eq!(RelPath::from_wire(&[b'a'; 5000]), Err(PathError::TooLong));
    }

    #[test]
    fn split_and_prefix() {
        let p = RelPath::from_wire(b"a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"a/b");
        assert_eq!(name, b"c");
        assert!(p.starts_with(&RelPath::from_wire(b"a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::from_wire(b"a/bc").unwrap()));
        assert!(
            !RelPath::from_wire(b"a/bc")
                .unwrap()
                .starts_with(&RelPath::from_wire(b"a/b").unwrap())
        );
        assert_eq!(p.depth(), 3);
    }

    #[test]
    fn display_escapes_control_chars() {
        let p = RelPath::from_wire(b"evil\nname\x1b[31m\xff").unwrap();
        assert_eq!(p.to_string(), "evil\\nname\\x1b[31m\\xff");
    }

    proptest::proptest! {
        #[test]
        fn valid_paths_never_escape(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(p) = RelPath::from_wire(&bytes) {
                let b = p.as_bytes();
                proptest::prop_assert!(!b.starts_with(b"/"));
                proptest::prop_assert!(!b.split(|&c| c == b'/').any(|c| c == b".." || c == b"." || (c.is_empty() && !b.is_empty())));
            }
        }
    }
}
