//! Exclude patterns with git's gitignore semantics, exactly: what `git check-ignore`
//! says of a path, [`Excludes::excluded`] says too (tests/it/excludes_git.rs runs git
//! side by side on a few hundred cases).
//!
//! A pattern line, as gitignore(5) describes it: a blank line or one starting with `#`
//! is nothing; unescaped trailing spaces are dropped; a leading `!` negates (the last
//! matching pattern wins); a trailing `/` matches directories only; a pattern with a
//! `/` anywhere else is anchored to the sync root and matched against the whole
//! relative path, otherwise against the name at any depth. Matching is git's wildmatch,
//! byte by byte: `?` and `*` never match `/`; `**` matches across directories when it
//! stands between slashes (`**/x`, `a/**/b`, `a/**`), and is a plain `*` elsewhere
//! (`***/x` is `**/x`); `[...]` sets take `!` or `^`, ranges, `\` escapes and the POSIX
//! classes; `\` escapes any character. A pattern git cannot parse (an unclosed `[`, an
//! unknown class such as `[[:spaci:]]`, a trailing `\`) is accepted and matches nothing,
//! as in git.
//!
//! Matching is linear in the pattern times the name (a table of failed positions), so
//! a peer's patterns cannot make a scan take exponential time.

use super::path::RelPath;

/// Most exclude patterns per session, and bytes per pattern (wire limits too).
pub const MAX_PATTERN: usize = 4096;

/// Compiled exclude patterns (in order: the last matching one decides).
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    dir_only: bool,
    /// Matched against the whole relative path (else against the last name).
    anchored: bool,
    /// An anchored pattern's bytes before its first wildcard or `\`, compared as they
    /// are; `tokens` match the rest. Git matches so, and it shows: after the prefix,
    /// `**` counts as standing at the start (`a**/c` matches `a/b/c`).
    prefix: Vec<u8>,
    /// `None`: a pattern git cannot parse; it matches nothing.
    tokens: Option<Vec<Token>>,
}

#[derive(Debug, Clone)]
enum Token {
    Byte(u8),
    /// `?`: one byte, not `/`.
    One,
    /// `*`: any bytes but `/`.
    Star,
    /// `**/` at the start or after `/`: nothing, or whole directories (`a/`, `a/b/`).
    Dirs,
    /// `**` at the start or after `/`, ending the pattern: everything left.
    All,
    Set(Set),
}

#[derive(Debug, Clone)]
struct Set {
    negated: bool,
    items: Vec<SetItem>,
}

#[derive(Debug, Clone)]
enum SetItem {
    Byte(u8),
    Range(u8, u8),
    Class(fn(u8) -> bool),
}

impl Excludes {
    /// Compile gitignore lines (`*.swp`, `cache/`, `/top-only`, `**/tmp`, `!keep.me`).
    /// Every line git accepts is accepted; only an over-long one is refused.
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut rules = Vec::new();
        for p in patterns {
            if p.len() > MAX_PATTERN {
                return Err(format!(
                    "exclude pattern of {} bytes (at most {MAX_PATTERN}): {:?}...",
                    p.len(),
                    &p[..p.floor_char_boundary(40)]
                ));
            }
            rules.extend(Rule::parse(p.as_bytes()));
        }
        Ok(Excludes { rules })
    }

    /// Whether the relative path `rel` (a directory when `is_dir`) is excluded.
    pub fn excluded(&self, rel: &RelPath, is_dir: bool) -> bool {
        if rel.is_root() {
            return false;
        }
        let path = rel.as_bytes();
        let name = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => &path[i + 1..],
            None => path,
        };
        for r in self.rules.iter().rev() {
            if r.dir_only && !is_dir {
                continue;
            }
            let Some(tokens) = &r.tokens else { continue };
            let hit = match r.anchored {
                true => path
                    .strip_prefix(r.prefix.as_slice())
                    .is_some_and(|rest| wildmatch(tokens, rest)),
                false => wildmatch(tokens, name),
            };
            if hit {
                return !r.negated;
            }
        }
        false
    }
}

