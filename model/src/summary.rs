//! Building a run's [`Summary`] from what was measured: the one place that turns counts,
//! histograms and `/proc` samples into `summary.json`'s figures (loss, rates, memory per
//! connection, notes), whether one process (`chatbench_loadgen::run`) or a fleet of agents
//! (`chatbench_loadgen::coordinator`) measured them. The callers gather and merge; this module
//! derives.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;

use crate::provenance::Provenance;
use crate::results::{
    run_id, ByRole, ConnectionStats, DistributedInfo, FaultOutcome, GeneratorInfo, MessageStats,
    OtherLoad, Percentiles, PhaseTimes, ReconnectStats, RunQueueWait, RunStatus, ScenarioRecord,
    Summary, TargetInfo, TargetResources, SUMMARY_SCHEMA_ID, SUMMARY_SCHEMA_VERSION,
};
use crate::sampler::{self, HostSample, ProcSample};
use crate::scenario::Scenario;

/// Connection counts of the whole run.
pub struct ConnCounts<'a> {
    pub planned: u64,
    pub attempted: u64,
    pub connected: u64,
    pub ready: u64,
    pub errors: BTreeMap<String, u64>,
    pub closed_by_server: BTreeMap<String, u64>,
    /// Length of the connect phase, seconds.
    pub connect_s: f64,
    /// How far the ramp's schedule slipped while it waited for set-up slots, seconds.
    pub ramp_held_s: f64,
    pub connect_time: &'a Histogram<u64>,
    /// What the reconnect policy did, when it was on.
    pub reconnect: Option<ReconnectStats>,
    /// Connections the server closed or broke during the window.
    pub dropped_in_window: u64,
    /// Senders whose frames the pacer's thread wrote (the send path; summed over a fleet's
    /// agents); 0 leaves both send-path figures out of the summary.
    pub pacer_senders: u64,
    /// How many times a due message found a pacer sender's out-buffer full and held its sender.
    pub pacer_send_held: u64,
}

/// Messages a window should have delivered, from each room's in-window messages and readers: a
/// message reaches every reader of its room but its sender, so expected = Σ due × (readers − 1),
/// where a room's due messages are those sent plus those that fell due on a sender's
/// connection while the server had it down (`MsgCounts::unsent_down`: owed all the same).
/// The one loss formula: a run and a fleet's merge both count with it (loss = expected −
/// delivered, see [`build`]). A room missing from either list counts nothing.
pub fn expected_deliveries(
    room_sent: impl IntoIterator<Item = u64>,
    room_readers: impl IntoIterator<Item = u64>,
) -> u64 {
    room_sent
        .into_iter()
        .zip(room_readers)
        .map(|(sent, readers)| sent * readers.saturating_sub(1))
        .sum()
}

/// Message counts over the measurement window.
pub struct MsgCounts {
    pub sent_window: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub late: u64,
    pub slow_consumers: u64,
    pub server_errors: BTreeMap<String, u64>,
    pub bad_frames: u64,
    /// In-window messages delivered back to their own sender (counted apart).
    pub echoes: u64,
    /// In-window messages that fell due on a connection that was down (in `expected`).
    pub unsent_down: u64,
    /// Length of the window as run, seconds.
    pub measure_s: f64,
}

/// The generator's own figures (what differs between one process and a fleet).
pub struct GenFigures {
    pub agents: u32,
    pub source_addrs: Vec<String>,
    pub cpu_affinity: Vec<usize>,
    pub cpu_cores_measure: Option<f64>,
    pub pacer_lag_us: Option<Percentiles>,
    pub pacer_realtime: Option<bool>,
    pub send_lag_us: Option<Percentiles>,
    pub receive_lag_us: Option<Percentiles>,
    pub unstamped_reads: Option<u64>,
    pub rss_per_conn_bytes: Option<f64>,
    /// The window's CPU by thread role, cores (a fleet's: summed over its agents' own).
    pub cpu_cores_by_role: Option<ByRole<f64>>,
    /// The threads alive at the window's end by role.
    pub threads_by_role: Option<ByRole<u32>>,
    /// For a fleet: the agents the split sums.
    pub by_role_agents: Option<u32>,
}

