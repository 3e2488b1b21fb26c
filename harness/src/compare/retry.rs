//! The one retry of a sweep point: what a sweep does after one run of a point. A sweep that
//! stops at its first failure would otherwise let one disturbance of the generator (an idle
//! vCPU's late wake-up making two sends 2 ms late) stop it, and the step would say nothing about
//! the server. So a point whose run was invalid because of the generator (`valid: false` on a
//! complete run) is run once more, as a careful operator reruns a disturbed step; a second
//! invalid run stops the sweep as before (a generator really at its limit). A target's failure —
//! loss, errors, the SLO, a run that failed or was interrupted — stops the sweep at once. Each
//! run of a point (each repeat) is retried at most once. [`next`] is the rule; [`Driver`] walks
//! a step's points with it, given the function that makes one run, so the whole walk is tested
//! here without starting a server.

use std::path::Path;

use chatbench_model::results::{RunStatus, Summary};
use chatbench_report::comparison::{Step, StepResult, Superseded};

use super::{judge_point, point_label, point_text, SuiteStep};

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

/// One column's walk through one step's points.
pub(super) struct Driver<'a> {
    /// The step.
    pub s: &'a SuiteStep,
    /// The column's name, for the progress lines and the records.
    pub column: &'a str,
    /// The SLO the sweep's points are checked against.
    pub slo_p99_ms: f64,
    /// The comparison folder, which the records' paths are relative to.
    pub base: &'a Path,
}

