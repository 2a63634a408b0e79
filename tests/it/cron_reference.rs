//! `hasync cron` and the scheduler against the references (issue 19): Debian's own cron
//! (`crontab -n`, its dry run: the parser that decides whether cron keeps or drops a
//! line) must accept every line `hasync cron` writes, and croniter (PyPI, Vixie
//! semantics with `day_or`) must give the same next run times as hasync's scheduler
//! (`hasync cron --next-runs`) over a large generated set of expressions. scripts/test
//! installs both (apt `cron`; croniter in target/venv-croniter).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{hasync, text};

/// A small deterministic generator (xorshift), so a failure names a reproducible case.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
    fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "FEB", "Mar", "apr", "MAY", "jun", "jul", "AUG", "sep", "oct", "NOV", "dec",
];
const DAYS: [&str; 7] = ["sun", "MON", "Tue", "wed", "THU", "fri", "Sat"];

/// One item of a field whose values are `lo..=hi` (`names` from `names_from`). Ranges
/// have two different ends: croniter 7 reads `5-5` as `*` (and `5-5/2` as `*/2`),
/// where Vixie cron and hasync read {5}; that case is a unit test of the parser.
fn item(g: &mut Gen, lo: u32, hi: u32, names: &[&str], names_from: u32) -> String {
    let v = |g: &mut Gen, a: u32, b: u32| -> String {
        let n = g.between(a, b);
        match names.get((n.wrapping_sub(names_from)) as usize) {
            Some(name) if g.below(3) == 0 => name.to_string(),
            _ => n.to_string(),
        }
    };
    match g.below(6) {
        0 => v(g, lo, hi),
        1 => {
            let a = g.between(lo, hi - 1);
            let b = g.between(a + 1, hi);
            let (sa, sb) = (v(g, a, a), v(g, b, b));
            format!("{sa}-{sb}")
        }
        2 => {
            let a = g.between(lo, hi - 1);
            let b = g.between(a + 1, hi);
            format!("{a}-{b}/{}", g.between(1, (hi - lo).max(1)))
        }
        3 => format!("{}/{}", v(g, lo, hi), g.between(1, (hi - lo).max(1))),
        _ => format!("*/{}", g.between(1, (hi - lo).max(1))),
    }
}

fn field(g: &mut Gen, lo: u32, hi: u32, names: &[&str], names_from: u32) -> String {
    match g.below(5) {
        0 => "*".into(),
        1 => (0..g.between(2, 3))
            .map(|_| item(g, lo, hi, names, names_from))
            .collect::<Vec<_>>()
            .join(","),
        _ => item(g, lo, hi, names, names_from),
    }
}

/// `n` expressions: 5-field forms (every kind of item in every field, names, Sunday as
/// 0 and 7, day of month and day of week both restricted), @shorthands, 6-field forms.
fn expressions(n: usize) -> Vec<String> {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<String> = [
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "5/15 * * * *",
        "0 0 1 2/3 *",
        "0 0 * * 1/2",
        "0 0 * * 5/1",
        "0 0 * * 7",
        "0 0 * * 0,7",
        "0 0 13 * 5",
        "0 0 1,15 * mon-fri",
        "*/7 3-5 * * *",
        "0 0 * * 5-7",
        "0 12 */2 * 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    while out.len() < n {
        let month = field(&mut g, 1, 12, &MONTHS, 1);
        // Days 29-31 only with every month, so that every expression matches some day.
        let dom_hi = if month == "*" { 31 } else { 28 };
        let five = format!(
            "{} {} {} {month} {}",
            field(&mut g, 0, 59, &[], 0),
            field(&mut g, 0, 23, &[], 0),
            field(&mut g, 1, dom_hi, &[], 0),
            field(&mut g, 0, 7, &DAYS, 0),
        );
        out.push(if g.below(8) == 0 {
            format!("{} {five}", field(&mut g, 0, 59, &[], 0))
        } else {
            five
        });
    }
    out
}

/// croniter's next runs, in the format of `hasync cron --next-runs`: seconds first
/// (`second_at_beginning`), and `implement_cron_bug`, which is Vixie cron's day rule
/// (a day field starting with `*`, `*/2` included, makes the two day fields AND).
const CRONITER: &str = r#"
import sys
from datetime import datetime
from croniter import croniter
n, start = int(sys.argv[1]), datetime.strptime(sys.argv[2], "%Y-%m-%dT%H:%M:%S")
for line in sys.stdin:
    it = croniter(line.strip(), start, day_or=True, second_at_beginning=True,
                  implement_cron_bug=True)
    print(" ".join(it.get_next(datetime).strftime("%Y-%m-%dT%H:%M:%S") for _ in range(n)))
"#;

fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-croniter/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import croniter"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "croniter is missing from {} (scripts/test installs it: python3 -m venv target/venv-croniter && target/venv-croniter/bin/pip install croniter)",
        p.display()
    );
    p
}

