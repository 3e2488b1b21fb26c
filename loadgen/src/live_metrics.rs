//! `run --metrics-listen ADDR`: the run's per-second figures as a live Prometheus text
//! endpoint (`GET /metrics`), for a Grafana/Prometheus user watching a long run.
//!
//! [`LiveMetrics`] holds the text of the last second, rendered once a second by the run's
//! clock from the same rows `timeseries.csv` gets (each metric of `model::series` as a gauge
//! `chatbench_run_<metric>`, labelled with the phase) plus the run's running totals as
//! counters. [`serve`] is one small HTTP/1.1 handler, bounded everywhere: at most
//! [`MAX_CONNS`] connections at once (one more is closed at once), a request head of at most
//! [`MAX_REQUEST`] bytes read within [`READ_TIMEOUT`], one response per connection, then close.
//! It reads nothing but the request line; it never blocks the run (the text is swapped under a
//! mutex held for a copy).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatbench_model::results::SeriesRow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections served at once; more are closed without a response.
pub const MAX_CONNS: usize = 4;
/// The largest request head read.
pub const MAX_REQUEST: usize = 4096;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The metrics of the last second, as Prometheus text.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    text: Mutex<String>,
}

/// A run's running totals, exported as counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Messages sent.
    pub sent: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Seconds since the run started.
    pub t_s: f64,
}

impl LiveMetrics {
    /// A new, empty endpoint state (`/metrics` says the run has not ticked yet).
    pub fn new() -> Arc<LiveMetrics> {
        Arc::new(LiveMetrics::default())
    }

    /// Replaces the text with this second's `rows` (one second's rows of the time series) and
    /// the run's `totals`.
    pub fn update(&self, rows: &[SeriesRow], totals: Totals) {
        let text = render(rows, totals);
        if let Ok(mut t) = self.text.lock() {
            *t = text;
        }
    }

    /// The current text.
    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Prometheus text exposition (format 0.0.4) of one second.
fn render(rows: &[SeriesRow], totals: Totals) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let counters = [
        (
            "messages_sent_total",
            "Messages sent since the run started.",
            totals.sent as f64,
        ),
        (
            "messages_delivered_total",
            "Deliveries since the run started.",
            totals.delivered as f64,
        ),
        (
            "elapsed_seconds",
            "Seconds since the run started.",
            totals.t_s,
        ),
    ];
    for (name, help, v) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            o,
            "# HELP chatbench_run_{name} {help}\n# TYPE chatbench_run_{name} {kind}\nchatbench_run_{name} {v}"
        );
    }
    for r in rows {
        // Metric names come from `model::series` (lower-case letters and `_`); anything else
        // is left out rather than emitted as invalid exposition text.
        if !r
            .metric
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            continue;
        }
        let phase: String = r
            .phase
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let _ = writeln!(
            o,
            "# TYPE chatbench_run_{m} gauge\nchatbench_run_{m}{{phase=\"{phase}\"}} {v}",
            m = r.metric,
            v = r.value
        );
    }
    o
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, live: Arc<LiveMetrics>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream, &live)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, live: &LiveMetrics) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let head_end = loop {
        if n == buf.len() {
            break None;
        }
        let read = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf[n..])).await;
        match read {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(k)) => n += k,
            Ok(Err(e)) => return Err(e),
        }
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
    };
    let (status, body) = match head_end {
        None => ("431 Request Header Fields Too Large", String::new()),
        Some(end) => route(&buf[..end], live),
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The status and body for a request head.
fn route(head: &[u8], live: &LiveMetrics) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match (method, path) {
        (b"GET", b"/metrics") => {
            let text = live.text();
            if text.is_empty() {
                (
                    "200 OK",
                    "# the run has not completed its first second yet\n".into(),
                )
            } else {
                ("200 OK", text)
            }
        }
        (b"GET", _) => ("404 Not Found", "only /metrics is served here\n".into()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, value: f64) -> SeriesRow {
        SeriesRow {
            t_s: 3.0,
            phase: "measure".into(),
            metric: metric.into(),
            value,
        }
    }

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A refused connection may be reset: what was read, if anything, is the answer.
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn text_is_prometheus_exposition_of_the_second() {
        let live = LiveMetrics::new();
        live.update(
            &[row("sent_per_s", 100.0), row("bad name{}", 1.0)],
            Totals {
                sent: 500,
                delivered: 9500,
                t_s: 5.0,
            },
        );
        let t = live.text();
        assert!(
            t.contains("chatbench_run_sent_per_s{phase=\"measure\"} 100\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE chatbench_run_messages_sent_total counter\nchatbench_run_messages_sent_total 500\n"), "{t}");
        assert!(!t.contains("bad name"), "invalid names are left out: {t}");
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_everything_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let live = LiveMetrics::new();
        let task = tokio::spawn(serve(listener, live.clone()));
        let first = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            first.starts_with("HTTP/1.1 200 OK")
                && first.contains("not completed its first second"),
            "{first}"
        );
        live.update(&[row("delivered_per_s", 42.0)], Totals::default());
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            ok.contains("version=0.0.4")
                && ok.contains("chatbench_run_delivered_per_s{phase=\"measure\"} 42"),
            "{ok}"
        );
        assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        let huge = vec![b'a'; MAX_REQUEST + 10];
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // The server answers once it has read its limit; the rest may be refused by a reset.
        let _ = s.write_all(&huge).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
            "{out:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_a_silent_client_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(serve(listener, LiveMetrics::new()));
        // MAX_CONNS silent clients hold every permit.
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNS {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            refused.is_empty(),
            "over the cap: closed unanswered: {refused}"
        );
        // The silent ones are cut after READ_TIMEOUT, and the endpoint answers again.
        tokio::time::sleep(READ_TIMEOUT + Duration::from_millis(300)).await;
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        drop(silent);
        task.abort();
    }
}
