//! The time series' metric names (`timeseries.csv`, column `metric`): one constant per name,
//! shared by the writers (the load generator's one-process run and its coordinator) and the
//! readers (the report's timeline charts), so a renamed metric cannot leave a reader behind.
//! Rows are one per metric per second; see `docs/summary.schema.json` for the file itself.

/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "connections_open";
/// Connection attempts so far.
pub const CONNECT_ATTEMPTS: &str = "connect_attempts";
/// Connect errors so far.
pub const CONNECT_ERRORS: &str = "connect_errors";
/// Connections the server closed so far.
pub const CLOSED_BY_SERVER: &str = "closed_by_server";
/// Messages sent in the last second, per second.
pub const SENT_PER_S: &str = "sent_per_s";
/// Deliveries in the last second, per second.
pub const DELIVERED_PER_S: &str = "delivered_per_s";
/// Deliveries whose latency was recorded in the last second.
pub const LATENCY_COUNT: &str = "latency_count";
/// Connections lost mid-run so far (reconnecting runs).
pub const CONNECTIONS_LOST: &str = "connections_lost";
/// Reconnects so far (reconnecting runs).
pub const RECONNECTS: &str = "reconnects";
/// Connections that gave up reconnecting so far (reconnecting runs).
pub const RECONNECT_FAILURES: &str = "reconnect_failures";
/// Delivery latency p50 over the last second, µs.
pub const LATENCY_P50_US: &str = "latency_p50_us";
/// Delivery latency p99 over the last second, µs.
pub const LATENCY_P99_US: &str = "latency_p99_us";
/// Delivery latency maximum over the last second, µs.
pub const LATENCY_MAX_US: &str = "latency_max_us";
/// The target's resident memory, bytes.
pub const TARGET_RSS_BYTES: &str = "target_rss_bytes";
/// The target's CPU over the last second, cores.
pub const TARGET_CPU_CORES: &str = "target_cpu_cores";
/// The target's threads' wait for a CPU over the last second, milliseconds per second (a
/// one-process run's server: `/proc/PID/task/*/schedstat`).
pub const TARGET_RUN_QUEUE_WAIT_MS_PER_S: &str = "target_run_queue_wait_ms_per_s";
/// The target's threads.
pub const TARGET_THREADS: &str = "target_threads";
/// The target's open descriptors.
pub const TARGET_OPEN_FDS: &str = "target_open_fds";
/// The host's slab memory, bytes.
pub const HOST_SLAB_BYTES: &str = "host_slab_bytes";
/// The host's TCP sockets in use.
pub const HOST_TCP_INUSE: &str = "host_tcp_inuse";
/// The generator's resident memory (all agents), bytes.
pub const GENERATOR_RSS_BYTES: &str = "generator_rss_bytes";
/// The generator's CPU over the last second (all agents), cores.
pub const GENERATOR_CPU_CORES: &str = "generator_cpu_cores";
/// Agents still connected (a run over agents).
pub const AGENTS_LIVE: &str = "agents_live";
