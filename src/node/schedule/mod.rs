//! When jobs run: this module owns the cron-expression parser ([`CronExpr`]), the
//! "next run after this instant" computation in a time zone ([`next_after`]), the
//! retry backoff ([`backoff`]) and the jitter. It is a small hand-written parser rather
//! than the `cron` crate because hasync accepts the usual Unix forms (5 fields with
//! day-of-week 0 and 7 = Sunday, 6 fields with seconds first, `@hourly`...), which that
//! crate does not (it wants 6-7 fields and numbers Sunday 1), and because the DST policy
//! needs a search over wall-clock times anyway.
//!
//! DST policy (documented in `docs/daemon.md`): every expression is matched against
//! wall-clock time in the chosen zone (UTC by default, where there is no DST). A
//! wall-clock time that occurs twice (the repeated hour in autumn) fires once, at its
//! first occurrence; a wall-clock time that does not exist (the skipped hour in spring)
//! fires at the first instant after the gap. Runs are deduplicated by instant: the next
//! run is always strictly after the previous one, so nothing ever runs twice.

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, Timelike, Utc};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::node::config::Schedule;

/// A parsed cron expression. Each field is a bit set of the values it matches.
#[derive(Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday.
    weekdays: u8,
    /// The day-of-month field starts with `*` (Vixie cron: then the day must match
    /// both day fields; when neither starts with `*`, either one is enough).
    days_star: bool,
    weekdays_star: bool,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first name (JAN = 1, SUN = 0).
    names_from: u32,
    /// Where `N/STEP` ends: `max`, except for the day of week, where Vixie cron and
    /// croniter stop at 6 (Saturday): `1/2` is Mon, Wed, Fri, not also Sunday as 7.
    open_max: u32,
}

const SECOND: Field = Field {
    what: "second",
    min: 0,
    max: 59,
    names: &[],
    open_max: 59,
    names_from: 0,
};
const MINUTE: Field = Field {
    what: "minute",
    min: 0,
    max: 59,
    names: &[],
    open_max: 59,
    names_from: 0,
};
const HOUR: Field = Field {
    what: "hour",
    min: 0,
    max: 23,
    names: &[],
    open_max: 23,
    names_from: 0,
};
const DAY: Field = Field {
    what: "day of month",
    min: 1,
    max: 31,
    names: &[],
    open_max: 31,
    names_from: 0,
};
const MONTH: Field = Field {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    open_max: 12,
    names_from: 1,
};
/// 0-7: 7 is Sunday too, as in Unix cron.
const WEEKDAY: Field = Field {
    what: "day of week",
    min: 0,
    max: 7,
    names: &DAYS,
    open_max: 6,
    names_from: 0,
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            if n < self.min || n > self.max {
                return Err(format!(
                    "{s} is out of range for the {} ({}-{})",
                    self.what, self.min, self.max
                ));
            }
            return Ok(n);
        }
        let up = s.to_ascii_uppercase();
        match self.names.iter().position(|n| *n == up) {
            Some(i) => Ok(i as u32 + self.names_from),
            None if self.names.is_empty() => {
                Err(format!("{s:?} is not a number for the {}", self.what))
            }
            None => Err(format!(
                "{s:?} is not a number or a name ({}..{}) for the {}",
                self.names[0],
                self.names[self.names.len() - 1],
                self.what
            )),
        }
    }

    /// Where `N/STEP` starts: `N`, except day of week 7 (Sunday), which starts the week
    /// again at 0, as croniter reads `7/2` (Sun, Tue, Thu, Sat).
    fn step_start(&self, a: u32) -> u32 {
        if a > self.open_max { self.min } else { a }
    }

    /// `text` with every `N/STEP` item written `N-END/STEP` (Debian's cron wants a
    /// range before a step). The text was parsed already: values are valid.
    fn for_cron_d(&self, text: &str) -> String {
        let items: Vec<String> = text
            .split(',')
            .map(|item| match item.split_once('/') {
                Some((r, step)) if r != "*" && !r.contains('-') => {
                    let a = self.step_start(self.value(r).unwrap_or(self.min));
                    if a == self.open_max {
                        a.to_string()
                    } else {
                        format!("{a}-{}/{step}", self.open_max)
                    }
                }
                _ => item.to_string(),
            })
            .collect();
        items.join(",")
    }

    /// The bit set of `text` (a comma-separated list of `*`, `N`, `A-B`, each with an
    /// optional `/STEP`).
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!(
                    "the {} field {text:?} has an empty item",
                    self.what
                ));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("the step {s:?} in {item:?} is not a positive number")
                    })?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "the range {range:?} goes backwards (write the smaller {} first)",
                        self.what
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                if item.contains('/') {
                    // "5/15" means 5, 20, 35, 50 (from 5 to the end, every 15).
                    (self.step_start(a), self.open_max)
                } else {
                    (a, a)
                }
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl FromStr for CronExpr {
    type Err = String;

    /// `"@hourly"`, `"@daily"`... or 5 fields (minute hour day month weekday) or 6
    /// (second first). The error says what is wrong; the caller names the config key.
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let expanded = match text.as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "{t:?} is not a known shorthand (write @hourly, @daily, @weekly, @monthly or @yearly)"
                ));
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split(' ').collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds first), {text:?} has {n}"
                ));
            }
        };
        let mut weekdays = WEEKDAY.parse(rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7); // 7 is Sunday
        }
        Ok(CronExpr {
            seconds: SECOND.parse(sec)?,
            minutes: MINUTE.parse(rest[0])?,
            hours: HOUR.parse(rest[1])? as u32,
            days: DAY.parse(rest[2])? as u32,
            months: MONTH.parse(rest[3])? as u16,
            weekdays: weekdays as u8,
            days_star: rest[2].starts_with('*'),
            weekdays_star: rest[4].starts_with('*'),
            text,
        })
    }
}

