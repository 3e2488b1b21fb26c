//! The short run of the fuzz targets in the test command: every committed input under
//! `fuzz/corpus/TARGET/` replayed through its target — `seed-*` (written by hand), `min-*` (the
//! campaigns' inputs that found new edges), `crash-*` (crashes found, kept once fixed) and
//! `hang-*` (inputs AFL timed out on, on a loaded machine; they must stay fast). A target
//! without a corpus fails the test.

use std::path::Path;

#[test]
fn every_committed_input_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in chatbench_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of target {name}: {}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("corpus input {}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "target {name} panicked on {}",
                path.display()
            );
            n += 1;
        }
        assert!(n > 0, "target {name} has no corpus in {}", dir.display());
        eprintln!("{name}: {n} inputs");
    }
}
