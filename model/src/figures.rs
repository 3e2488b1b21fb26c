//! The figure catalogue: every headline figure of a run, once — its stable key, label, unit,
//! which way is better, how to read it from a [`Summary`] (typed) and how to show it. The
//! comparison table, `chatbench report A B`, the run gates (`gate --current`, `gate
//! statistical`) and the terminal summary read their figures from here, so a figure already in
//! `summary.json` joins them by one entry in [`CATALOGUE`].
//!
//! The keys are a contract: baseline files name the gated figures by key, and user-written
//! thresholds (`thresholds`) and claims will too. They are documented in `docs/figures.md`; never rename one.

use serde::{Deserialize, Serialize};

use crate::results::Summary;

/// Whether smaller or larger values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Costs: instructions, allocations, latency, CPU.
    Lower,
    /// Throughput.
    Higher,
}

/// How a figure is shown to people: `value / divisor` with `digits` decimals, then the unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Show {
    /// From the figure's [`Figure::unit`] to the unit shown (µs → ms: 1000).
    pub divisor: f64,
    /// Unit shown after the number; empty for a plain count.
    pub unit: &'static str,
    /// Decimals.
    pub digits: usize,
}

impl Show {
    /// `1.234 ms`, `12 /s`, `7` (a shown value, already scaled).
    pub fn format(&self, shown: f64) -> String {
        let d = self.digits;
        if self.unit.is_empty() {
            format!("{shown:.d$}")
        } else {
            format!("{shown:.d$} {}", self.unit)
        }
    }
}

/// Which run of a comparison suite the table reads a figure from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    /// The idle step (connections held, no messages).
    Idle,
    /// The step under load (broadcast).
    Load,
}

/// A figure's row in the comparison table (`comparison.json` keeps `key` and `unit`).
#[derive(Debug, Clone, Copy)]
pub struct TableRow {
    /// Row key in `comparison.json`, e.g. `latency_p99_ms` (stable: older tables use it).
    pub key: &'static str,
    /// The question, as the table shows it.
    pub question: &'static str,
    /// Unit of the cells' values: the shown unit, or what a count counts.
    pub unit: &'static str,
    /// Which run the cells come from.
    pub under: Under,
    /// Why a usable run has no value, e.g. "not sampled".
    pub missing: &'static str,
    /// Cell text other than the shown figure (given the summary and the shown text), e.g.
    /// "3 of 10"; `None`: the shown figure.
    pub text: Option<fn(&Summary, String) -> String>,
    /// Whether a repeated step's cell shows the figure's median over the repeats with its
    /// 95 % interval and coefficient of variation (report's `repeats`), rather than the one
    /// run that stands for the step.
    pub spread: bool,
}

/// One headline figure.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Stable key (`docs/figures.md`), e.g. `p99_latency`.
    pub key: &'static str,
    /// Short label, e.g. "latency p99" (`report A B`).
    pub label: &'static str,
    /// Unit of [`Figure::read`]'s value, e.g. `µs` (the gates compare in it).
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// The value in [`Figure::unit`], `None` when the run has none (not sampled, no deliveries).
    pub read: fn(&Summary) -> Option<f64>,
    /// Where `read` finds it in `summary.json`, for messages and docs (e.g. `latency_us.p99`).
    pub source: &'static str,
    /// How people see it.
    pub show: Show,
    /// Its row in the comparison table, if it has one.
    pub table: Option<TableRow>,
    /// Whether the run gates judge it.
    pub gated: bool,
}

impl Figure {
    /// The value as shown (read / divisor).
    pub fn shown(&self, s: &Summary) -> Option<f64> {
        (self.read)(s).map(|v| v / self.show.divisor)
    }

    /// The value as people read it (`1.234 ms`), or `—` when there is none.
    pub fn text(&self, s: &Summary) -> String {
        self.shown(s)
            .map(|v| self.show.format(v))
            .unwrap_or_else(|| "—".into())
    }
}

const MS: Show = Show {
    divisor: 1000.0,
    unit: "ms",
    digits: 3,
};
const KIB: Show = Show {
    divisor: 1024.0,
    unit: "KiB",
    digits: 2,
};
const COUNT: Show = Show {
    divisor: 1.0,
    unit: "",
    digits: 0,
};
const PER_S: Show = Show {
    divisor: 1.0,
    unit: "/s",
    digits: 0,
};
const CORES: Show = Show {
    divisor: 1.0,
    unit: "cores",
    digits: 2,
};

fn latency(s: &Summary, pick: fn(&crate::results::Percentiles) -> u64) -> Option<f64> {
    s.latency_us.as_ref().map(|l| pick(l) as f64)
}

