use super::*;
use chrono::{NaiveDate, TimeZone};

fn parse(s: &str) -> CronExpr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// Europe/Paris in 2024: CET (+1), CEST (+2) from 2024-03-31 01:00 UTC to 2024-10-27
/// 01:00 UTC. Written out so the test needs no time zone database.
struct Paris2024;

impl Paris2024 {
    fn offset(t: DateTime<Utc>) -> ChronoDuration {
        if t >= utc(2024, 3, 31, 1, 0, 0) && t < utc(2024, 10, 27, 1, 0, 0) {
            ChronoDuration::hours(2)
        } else {
            ChronoDuration::hours(1)
        }
    }
}

impl Zone for Paris2024 {
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + Self::offset(t)
    }
    fn resolve(&self, n: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        let mut c: Vec<DateTime<Utc>> = [1, 2]
            .iter()
            .map(|h| (n - ChronoDuration::hours(*h)).and_utc())
            .filter(|t| self.local(*t) == n)
            .collect();
        c.sort();
        match c.len() {
            0 => LocalResult::None,
            1 => LocalResult::Single(c[0]),
            _ => LocalResult::Ambiguous(c[0], c[1]),
        }
    }
}

fn runs(
    expr: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    zone: &dyn Zone,
) -> Vec<DateTime<Utc>> {
    let e = parse(expr);
    let mut out = vec![];
    let mut t = from;
    while let Some(n) = next_after(&e, t, zone) {
        if n > until {
            break;
        }
        assert!(n > t, "not strictly after");
        out.push(n);
        t = n;
    }
    out
}

#[test]
fn five_fields_hourly_and_minutely() {
    let e = parse("0 * * * *");
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 10, 0, 0), &Utc),
        Some(utc(2026, 1, 1, 11, 0, 0))
    );
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 10, 59, 59), &Utc),
        Some(utc(2026, 1, 1, 11, 0, 0))
    );
    let e = parse("* * * * *");
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 10, 0, 30), &Utc),
        Some(utc(2026, 1, 1, 10, 1, 0))
    );
    let e = parse("@hourly");
    assert_eq!(
        next_after(&e, utc(2026, 12, 31, 23, 30, 0), &Utc),
        Some(utc(2027, 1, 1, 0, 0, 0))
    );
}

#[test]
fn six_fields_have_seconds_first() {
    let e = parse("*/2 * * * * *");
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 0, 0, 0), &Utc),
        Some(utc(2026, 1, 1, 0, 0, 2))
    );
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 0, 0, 59), &Utc),
        Some(utc(2026, 1, 1, 0, 1, 0))
    );
    let e = parse("30 15 10 * * *");
    assert_eq!(
        next_after(&e, utc(2026, 1, 1, 0, 0, 0), &Utc),
        Some(utc(2026, 1, 1, 10, 15, 30))
    );
    assert_eq!(e.cron_d_fields(), None);
    assert_eq!(
        parse("0 15 10 * * *").cron_d_fields().as_deref(),
        Some("15 10 * * *")
    );
}

#[test]
fn unix_day_of_week_numbers_0_and_7_are_sunday() {
    // 2026-01-04 is a Sunday.
    let from = utc(2026, 1, 1, 0, 0, 0);
    for e in ["0 12 * * 0", "0 12 * * 7", "0 12 * * sun", "0 12 * * SUN"] {
        assert_eq!(
            next_after(&parse(e), from, &Utc),
            Some(utc(2026, 1, 4, 12, 0, 0)),
            "{e}"
        );
    }
    // 1 = Monday (the cron crate would say Sunday).
    assert_eq!(
        next_after(&parse("0 12 * * 1"), from, &Utc),
        Some(utc(2026, 1, 5, 12, 0, 0))
    );
    // 5-7: Friday, Saturday, Sunday.
    let r = runs("0 0 * * 5-7", from, utc(2026, 1, 8, 0, 0, 0), &Utc);
    assert_eq!(
        r,
        vec![
            utc(2026, 1, 2, 0, 0, 0),
            utc(2026, 1, 3, 0, 0, 0),
            utc(2026, 1, 4, 0, 0, 0)
        ]
    );
}