/// Readings of the target and the host.
pub struct TargetFigures {
    pub server_before: Option<ProcSample>,
    pub host_before: Option<HostSample>,
    pub server_connected: Option<ProcSample>,
    pub host_connected: Option<HostSample>,
    pub host_after: Option<HostSample>,
    pub rss_peak_bytes: Option<u64>,
    pub cpu_cores_measure: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub server_metrics: Option<BTreeMap<String, f64>>,
    /// Other work on the server's CPUs during the window.
    pub other_load: Option<OtherLoad>,
    /// The server's threads' wait for a CPU during the window.
    pub run_queue_wait: Option<RunQueueWait>,
}

/// Everything a summary is built from.
pub struct SummaryInput<'a> {
    pub scenario: &'a Scenario,
    pub overrides: &'a [String],
    pub started_utc: DateTime<Utc>,
    pub status: RunStatus,
    pub invalid: Vec<String>,
    /// Notes of the caller's own; the derived ones are added around them.
    pub notes: Vec<String>,
    pub target: TargetInfo,
    pub generator: GenFigures,
    pub provenance: Provenance,
    pub phases: PhaseTimes,
    pub conns: ConnCounts<'a>,
    pub msgs: MsgCounts,
    pub latency: &'a Histogram<u64>,
    pub target_figures: TargetFigures,
    pub fault: Option<FaultOutcome>,
    pub distributed: Option<DistributedInfo>,
    /// What a node's loss cost (a `[[fault]] kill_node` scenario).
    pub failover: Option<crate::failover::FailoverOutcome>,
}

/// The target's CPU over a measurement window, as cores and per delivery — one code path for
/// a one-process run and a fleet. `cpu_s` CPU seconds were read over `over_s` seconds (the two
/// readings' own time stamps); `deliveries` were made in a window of `window_s` seconds (0: not
/// known). Per delivery is the CPU rate times the window over the deliveries, so readings a
/// little off the window's edges still compare rate with rate.
pub fn server_cpu(cpu_s: f64, over_s: f64, deliveries: u64, window_s: f64) -> (f64, Option<f64>) {
    let cores = cpu_s / over_s.max(1e-9);
    let per_delivery =
        (deliveries > 0 && window_s > 0.0).then(|| cores * window_s * 1e6 / deliveries as f64);
    (cores, per_delivery)
}

/// The load on the server's CPUs that was not the server's, between two host readings at the
/// window's edges: their busy time minus the server's own CPU (`server_cores`), and steal.
/// `None` unless the server was pinned to CPUs that this process (the generator, or the
/// coordinator whose local agents inherit its CPUs; `own_cpus`, its affinity) does not use:
/// otherwise the generator's time cannot be told apart from other work.
pub fn other_load(
    a: Option<&HostSample>,
    b: Option<&HostSample>,
    server_cores: Option<f64>,
    server_cpus: Option<&[usize]>,
    own: &[usize],
) -> Option<OtherLoad> {
    let cpus = server_cpus?;
    if cpus.iter().any(|c| own.contains(c)) {
        return None;
    }
    let (busy, steal) = sampler::cpus_busy_between(a?, b?, cpus)?;
    Some(OtherLoad {
        cpus: cpus.to_vec(),
        busy_cores: busy,
        other_cores: busy - server_cores?,
        steal_cores: steal,
    })
}

/// The server's run-queue wait between its readings `a` and `b` at the window's edges,
/// `over_s` seconds apart. `None` unless both readings have it and the time runs forward. The
/// sum is over the threads alive at each reading, so a thread that exited in between takes its
/// wait with it and the difference may come out negative: it is then clamped to 0.
pub fn run_queue_wait(a: &ProcSample, b: &ProcSample, over_s: f64) -> Option<RunQueueWait> {
    let waited = (b.run_delay_seconds? - a.run_delay_seconds?).max(0.0);
    (over_s > 0.0 && waited.is_finite()).then(|| RunQueueWait {
        seconds: waited,
        share: waited / over_s,
    })
}