const fn latency_row(key: &'static str, question: &'static str) -> Option<TableRow> {
    Some(TableRow {
        key,
        question,
        unit: "ms",
        under: Under::Load,
        missing: "no deliveries",
        text: None,
        spread: true,
    })
}

const fn memory_row(
    key: &'static str,
    question: &'static str,
    text: Option<fn(&Summary, String) -> String>,
) -> Option<TableRow> {
    Some(TableRow {
        key,
        question,
        unit: "KiB",
        under: Under::Idle,
        missing: "not sampled",
        text,
        spread: false,
    })
}

const fn load_row(
    key: &'static str,
    question: &'static str,
    unit: &'static str,
) -> Option<TableRow> {
    Some(TableRow {
        key,
        question,
        unit,
        under: Under::Load,
        missing: "not sampled",
        text: None,
        spread: true,
    })
}

/// Every headline figure, in the order `report A B` lists them (the table keeps this order
/// for the figures it shows; the gates too for the gated ones).
pub const CATALOGUE: &[Figure] = &[
    Figure {
        key: "connections_ready",
        label: "connections ready",
        unit: "connections",
        better: Better::Higher,
        read: |s| Some(s.connections.ready as f64),
        source: "connections.ready",
        show: COUNT,
        table: Some(TableRow {
            key: "connections_held",
            question: "Connections held (not a capacity probe in this suite)",
            unit: "connections",
            under: Under::Idle,
            missing: "not measured",
            text: Some(|s, _| {
                let c = &s.connections;
                let errs: u64 = c.errors.values().sum();
                format!("{} of {} ({} errors)", c.ready, c.planned, errs)
            }),
            spread: false,
        }),
        gated: false,
    },
    Figure {
        key: "open_rate_per_s",
        label: "open rate",
        unit: "/s",
        better: Better::Higher,
        read: |s| Some(s.connections.open_rate_per_s),
        source: "connections.open_rate_per_s",
        show: PER_S,
        table: None,
        gated: false,
    },
    Figure {
        key: "memory_user_per_conn",
        label: "memory per connection, user space",
        unit: "bytes",
        better: Better::Lower,
        read: |s| {
            s.target_resources
                .memory_per_conn
                .as_ref()
                .map(|m| m.user_bytes_per_conn)
        },
        source: "target_resources.memory_per_conn.user_bytes_per_conn",
        show: KIB,
        table: memory_row("memory_user_kib", "Memory per connection, user space", None),
        gated: false,
    },
    Figure {
        key: "memory_kernel_per_conn",
        label: "memory per connection, kernel",
        unit: "bytes",
        better: Better::Lower,
        read: |s| {
            s.target_resources
                .memory_per_conn
                .as_ref()
                .map(|m| m.kernel_slab_bytes_per_conn)
        },
        source: "target_resources.memory_per_conn.kernel_slab_bytes_per_conn",
        show: KIB,
        table: memory_row(
            "memory_kernel_kib",
            "Memory per connection, kernel (slab, both loopback sockets)",
            Some(|s, shown| {
                // Other socket activity, or a slab that shrank (a negative figure): the
                // same rule as report's caveats.
                let unreliable = s
                    .target_resources
                    .memory_per_conn
                    .as_ref()
                    .is_some_and(|m| {
                        !m.sockets_as_expected
                            || (m.kernel_slab_bytes_per_conn < 0.0 && m.connections > 0)
                    });
                if unreliable {
                    format!("{shown} (unreliable: other socket activity)")
                } else {
                    shown
                }
            }),
        ),
        gated: false,
    },
    Figure {
        key: "p50_latency",
        label: "latency p50",
        unit: "µs",
        better: Better::Lower,
        read: |s| latency(s, |l| l.p50),
        source: "latency_us.p50",
        show: MS,
        table: latency_row("latency_p50_ms", "Delivery latency p50"),
        gated: false,
    },
    Figure {
        key: "p99_latency",
        label: "latency p99",
        unit: "µs",
        better: Better::Lower,
        read: |s| latency(s, |l| l.p99),
        source: "latency_us.p99",
        show: MS,
        table: latency_row("latency_p99_ms", "Delivery latency p99"),
        gated: true,
    },
    Figure {
        key: "p999_latency",
        label: "latency p99.9",
        unit: "µs",
        better: Better::Lower,
        read: |s| latency(s, |l| l.p999),
        source: "latency_us.p999",
        show: MS,
        table: latency_row("latency_p999_ms", "Delivery latency p99.9"),
        gated: false,
    },
    Figure {
        key: "deliveries_per_s",
        label: "deliveries/s",
        unit: "/s",
        better: Better::Higher,
        read: |s| Some(s.messages.delivered_per_s),
        source: "messages.delivered_per_s",
        show: PER_S,
        table: load_row(
            "deliveries_per_s",
            "Deliveries per second at that load",
            "deliveries/s",
        ),
        gated: true,
    },
    Figure {
        key: "messages_lost",
        label: "messages lost",
        unit: "messages",
        better: Better::Lower,
        read: |s| Some(s.messages.lost as f64),
        source: "messages.lost",
        show: COUNT,
        table: Some(TableRow {
            key: "loss",
            question: "Messages lost at that load",
            unit: "messages",
            under: Under::Load,
            missing: "not measured",
            text: Some(|s, _| format!("{} of {}", s.messages.lost, s.messages.expected)),
            spread: false,
        }),
        gated: false,
    },
    Figure {
        key: "loss_ratio",
        label: "loss ratio",
        unit: "ratio",
        better: Better::Lower,
        read: |s| (s.messages.expected > 0).then_some(s.messages.loss_ratio),
        source: "messages.loss_ratio",
        show: Show {
            divisor: 1.0,
            unit: "",
            digits: 4,
        },
        table: None,
        gated: false,
    },
    Figure {
        key: "connection_errors",
        label: "connection errors",
        unit: "connections",
        better: Better::Lower,
        read: |s| Some(s.connections.errors.values().sum::<u64>() as f64),
        source: "connections.errors (sum over kinds)",
        show: COUNT,
        table: None,
        gated: false,
    },
    Figure {
        key: "closed_by_server",
        label: "closed by server",
        unit: "connections",
        better: Better::Lower,
        read: |s| Some(s.connections.closed_by_server.values().sum::<u64>() as f64),
        source: "connections.closed_by_server (sum over close codes)",
        show: COUNT,
        table: None,
        gated: false,
    },
    Figure {
        key: "reconnect_p99",
        label: "time to reconnect p99",
        unit: "µs",
        better: Better::Lower,
        read: |s| {
            s.connections
                .reconnect
                .as_ref()
                .and_then(|r| r.time_us.as_ref())
                .map(|p| p.p99 as f64)
        },
        source: "connections.reconnect.time_us.p99",
        show: MS,
        table: None,
        gated: false,
    },
    Figure {
        key: "echoes",
        label: "echoes",
        unit: "messages",
        better: Better::Lower,
        read: |s| Some(s.messages.echoes as f64),
        source: "messages.echoes",
        show: COUNT,
        table: None,
        gated: false,
    },
    Figure {
        key: "server_cpu_cores",
        label: "server CPU",
        unit: "cores",
        better: Better::Lower,
        read: |s| s.target_resources.cpu_cores_measure,
        source: "target_resources.cpu_cores_measure",
        show: CORES,
        table: load_row("cpu_cores", "Server CPU at that load", "cores"),
        gated: false,
    },
    Figure {
        key: "cpu_us_per_delivery",
        label: "server CPU per delivery",
        unit: "µs",
        better: Better::Lower,
        read: |s| s.target_resources.cpu_us_per_delivery,
        source: "target_resources.cpu_us_per_delivery",
        show: Show {
            divisor: 1.0,
            unit: "µs",
            digits: 2,
        },
        table: load_row(
            "cpu_us_per_delivery",
            "Server CPU per delivered message",
            "µs",
        ),
        gated: true,
    },
    Figure {
        key: "server_run_queue_wait",
        label: "server's wait for a CPU",
        unit: "ms/s",
        better: Better::Lower,
        read: |s| s.target_resources.run_queue_wait.map(|w| w.ms_per_s()),
        source: "target_resources.run_queue_wait.share",
        show: Show {
            divisor: 1.0,
            unit: "ms/s",
            digits: 2,
        },
        table: None,
        gated: false,
    },
    Figure {
        key: "generator_cpu_cores",
        label: "generator CPU",
        unit: "cores",
        better: Better::Lower,
        read: |s| s.generator.cpu_cores_measure,
        source: "generator.cpu_cores_measure",
        show: CORES,
        table: None,
        gated: false,
    },
    Figure {
        key: "send_lag_p99",
        label: "send lag p99 (the generator's)",
        unit: "µs",
        better: Better::Lower,
        read: |s| s.generator.send_lag_us.as_ref().map(|p| p.p99 as f64),
        source: "generator.send_lag_us.p99",
        show: MS,
        table: None,
        gated: false,
    },
    Figure {
        key: "receive_lag_p99",
        label: "receive lag p99 (the generator's)",
        unit: "µs",
        better: Better::Lower,
        read: |s| s.generator.receive_lag_us.as_ref().map(|p| p.p99 as f64),
        source: "generator.receive_lag_us.p99",
        show: MS,
        table: None,
        gated: false,
    },
    Figure {
        key: "fault_others_lost",
        label: "other connections lost to one crashing handler",
        unit: "connections",
        better: Better::Lower,
        read: |s| s.fault.as_ref().map(|f| f.others_lost as f64),
        source: "fault.others_lost",
        show: COUNT,
        table: None,
        gated: false,
    },
    Figure {
        key: "node_loss_lost",
        label: "messages lost to one node's loss",
        unit: "messages",
        better: Better::Lower,
        read: |s| s.failover.as_ref().map(|f| f.during.lost as f64),
        source: "failover.during.lost",
        show: COUNT,
        table: None,
        gated: false,
    },
];