#[test]
fn lists_ranges_steps_names_and_the_day_rule() {
    let from = utc(2026, 1, 1, 0, 0, 0);
    let r = runs("5/20,59 1-2 * * *", from, utc(2026, 1, 1, 3, 0, 0), &Utc);
    let mins: Vec<(u32, u32)> = r.iter().map(|t| (t.hour(), t.minute())).collect();
    assert_eq!(
        mins,
        vec![
            (1, 5),
            (1, 25),
            (1, 45),
            (1, 59),
            (2, 5),
            (2, 25),
            (2, 45),
            (2, 59)
        ]
    );
    assert_eq!(
        next_after(&parse("0 0 1 mar *"), from, &Utc),
        Some(utc(2026, 3, 1, 0, 0, 0))
    );
    // Both day fields restricted: either matches (Vixie cron). 2026-01-02 is a Friday.
    assert_eq!(
        next_after(&parse("0 0 13 * fri"), from, &Utc),
        Some(utc(2026, 1, 2, 0, 0, 0))
    );
    // One is "*": both must match. The 13th that is a Friday: 2026-02-13.
    assert_eq!(
        next_after(&parse("0 0 13 * *"), from, &Utc),
        Some(utc(2026, 1, 13, 0, 0, 0))
    );
    assert_eq!(
        next_after(&parse("0 0 29 2 *"), from, &Utc),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
    assert_eq!(next_after(&parse("0 0 30 2 *"), from, &Utc), None);
}

#[test]
fn bad_expressions_say_what_is_wrong() {
    for (e, want) in [
        ("* * * *", "5 fields"),
        ("* * * * * * *", "has 7"),
        ("60 * * * *", "out of range for the minute (0-59)"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week (0-7)"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("* * * foo *", "JAN..DEC"),
        ("* * * * 1,,2", "empty item"),
        ("@reboot", "shorthand"),
        ("? * * * *", "not a number"),
    ] {
        let err = e.parse::<CronExpr>().unwrap_err();
        assert!(err.contains(want), "{e:?}: {err}");
    }
}

#[test]
fn dst_autumn_never_runs_twice() {
    // 2024-10-27: 03:00 CEST -> 02:00 CET, 02:xx happens twice.
    let from = utc(2024, 10, 26, 22, 0, 0);
    let until = utc(2024, 10, 27, 6, 0, 0);
    for expr in ["0 * * * *", "*/15 * * * *", "30 2 * * *", "0 30 2 * * *"] {
        let r = runs(expr, from, until, &Paris2024);
        let local: Vec<NaiveDateTime> = r.iter().map(|t| Paris2024.local(*t)).collect();
        let mut dedup = local.clone();
        dedup.dedup();
        assert_eq!(local, dedup, "{expr}: a wall-clock time ran twice");
    }
    let r = runs("30 2 * * *", from, until, &Paris2024);
    assert_eq!(
        r,
        vec![utc(2024, 10, 27, 0, 30, 0)],
        "first occurrence only"
    );
}

#[test]
fn dst_spring_skipped_time_runs_once_after_the_gap() {
    // 2024-03-31: 02:00 CET -> 03:00 CEST, 02:xx does not exist.
    let from = utc(2024, 3, 30, 22, 0, 0);
    let until = utc(2024, 3, 31, 4, 0, 0);
    let r = runs("30 2 * * *", from, until, &Paris2024);
    assert_eq!(r, vec![utc(2024, 3, 31, 1, 0, 0)], "03:00 CEST, once");
    let r = runs("*/15 * * * *", from, until, &Paris2024);
    let mut sorted = r.clone();
    sorted.dedup();
    assert_eq!(r, sorted);
    assert!(r.contains(&utc(2024, 3, 31, 1, 0, 0)));
    // In UTC nothing special happens: 24 hourly runs in a day.
    let r = runs(
        "0 * * * *",
        utc(2024, 3, 31, 0, 0, 0),
        utc(2024, 4, 1, 0, 0, 0),
        &Utc,
    );
    assert_eq!(r.len(), 24);
}

#[test]
fn next_naive_rounds_up_sub_seconds() {
    let n = NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_milli_opt(0, 0, 0, 500)
        .unwrap();
    assert_eq!(parse("* * * * * *").next_naive(n).unwrap().second(), 1);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
    let d: Vec<u64> = (1..=8).map(|a| backoff(a, min, max).as_secs()).collect();
    assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff(0, min, max), min);
    assert_eq!(backoff(1000, min, max), max);
    assert_eq!(backoff(40, Duration::from_secs(u64::MAX / 2), max), max);
}

#[test]
fn jitter_stays_in_bounds() {
    assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    for _ in 0..100 {
        assert!(jitter(Duration::from_secs(2)) < Duration::from_secs(2));
    }
}

#[test]
fn schedules_map_to_expressions() {
    assert_eq!(cron_of(&Schedule::Hourly).unwrap().to_string(), "0 * * * *");
    assert!(cron_of(&Schedule::Watch).is_none());
    assert!(cron_of(&Schedule::Manual).is_none());
}

#[test]
fn cron_d_lines_have_no_bare_steps_and_weekday_steps_end_on_saturday() {
    let f = |s: &str| parse(s).cron_d_fields().unwrap();
    assert_eq!(f("5/15 * * * *"), "5-59/15 * * * *");
    assert_eq!(f("0 0 1 2/3 *"), "0 0 1 2-12/3 *");
    assert_eq!(f("0 0 * * 1/2"), "0 0 * * 1-6/2");
    assert_eq!(f("0 0 * * mon/2,*/3,6/1"), "0 0 * * 1-6/2,*/3,6");
    assert_eq!(f("0 0 * * 7/2"), "0 0 * * 0-6/2");
    assert_eq!(f("0 0 30/5 * *"), "0 0 30-31/5 * *");
    assert_eq!(f("@hourly"), "@hourly");
    // Vixie cron's sets: 1/2 is Mon, Wed, Fri (not Sunday as 7); 5/1 is Fri, Sat.
    let sun = chrono::NaiveDate::from_ymd_opt(2024, 3, 3).unwrap();
    let days = |s: &str| -> Vec<u32> {
        let e = parse(s);
        (0..7)
            .filter(|i| {
                let d = sun + chrono::Duration::days(*i as i64);
                e.next_naive(d.and_hms_opt(0, 0, 0).unwrap()) == d.and_hms_opt(0, 0, 0)
            })
            .collect()
    };
    assert_eq!(days("0 0 * * 1/2"), vec![1, 3, 5]);
    assert_eq!(days("0 0 * * 5/1"), vec![5, 6]);
    assert_eq!(
        days("0 0 * * 5-5"),
        vec![5],
        "a one-value range is that value"
    );
}