fn piped(mut cmd: Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn beyond_5_years(from: &str, runs: &str) -> bool {
    let year = |s: &str| s.get(..4).and_then(|y| y.parse::<i32>().ok()).unwrap_or(0);
    year(runs) > year(from) + 5
}

#[test]
fn cron_next_runs_match_croniter_over_generated_expressions() {
    let python = venv_python();
    let exprs = expressions(1500);
    let input = exprs.join("\n") + "\n";
    for from in ["2024-02-28T23:59:30", "2025-12-31T12:00:00"] {
        let mut ours = hasync();
        ours.args(["cron", "--next-runs", "4", "--from", from]);
        let ours = piped(ours, &input);
        let mut theirs = Command::new(&python);
        theirs.args(["-c", CRONITER, "4", from]);
        let theirs = piped(theirs, &input);
        let (ours, theirs): (Vec<&str>, Vec<&str>) =
            (ours.lines().collect(), theirs.lines().collect());
        assert_eq!(ours.len(), exprs.len());
        assert_eq!(theirs.len(), exprs.len());
        let diffs: Vec<String> = exprs
            .iter()
            .zip(ours.iter().zip(&theirs))
            // hasync looks 5 years ahead at most (a schedule that rare is a mistake).
            .filter(|(_, (a, b))| a != b && !(a.is_empty() && beyond_5_years(from, b)))
            .map(|(e, (a, b))| format!("{e:?} from {from}:\n  hasync   {a}\n  croniter {b}"))
            .collect();
        assert!(
            diffs.is_empty(),
            "{} of {} differ:\n{}",
            diffs.len(),
            exprs.len(),
            diffs[..diffs.len().min(15)].join("\n")
        );
    }
}

/// `crontab -n FILE`: Debian cron's own check of a crontab, without installing it.
fn crontab_check(body: &str) -> (bool, String) {
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(t.path(), body).unwrap();
    let o = Command::new("crontab")
        .arg("-n")
        .arg(t.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run crontab ({e}): apt-get install cron (scripts/test does)")
        });
    (o.status.success(), text(&o))
}

#[test]
fn cron_lines_are_all_accepted_by_debians_cron() {
    // The reference refuses what hasync used to write, and takes the same set as a range.
    let (ok, why) = crontab_check("5/15 * * * * true\n");
    assert!(!ok && why.contains("bad minute"), "{why}");
    assert!(crontab_check("5-59/15 * * * * true\n").0);
    let t = tempfile::tempdir().unwrap();
    // 5-field forms that fire within 5 years of 2000 (the config refuses the others).
    let five: Vec<String> = expressions(600)
        .into_iter()
        .filter(|e| e.split(' ').count() != 6)
        .collect();
    let mut probe = hasync();
    probe.args(["cron", "--next-runs", "1", "--from", "1999-12-31T23:59:59"]);
    let firsts = piped(probe, &(five.join("\n") + "\n"));
    let exprs: Vec<String> = five
        .into_iter()
        .zip(firsts.lines())
        .filter(|(_, f)| !f.is_empty())
        .map(|(e, _)| e)
        .collect();
    assert!(exprs.len() > 400, "{}", exprs.len());
    let mut cfg = String::from("[node]\nrole = \"master\"\npeer = \"local\"\nstate_dir = \"s\"\n");
    for (i, e) in exprs.iter().enumerate() {
        cfg.push_str(&format!(
            "[[sync]]\nname = \"j{i}\"\npaths = [\"/srv/j{i}\"]\nschedule = \"{e}\"\n"
        ));
    }
    let path = t.path().join("hasync.toml");
    std::fs::write(&path, cfg).unwrap();
    let o = hasync().arg("-c").arg(&path).arg("cron").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = String::from_utf8(o.stdout).unwrap();
    let jobs: Vec<&str> = lines.lines().filter(|l| l.contains(" -q sync j")).collect();
    assert_eq!(jobs.len(), exprs.len(), "{lines}");
    if !crontab_check(&lines).0 {
        let bad: Vec<String> = jobs
            .iter()
            .filter_map(|l| {
                let (ok, why) = crontab_check(&format!("{l}\n"));
                (!ok).then(|| format!("{l}: {why}"))
            })
            .take(10)
            .collect();
        panic!("Debian's cron refuses:\n{}", bad.join("\n"));
    }
    // The lines keep the expressions' meaning: cron.d fields parse back to the same runs.
    let fields: Vec<String> = jobs
        .iter()
        .map(|l| l.split(" root ").next().unwrap().to_string())
        .collect();
    let from = ["cron", "--next-runs", "3", "--from", "2024-03-01T00:00:00"];
    let mut a = hasync();
    a.args(from);
    let mut b = hasync();
    b.args(from);
    assert_eq!(
        piped(a, &(exprs.join("\n") + "\n")),
        piped(b, &(fields.join("\n") + "\n"))
    );
}
