//! Config errors, and finding where in the file (line, column, table, key) they are.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml_edit::{Document, Item, Table, TableLike, Value};

/// Why a config could not be used. Every variant means exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {reason} (pass --config FILE or set HASYNC_CONFIG)", path.display())]
    Read {
        path: PathBuf,
        /// The OS's words, without "(os error N)".
        reason: String,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not valid TOML or not a valid config.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    /// The diagnostic, for an invalid file.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            ConfigError::Read { .. } => None,
        }
    }
}

/// One problem in a config file, displayed as
/// `FILE:LINE:COL: [[sync]] #2 key "paths": what is wrong (what to do)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// `[node]`, `[[sync]] #2`, ...; empty for the top level.
    pub table: String,
    pub key: Option<String>,
    /// What is wrong, then what to do in parentheses.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        match (self.table.is_empty(), &self.key) {
            (true, None) => {}
            (true, Some(k)) => write!(f, "top-level key {k:?}: ")?,
            (false, None) => write!(f, "{}: ", self.table)?,
            (false, Some(k)) => write!(f, "{} key {k:?}: ", self.table)?,
        }
        f.write_str(&self.message)
    }
}

pub(super) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// One step of a path into the document: a key of a table, or an element of an array
/// (or of an array of tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyOrIndex {
    Key(String),
    Index(usize),
}

pub(super) use KeyOrIndex::{Index, Key};

/// `(line, column)`, 1-based, of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(&self) -> Option<&'a dyn TableLike> {
        match *self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn index(&self, i: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
        let value_array = |v: &'a Value| {
            v.as_array()
                .and_then(|a| a.get(i))
                .map(|e| (Node::Value(e), e.span()))
        };
        match *self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(|t| (Node::Table(t), t.span())),
            Node::Item(Item::Value(v)) | Node::Value(v) => value_array(v),
            _ => None,
        }
    }
}

/// Where `path` is in `doc`: the `(line, column)` of its key (of the header for a
/// table, of the element for an index). When the path goes further than the document
/// (a missing key), the deepest part that exists is given.
pub(super) fn locate(doc: &Document<&str>, path: &[KeyOrIndex]) -> Option<(usize, usize)> {
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<Range<usize>> = None;
    for seg in path {
        let next = match seg {
            Key(k) => node
                .table_like()
                .and_then(|t| t.get_key_value(k))
                .map(|(key, item)| {
                    let span = match item {
                        Item::Table(t) if !t.is_implicit() => t.span().or_else(|| key.span()),
                        _ => key.span(),
                    };
                    (Node::Item(item), span)
                }),
            Index(i) => node.index(*i),
        };
        let Some((n, span)) = next else { break };
        node = n;
        best = span.or(best);
    }
    best.map(|r| line_col(doc.raw(), r.start))
}

/// The deepest key path in `doc` whose key, value or table header contains byte
/// `offset` (to say in which table and key a deserialisation error happened).
pub(super) fn path_at(doc: &Document<&str>, offset: usize) -> Vec<KeyOrIndex> {
    let mut path = Vec::new();
    find_in(doc.as_table(), offset, &mut path);
    path
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    // An error at the very end of a span (e.g. an empty header) counts too.
    span.is_some_and(|r| r.start <= offset && (offset < r.end || r.is_empty() && offset == r.start))
}

fn find_in(table: &dyn TableLike, offset: usize, path: &mut Vec<KeyOrIndex>) -> bool {
    for (name, item) in table.iter() {
        path.push(Key(name.to_string()));
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        if find_in_item(item, key_span, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(
    item: &Item,
    key_span: Option<Range<usize>>,
    offset: usize,
    path: &mut Vec<KeyOrIndex>,
) -> bool {
    match item {
        Item::None => false,
        Item::Value(v) => {
            let whole = match (key_span.clone(), v.span()) {
                (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
                (k, v) => k.or(v),
            };
            if !contains(whole, offset) {
                return false;
            }
            find_in_value(v, offset, path);
            true
        }
        Item::Table(t) => {
            find_in(t, offset, path)
                || contains(t.span(), offset)
                || (t.is_implicit() && contains(key_span, offset))
        }
        Item::ArrayOfTables(a) => a.iter().enumerate().any(|(i, t)| {
            path.push(Index(i));
            let found = find_in(t, offset, path) || contains(t.span(), offset);
            if !found {
                path.pop();
            }
            found
        }),
    }
}

fn find_in_value(v: &Value, offset: usize, path: &mut Vec<KeyOrIndex>) {
    if let Some(a) = v.as_array() {
        for (i, e) in a.iter().enumerate() {
            if contains(e.span(), offset) {
                path.push(Index(i));
                find_in_value(e, offset, path);
                return;
            }
        }
    } else if let Some(t) = v.as_inline_table() {
        find_in(t, offset, path);
    }
}

/// Splits a path into the table it is in (`[node]`, `[[sync]] #2`; empty at the top
/// level) and the key inside it.
pub(super) fn describe(doc: &Document<&str>, path: &[KeyOrIndex]) -> (String, Option<String>) {
    let Some(Key(first)) = path.first() else {
        return (String::new(), None);
    };
    let top_is_value =
        matches!(doc.get(first), Some(Item::Value(v)) if !v.is_inline_table() && !v.is_array());
    if top_is_value {
        return (String::new(), Some(first.clone()));
    }
    let (table, rest) = match path.get(1) {
        Some(Index(i)) => (format!("[[{first}]] #{}", i + 1), &path[2..]),
        _ => (format!("[{first}]"), &path[1..]),
    };
    let keys: Vec<&str> = rest
        .iter()
        .filter_map(|s| match s {
            Key(k) => Some(k.as_str()),
            Index(_) => None,
        })
        .collect();
    let key = (!keys.is_empty()).then(|| keys.join("."));
    (table, key)
}
