//! The master-check state machine: pure, no I/O, no clock. It owns the counters that
//! turn a stream of check verdicts (up, down, isolated, unknown) into at most two
//! decisions: fail over (start the slave services) and fail back (stop them). Time comes
//! in as milliseconds since the Unix epoch with every verdict, so tests drive it with a
//! simulated clock and `hasync check-master --once` (cron) resumes from the persisted
//! [`MachineState`]. Rules, in order:
//! - `Down`: one more consecutive failure; at `fail_after` failures, with the services
//!   stopped and `hold_down` elapsed since the last transition, fail over.
//! - `Up`: one more consecutive success; at `recover_after` successes, with the services
//!   running and `hold_down` elapsed since the last transition, fail back.
//! - `Isolated` (the master AND every witness silent) and `Unknown` (the slave's own
//!   network is broken, or a probe could not run): both streaks restart from zero and
//!   nothing changes. An isolated slave never promotes itself: that is split brain.

use serde::{Deserialize, Serialize};

/// What one check concluded about the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The master answered as configured.
    Up,
    /// The master did not answer, and the slave's own network looks fine.
    Down,
    /// Neither the master nor any witness answered: this node is cut off.
    Isolated,
    /// The check says nothing about the master (local error, probe could not run).
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Up => "up",
            Verdict::Down => "down",
            Verdict::Isolated => "isolated",
            Verdict::Unknown => "unknown",
        }
    }
}

/// What the machine asks the executor to do after a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Nothing to do.
    Stay,
    /// Start the slave services: the master is gone.
    Failover,
    /// Stop the slave services: the master is back.
    Failback,
}

/// Thresholds, from `[check_master]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fail_after: u32,
    pub recover_after: u32,
    /// Minimum time between two transitions, in milliseconds.
    pub hold_down_ms: u64,
}

/// Everything the machine remembers between checks; persisted in `master.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// The last verdict (`null` before the first check).
    pub master: Option<Verdict>,
    /// When `master` last changed value.
    pub master_since_unix_ms: Option<u64>,
    /// Whether the slave services run: the real status (`[services] status`, or the
    /// units), read at every check; only without a way to tell, what the last
    /// decision did.
    pub services_active: bool,
    pub consecutive_down: u32,
    pub consecutive_up: u32,
    /// When the services were last started or stopped by a decision.
    pub last_transition_unix_ms: Option<u64>,
    /// `"failover"` or `"failback"`.
    pub last_transition: Option<Decision>,
    pub failovers: u64,
    pub failbacks: u64,
    /// When the last check ran.
    pub last_check_unix_ms: Option<u64>,
}

impl MachineState {
    /// Whether `hold_down_ms` has passed since the last transition (always true before
    /// the first one). A clock that went backwards counts as "not elapsed".
    pub fn hold_down_elapsed(&self, now_ms: u64, hold_down_ms: u64) -> bool {
        match self.last_transition_unix_ms {
            None => true,
            Some(t) => now_ms.checked_sub(t).is_some_and(|d| d >= hold_down_ms),
        }
    }

    /// Fails back now, whatever the counters and hold-down say (`stop_while_up`: Wazo
    /// stops the slave services at every check that sees the master up).
    pub fn fail_back_now(&mut self, now_ms: u64) -> Decision {
        self.services_active = false;
        self.failbacks += 1;
        self.last_transition_unix_ms = Some(now_ms);
        self.last_transition = Some(Decision::Failback);
        Decision::Failback
    }

