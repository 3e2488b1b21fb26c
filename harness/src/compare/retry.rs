//! The one retry of a sweep point: what a sweep does after one run of a point. A sweep that
//! stops at its first failure would otherwise let one disturbance of the generator (an idle
//! vCPU's late wake-up making two sends 2 ms late) stop it, and the step would say nothing about
//! the server. So a point whose run was invalid because of the generator (`valid: false` on a
//! complete run) is run once more, as a careful operator reruns a disturbed step; a second
//! invalid run stops the sweep as before (a generator really at its limit). A target's failure —
//! loss, errors, the SLO, a run that failed or was interrupted — stops the sweep at once. Each
//! run of a point (each repeat) is retried at most once.

use chatbench_model::results::{RunStatus, Summary};
use chatbench_report::comparison::{Step, StepResult};

/// How one run of a point came out, as the sweep's rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It passed the sweep's check (or the step is not judged point by point).
    Passed,
    /// It did not pass because it was invalid: the generator, not the target, limited it.
    GeneratorBound,
    /// It did not pass because of the target, or it could not be run or did not complete.
    Failed,
}

impl Outcome {
    /// The outcome of `result`, a run of `step`, and the reason it did not pass (the sweep
    /// check's, or the failed run's).
    pub(super) fn of(
        step: Step,
        result: &StepResult,
        slo_p99_ms: f64,
    ) -> (Outcome, Option<String>) {
        match result {
            StepResult::Failed { reason } => (Outcome::Failed, Some(reason.clone())),
            StepResult::Ran { summary, .. } => {
                let check = step
                    .is_sweep()
                    .then(|| chatbench_report::sweeps::check(step, summary, slo_p99_ms))
                    .flatten();
                match check {
                    None => (Outcome::Passed, None),
                    Some(why) if generator_bound(summary) => (Outcome::GeneratorBound, Some(why)),
                    Some(why) => (Outcome::Failed, Some(why)),
                }
            }
        }
    }
}

/// Whether a run's only fault is the generator's: it completed and was invalid. A failed run is
/// invalid too (nothing was measured), and an interrupted one did not finish: neither is a
/// generator's hiccup.
fn generator_bound(s: &Summary) -> bool {
    !s.valid && s.status == RunStatus::Complete
}

/// What the sweep does after one run of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// The run stands for the point; the sweep goes on.
    GoOn,
    /// The run was generator-bound: run the point once more; the retry stands for it.
    RetryOnce,
    /// The run stands for the point and the sweep stops after it.
    Stop,
}

/// What a step that stops at its first failure (`stop_at_first_failure`) does after a run of
/// a point with `outcome`, `retried` saying whether this run was already the point's retry.
pub(super) fn next(stop_at_first_failure: bool, outcome: Outcome, retried: bool) -> Next {
    match outcome {
        Outcome::Passed => Next::GoOn,
        _ if !stop_at_first_failure => Next::GoOn,
        Outcome::GeneratorBound if !retried => Next::RetryOnce,
        Outcome::GeneratorBound | Outcome::Failed => Next::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A sweep that stops at its first failure retries a generator-bound run once, and only once.
    #[test]
    fn a_generator_bound_run_is_retried_once() {
        assert_eq!(next(true, Outcome::GeneratorBound, false), Next::RetryOnce);
        assert_eq!(next(true, Outcome::GeneratorBound, true), Next::Stop);
    }

    /// A target's failure stops the sweep at once, first run or retry.
    #[test]
    fn a_target_failure_stops_at_once() {
        assert_eq!(next(true, Outcome::Failed, false), Next::Stop);
        assert_eq!(next(true, Outcome::Failed, true), Next::Stop);
    }

    /// A passing run, first or retry, lets the sweep go on.
    #[test]
    fn a_passing_run_goes_on() {
        assert_eq!(next(true, Outcome::Passed, false), Next::GoOn);
        assert_eq!(next(true, Outcome::Passed, true), Next::GoOn);
    }

    /// A step that runs every point (room-size, the single steps) neither stops nor retries.
    #[test]
    fn a_step_that_runs_every_point_never_retries() {
        for outcome in [Outcome::Passed, Outcome::GeneratorBound, Outcome::Failed] {
            for retried in [false, true] {
                assert_eq!(next(false, outcome, retried), Next::GoOn, "{outcome:?}");
            }
        }
    }

    /// The recorded broadcast run, changed by `f`.
    fn run(f: impl FnOnce(&mut Summary)) -> StepResult {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/tests/data/broadcast");
        let mut r = StepResult::load(&dir).expect("fixture");
        if let StepResult::Ran { summary, .. } = &mut r {
            f(summary);
        }
        r
    }

    /// Only an invalid run that completed is the generator's; the check's reason comes along.
    #[test]
    fn outcomes_tell_the_generator_from_the_target() {
        let (o, why) = Outcome::of(Step::Capacity, &run(|_| {}), 1e9);
        assert_eq!((o, why), (Outcome::Passed, None));
        let late = run(|s| {
            s.valid = false;
            s.invalid_reasons = vec![
                "generator missed its schedule: pacer wake-up lateness p99 2197 µs (limit 2000 µs)"
                    .into(),
            ];
        });
        let (o, why) = Outcome::of(Step::Capacity, &late, 1e9);
        assert_eq!(o, Outcome::GeneratorBound);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.starts_with("generator-bound: generator missed")),
            "{why:?}"
        );
        let lost = run(|s| s.messages.lost = 3);
        assert_eq!(Outcome::of(Step::Capacity, &lost, 1e9).0, Outcome::Failed);
        // Over the SLO: the target's.
        assert_eq!(
            Outcome::of(Step::LoadSweep, &run(|_| {}), 1e-9).0,
            Outcome::Failed
        );
        // No connection made: invalid, but a failed run, not a generator's hiccup.
        let nothing = run(|s| {
            s.valid = false;
            s.status = RunStatus::Failed;
        });
        assert_eq!(
            Outcome::of(Step::Capacity, &nothing, 1e9).0,
            Outcome::Failed
        );
        let interrupted = run(|s| {
            s.valid = false;
            s.status = RunStatus::Interrupted;
        });
        assert_eq!(
            Outcome::of(Step::Capacity, &interrupted, 1e9).0,
            Outcome::Failed
        );
        let failed = StepResult::Failed {
            reason: "server did not start".into(),
        };
        let (o, why) = Outcome::of(Step::Capacity, &failed, 1e9);
        assert_eq!(
            (o, why.as_deref()),
            (Outcome::Failed, Some("server did not start"))
        );
        // A step that is not a sweep is not judged point by point: an invalid broadcast
        // repeat is a cell marked invalid, not a reason to retry.
        assert_eq!(Outcome::of(Step::Broadcast, &late, 1e9).0, Outcome::Passed);
    }
}
