//! Which caveats a drawn figure carries, decided once for the table, the charts and `report A B`.
//!
//! A figure is read with care when the machine was busy (other work shared the server's CPUs:
//! its latency and CPU figures are not its own alone), when the run was invalid
//! (generator-bound: the load generator, not the server, was the limit), when its kernel
//! memory figure is unreliable (other socket activity, or the slab shrank), when the whole
//! comparison ran with `--tiny` (sizes too small to mean anything), or when a repeated step's
//! interval rests on fewer than 5 valid repeats (rough). Each reader marks the
//! figure where it is drawn — a word after the number, a hollow bar or point, a dashed
//! curve — with the reason in a legend or footnote, and a chart whose every figure is clean
//! says so.

use chatbench_model::results::Summary;

/// One reason to read a figure with care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Caveat {
    /// Other work used the server's CPUs during the window (`target_resources.other_load`),
    /// or the server waited for a CPU (`target_resources.run_queue_wait`).
    Busy,
    /// The run was invalid: the generator, not the server, was the limit.
    GeneratorBound,
    /// The kernel memory figure includes other activity on the host.
    UnreliableKernel,
    /// The comparison ran with `--tiny`: its figures are not meaningful.
    Tiny,
    /// A repeated step's interval comes from fewer than 5 valid repeats
    /// ([`crate::repeats::ROUGH_BELOW`]): it is rough.
    Rough,
}

impl Caveat {
    /// The mark written after a figure, e.g. "(machine busy)".
    pub fn mark(self) -> &'static str {
        match self {
            Caveat::Busy => crate::comparison::BUSY_MARK,
            Caveat::GeneratorBound => "(invalid: generator-bound)",
            Caveat::UnreliableKernel => "(unreliable: other socket activity)",
            Caveat::Tiny => TINY_MARK,
            Caveat::Rough => "(rough: fewer than 5 valid runs)",
        }
    }

    /// What the mark means, for a legend or footnote.
    pub fn meaning(self) -> &'static str {
        match self {
            Caveat::Busy => "machine busy: other work shared the server's CPUs in the window, so its latency and CPU figures are not its own alone",
            Caveat::GeneratorBound => "invalid: the load generator, not the server, was the limit",
            Caveat::UnreliableKernel => "kernel figure unreliable: other socket activity on the host, or the slab shrank",
            Caveat::Tiny => "--tiny run: sizes too small for the figures to mean anything",
            Caveat::Rough => "rough: the 95 % interval of a median over fewer than 5 valid repeats, which is the range of those repeats",
        }
    }
}

/// The mark of a comparison run with `--tiny`, in titles, the table and every chart.
pub const TINY_MARK: &str = "(tiny: not meaningful)";

/// Why the run's latency and CPU figures are not the server's alone, when other work shared
/// its CPUs during the window (`target_resources.other_load` over its limit) or its threads
/// waited for a CPU (`target_resources.run_queue_wait` over its limit): the run's own rule,
/// [`chatbench_model::results::busy_note`].
pub fn busy_warning(s: &Summary) -> Option<String> {
    let r = &s.target_resources;
    chatbench_model::results::busy_note(r.other_load.as_ref(), r.run_queue_wait.as_ref())
}

/// Whether other work shared the server's CPUs during the run's window.
pub fn busy(s: &Summary) -> bool {
    busy_warning(s).is_some()
}

/// Whether the run's kernel memory figure is unreliable.
pub fn unreliable_kernel(s: &Summary) -> bool {
    s.target_resources
        .memory_per_conn
        .as_ref()
        .is_some_and(|m| {
            !m.sockets_as_expected || (m.kernel_slab_bytes_per_conn < 0.0 && m.connections > 0)
        })
}

/// The caveats of a run's latency and CPU figures (not its memory).
pub fn of_run(s: &Summary) -> Vec<Caveat> {
    let mut out = Vec::new();
    if busy(s) {
        out.push(Caveat::Busy);
    }
    if !s.valid {
        out.push(Caveat::GeneratorBound);
    }
    out
}