impl Rule {
    /// One gitignore line; `None` for a blank line or a comment.
    fn parse(line: &[u8]) -> Option<Rule> {
        if line.first() == Some(&b'#') {
            return None;
        }
        let mut p = trim_trailing_spaces(line);
        let negated = p.first() == Some(&b'!');
        if negated {
            p = &p[1..];
        }
        let dir_only = p.last() == Some(&b'/');
        if dir_only {
            p = &p[..p.len() - 1];
        }
        if p.is_empty() {
            return None;
        }
        let anchored = p.contains(&b'/');
        if p.first() == Some(&b'/') {
            p = &p[1..];
        }
        let literal = match anchored {
            true => p.iter().take_while(|b| !b"*?[\\".contains(b)).count(),
            false => 0,
        };
        Some(Rule {
            negated,
            dir_only,
            anchored,
            prefix: p[..literal].to_vec(),
            tokens: tokenize(&p[literal..]),
        })
    }
}

/// Drops trailing spaces that no backslash escapes (`foo\ ` keeps one).
fn trim_trailing_spaces(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    let mut first_space = None;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => {
                first_space = None;
                i += 1;
            }
            b' ' => {
                first_space.get_or_insert(i);
            }
            _ => first_space = None,
        }
        i += 1;
    }
    if let Some(s) = first_space {
        end = s;
    }
    &line[..end]
}

/// The pattern as tokens; `None` when git could not parse it (it then matches nothing).
fn tokenize(p: &[u8]) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => {
                out.push(Token::Byte(*p.get(i + 1)?));
                i += 2;
            }
            b'?' => {
                out.push(Token::One);
                i += 1;
            }
            b'*' => {
                let run = p[i..].iter().take_while(|b| **b == b'*').count();
                let after_slash = i == 0 || p[i - 1] == b'/';
                let next = p.get(i + run);
                out.push(match (run >= 2 && after_slash, next) {
                    (true, None) => Token::All,
                    (true, Some(b'/')) => {
                        i += 1; // the slash is part of `**/`
                        Token::Dirs
                    }
                    _ => Token::Star,
                });
                i += run;
            }
            b'[' => {
                let (set, len) = parse_set(&p[i + 1..])?;
                out.push(Token::Set(set));
                i += 1 + len;
            }
            b => {
                out.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    Some(out)
}

/// A set after its `[`: the set and the bytes it took (up to and with its `]`).
fn parse_set(p: &[u8]) -> Option<(Set, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    // The last single byte, which a following `-x` makes the start of a range.
    let mut prev: Option<u8> = None;
    let mut first = true;
    loop {
        let b = *p.get(i)?;
        if b == b']' && !first {
            return Some((Set { negated, items }, i + 1));
        }
        first = false;
        if b == b'-' && prev.is_some() && p.get(i + 1).is_some_and(|n| *n != b']') {
            let (hi, len) = match p.get(i + 1)? {
                b'\\' => (*p.get(i + 2)?, 2),
                n => (*n, 1),
            };
            // The start stays a member on its own: in git `[b-a]` matches `b`.
            let lo = prev.take().expect("checked");
            items.push(SetItem::Range(lo, hi));
            i += 1 + len;
            continue;
        }
        if b == b'[' && p.get(i + 1) == Some(&b':') {
            let close = i + 2 + p[i + 2..].iter().position(|c| *c == b']')?;
            if p[close - 1] == b':' && close > i + 2 {
                let name = &p[i + 2..close - 1];
                items.push(SetItem::Class(class(name)?));
                prev = None;
                i = close + 1;
                continue;
            }
            // No `:]`: the `[` is a plain member.
        }
        let (byte, len) = match b {
            b'\\' => (*p.get(i + 1)?, 2),
            b => (b, 1),
        };
        items.push(SetItem::Byte(byte));
        prev = Some(byte);
        i += len;
    }
}

/// A POSIX class by name; `None` (the pattern is then invalid) for an unknown name.
fn class(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |b: u8| b.is_ascii_alphanumeric(),
        b"alpha" => |b: u8| b.is_ascii_alphabetic(),
        b"blank" => |b: u8| b == b' ' || b == b'\t',
        b"cntrl" => |b: u8| b.is_ascii_control(),
        b"digit" => |b: u8| b.is_ascii_digit(),
        b"graph" => |b: u8| b.is_ascii_graphic(),
        b"lower" => |b: u8| b.is_ascii_lowercase(),
        b"print" => |b: u8| b.is_ascii_graphic() || b == b' ',
        b"punct" => |b: u8| b.is_ascii_punctuation(),
        b"space" => |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        b"upper" => |b: u8| b.is_ascii_uppercase(),
        b"xdigit" => |b: u8| b.is_ascii_hexdigit(),
        _ => return None,
    })
}

