//! Replays every input under `fuzz/regressions/<target>/` (crashes found by
//! `scripts/fuzz`, and hand-made nasty seeds) through the fuzz target's own
//! code, so a bug once found stays fixed.

#[path = "../../fuzz/logic.rs"]
mod logic;

#[test]
fn fuzz_regression_inputs_do_not_panic() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 5] = [
        ("frames", logic::frames),
        ("message_roundtrip", logic::message_roundtrip),
        ("signature_diff", logic::signature_diff),
        ("delta_ops", logic::delta_ops),
        ("config", logic::config),
    ];
    let mut replayed = 0;
    for (name, run) in targets {
        let dir = base.join(name);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            // Every input also goes through the frame reader and the message decoder.
            run(&data);
            logic::frames(&data);
            logic::message_roundtrip(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed >= 6,
        "the regression inputs are missing ({replayed} found)"
    );
}