/// The caveats of a run's memory figures: the kernel's reliability, not the CPU's load (the
/// memory an idle connection holds does not depend on who else used the CPU).
pub fn of_memory(s: &Summary) -> Vec<Caveat> {
    let mut out = Vec::new();
    if !s.valid {
        out.push(Caveat::GeneratorBound);
    }
    if unreliable_kernel(s) {
        out.push(Caveat::UnreliableKernel);
    }
    out
}

/// `text` followed by the marks of `caveats` ("12.3 (machine busy)").
pub fn marked(text: &str, caveats: &[Caveat]) -> String {
    let mut out = text.to_string();
    for c in caveats {
        out.push(' ');
        out.push_str(c.mark());
    }
    out
}

/// What a chart says about the caveats of the figures it drew: `seen` names each marked
/// figure ("epoll at 4 nodes") with its caveats, and `how` says how marks are drawn
/// ("hollow bar"). `None` of them marked: the chart says every figure is clean.
pub fn chart_note(seen: &[(String, Vec<Caveat>)], how: &str) -> (String, bool) {
    let marked: Vec<&(String, Vec<Caveat>)> = seen.iter().filter(|(_, c)| !c.is_empty()).collect();
    if marked.is_empty() {
        return (
            "Every figure drawn here is clean: no run was busy, generator-bound or unreliable."
                .to_string(),
            false,
        );
    }
    let mut kinds: Vec<Caveat> = marked.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    kinds.sort();
    kinds.dedup();
    let who: Vec<String> = marked
        .iter()
        .map(|(w, c)| {
            let marks: Vec<&str> = c.iter().map(|c| c.mark()).collect();
            format!("{w} {}", marks.join(" "))
        })
        .collect();
    let meanings: Vec<&str> = kinds.iter().map(|k| k.meaning()).collect();
    (
        format!(
            "Read with care ({how}): {}. {}.",
            who.join("; "),
            meanings.join("; ")
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_with_no_marked_figure_says_it_is_clean() {
        let (text, warn) = chart_note(&[("epoll".into(), vec![])], "hollow bar");
        assert!(
            text.starts_with("Every figure drawn here is clean"),
            "{text}"
        );
        assert!(!warn);
    }

    #[test]
    fn a_marked_figure_is_named_with_its_mark_and_meaning() {
        let (text, warn) = chart_note(
            &[
                ("epoll".into(), vec![]),
                ("thread-pool".into(), vec![Caveat::Busy]),
            ],
            "hollow bar",
        );
        assert!(warn);
        assert!(text.contains("thread-pool (machine busy)"), "{text}");
        assert!(!text.contains("epoll"), "{text}");
        assert!(text.contains("not its own alone"), "{text}");
        assert_eq!(
            marked("3.1", &[Caveat::Busy, Caveat::Tiny]),
            "3.1 (machine busy) (tiny: not meaningful)"
        );
    }

    #[test]
    fn a_server_that_waited_for_its_cpu_is_busy_though_the_ticks_say_nothing() {
        use chatbench_model::results::RunQueueWait;
        let mut s: Summary =
            serde_json::from_str(include_str!("../tests/data/broadcast/summary.json"))
                .expect("summary");
        s.target_resources.other_load = None; // unpinned: no tick reading
        assert!(!of_run(&s).contains(&Caveat::Busy), "no reading, no mark");
        s.target_resources.run_queue_wait = Some(RunQueueWait {
            seconds: 0.08,
            share: 0.008,
        });
        assert!(!of_run(&s).contains(&Caveat::Busy), "8 ms/s: a quiet VM");
        s.target_resources.run_queue_wait = Some(RunQueueWait {
            seconds: 0.8,
            share: 0.08,
        });
        assert!(of_run(&s).contains(&Caveat::Busy), "80 ms/s");
        assert!(busy_warning(&s).is_some_and(|w| w.contains("waited for a CPU 80 ms")));
    }
}