/// The note every low-rate run carries (idle vCPUs wake slowly).
fn low_rate_note(scenario: &Scenario) -> Option<String> {
    let msgs_per_s = scenario.expected_msgs_per_sec();
    (msgs_per_s > 0.0 && msgs_per_s < 1000.0).then(|| {
        format!(
            "low message rate ({msgs_per_s:.0} msg/s): idle vCPUs take up to ~1 ms to wake, so low-percentile latency \
             here includes CPU wake-up time, not only the server"
        )
    })
}

/// The generator's client settings, as recorded with every result.
/// A run whose connect phase ended (at its deadline) before every planned connection was
/// even attempted measured fewer connections than it was asked for: say so.
fn unattempted_note(planned: u64, attempted: u64, ready: u64) -> Option<String> {
    (attempted < planned).then(|| {
        format!(
            "only {attempted} of the {planned} planned connections were attempted ({ready} ready): the connect phase ended at its deadline first (the host could not open them at `ramp_rate`); every figure is for the connections that were open"
        )
    })
}

fn client_settings(scenario: &Scenario) -> BTreeMap<String, u64> {
    let client = &scenario.client;
    let mut m = BTreeMap::new();
    m.insert("read_buffer_size".into(), client.read_buffer_size as u64);
    m.insert("write_buffer_size".into(), client.write_buffer_size as u64);
    m.insert(
        "max_write_buffer_size".into(),
        client.max_write_buffer_size as u64,
    );
    m.insert("max_message_size".into(), client.max_message_size as u64);
    m
}

/// What the readings say of the server, and the notes they call for (memory per connection's
/// caveat, the host's listen queues overflowing).
fn target_resources(t: TargetFigures, ready: u64, notes: &mut Vec<String>) -> TargetResources {
    let memory_per_conn = match (
        &t.server_before,
        &t.host_before,
        &t.server_connected,
        &t.host_connected,
    ) {
        (Some(bs), Some(bh), Some(cs), Some(ch)) if ready > 0 => {
            let m = sampler::memory_per_connection((bs, bh), (cs, ch), ready, 2 * ready as i64);
            if let Some(n) = &m.note {
                notes.push(format!("memory per connection: {n}"));
            }
            Some(m)
        }
        _ => None,
    };
    let listen_overflows = match (&t.host_before, &t.host_after) {
        (Some(a), Some(b)) => Some(b.listen_overflows.saturating_sub(a.listen_overflows)),
        _ => None,
    };
    if listen_overflows.unwrap_or(0) > 0 {
        notes.push("the host's listen queues overflowed during the run (TcpExt ListenOverflows grew): connection attempts were dropped at accept".into());
    }
    TargetResources {
        rss_before_bytes: t.server_before.as_ref().map(|s| s.rss_bytes),
        rss_connected_bytes: t.server_connected.as_ref().map(|s| s.rss_bytes),
        rss_peak_bytes: t.rss_peak_bytes,
        memory_per_conn,
        cpu_cores_measure: t.cpu_cores_measure,
        cpu_us_per_delivery: t.cpu_us_per_delivery,
        threads: t.server_connected.as_ref().map(|s| s.threads),
        open_fds: t.server_connected.as_ref().map(|s| s.open_fds),
        listen_overflows,
        server_metrics: t.server_metrics,
        other_load: t.other_load,
        run_queue_wait: t.run_queue_wait,
    }
}