    /// Feeds one verdict taken at `now_ms`; returns the decision. The state already
    /// reflects the decision (services_active, counters, transition time): the executor
    /// applies it and reports failures on its own; the machine does not retry.
    pub fn step(&mut self, t: &Thresholds, verdict: Verdict, now_ms: u64) -> Decision {
        if self.master != Some(verdict) {
            self.master = Some(verdict);
            self.master_since_unix_ms = Some(now_ms);
        }
        self.last_check_unix_ms = Some(now_ms);
        let hold_ok = self.hold_down_elapsed(now_ms, t.hold_down_ms);
        let decision = match verdict {
            Verdict::Down => {
                self.consecutive_up = 0;
                self.consecutive_down = self.consecutive_down.saturating_add(1);
                if !self.services_active && self.consecutive_down >= t.fail_after && hold_ok {
                    Decision::Failover
                } else {
                    Decision::Stay
                }
            }
            Verdict::Up => {
                self.consecutive_down = 0;
                self.consecutive_up = self.consecutive_up.saturating_add(1);
                if self.services_active && self.consecutive_up >= t.recover_after && hold_ok {
                    Decision::Failback
                } else {
                    Decision::Stay
                }
            }
            Verdict::Isolated | Verdict::Unknown => {
                self.consecutive_down = 0;
                self.consecutive_up = 0;
                Decision::Stay
            }
        };
        match decision {
            Decision::Failover => {
                self.services_active = true;
                self.failovers += 1;
            }
            Decision::Failback => {
                self.services_active = false;
                self.failbacks += 1;
            }
            Decision::Stay => return Decision::Stay,
        }
        self.last_transition_unix_ms = Some(now_ms);
        self.last_transition = Some(decision);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict::*;
    use super::*;

    const T: Thresholds = Thresholds {
        fail_after: 3,
        recover_after: 5,
        hold_down_ms: 30_000,
    };

    /// Feeds `verdicts` one per `interval_ms` from `start`; returns (time, decision) of
    /// every transition.
    fn run(
        s: &mut MachineState,
        t: &Thresholds,
        start: u64,
        interval_ms: u64,
        verdicts: &[Verdict],
    ) -> Vec<(u64, Decision)> {
        let mut out = Vec::new();
        for (i, v) in verdicts.iter().enumerate() {
            let now = start + i as u64 * interval_ms;
            let d = s.step(t, *v, now);
            if d != Decision::Stay {
                out.push((now, d));
            }
        }
        out
    }

    #[test]
    fn fail_after_is_exact() {
        let mut s = MachineState::default();
        assert_eq!(s.step(&T, Down, 0), Decision::Stay);
        assert_eq!(s.step(&T, Down, 2000), Decision::Stay);
        assert_eq!(s.step(&T, Down, 4000), Decision::Failover);
        assert!(s.services_active);
        assert_eq!(s.failovers, 1);
        // More failures change nothing: services already run.
        assert_eq!(s.step(&T, Down, 6000), Decision::Stay);
        assert_eq!(s.failovers, 1);
    }

    #[test]
    fn recover_after_is_exact_and_waits_for_hold_down() {
        let mut s = MachineState::default();
        run(&mut s, &T, 0, 2000, &[Down, Down, Down]); // failover at 4000
        // Five good checks, but hold-down (30 s after 4000) not elapsed yet.
        let d = run(&mut s, &T, 6000, 2000, &[Up; 5]);
        assert!(d.is_empty(), "{d:?}");
        // Still up: fails back on the first check at or after 34000.
        let d = run(&mut s, &T, 16000, 2000, &[Up; 20]);
        assert_eq!(d, vec![(34000, Decision::Failback)]);
        assert!(!s.services_active);
        assert_eq!((s.failovers, s.failbacks), (1, 1));
    }

    #[test]
    fn recover_after_counts_consecutive_good_checks() {
        let t = Thresholds {
            hold_down_ms: 0,
            ..T
        };
        let mut s = MachineState::default();
        run(&mut s, &t, 0, 1000, &[Down, Down, Down]);
        let d = run(
            &mut s,
            &t,
            3000,
            1000,
            &[Up, Up, Up, Up, Down, Up, Up, Up, Up],
        );
        assert!(d.is_empty(), "a failure restarts the count: {d:?}");
        assert_eq!(s.step(&t, Up, 20_000), Decision::Failback);
    }

    #[test]
    fn one_failure_short_never_fails_over() {
        let mut s = MachineState::default();
        let mut seq = Vec::new();
        for _ in 0..50 {
            seq.extend([Down, Down, Up]);
        }
        assert!(run(&mut s, &T, 0, 1000, &seq).is_empty());
    }

    #[test]
    fn flapping_never_makes_more_than_one_transition_per_hold_down() {
        // Thresholds of 1 are the worst case: every flip qualifies.
        let t = Thresholds {
            fail_after: 1,
            recover_after: 1,
            hold_down_ms: 10_000,
        };
        let mut s = MachineState::default();
        let seq: Vec<Verdict> = (0..1000)
            .map(|i| if i % 2 == 0 { Down } else { Up })
            .collect();
        let d = run(&mut s, &t, 0, 200, &seq);
        assert!(d.len() > 2, "it still follows the master: {d:?}");
        for w in d.windows(2) {
            assert!(w[1].0 - w[0].0 >= t.hold_down_ms, "too close: {w:?}");
            assert_ne!(w[0].1, w[1].1, "transitions alternate: {w:?}");
        }
        // Irregular flapping too (a fixed pseudo-random pattern).
        let mut s = MachineState::default();
        let mut x: u32 = 12345;
        let seq: Vec<Verdict> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x.is_multiple_of(3) { Down } else { Up }
            })
            .collect();
        let d = run(&mut s, &t, 0, 137, &seq);
        for w in d.windows(2) {
            assert!(w[1].0 - w[0].0 >= t.hold_down_ms, "too close: {w:?}");
        }
    }

    #[test]
    fn isolation_blocks_failover_and_breaks_the_streak() {
        let mut s = MachineState::default();
        let d = run(&mut s, &T, 0, 1000, &[Isolated; 100]);
        assert!(d.is_empty());
        assert_eq!(s.master, Some(Isolated));
        // Down, Down, Isolated, Down, Down: never three in a row.
        let d = run(
            &mut s,
            &T,
            100_000,
            1000,
            &[Down, Down, Isolated, Down, Down],
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.consecutive_down, 2);
        assert!(!s.services_active);
    }

    #[test]
    fn isolation_after_failover_keeps_services_as_they_are() {
        let t = Thresholds {
            hold_down_ms: 0,
            ..T
        };
        let mut s = MachineState::default();
        run(&mut s, &t, 0, 1000, &[Down, Down, Down]);
        assert!(run(&mut s, &t, 3000, 1000, &[Isolated; 20]).is_empty());
        assert!(s.services_active);
    }

    #[test]
    fn unknown_never_fails_over_nor_back() {
        let mut s = MachineState::default();
        assert!(run(&mut s, &T, 0, 1000, &[Unknown; 100]).is_empty());
        let d = run(
            &mut s,
            &T,
            100_000,
            1000,
            &[Down, Down, Unknown, Down, Down],
        );
        assert!(d.is_empty(), "{d:?}");
        let t = Thresholds {
            hold_down_ms: 0,
            ..T
        };
        run(&mut s, &t, 200_000, 1000, &[Down]);
        assert!(s.services_active);
        let seq = [Up, Up, Up, Up, Unknown, Up, Up, Up, Up];
        assert!(run(&mut s, &t, 300_000, 1000, &seq).is_empty());
        assert!(s.services_active);
    }

    #[test]
    fn hold_down_also_delays_a_second_failover() {
        let t = Thresholds {
            fail_after: 1,
            recover_after: 1,
            hold_down_ms: 5000,
        };
        let mut s = MachineState::default();
        assert_eq!(s.step(&t, Down, 0), Decision::Failover);
        assert_eq!(s.step(&t, Up, 5000), Decision::Failback);
        assert_eq!(s.step(&t, Down, 6000), Decision::Stay);
        assert_eq!(s.step(&t, Down, 9999), Decision::Stay);
        assert_eq!(s.step(&t, Down, 10_000), Decision::Failover);
        assert_eq!((s.failovers, s.failbacks), (2, 1));
    }

    #[test]
    fn clock_going_backwards_blocks_transitions() {
        let t = Thresholds {
            fail_after: 1,
            recover_after: 1,
            hold_down_ms: 1000,
        };
        let mut s = MachineState::default();
        assert_eq!(s.step(&t, Down, 50_000), Decision::Failover);
        assert_eq!(s.step(&t, Up, 10_000), Decision::Stay);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = MachineState::default();
        run(&mut s, &T, 0, 1000, &[Down, Down, Down, Up]);
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"master\":\"up\""), "{j}");
        assert!(j.contains("\"last_transition\":\"failover\""), "{j}");
        let back: MachineState = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }
}
