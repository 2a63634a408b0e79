use super::*;
use crate::scheduler::state::{JobState, Run};

/// A daemon with a watch job `w` and an hourly job `h`, not started: the plan's
/// state machine is driven by hand (no thread, no run).
fn daemon() -> (Daemon, Receiver<Wakeup>) {
    let text = "[node]\nrole = \"master\"\npeer = \"local\"\n\
        [[sync]]\nname = \"w\"\npaths = [\"/w\"]\nschedule = \"watch\"\n\
        [[sync]]\nname = \"h\"\npaths = [\"/h\"]\nschedule = \"hourly\"\n\
        [daemon]\nretry_min = \"1s\"\nretry_max = \"4s\"\n";
    let cfg = Arc::new(config::parse(text, Path::new("/nonexistent/hasync.toml")).unwrap());
    let (tx, rx) = channel();
    let jobs = jobs::jobs_of(&cfg);
    let mut d = Daemon {
        path: cfg.path.clone(),
        transports: jobs::PeerTransports::of(&cfg).unwrap(),
        view: Arc::new(Mutex::new(http::View {
            cfg: cfg.clone(),
            jobs: jobs.clone(),
            daemon: DaemonState::default(),
        })),
        cfg,
        jobs: jobs.clone(),
        slots: Vec::new(),
        watcher: watch::watch(Vec::new(), |_| {}).0,
        tx,
        seq: 0,
        stopping: false,
        started: Utc::now(),
        written: None,
        watched_ids: Vec::new(),
        db_poller: None,
    };
    let now = Utc::now();
    d.slots = jobs.into_iter().map(|j| d.slot(j, now)).collect();
    (d, rx)
}

fn pretend_started(d: &mut Daemon, i: usize) -> u64 {
    d.seq += 1;
    let s = &mut d.slots[i];
    s.watch_due = None;
    s.retry_at = None;
    s.running = Some(Running {
        seq: d.seq,
        change_gen: s.change_gen,
        started: Utc::now(),
    });
    d.seq
}

fn done(ok: bool) -> Result<Executed, String> {
    let now = Utc::now();
    Ok(Executed::Done {
        run: Box::new(Run {
            start: now,
            end: now,
            ok,
            trigger: "watch".into(),
            exit_code: if ok { 0 } else { 3 },
            error: (!ok).then(|| "peer down".into()),
            stats: Default::default(),
        }),
        state: Box::new(JobState::default()),
    })
}

#[test]
fn watch_plan_debounces_retries_and_stays_pending_until_a_later_run_succeeds() {
    let (mut d, _rx) = daemon();
    let (w, h) = (0, 1);
    // Start: the watch job is dirty and due now; the hourly job is not.
    assert!(d.slots[w].dirty && d.slots[w].watch_due.is_some());
    assert!(d.slots[h].watch_due.is_none() && d.slots[h].next_timed.is_some());
    let seq = pretend_started(&mut d, w);
    // A change during the run: the success does not clear it, a new run is due now.
    d.changed(Change::Job("w".into()));
    d.finished("w", seq, done(true));
    assert!(d.slots[w].dirty && d.slots[w].pending_since.is_some());
    assert!(d.slots[w].watch_due.is_some_and(|t| t <= Utc::now()));
    // That run fails: retry with backoff, still pending; changes wait for the retry.
    let seq = pretend_started(&mut d, w);
    d.finished("w", seq, done(false));
    let r1 = d.slots[w].retry_at.expect("a retry");
    assert!(d.slots[w].dirty && d.slots[w].watch_due.is_none());
    d.changed(Change::Job("w".into()));
    assert!(d.slots[w].watch_due.is_none(), "backoff cut short");
    let seq = pretend_started(&mut d, w);
    d.finished("w", seq, done(false));
    let r2 = d.slots[w].retry_at.expect("a retry");
    assert!(r2 - Utc::now() > r1 - Utc::now(), "no backoff");
    assert_eq!(d.slots[w].attempt, 2);
    // Another process holds the lock: tried again soon, not counted as a failure.
    let seq = pretend_started(&mut d, w);
    d.finished("w", seq, Ok(Executed::Busy));
    assert_eq!(d.slots[w].attempt, 2);
    assert!(d.slots[w].retry_at.is_some());
    // Success with no change since its start: delivered.
    let seq = pretend_started(&mut d, w);
    d.finished("w", seq, done(true));
    let s = &d.slots[w];
    assert!(!s.dirty && s.pending_since.is_none() && s.retry_at.is_none() && s.attempt == 0);
    // A stale message (an old seq) changes nothing.
    d.finished("w", 999, done(false));
    assert_eq!(d.slots[w].attempt, 0);
}