/// Builds the summary: derived figures (loss, rates, memory per connection, listen overflows)
/// and notes, in the order one-process runs have always written them.
pub fn build(input: SummaryInput<'_>) -> Summary {
    let SummaryInput {
        scenario,
        overrides,
        started_utc,
        status,
        invalid,
        notes: own_notes,
        target,
        generator,
        provenance,
        phases,
        conns,
        msgs,
        latency,
        target_figures: t,
        fault,
        distributed,
        failover,
    } = input;
    let mut notes: Vec<String> = low_rate_note(scenario).into_iter().collect();
    notes.extend(crate::tls::summary_note(&target.url, &scenario.client));
    notes.extend(own_notes);
    let ready = conns.ready;
    let target_resources = target_resources(t, ready, &mut notes);
    notes.extend(unattempted_note(
        conns.planned,
        conns.attempted,
        conns.ready,
    ));
    let connect_s = conns.connect_s.max(1e-9);
    let measure_s = msgs.measure_s.max(1e-9);
    let lost = msgs.expected.saturating_sub(msgs.delivered);
    Summary {
        schema: SUMMARY_SCHEMA_ID.into(),
        schema_version: SUMMARY_SCHEMA_VERSION,
        run_id: run_id(started_utc, &scenario.name),
        status,
        valid: invalid.is_empty(),
        invalid_reasons: invalid,
        notes,
        scenario: ScenarioRecord {
            name: scenario.name.clone(),
            path: scenario
                .source
                .path
                .as_ref()
                .map(|p| p.display().to_string()),
            text: scenario.source.text.clone(),
            overrides: overrides.to_vec(),
        },
        target,
        generator: GeneratorInfo {
            agents: generator.agents,
            source_addrs: generator.source_addrs,
            client: client_settings(scenario),
            cpu_affinity: generator.cpu_affinity,
            cpu_cores_measure: generator.cpu_cores_measure,
            pacer_lag_us: generator.pacer_lag_us,
            pacer_realtime: generator.pacer_realtime,
            send_lag_us: generator.send_lag_us,
            receive_lag_us: generator.receive_lag_us,
            arrival: Some(scenario.client.arrival),
            unstamped_reads: generator.unstamped_reads,
            rss_per_conn_bytes: generator.rss_per_conn_bytes,
            cpu_cores_by_role: generator.cpu_cores_by_role,
            threads_by_role: generator.threads_by_role,
            by_role_agents: generator.by_role_agents,
        },
        provenance,
        phases,
        connections: ConnectionStats {
            planned: conns.planned,
            attempted: conns.attempted,
            connected: conns.connected,
            ready,
            errors: conns.errors,
            closed_by_server: conns.closed_by_server,
            connect_phase_s: connect_s,
            open_rate_per_s: ready as f64 / connect_s,
            ramp_held_s: conns.ramp_held_s,
            connect_time_us: Percentiles::of(conns.connect_time),
            reconnect: conns.reconnect,
            dropped_in_window: conns.dropped_in_window,
            silent: None,
            epoll_receivers: None,
            // Both figures only when some sender rode the pacer's path.
            pacer_senders: (conns.pacer_senders > 0).then_some(conns.pacer_senders),
            pacer_send_held: (conns.pacer_senders > 0).then_some(conns.pacer_send_held),
        },
        messages: MessageStats {
            sent: msgs.sent_window,
            expected: msgs.expected,
            delivered: msgs.delivered,
            lost,
            extra: msgs.delivered.saturating_sub(msgs.expected),
            duplicated: msgs.duplicated,
            late: msgs.late,
            loss_ratio: if msgs.expected == 0 {
                0.0
            } else {
                lost as f64 / msgs.expected as f64
            },
            slow_consumers: msgs.slow_consumers,
            server_errors: msgs.server_errors,
            bad_frames: msgs.bad_frames,
            echoes: msgs.echoes,
            unsent_down: msgs.unsent_down,
            sent_per_s: msgs.sent_window as f64 / measure_s,
            delivered_per_s: msgs.delivered as f64 / measure_s,
        },
        latency_us: Percentiles::of(latency),
        target_resources,
        fault,
        distributed,
        failover,
    }
}