/// Figures whose comparison-table row the comparison builds itself (from the step's
/// outcome rather than one catalogue row): (figure key, row key in `comparison.json`, unit of
/// the row's cells). With the catalogue's own `table` rows, this says where each figure's
/// cells are, for claims ([`row_of`]).
const ROWS_BUILT_BY_THE_COMPARISON: &[(&str, &str, &str)] = &[
    ("fault_others_lost", "fault_blast_radius", "connections"),
    ("node_loss_lost", "node_loss_messages_lost", "messages"),
];

/// The comparison-table row that holds `fig`'s cells, and the unit of their values (the
/// shown unit: ms for latency), if the table shows it.
pub fn row_of(fig: &Figure) -> Option<(&'static str, &'static str)> {
    fig.table.as_ref().map(|t| (t.key, t.unit)).or_else(|| {
        ROWS_BUILT_BY_THE_COMPARISON
            .iter()
            .find(|(k, _, _)| *k == fig.key)
            .map(|(_, row, unit)| (*row, *unit))
    })
}

/// A catalogue figure that is a sum over kinds (`connections.errors` by label,
/// `connections.closed_by_server` by close code), read for one kind: a threshold may name one,
/// `connection_errors.refused` or `closed_by_server.4401`. A kind the run never saw reads 0; a
/// kind that no run can record is refused when the threshold is read, so a typo cannot pass.
#[derive(Debug, Clone, Copy)]
pub struct ByKind {
    /// The catalogue figure it splits (its unit and shown form are this one's).
    pub key: &'static str,
    /// The count for one kind.
    pub read: fn(&Summary, &str) -> f64,
    /// Whether a run can record this kind.
    pub known: fn(&str) -> bool,
    /// The kinds, for messages and docs.
    pub kinds: &'static str,
}

