//! The table of bad configs: every malformed or contradictory config we
//! can list is refused by `parse`, before anything runs, with the file, the line
//! and the key. `tests.rs` has the detailed cases with exact messages; this is the
//! exhaustive sweep: an unknown key in every section, a wrong type for keys of
//! every section, bad schedules, relative paths where absolute ones are required,
//! and contradictions between sections.

use super::*;
use std::path::Path;

const FILE: &str = "/etc/hasync/hasync.toml";
const NODE: &str = "[node]\nrole = \"master\"\npeer = \"local\"\n";
const SSH_NODE: &str = "[node]\nrole = \"master\"\npeer = \"root@10.0.0.2\"\n";
const SYNC: &str = "[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n";
const DB: &str = "[db]\nkind = \"postgres\"\ndatabase = \"asterisk\"\n";
const CM: &str = "[check_master]\naddress = \"10.0.0.1\"\n";

/// (what, config text, line, key): each must be refused at that line, naming that key.
fn table() -> Vec<(&'static str, String, usize, &'static str)> {
    let n = |extra: &str| format!("{NODE}{extra}");
    let s = |extra: &str| format!("{NODE}{SYNC}{extra}");
    let d = |extra: &str| format!("{NODE}{DB}{extra}");
    let c = |extra: &str| format!("{NODE}{CM}{extra}");
    vec![
        // Unknown keys, one per section (and the top level).
        ("unknown top-level key", n("colour = 1\n"), 4, "colour"),
        ("unknown [node] key", n("tmeout = \"5s\"\n"), 4, "tmeout"),
        (
            "unknown [[sync]] key",
            s("recursive = true\n"),
            7,
            "recursive",
        ),
        ("unknown [db] key", d("password = \"x\"\n"), 7, "password"),
        (
            "unknown [services] key",
            n("[services]\nunits = [\"a.service\"]\nrestart = []\n"),
            6,
            "restart",
        ),
        (
            "unknown [check_master] key",
            c("retries = 3\n"),
            6,
            "retries",
        ),
        (
            "unknown [hooks] key",
            n("[hooks]\non_success = \"x\"\n"),
            5,
            "on_success",
        ),
        (
            "unknown [daemon] key",
            n("[daemon]\nthreads = 4\n"),
            5,
            "threads",
        ),
        // Wrong types, every section.
        (
            "[node] role as a number",
            "[node]\nrole = 1\npeer = \"local\"\n".into(),
            2,
            "role",
        ),
        (
            "[node] timeout as a number",
            n("timeout = 30\n"),
            4,
            "timeout",
        ),
        (
            "[node] peer as an array",
            "[node]\nrole = \"master\"\npeer = [\"a\"]\n".into(),
            3,
            "peer",
        ),
        (
            "[[sync]] delete as a string",
            s("delete = \"yes\"\n"),
            7,
            "delete",
        ),
        (
            "[[sync]] exclude as a string",
            s("exclude = \"*.swp\"\n"),
            7,
            "exclude",
        ),
        (
            "[[sync]] max_delete as a float",
            s("max_delete = 1.5\n"),
            7,
            "max_delete",
        ),
        (
            "[[sync]] name as a number",
            format!("{NODE}[[sync]]\nname = 7\npaths = [\"/a\"]\n"),
            5,
            "name",
        ),
        ("[db] port as a string", d("port = \"5432\"\n"), 7, "port"),
        ("[db] port out of range", d("port = 70000\n"), 7, "port"),
        (
            "[db] exclude_tables as a string",
            d("exclude_tables = \"cel\"\n"),
            7,
            "exclude_tables",
        ),
        (
            "[services] units as a string",
            n("[services]\nunits = \"a.service\"\n"),
            5,
            "units",
        ),
        (
            "[check_master] fail_after as a string",
            c("fail_after = \"3\"\n"),
            6,
            "fail_after",
        ),
        (
            "[check_master] fail_after negative",
            c("fail_after = -3\n"),
            6,
            "fail_after",
        ),
        (
            "[check_master] witness as a string",
            c("witness = \"10.0.0.254\"\n"),
            6,
            "witness",
        ),
        (
            "[hooks] on_failure as a number",
            n("[hooks]\non_failure = 1\n"),
            5,
            "on_failure",
        ),
        (
            "[daemon] metrics_listen as a number",
            n("[daemon]\nmetrics_listen = 9469\n"),
            5,
            "metrics_listen",
        ),
        (
            "[daemon] retry_min as a number",
            n("[daemon]\nretry_min = 5\n"),
            5,
            "retry_min",
        ),
        // Bad schedules and durations.
        (
            "[[sync]] bad cron minute",
            s("schedule = \"61 * * * *\"\n"),
            7,
            "schedule",
        ),
        (
            "[[sync]] cron with too few fields",
            s("schedule = \"* * *\"\n"),
            7,
            "schedule",
        ),
        (
            "[[sync]] schedule in words",
            s("schedule = \"every tuesday\"\n"),
            7,
            "schedule",
        ),
        (
            "[db] bad cron",
            d("schedule = \"0 25 * * *\"\n"),
            7,
            "schedule",
        ),
        (
            "[node] timeout not a duration",
            n("timeout = \"soon\"\n"),
            4,
            "timeout",
        ),
        (
            "[check_master] interval zero",
            c("interval = \"0s\"\n"),
            6,
            "interval",
        ),
        // Relative paths where absolute ones are required.
        (
            "relative [[sync]] path",
            format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"etc/x\"]\n"),
            6,
            "paths",
        ),
        (
            "relative copy_back",
            c("copy_back = [\"spool\"]\n"),
            6,
            "copy_back",
        ),
        (
            "relative SSH peer_root",
            format!("{SSH_NODE}peer_root = \"slave\"\n"),
            4,
            "peer_root",
        ),
        // Escapes and contradictions.
        (
            "peer_root escaping",
            format!("{SSH_NODE}peer_root = \"/srv/../../etc\"\n"),
            4,
            "peer_root",
        ),
        (
            "[[sync]] path with ..",
            format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/srv/../etc\"]\n"),
            6,
            "paths",
        ),
        (
            "duplicate job names",
            format!("{NODE}{SYNC}[[sync]]\nname = \"a\"\npaths = [\"/b\"]\n"),
            8,
            "name",
        ),
        (
            "two jobs sharing a path",
            format!("{NODE}{SYNC}[[sync]]\nname = \"b\"\npaths = [\"/a\"]\n"),
            9,
            "paths",
        ),
        (
            "a job's path inside another's",
            format!("{NODE}{SYNC}[[sync]]\nname = \"b\"\npaths = [\"/a/sub\"]\n"),
            9,
            "paths",
        ),
        (
            "a job's path containing another's",
            format!("{NODE}{SYNC}[[sync]]\nname = \"b\"\npaths = [\"/\", \"/x\"]\n"),
            9,
            "paths",
        ),
        (
            "[check_master] without address",
            n("[check_master]\nprobes = [\"icmp\"]\n"),
            4,
            "address",
        ),
        (
            "[check_master] empty address",
            n("[check_master]\naddress = \"\"\n"),
            5,
            "address",
        ),
        (
            "[db] without database",
            n("[db]\nkind = \"postgres\"\n"),
            4,
            "database",
        ),
        (
            "[db] unknown kind",
            n("[db]\nkind = \"mysql\"\ndatabase = \"x\"\n"),
            5,
            "kind",
        ),
        (
            "[node] without peer",
            "[node]\nrole = \"master\"\n".into(),
            1,
            "peer",
        ),
        (
            "[[sync]] without paths",
            format!("{NODE}[[sync]]\nname = \"a\"\n"),
            4,
            "paths",
        ),
        (
            "[[sync]] bad direction",
            s("direction = \"both\"\n"),
            7,
            "direction",
        ),
        (
            "[node] both role and role_from",
            "[node]\nrole = \"master\"\nrole_from = \"wazo\"\npeer = \"local\"\n".into(),
            3,
            "role_from",
        ),
    ]
}

#[test]
fn every_bad_config_in_the_table_is_refused_with_file_line_and_key() {
    let mut failures = Vec::new();
    for (what, text, line, key) in table() {
        match parse(&text, Path::new(FILE)) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                let d = e.diagnostic();
                let located = msg.starts_with(&format!("{FILE}:{line}:"))
                    && msg.contains(&format!("\"{key}\""))
                    && d.as_ref()
                        .is_some_and(|d| d.line == Some(line) && d.key.as_deref() == Some(key));
                if !located {
                    failures.push(format!(
                        "{what}: expected line {line}, key {key:?}; got: {msg}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad configs not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
