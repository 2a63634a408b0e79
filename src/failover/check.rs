//! One check: every probe against the master and every witness, run in parallel (a
//! check takes about one timeout, not one per probe), combined into a [`Verdict`] by
//! [`combine`], which is pure and unit-tested.
//!
//! Combination: the master's probes give up/down/unknown by `mode` (`all`: every probe
//! must be up; a down one makes it down; `any`: one up is enough). Witnesses are pinged;
//! when the master is not up and witnesses are configured but none answers, the verdict
//! is `isolated`. An EHOSTUNREACH answer (`unreachable`) counts as down only when a
//! witness answered; without witnesses it is unknown.

use std::time::Duration;

use serde::Serialize;

use super::probe::{self, ProbeReport, ProbeResult};
use super::state::Verdict;
use crate::node::config::{CheckMaster, ProbeMode};

/// The outcome of one check, as stored in `master.json` (`last_check`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    pub probes: Vec<ProbeReport>,
    pub witnesses: Vec<ProbeReport>,
}

/// Pure: the verdict from the master's probe results and the witnesses' (empty = none
/// configured).
pub fn combine(mode: ProbeMode, master: &[ProbeResult], witnesses: &[ProbeResult]) -> Verdict {
    let witness_ok = witnesses.contains(&ProbeResult::Up);
    let resolve = |r: ProbeResult| match r {
        ProbeResult::Unreachable if witness_ok => ProbeResult::Down,
        ProbeResult::Unreachable => ProbeResult::Local,
        r => r,
    };
    let rs: Vec<ProbeResult> = master.iter().map(|r| resolve(*r)).collect();
    let has = |x| rs.contains(&x);
    let master_verdict = match mode {
        ProbeMode::All if rs.is_empty() => Verdict::Unknown,
        ProbeMode::All if has(ProbeResult::Down) => Verdict::Down,
        ProbeMode::All if has(ProbeResult::Local) => Verdict::Unknown,
        ProbeMode::All => Verdict::Up,
        ProbeMode::Any if has(ProbeResult::Up) => Verdict::Up,
        ProbeMode::Any if has(ProbeResult::Down) => Verdict::Down,
        ProbeMode::Any => Verdict::Unknown,
    };
    if master_verdict == Verdict::Up || witnesses.is_empty() || witness_ok {
        return master_verdict;
    }
    // The master is not (clearly) up and no witness answers. If every witness failed
    // for a local reason the slave's network is broken, which is isolation as well.
    Verdict::Isolated
}

/// Runs every probe of `cm` and pings every witness, in parallel.
pub fn run(cm: &CheckMaster) -> CheckReport {
    let timeout: Duration = cm.timeout;
    let (probes, witnesses) = std::thread::scope(|s| {
        let p: Vec<_> = cm
            .probes
            .iter()
            .map(|pr| s.spawn(move || probe::run(pr, &cm.address, timeout)))
            .collect();
        let w: Vec<_> = cm
            .witness
            .iter()
            .map(|host| s.spawn(move || probe::run("icmp", host, timeout)))
            .collect();
        let join = |hs: Vec<std::thread::ScopedJoinHandle<'_, ProbeReport>>| {
            hs.into_iter()
                .map(|h| h.join().expect("probe thread panicked"))
                .collect::<Vec<_>>()
        };
        (join(p), join(w))
    });
    let verdict = combine(
        cm.mode,
        &probes.iter().map(|r| r.result).collect::<Vec<_>>(),
        &witnesses.iter().map(|r| r.result).collect::<Vec<_>>(),
    );
    CheckReport {
        verdict,
        probes,
        witnesses,
    }
}

#[cfg(test)]
mod tests {
    use super::ProbeResult::*;
    use super::*;
    use crate::node::config::ProbeMode::{All, Any};

    #[test]
    fn all_mode() {
        assert_eq!(combine(All, &[Up, Up], &[]), Verdict::Up);
        assert_eq!(combine(All, &[Up, Down], &[]), Verdict::Down);
        assert_eq!(combine(All, &[Up, Local], &[]), Verdict::Unknown);
        assert_eq!(combine(All, &[Local, Down], &[]), Verdict::Down);
    }

    #[test]
    fn any_mode() {
        assert_eq!(combine(Any, &[Down, Up], &[]), Verdict::Up);
        assert_eq!(combine(Any, &[Down, Local], &[]), Verdict::Down);
        assert_eq!(combine(Any, &[Local, Local], &[]), Verdict::Unknown);
    }

    #[test]
    fn witnesses_detect_isolation() {
        assert_eq!(combine(All, &[Down], &[Down, Down]), Verdict::Isolated);
        assert_eq!(combine(All, &[Down], &[Down, Up]), Verdict::Down);
        assert_eq!(combine(All, &[Local], &[Local]), Verdict::Isolated);
        // The master answers: the witnesses do not matter.
        assert_eq!(combine(All, &[Up], &[Down]), Verdict::Up);
    }

    #[test]
    fn host_unreachable_needs_a_witness_to_mean_down() {
        assert_eq!(combine(All, &[Unreachable], &[]), Verdict::Unknown);
        assert_eq!(combine(All, &[Unreachable], &[Up]), Verdict::Down);
        assert_eq!(combine(All, &[Unreachable], &[Down]), Verdict::Isolated);
    }
}
