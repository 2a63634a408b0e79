//! How a sync uses the link to its peer: compression (`compress`) and the bandwidth
//! cap (`bwlimit`), as the config and the command line write them.

/// zstd's level for `compress = "auto"` (and a bare `--compress`).
pub const DEFAULT_COMPRESS_LEVEL: i32 = 3;
/// The highest level accepted: beyond it zstd needs windows the peer refuses.
pub const MAX_COMPRESS_LEVEL: i32 = 19;

/// `compress = "auto" | "off" | LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// Compress over SSH, not to a local peer (where it only costs CPU).
    #[default]
    Auto,
    Off,
    /// Always, at this zstd level (1..=19).
    Level(i32),
}

impl Compress {
    /// Parse `"auto"`, `"off"` or a level `"1"`..`"19"`.
    pub fn parse(s: &str) -> Result<Compress, String> {
        match s.trim() {
            "auto" => Ok(Compress::Auto),
            "off" | "none" | "0" => Ok(Compress::Off),
            n => match n.parse::<i32>() {
                Ok(l) if (1..=MAX_COMPRESS_LEVEL).contains(&l) => Ok(Compress::Level(l)),
                _ => Err(format!(
                    "{s:?} is not a compression setting (write \"auto\", \"off\" or a zstd level from 1 to {MAX_COMPRESS_LEVEL})"
                )),
            },
        }
    }

    /// The zstd level to use toward a peer that is (`remote`) or is not over SSH.
    pub fn level(self, remote: bool) -> Option<i32> {
        match self {
            Compress::Auto => remote.then_some(DEFAULT_COMPRESS_LEVEL),
            Compress::Off => None,
            Compress::Level(l) => Some(l),
        }
    }
}

/// Parse a rate as rsync does: a bare number is KiB/s, a `K`, `M`, `G` suffix
/// (powers of 1024; a `B` suffix: bytes) scales it; fractions are allowed
/// ("1.5M"). `0` means no limit. Returns bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "bad bandwidth limit {s:?}: give a number of KiB/s, or one with a suffix \
             K, M or G (1024-based), e.g. 500, 2M, 1.5G; 0 for none"
        )
    };
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1 << 10),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 || v * mult as f64 > 1e15 {
        return Err(bad());
    }
    let bytes = (v * mult as f64).round() as u64;
    if bytes > 0 && bytes < 512 {
        return Err(format!(
            "bandwidth limit {s:?} is below 512 bytes/s: too low to carry the protocol"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_rsync() {
        assert_eq!(parse_rate("100").unwrap(), 100 * 1024);
        assert_eq!(parse_rate("2M").unwrap(), 2 << 20);
        assert_eq!(parse_rate("2m").unwrap(), 2 << 20);
        assert_eq!(parse_rate("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_rate("64K").unwrap(), 64 << 10);
        assert_eq!(parse_rate("4096B").unwrap(), 4096);
        assert_eq!(parse_rate("0").unwrap(), 0);
        for bad in ["", "fast", "-1", "2X", "1e30G", "10B"] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn compress_settings_parse() {
        assert_eq!(Compress::parse("auto").unwrap(), Compress::Auto);
        assert_eq!(Compress::parse("off").unwrap(), Compress::Off);
        assert_eq!(Compress::parse("7").unwrap(), Compress::Level(7));
        assert!(Compress::parse("20").is_err() && Compress::parse("fast").is_err());
        assert_eq!(Compress::Auto.level(false), None);
        assert_eq!(Compress::Auto.level(true), Some(DEFAULT_COMPRESS_LEVEL));
        assert_eq!(Compress::Level(1).level(false), Some(1));
    }
}
