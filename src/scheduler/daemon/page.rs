//! The status page at `GET /` of `metrics_listen`: this module owns rendering one
//! self-contained HTML document (inline CSS and SVG, no script, no framework, nothing
//! fetched from elsewhere) from the status report and the state files. It refreshes
//! itself every [`REFRESH`] seconds and fits a phone screen. What it shows is listed in
//! docs/daemon.md ("The status page"); it never shows the config's key, known_hosts or
//! config paths (they are cut out of error messages too).

use chrono::{DateTime, Utc};
use std::fmt::Write as _;

use crate::node::config::Config;
use crate::scheduler::health;
use crate::scheduler::status::{JobStatus, MasterStatus, StatusReport};

/// Seconds between two reloads of the page.
pub const REFRESH: u32 = 10;
/// How many errors "recent errors" lists.
const ERRORS: usize = 10;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:12px;background:#f6f7f9;color:#1d232b}\
h1{font-size:1.3em;margin:0 0 8px}h2{font-size:1.05em;margin:18px 0 6px}\
section{background:#fff;border-radius:8px;padding:10px 12px;margin:0 0 10px;box-shadow:0 1px 2px #0002}\
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;background:#56606b;font-weight:600}\
.serving{background:#1f8a3b}.standby{background:#2d6cdf}.bad{background:#c0392b}\
table{border-collapse:collapse;width:100%;font-size:.92em}td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #e3e6ea;vertical-align:top}.wrap,.err{overflow-wrap:anywhere}\
.err{color:#c0392b}.muted{color:#6b7580}svg{width:100%;height:auto;max-width:720px}\
section{overflow-x:auto}";

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Cuts the config's private paths (key, known_hosts, config file) out of `s`.
fn redact(cfg: &Config, s: &str) -> String {
    let mut out = s.to_string();
    let private = [
        (cfg.node.identity.as_deref(), "[identity file]"),
        (cfg.node.known_hosts.as_deref(), "[known_hosts file]"),
        (Some(cfg.path.as_path()), "[config file]"),
    ];
    for (path, label) in private {
        if let Some(p) = path.map(|p| p.display().to_string())
            && !p.is_empty()
        {
            out = out.replace(&p, label);
        }
    }
    out
}

fn span(secs: i64) -> String {
    match secs.abs() {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `2026-12-02 07:40:00 UTC (3m ago)`, in a `<time>` element; `-` for none.
fn when(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else { return "-".into() };
    let d = (now - t).num_seconds();
    let rel = if d < 0 {
        format!("in {}", span(d))
    } else {
        format!("{} ago", span(d))
    };
    // The date only when it is not today's (a narrow column on a phone).
    let shown = if t.date_naive() == now.date_naive() {
        t.format("%H:%M:%S UTC")
    } else {
        t.format("%Y-%m-%d %H:%M:%S UTC")
    };
    format!(
        "<time datetime=\"{}\">{shown} ({rel})</time>",
        t.to_rfc3339()
    )
}

fn ms(ms: Option<u64>) -> Option<DateTime<Utc>> {
    ms.and_then(|m| DateTime::from_timestamp_millis(m as i64))
}

/// Renders the page.
pub fn render(cfg: &Config, r: &StatusReport) -> String {
    let now = r.now;
    let role = health::role_line(cfg);
    let class = match role.as_str() {
        "master" | "slave serving" => "serving",
        "slave" => "standby",
        _ => "bad",
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH}\"><title>hasync: {}</title><style>{STYLE}</style></head><body>\
<h1>hasync <span id=\"role\" class=\"badge {class}\">{}</span></h1>",
        esc(&role),
        esc(&role)
    );
    node_section(&mut h, cfg, r, &role);
    if let Some(m) = &r.master_check {
        master_section(&mut h, cfg, m, now);
    }
    jobs_section(&mut h, cfg, &r.jobs, now);
    db_section(&mut h, cfg, now);
    errors_section(&mut h, cfg, r);
    chart_section(&mut h, cfg, &r.jobs, now);
    let _ = writeln!(
        h,
        "<p class=\"muted\">Rendered {} by hasync {}; reloads every {REFRESH} s.</p></body></html>",
        when(now, Some(now)),
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn row(h: &mut String, key: &str, value: &str) {
    let _ = write!(h, "<tr><th>{key}</th><td>{value}</td></tr>");
}

fn node_section(h: &mut String, cfg: &Config, r: &StatusReport, role: &str) {
    let now = r.now;
    let recorded = crate::failover::read_json::<crate::node::role::RoleRecord>(
        &crate::node::role::role_file(cfg),
    )
    .ok()
    .flatten();
    let since = match (&recorded, &r.master_check) {
        (Some(rec), _) => format!(
            "{} (by {})",
            when(now, ms(Some(rec.since_unix_ms))),
            esc(&rec.by)
        ),
        (None, Some(m)) if m.last_transition_at.is_some() => format!(
            "{} ({})",
            when(now, m.last_transition_at),
            esc(m.last_transition.as_deref().unwrap_or(""))
        ),
        _ => "the configuration (no promote, demote or failover recorded)".into(),
    };
    let primary = health::primary(cfg);
    let replica = health::replica(cfg, None, now);
    let received = health::load_received(&cfg.node.state_dir);
    h.push_str("<section id=\"node\"><table>");
    row(h, "role", &esc(role));
    row(h, "since", &since);
    match r.peers.is_empty() {
        true => row(h, "peer", &esc(&redact(cfg, &r.peer))),
        false => {
            for p in &r.peers {
                let lag = p.lag_seconds.map_or("-".into(), |l| format!("{l:.1}s"));
                let what = format!("{} {}, lag {lag}", redact(cfg, &p.address), p.state);
                row(h, &format!("peer {}", esc(&p.name)), &esc(&what));
            }
        }
    }
    let yes = |a: &health::Answer| format!("{}: {}", if a.ok { "yes" } else { "no" }, esc(&a.why));
    row(h, "serves (/primary)", &yes(&primary));
    row(h, "standby (/replica)", &yes(&replica));
    let lag = health::lag_seconds(cfg, now).map_or("-".into(), |l| format!("{l:.1}s"));
    row(h, "lag", &lag);
    if received.last().is_some() {
        row(h, "last sync received", &when(now, received.last_sync));
        row(h, "last replay received", &when(now, received.last_replay));
    }
    let daemon = r
        .daemon_pid
        .map_or("not running".into(), |p| format!("running (pid {p})"));
    row(h, "daemon", &daemon);
    h.push_str("</table></section>");
}

fn master_section(h: &mut String, cfg: &Config, m: &MasterStatus, now: DateTime<Utc>) {
    h.push_str("<section id=\"master-check\"><h2>Master check</h2><table>");
    row(h, "master", &esc(&m.address));
    let verdict = m.master.as_deref().unwrap_or("not checked yet");
    row(
        h,
        "state",
        &format!("{} since {}", esc(verdict), when(now, m.master_since)),
    );
    let services = if m.services_active {
        "running (failed over)"
    } else {
        "stopped"
    };
    row(h, "services", services);
    if let Some(t) = &m.last_transition {
        row(
            h,
            &format!("last {}", esc(t)),
            &when(now, m.last_transition_at),
        );
    }
    row(
        h,
        "transitions",
        &format!("{} failovers, {} failbacks", m.failovers, m.failbacks),
    );
    row(h, "last check", &when(now, m.last_check_at));
    if let Some(e) = &m.last_error {
        row(
            h,
            "last error",
            &format!("<span class=\"err\">{}</span>", esc(&redact(cfg, e))),
        );
    }
    h.push_str("</table></section>");
}

fn jobs_section(h: &mut String, cfg: &Config, jobs: &[JobStatus], now: DateTime<Utc>) {
    h.push_str("<section id=\"jobs\"><h2>Jobs</h2><table><tr><th>job</th><th>last success</th><th>lag</th><th>next run</th><th>last run</th></tr>");
    for j in jobs {
        let _ = write!(
            h,
            "<tr class=\"job\" data-job=\"{0}\"><td>{0}<br><span class=\"muted\">{1}</span></td>",
            esc(&j.name),
            esc(&j.schedule)
        );
        if let Some(why) = &j.skipped {
            let _ = write!(
                h,
                "<td colspan=\"4\" class=\"muted wrap\">not run on this node: {}</td></tr>",
                esc(why)
            );
            continue;
        }
        let lag = j.lag_seconds.map_or("-".into(), |l| format!("{l:.0}s"));
        let last = match &j.last_run {
            Some(run) if run.ok => format!("ok ({})", esc(&run.trigger)),
            Some(run) => format!(
                "<span class=\"err\">failed</span> ({}): {}",
                esc(&run.trigger),
                esc(&redact(cfg, run.error.as_deref().unwrap_or("")))
            ),
            None => "-".into(),
        };
        let _ = write!(
            h,
            "<td>{}</td><td>{lag}</td><td>{}</td><td class=\"wrap\">{last}</td></tr>",
            when(now, j.last_success),
            when(now, j.next_run.or(j.retry_at))
        );
    }
    h.push_str("</table></section>");
}

fn db_section(h: &mut String, cfg: &Config, now: DateTime<Utc>) {
    let Some(db) = &cfg.db else { return };
    let st = crate::db::state::load(&cfg.node.state_dir, cfg.node.peer_name.as_deref());
    let _ = write!(
        h,
        "<section id=\"db\"><h2>Database {}</h2><table>",
        esc(&db.database)
    );
    let secs = |u: Option<u64>| u.and_then(|s| DateTime::from_timestamp(s as i64, 0));
    match &st.last_run {
        Some(run) => {
            row(h, "last run", &when(now, secs(Some(run.finished_unix))));
            let outcome = match &run.error {
                Some(e) => format!(
                    "<span class=\"err\">{}</span>: {}",
                    esc(&run.outcome),
                    esc(&redact(cfg, e))
                ),
                None => esc(&run.outcome),
            };
            row(h, "outcome", &outcome);
            row(h, "dump size", &bytes(run.dump_bytes));
            row(h, "shipped", &bytes(run.bytes_on_wire));
            row(
                h,
                "duration",
                &format!("{:.1}s", run.duration_ms as f64 / 1000.0),
            );
        }
        None => row(h, "last run", "none recorded on this node"),
    }
    row(h, "last replay", &when(now, secs(st.replayed_unix)));
    h.push_str("</table></section>");
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 10 * 1024 => format!("{n} B"),
        n if n < 10 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// The last failed runs of every job and the master check's last error, newest first.
fn errors_section(h: &mut String, cfg: &Config, r: &StatusReport) {
    let mut errors: Vec<(DateTime<Utc>, String, String)> = Vec::new();
    for j in r.jobs.iter().filter(|j| j.skipped.is_none()) {
        let st =
            crate::scheduler::state::load_job(&cfg.node.state_dir, &j.name).unwrap_or_default();
        for run in st.runs.iter().filter(|r| !r.ok) {
            let e = run.error.clone().unwrap_or_else(|| "failed".into());
            errors.push((run.end, j.name.clone(), e));
        }
    }
    if let Some(m) = &r.master_check
        && let (Some(e), Some(t)) = (&m.last_error, m.last_check_at)
    {
        errors.push((t, "master check".into(), e.clone()));
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.0));
    h.push_str("<section id=\"errors\"><h2>Recent errors</h2>");
    if errors.is_empty() {
        h.push_str("<p class=\"muted\">none</p>");
    } else {
        h.push_str("<table>");
        for (t, what, e) in errors.iter().take(ERRORS) {
            let _ = write!(
                h,
                "<tr class=\"error\"><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                when(r.now, Some(*t)),
                esc(what),
                esc(&redact(cfg, e))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

/// The 24-hour chart: the standby's lag (longest gap per 5 minutes, from
/// `received.json`) and every job's run durations (from its history).
fn chart_section(h: &mut String, cfg: &Config, jobs: &[JobStatus], now: DateTime<Utc>) {
    let from = now - chrono::Duration::hours(24);
    let received = health::load_received(&cfg.node.state_dir);
    let mut lag: Vec<(DateTime<Utc>, f64)> = received
        .lag_max
        .iter()
        .filter_map(|(b, g)| Some((DateTime::from_timestamp(*b, 0)?, *g)))
        .filter(|(t, _)| *t >= from && *t < now)
        .collect();
    // And the lag now, at the right edge.
    if let (false, Some(last)) = (lag.is_empty(), received.last()) {
        lag.push((now, (now - last).num_milliseconds().max(0) as f64 / 1000.0));
    }
    let mut runs: Vec<(DateTime<Utc>, f64, bool)> = Vec::new();
    for j in jobs.iter().filter(|j| j.skipped.is_none()) {
        let st =
            crate::scheduler::state::load_job(&cfg.node.state_dir, &j.name).unwrap_or_default();
        for run in st.runs.iter().filter(|r| r.end >= from) {
            let d = (run.end - run.start).num_milliseconds().max(0) as f64 / 1000.0;
            runs.push((run.end, d, run.ok));
        }
    }
    h.push_str("<section id=\"chart\"><h2>Last 24 hours</h2>");
    if lag.is_empty() && runs.is_empty() {
        h.push_str("<p class=\"muted\">no run and nothing received in the last 24 hours</p>");
    }
    if !lag.is_empty() {
        let pts: Vec<_> = lag.iter().map(|(t, v)| (*t, *v, true)).collect();
        svg(
            h,
            "lag",
            "lag received (s, longest per 5 min, and now)",
            &pts,
            from,
            now,
            true,
        );
    }
    if !runs.is_empty() {
        svg(
            h,
            "durations",
            "run durations (s; red: failed)",
            &runs,
            from,
            now,
            false,
        );
    }
    h.push_str("</section>");
}

/// One inline SVG chart of `(time, value, ok)` points between `from` and `to`.
fn svg(
    h: &mut String,
    id: &str,
    title: &str,
    pts: &[(DateTime<Utc>, f64, bool)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    line: bool,
) {
    let (w, ht, left, bottom) = (600.0, 160.0, 44.0, 20.0);
    let max = pts.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(0.001) * 1.1;
    let span = (to - from).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| left + (t - from).num_seconds() as f64 / span * (w - left - 4.0);
    let y = |v: f64| (ht - bottom) - v / max * (ht - bottom - 8.0);
    let _ = write!(
        h,
        "<svg id=\"chart-{id}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"{0}\"><title>{0}</title>\
<rect x=\"{left}\" y=\"0\" width=\"{1}\" height=\"{2}\" fill=\"#fafbfc\" stroke=\"#d0d5db\"/>\
<text x=\"2\" y=\"12\" font-size=\"10\">{3:.2}</text><text x=\"2\" y=\"{2}\" font-size=\"10\">0</text>\
<text x=\"{left}\" y=\"{4}\" font-size=\"10\">-24h</text><text x=\"{5}\" y=\"{4}\" font-size=\"10\" text-anchor=\"end\">now</text>",
        esc(title),
        w - left,
        ht - bottom,
        max / 1.1,
        ht - 4.0,
        w - 4.0
    );
    if line && pts.len() > 1 {
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            h,
            "<polyline fill=\"none\" stroke=\"#2d6cdf\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    for p in pts {
        let color = if p.2 { "#2d6cdf" } else { "#c0392b" };
        let _ = write!(
            h,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
            x(p.0),
            y(p.1)
        );
    }
    let _ = write!(h, "</svg><p class=\"muted\">{}</p>", esc(title));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_redacts() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "[node]\nrole = \"master\"\npeer = \"root@10.0.0.2\"\nidentity = \"/root/.ssh/k\"\nstate_dir = \"{}\"\n",
            d.path().display()
        );
        let cfg = crate::node::config::parse(&text, &d.path().join("h.toml")).unwrap();
        assert_eq!(
            redact(&cfg, "cannot read /root/.ssh/k: denied"),
            "cannot read [identity file]: denied"
        );
    }
}