/// Connection-error labels the generator records (`connections.errors`), besides
/// `handshake_status_NNN` and `tls_cert_*`. The load generator's tests check that every label
/// it can produce is known here.
pub const CONNECT_ERROR_LABELS: &[&str] = &[
    "refused",
    "timeout",
    "reset",
    "addr_unavailable",
    "io",
    "handshake",
    "subprotocol_refused",
    "too_late",
    "tls_alert",
    "tls_handshake",
    "tls_server_name",
];

/// Whether the generator can record `label` as a connection error.
pub fn connect_error_label_known(label: &str) -> bool {
    let digits = |t: &str| t.len() == 3 && t.bytes().all(|b| b.is_ascii_digit());
    CONNECT_ERROR_LABELS.contains(&label)
        || label.strip_prefix("handshake_status_").is_some_and(digits)
        || label.strip_prefix("tls_cert_").is_some_and(|t| {
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

/// Whether `kind` is something `connections.closed_by_server` counts: a WebSocket close code
/// (1000–4999), `none` (a close frame without a code) or `reset` (closed without a frame).
pub fn close_kind_known(kind: &str) -> bool {
    matches!(kind, "none" | "reset")
        || kind
            .parse::<u16>()
            .is_ok_and(|c| (1000..=4999).contains(&c) && !kind.starts_with('0'))
}

/// The figures a threshold may split by kind.
pub const BY_KIND: &[ByKind] = &[
    ByKind {
        key: "connection_errors",
        read: |s, k| s.connections.errors.get(k).copied().unwrap_or(0) as f64,
        known: connect_error_label_known,
        kinds: "refused, timeout, reset, addr_unavailable, io, handshake, subprotocol_refused, too_late, handshake_status_NNN (e.g. handshake_status_503), tls_alert, tls_handshake, tls_server_name, tls_cert_* (e.g. tls_cert_unknown_issuer)",
    },
    ByKind {
        key: "closed_by_server",
        read: |s, k| s.connections.closed_by_server.get(k).copied().unwrap_or(0) as f64,
        known: close_kind_known,
        kinds: "a close code 1000–4999 (e.g. 4401), none (a close frame without a code) or reset (no close frame)",
    },
];

/// The split of the figure `key` by kind, if it has one.
pub fn by_kind(key: &str) -> Option<&'static ByKind> {
    BY_KIND.iter().find(|b| b.key == key)
}

/// The figure with `key`, if there is one.
pub fn by_key(key: &str) -> Option<&'static Figure> {
    CATALOGUE.iter().find(|f| f.key == key)
}

/// The figures the run gates judge, in catalogue order.
pub fn gated() -> impl Iterator<Item = &'static Figure> {
    CATALOGUE.iter().filter(|f| f.gated)
}