impl Set {
    fn matches(&self, b: u8) -> bool {
        let hit = self.items.iter().any(|it| match it {
            SetItem::Byte(x) => *x == b,
            SetItem::Range(lo, hi) => *lo <= b && b <= *hi,
            SetItem::Class(f) => f(b),
        });
        hit != self.negated
    }
}

/// Whether `tokens` match all of `text`. Positions (token, byte) already known to
/// fail are remembered, so the cost is at most tokens x bytes.
fn wildmatch(tokens: &[Token], text: &[u8]) -> bool {
    let stars = tokens
        .iter()
        .filter(|t| matches!(t, Token::Star | Token::Dirs))
        .count();
    let mut failed = match stars {
        0 | 1 => Vec::new(),
        _ => vec![false; (tokens.len() + 1) * (text.len() + 1)],
    };
    matches_at(tokens, text, 0, 0, &mut failed)
}

fn matches_at(tokens: &[Token], text: &[u8], ti: usize, mut j: usize, failed: &mut [bool]) -> bool {
    let mut i = ti;
    loop {
        let Some(t) = tokens.get(i) else {
            return j == text.len();
        };
        match t {
            Token::All => return true,
            Token::Star | Token::Dirs => {
                let key = i * (text.len() + 1) + j;
                if failed.get(key) == Some(&true) {
                    return false;
                }
                let found = match t {
                    // Any run of bytes without '/', shortest first.
                    Token::Star => (j..=text.len())
                        .take_while(|k| *k == j || text[k - 1] != b'/')
                        .any(|k| matches_at(tokens, text, i + 1, k, failed)),
                    // Nothing, or up to and with any later '/'.
                    _ => std::iter::once(j)
                        .chain((j..text.len()).filter(|k| text[*k] == b'/').map(|k| k + 1))
                        .any(|k| matches_at(tokens, text, i + 1, k, failed)),
                };
                if !found && let Some(f) = failed.get_mut(key) {
                    *f = true;
                }
                return found;
            }
            _ => {
                let Some(&b) = text.get(j) else { return false };
                let ok = match t {
                    Token::Byte(x) => *x == b,
                    Token::One => b != b'/',
                    Token::Set(s) => b != b'/' && s.matches(b),
                    _ => unreachable!("stars are handled above"),
                };
                if !ok {
                    return false;
                }
                i += 1;
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn x(e: &Excludes, path: &str, dir: bool) -> bool {
        e.excluded(&RelPath::from_wire(path.as_bytes()).unwrap(), dir)
    }

    #[test]
    fn stars_and_anchoring() {
        let e = ex(&["*.swp", "/top", "cache/", "**/tmp", "a/**/b"]);
        assert!(x(&e, "x/y.swp", false));
        assert!(x(&e, "top", false) && !x(&e, "sub/top", false));
        assert!(x(&e, "d/cache", true) && !x(&e, "d/cache", false));
        assert!(x(&e, "tmp", false) && x(&e, "p/q/tmp", false));
        assert!(x(&e, "a/b", false) && x(&e, "a/x/y/b", false) && !x(&e, "a/xb", false));
    }

    #[test]
    fn sets_like_git() {
        let e = ex(&["a[\\-_]"]);
        assert!(x(&e, "a-", false) && x(&e, "a_", false) && !x(&e, "a\\", false));
        let e = ex(&["[a-e-n]"]);
        assert!(x(&e, "c", false) && x(&e, "-", false) && x(&e, "n", false));
        assert!(!x(&e, "m", false));
        for bad in ["a[[:spaci:]]", "[[::]ab]", "ab[", "a[]b", "a\\"] {
            let e = ex(&[bad]);
            for p in ["a ", "ab", "ab[", "a[]b", "a\\", "a"] {
                assert!(!x(&e, p, false), "{bad} matched {p}");
            }
        }
    }

    #[test]
    fn many_stars_stay_linear() {
        let e = ex(&[&"*a".repeat(40)]);
        let name = "a".repeat(200) + "b";
        let t = std::time::Instant::now();
        assert!(!x(&e, &name, false));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn trailing_spaces() {
        assert_eq!(trim_trailing_spaces(b"foo  "), b"foo");
        assert_eq!(trim_trailing_spaces(b"foo\\  "), b"foo\\ ");
        assert_eq!(trim_trailing_spaces(b"a b"), b"a b");
    }
}