#[test]
fn an_overflow_marks_every_watched_job_and_only_those() {
    let (mut d, _rx) = daemon();
    let seq = pretend_started(&mut d, 0);
    d.finished("w", seq, done(true));
    assert!(!d.slots[0].dirty);
    d.changed(Change::All("queue overflow".into()));
    assert!(d.slots[0].dirty && d.slots[0].watch_due.is_some_and(|t| t <= Utc::now()));
    assert!(!d.slots[1].dirty && d.slots[1].watch_due.is_none());
    // A plain change is debounced.
    let seq = pretend_started(&mut d, 0);
    d.finished("w", seq, done(true));
    d.changed(Change::Job("w".into()));
    assert!(d.slots[0].watch_due.is_some_and(|t| t > Utc::now()));
}

#[test]
fn a_failed_timed_job_retries_only_until_its_next_run() {
    let (mut d, _rx) = daemon();
    let seq = pretend_started(&mut d, 1);
    d.finished("h", seq, done(false));
    let s = &d.slots[1];
    // retry_max is 4 s: unless the hour turns within 1 s, it retries.
    let next = s.next_timed.unwrap();
    match s.retry_at {
        Some(t) => assert!(t < next),
        None => assert!(next - Utc::now() <= chrono::Duration::seconds(1)),
    }
}

#[test]
fn retries_back_off_and_yield_to_the_next_timed_run() {
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let (min, max) = (Duration::from_secs(5), Duration::from_secs(300));
    let secs = |t: Option<DateTime<Utc>>| t.map(|t| (t - now).num_seconds());
    let hour = Some(now + chrono::Duration::hours(1));
    let delays: Vec<_> = (1..=9)
        .map(|a| secs(retry_at(a, false, hour, now, min, max)))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20, 40, 80, 160, 300, 300, 300].map(Some).to_vec()
    );
    // The next timed run is sooner than the retry: no retry.
    let soon = Some(now + chrono::Duration::seconds(30));
    assert_eq!(
        retry_at(3, false, soon, now, min, max),
        Some(now + chrono::Duration::seconds(20))
    );
    assert_eq!(retry_at(4, false, soon, now, min, max), None);
    // A watched job with pending changes retries anyway, and so does a job without a timer.
    assert_eq!(secs(retry_at(4, true, soon, now, min, max)), Some(40));
    assert_eq!(secs(retry_at(20, false, None, now, min, max)), Some(300));
    // Absurd durations saturate instead of panicking.
    let huge = Duration::from_secs(u64::MAX / 4);
    assert!(retry_at(1, true, None, now, huge, huge).is_some());
}

#[test]
fn a_watch_run_waits_min_interval_after_the_last_start() {
    let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let gap = Duration::from_secs(5);
    let secs = chrono::Duration::seconds;
    assert_eq!(watch_due_after(None, Some(t), gap), None);
    assert_eq!(watch_due_after(Some(t), None, gap), Some(t), "no run yet");
    assert_eq!(
        watch_due_after(Some(t + secs(1)), Some(t), gap),
        Some(t + secs(5))
    );
    assert_eq!(
        watch_due_after(Some(t + secs(9)), Some(t), gap),
        Some(t + secs(9))
    );
    assert_eq!(
        watch_due_after(Some(t + secs(1)), Some(t), Duration::ZERO),
        Some(t + secs(1))
    );
}