/// The figures with a row in the comparison table, in table order.
pub fn table() -> impl Iterator<Item = (&'static Figure, &'static TableRow)> {
    CATALOGUE
        .iter()
        .filter_map(|f| f.table.as_ref().map(|t| (f, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_split_figures_of_the_catalogue_and_reject_what_no_run_records() {
        for b in BY_KIND {
            assert!(by_key(b.key).is_some(), "{} is not in the catalogue", b.key);
        }
        let errors = by_kind("connection_errors").expect("split");
        for ok in [
            "refused",
            "handshake_status_503",
            "tls_cert_unknown_issuer",
            "too_late",
        ] {
            assert!((errors.known)(ok), "{ok}");
        }
        for bad in [
            "refusd",
            "handshake_status_5x3",
            "handshake_status_",
            "tls_cert_",
            "4401",
        ] {
            assert!(!(errors.known)(bad), "{bad}");
        }
        let closes = by_kind("closed_by_server").expect("split");
        for ok in ["1000", "4401", "4999", "none", "reset"] {
            assert!((closes.known)(ok), "{ok}");
        }
        for bad in ["999", "5000", "04401", "refused", ""] {
            assert!(!(closes.known)(bad), "{bad}");
        }
        assert!(by_kind("p99_latency").is_none());
    }

    #[test]
    fn keys_are_unique_and_snake_case() {
        let mut keys: Vec<&str> = CATALOGUE.iter().map(|f| f.key).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "duplicate key");
        for k in keys {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{k}"
            );
        }
        let rows: Vec<&str> = table().map(|(_, t)| t.key).collect();
        let mut sorted = rows.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), rows.len(), "duplicate table row key");
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/figures.md");
        for f in CATALOGUE {
            assert!(
                doc.contains(&format!("`{}`", f.key)),
                "docs/figures.md lacks {}",
                f.key
            );
        }
    }

    #[test]
    fn the_gated_figures_keep_their_baseline_names() {
        // Baseline files name these; they stay gated, in this order, in these units.
        let gated: Vec<&str> = gated().map(|f| f.key).collect();
        let named = ["p99_latency", "deliveries_per_s", "cpu_us_per_delivery"];
        let positions: Vec<usize> = named
            .iter()
            .filter_map(|k| gated.iter().position(|g| g == k))
            .collect();
        assert_eq!(positions.len(), named.len(), "{gated:?}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{gated:?}");
        assert_eq!(by_key("p99_latency").map(|f| f.unit), Some("µs"));
        assert_eq!(by_key("deliveries_per_s").map(|f| f.unit), Some("/s"));
        assert_eq!(by_key("cpu_us_per_delivery").map(|f| f.unit), Some("µs"));
    }

    #[test]
    fn every_figure_built_by_the_comparison_is_catalogued_without_a_table_row() {
        for (key, row, _) in ROWS_BUILT_BY_THE_COMPARISON {
            let f = by_key(key).unwrap_or_else(|| panic!("{key} is not catalogued"));
            assert!(f.table.is_none(), "{key} has a catalogue row too");
            assert_eq!(row_of(f).map(|r| r.0), Some(*row));
        }
        assert_eq!(
            by_key("p99_latency").and_then(row_of),
            Some(("latency_p99_ms", "ms"))
        );
        assert_eq!(by_key("generator_cpu_cores").and_then(row_of), None);
    }

    #[test]
    fn shows_with_unit_and_digits() {
        assert_eq!(MS.format(1.23456), "1.235 ms");
        assert_eq!(COUNT.format(7.0), "7");
        assert_eq!(PER_S.format(12.4), "12 /s");
    }
}