/// A summary input with plain figures, for tests (here and in the load generator) to vary.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// A summary input with plain figures, for tests to vary.
    pub fn input<'a>(scenario: &'a Scenario, hist: &'a Histogram<u64>) -> SummaryInput<'a> {
        SummaryInput {
            scenario,
            overrides: &[],
            started_utc: Utc::now(),
            status: RunStatus::Complete,
            invalid: Vec::new(),
            notes: vec!["mine".into()],
            target: TargetInfo {
                url: "ws://127.0.0.1:9/ws".into(),
                arch: None,
                pid: None,
                pids: Vec::new(),
                settings: BTreeMap::new(),
                cpu_affinity: None,
                targets: Vec::new(),
                target_policy: None,
            },
            generator: GenFigures {
                agents: 1,
                source_addrs: Vec::new(),
                cpu_affinity: vec![0],
                cpu_cores_measure: None,
                pacer_lag_us: None,
                pacer_realtime: None,
                send_lag_us: None,
                receive_lag_us: None,
                unstamped_reads: None,
                rss_per_conn_bytes: None,
                cpu_cores_by_role: None,
                threads_by_role: None,
                by_role_agents: None,
            },
            provenance: Provenance {
                tool_version: "0.1.0".into(),
                build_commit: None,
                git_commit: None,
                git_dirty: None,
                kernel: None,
                os: "linux".into(),
                cpu_model: None,
                cpu_cores: 1,
                cpu_affinity: vec![0],
                rlimit_nofile: None,
                hostname: None,
                started_at: "2025-01-01T00:00:00.000Z".into(),
                finished_at: None,
                command_line: Vec::new(),
            },
            phases: PhaseTimes::default(),
            conns: ConnCounts {
                planned: 10,
                attempted: 10,
                connected: 10,
                ready: 8,
                errors: BTreeMap::from([("timeout".to_string(), 2)]),
                closed_by_server: BTreeMap::new(),
                connect_s: 2.0,
                ramp_held_s: 0.5,
                connect_time: hist,
                reconnect: None,
                dropped_in_window: 0,
                pacer_senders: 0,
                pacer_send_held: 0,
            },
            msgs: MsgCounts {
                sent_window: 10,
                expected: 70,
                delivered: 63,
                duplicated: 0,
                late: 0,
                slow_consumers: 0,
                server_errors: BTreeMap::new(),
                bad_frames: 0,
                echoes: 0,
                unsent_down: 0,
                measure_s: 5.0,
            },
            latency: hist,
            target_figures: TargetFigures {
                server_before: None,
                host_before: Some(HostSample::default()),
                server_connected: None,
                host_connected: None,
                host_after: Some(HostSample {
                    listen_overflows: 3,
                    ..HostSample::default()
                }),
                rss_peak_bytes: None,
                cpu_cores_measure: None,
                cpu_us_per_delivery: None,
                server_metrics: None,
                other_load: None,
                run_queue_wait: None,
            },
            fault: None,
            distributed: None,
            failover: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::input;
    use super::*;
    use crate::hist::new_hist;

    #[test]
    fn expected_deliveries_count_every_reader_but_the_sender() {
        // Room 0: 10 sent, 3 readers (sender + 2); room 1: 5 sent, 1 reader (the sender alone);
        // room 2: 4 sent, no readers known; room 3 has readers but no sends listed.
        assert_eq!(expected_deliveries([10, 5, 4], [3, 1, 0, 7]), 20);
        // An echo room counts as two readers: expected = sent.
        assert_eq!(expected_deliveries([6], [2]), 6);
        assert_eq!(expected_deliveries([], [2]), 0);
    }

    #[test]
    fn derives_loss_rates_and_notes_in_order() {
        let scenario = Scenario::parse(
            "name='t'\nconnections=10\nrooms=1\nmembers_per_room=8\n",
            "t",
        )
        .expect("valid");
        let hist = new_hist();
        let s = build(input(&scenario, &hist));
        assert!(s.valid);
        assert_eq!(s.messages.lost, 7);
        assert_eq!(s.messages.extra, 0);
        assert!((s.messages.loss_ratio - 0.1).abs() < 1e-12);
        assert!((s.messages.sent_per_s - 2.0).abs() < 1e-12);
        assert!((s.connections.open_rate_per_s - 4.0).abs() < 1e-12);
        assert!((s.connections.ramp_held_s - 0.5).abs() < 1e-12);
        assert_eq!(s.target_resources.listen_overflows, Some(3));
        assert_eq!(s.notes.len(), 3, "{:?}", s.notes);
        assert!(s.notes[0].starts_with("low message rate"), "{:?}", s.notes);
        assert_eq!(s.notes[1], "mine");
        assert!(s.notes[2].contains("ListenOverflows"), "{:?}", s.notes);
        assert_eq!(s.generator.client.len(), 4);
    }

    #[test]
    fn a_connect_phase_cut_before_every_connection_was_attempted_is_noted() {
        let scenario = Scenario::parse(
            "name='t'\nconnections=10\nrooms=1\nmembers_per_room=8\n",
            "t",
        )
        .expect("valid");
        let hist = new_hist();
        let all = build(input(&scenario, &hist));
        assert!(!all.notes.iter().any(|n| n.contains("planned connections")));
        let mut cut = input(&scenario, &hist);
        cut.conns.attempted = 8;
        cut.conns.ready = 7;
        let s = build(cut);
        let note = s
            .notes
            .iter()
            .find(|n| n.contains("planned connections"))
            .expect("noted");
        assert!(note.starts_with("only 8 of the 10 planned connections were attempted (7 ready)"));
    }

    #[test]
    fn the_send_path_figures_are_there_only_when_a_sender_rode_the_pacer() {
        let scenario = Scenario::parse("name='t'\nconnections=10\n", "t").expect("valid");
        let hist = new_hist();
        let mut none = input(&scenario, &hist);
        none.conns.pacer_send_held = 3;
        let c = build(none).connections;
        assert_eq!((c.pacer_senders, c.pacer_send_held), (None, None));
        let mut some = input(&scenario, &hist);
        some.conns.pacer_senders = 4;
        let c = build(some).connections;
        assert_eq!(
            (c.pacer_senders, c.pacer_send_held),
            (Some(4), Some(0)),
            "a held count of 0 is a figure too"
        );
    }

    fn waited(at_s: f64, run_delay_seconds: Option<f64>) -> ProcSample {
        ProcSample {
            at: std::time::Duration::from_secs_f64(at_s),
            rss_bytes: 0,
            rss_anon_bytes: 0,
            cpu_seconds: 0.0,
            threads: 2,
            open_fds: 1,
            run_delay_seconds,
        }
    }

    #[test]
    fn run_queue_wait_is_the_difference_over_the_window() {
        let w = run_queue_wait(&waited(1.0, Some(0.5)), &waited(11.0, Some(0.6)), 10.0)
            .expect("both readings have it");
        assert!((w.seconds - 0.1).abs() < 1e-9, "{w:?}");
        assert!((w.share - 0.01).abs() < 1e-9, "{w:?}");
        // A thread that exited took its wait along: never a negative wait.
        let w = run_queue_wait(&waited(1.0, Some(0.5)), &waited(11.0, Some(0.2)), 10.0)
            .expect("clamped");
        assert_eq!((w.seconds, w.share), (0.0, 0.0));
        // Unreadable at either edge, or no time between: nothing.
        assert!(run_queue_wait(&waited(1.0, None), &waited(11.0, Some(0.6)), 10.0).is_none());
        assert!(run_queue_wait(&waited(1.0, Some(0.5)), &waited(11.0, None), 10.0).is_none());
        assert!(run_queue_wait(&waited(1.0, Some(0.5)), &waited(1.0, Some(0.6)), 0.0).is_none());
    }
}