impl CronExpr {
    fn day_matches(&self, t: &NaiveDateTime) -> bool {
        use chrono::Datelike;
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time `>= from` (whole seconds) that matches, within 5 years.
    pub fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        use chrono::Datelike;
        let mut t = from.with_nanosecond(0)?;
        if t < from {
            t += ChronoDuration::seconds(1);
        }
        let limit = from.year() + 5;
        while t.year() <= limit {
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = chrono::NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
            } else if !self.day_matches(&t) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
            } else if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)?.with_second(0)? + ChronoDuration::hours(1);
            } else if self.minutes & (1 << t.minute()) == 0 {
                t = t.with_second(0)? + ChronoDuration::minutes(1);
            } else if self.seconds & (1 << t.second()) == 0 {
                t += ChronoDuration::seconds(1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The line for a cron.d file (5 fields) that Debian's cron (Vixie 3.0pl1) and
    /// cronie accept, or `None` when the expression needs seconds, which cron cannot
    /// express. Both refuse `N/STEP` ("bad minute"): it is written `N-END/STEP` (the
    /// same set; see [`Field::open_max`]).
    pub fn cron_d_fields(&self) -> Option<String> {
        let fields: Vec<&str> = self.text.split(' ').collect();
        let five = match fields.len() {
            6 if fields[0] == "0" => &fields[1..],
            6 => return None,
            1 => return Some(self.text.clone()),
            _ => &fields[..],
        };
        let out: Vec<String> = [MINUTE, HOUR, DAY, MONTH, WEEKDAY]
            .iter()
            .zip(five)
            .map(|(f, text)| f.for_cron_d(text))
            .collect();
        Some(out.join(" "))
    }
}

/// A time zone, as the scheduler needs it: wall-clock time of an instant, and the
/// instant(s) of a wall-clock time.
pub trait Zone {
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime;
    fn resolve(&self, n: NaiveDateTime) -> LocalResult<DateTime<Utc>>;
}

impl Zone for Utc {
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc()
    }
    fn resolve(&self, n: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        LocalResult::Single(n.and_utc())
    }
}

impl Zone for chrono::Local {
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&chrono::Local).naive_local()
    }
    fn resolve(&self, n: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        use chrono::TimeZone;
        self.from_local_datetime(&n).map(|d| d.with_timezone(&Utc))
    }
}

/// The config's `[daemon] timezone`: `"utc"` (default) or `"local"` (the system zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TimeZoneChoice {
    #[default]
    Utc,
    Local,
}

impl TimeZoneChoice {
    pub fn zone(self) -> &'static dyn Zone {
        match self {
            TimeZoneChoice::Utc => &Utc,
            TimeZoneChoice::Local => &chrono::Local,
        }
    }
}

/// The first run of `expr` strictly after `after`, in `zone` (see the DST policy above).
pub fn next_after(expr: &CronExpr, after: DateTime<Utc>, zone: &dyn Zone) -> Option<DateTime<Utc>> {
    let mut from = zone.local(after).with_nanosecond(0)? + ChronoDuration::seconds(1);
    for _ in 0..100_000 {
        let n = expr.next_naive(from)?;
        let t = match zone.resolve(n) {
            LocalResult::Single(t) => t,
            // The repeated hour: only the first occurrence counts.
            LocalResult::Ambiguous(first, _) => first,
            // The skipped hour: the first instant after the gap.
            LocalResult::None => gap_end(zone, n)?,
        };
        if t > after {
            return Some(t);
        }
        from = n + ChronoDuration::seconds(1);
    }
    None
}

fn gap_end(zone: &dyn Zone, n: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut m = n.with_second(0)?;
    for _ in 0..24 * 60 {
        m += ChronoDuration::minutes(1);
        match zone.resolve(m) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return Some(t),
            LocalResult::None => {}
        }
    }
    None
}

/// The expression a timed schedule stands for; `None` for `watch` and `manual`.
pub fn cron_of(schedule: &Schedule) -> Option<CronExpr> {
    match schedule {
        Schedule::Hourly => "0 * * * *".parse().ok(),
        Schedule::Minutely => "* * * * *".parse().ok(),
        Schedule::Cron(s) => s.parse().ok(),
        Schedule::Watch | Schedule::Manual => None,
    }
}

/// The delay before retry number `attempt` (1 = the first retry): `min`, doubled
/// each time, never more than `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

/// A uniformly random delay in `[0, jitter)`, to spread nodes' runs.
pub fn jitter(jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let ms = jitter.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::random_range(0..ms.max(1)))
}

#[cfg(test)]
mod tests;