impl Driver<'_> {
    /// Runs every point of the step (each `repeats` times) with `run` (one run of point `i`),
    /// in order, until a point that stops the sweep: the runs that stand for the points, in
    /// order, and the records of the runs their retries replaced.
    pub(super) fn drive(
        &self,
        run: &mut dyn FnMut(usize) -> StepResult,
    ) -> (Vec<StepResult>, Vec<Superseded>) {
        let (mut runs, mut superseded) = (Vec::new(), Vec::new());
        let mut stopped = false;
        for i in 0..self.s.points.len() {
            if stopped {
                break;
            }
            for repeat in 0..self.s.repeats {
                let (result, next) = self.point(run, (i, repeat), &mut superseded);
                stopped |= next == Next::Stop;
                runs.push(result);
            }
        }
        (runs, superseded)
    }

    /// Repeat `repeat` of point `i`, once more when its first run was generator-bound and the
    /// step stops at its first failure (the first run then goes into `superseded`): the run
    /// that stands for it and what the sweep does next.
    fn point(
        &self,
        run: &mut dyn FnMut(usize) -> StepResult,
        (i, repeat): (usize, u32),
        superseded: &mut Vec<Superseded>,
    ) -> (StepResult, Next) {
        let label = point_label(self.s, i, repeat);
        let (first, next, why) = self.attempt(run, i, (&label, false));
        if next != Next::RetryOnce {
            return (first, next);
        }
        let (retry, next, _) = self.attempt(run, i, (&format!("{label} (retry)"), true));
        superseded.extend(Superseded::of(
            self.column,
            self.s.step,
            point_text(self.s, i, repeat),
            why.unwrap_or_default(),
            &first,
            (&retry, next == Next::GoOn),
            self.base,
        ));
        (retry, next)
    }

    /// One run of point `i`, with its progress lines (`label`; whether it is the point's
    /// retry): the run, what the sweep does next and why it did not pass.
    fn attempt(
        &self,
        run: &mut dyn FnMut(usize) -> StepResult,
        i: usize,
        (label, retried): (&str, bool),
    ) -> (StepResult, Next, Option<String>) {
        let (arch, step) = (self.column, self.s.step.as_str());
        eprintln!("compare: {arch} / {step}{label} …");
        let mut result = run(i);
        let (line, outcome, why) =
            judge_point(self.s, &self.s.points[i], &mut result, self.slo_p99_ms);
        let next = next(self.s.stop_at_first_failure, outcome, retried);
        let tail = match (next, why.as_deref()) {
            (Next::RetryOnce, Some(why)) => format!("; retrying once: {why}"),
            (Next::Stop, Some(why)) if matches!(result, StepResult::Ran { .. }) => {
                format!("; stops the sweep: {why}")
            }
            _ => String::new(),
        };
        eprintln!("compare: {arch} / {step}{label}: {line}{tail}");
        (result, next, why)
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

    /// A passing capacity run that connected `n`.
    fn passing(n: u64) -> StepResult {
        run(|s| {
            s.connections.planned = n;
            s.connections.ready = n;
        })
    }

    /// A run invalid because of the generator (its pacer woke late).
    fn late() -> StepResult {
        run(|s| {
            s.valid = false;
            s.invalid_reasons = vec![
                "generator missed its schedule: pacer wake-up lateness p99 2197 µs (limit 2000 µs)"
                    .into(),
            ];
        })
    }

    /// A run that lost messages: the target's failure.
    fn lossy() -> StepResult {
        run(|s| s.messages.lost = 7)
    }

    fn ready_of(r: &StepResult) -> u64 {
        match r {
            StepResult::Ran { summary, .. } => summary.connections.ready,
            StepResult::Failed { .. } => 0,
        }
    }

    fn valid_of(r: &StepResult) -> bool {
        matches!(r, StepResult::Ran { summary, .. } if summary.valid)
    }

    /// Walks `s` with `script` as its runs, in order: the points each run was of, the runs
    /// that stand for the points and the records of the replaced ones.
    fn walk(
        s: &SuiteStep,
        script: Vec<StepResult>,
    ) -> (Vec<usize>, Vec<StepResult>, Vec<Superseded>) {
        let mut script = std::collections::VecDeque::from(script);
        let mut calls = Vec::new();
        let mut run = |i: usize| {
            calls.push(i);
            script
                .pop_front()
                .expect("a scripted run for every run the sweep makes")
        };
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/tests/data");
        let driver = Driver {
            s,
            column: "epoll",
            slo_p99_ms: 1e9,
            base: &base,
        };
        let (runs, superseded) = driver.drive(&mut run);
        (calls, runs, superseded)
    }

    fn capacity(points: usize, stop_at_first_failure: bool) -> SuiteStep {
        let points = (1..=points)
            .map(|p| vec![format!("connections={}", p * 2500)])
            .collect();
        super::super::sweep(
            Step::Capacity,
            "full-capacity.toml",
            "",
            points,
            stop_at_first_failure,
        )
    }

    /// A generator's hiccup at the first point: the retry passes and stands for the point, the
    /// sweep goes on, and the first run is recorded, not counted.
    #[test]
    fn a_retry_that_passes_stands_for_the_point_and_the_sweep_goes_on() {
        let s = capacity(3, true);
        let (calls, runs, superseded) = walk(
            &s,
            vec![late(), passing(2500), passing(5000), passing(7500)],
        );
        assert_eq!(calls, [0, 0, 1, 2]);
        assert_eq!(
            runs.iter().map(ready_of).collect::<Vec<_>>(),
            [2500, 5000, 7500]
        );
        let [r] = superseded.as_slice() else {
            panic!("one superseded run: {superseded:?}");
        };
        assert_eq!((r.column.as_str(), r.step.as_str()), ("epoll", "capacity"));
        assert_eq!(r.point, "connections=2500 (1/3)");
        assert!(
            r.reason
                .starts_with("generator-bound: generator missed its schedule"),
            "{}",
            r.reason
        );
        assert_eq!(r.source, "broadcast/summary.json");
        assert!(r.retry_passed);
    }

    /// A generator really at its limit: the retry is invalid too, stands for the point and
    /// stops the sweep (with its own reason); the point is not tried a third time.
    #[test]
    fn a_retry_that_is_invalid_again_stops_the_sweep() {
        let s = capacity(3, true);
        let (calls, runs, superseded) = walk(&s, vec![passing(2500), late(), late()]);
        assert_eq!(calls, [0, 1, 1]);
        assert_eq!(runs.len(), 2);
        assert!(valid_of(&runs[0]) && !valid_of(&runs[1]));
        let [r] = superseded.as_slice() else {
            panic!("one superseded run: {superseded:?}");
        };
        assert_eq!(r.point, "connections=5000 (2/3)");
        assert!(!r.retry_passed);
    }

    /// The target's failures stop the sweep at the point, without a retry.
    #[test]
    fn a_target_failure_is_not_retried() {
        let s = capacity(3, true);
        let (calls, runs, superseded) = walk(&s, vec![passing(2500), lossy()]);
        assert_eq!((calls, runs.len()), (vec![0, 1], 2));
        assert!(superseded.is_empty());
        let failed = StepResult::Failed {
            reason: "server did not start".into(),
        };
        let (calls, runs, superseded) = walk(&s, vec![failed]);
        assert_eq!(calls, [0]);
        assert!(
            matches!(&runs[..], [StepResult::Failed { reason }] if reason == "at connections=2500: server did not start")
        );
        assert!(superseded.is_empty());
    }

    /// A step that runs every point (room-size) keeps every run as it came, invalid or not.
    #[test]
    fn a_step_that_runs_every_point_keeps_its_invalid_runs() {
        let s = capacity(3, false);
        let (calls, runs, superseded) = walk(&s, vec![late(), lossy(), late()]);
        assert_eq!(calls, [0, 1, 2]);
        assert_eq!(runs.len(), 3);
        assert!(superseded.is_empty());
    }

    /// A point run several times retries each repeat at most once, on its own.
    #[test]
    fn each_repeat_is_retried_at_most_once() {
        let mut s = capacity(2, true);
        s.repeats = 2;
        let (calls, runs, superseded) = walk(
            &s,
            vec![
                late(),
                passing(1),
                late(),
                passing(2),
                passing(3),
                passing(4),
            ],
        );
        assert_eq!(calls, [0, 0, 0, 0, 1, 1]);
        assert_eq!(runs.iter().map(ready_of).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let points: Vec<&str> = superseded.iter().map(|r| r.point.as_str()).collect();
        assert_eq!(
            points,
            [
                "connections=2500 (1/2), repeat 1/2",
                "connections=2500 (1/2), repeat 2/2"
            ]
        );
    }
}
