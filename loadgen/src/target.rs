//! The target: a `ws://` or `wss://host:port/path` URL resolved once, and how one client
//! connects to it (TCP from a chosen source address, the TLS handshake for `wss://`, then the
//! WebSocket handshake with small buffers).
//!
//! The transport is a type parameter ([`Transport`]): the engine runs `ws://` connections on a
//! bare `TcpStream` and `wss://` ones on a rustls stream, each monomorphised, so a plain
//! connection pays nothing per message (nor a byte of memory) for TLS existing. The TLS
//! handshake counts in the connect time.
//!
//! Connection failures are classified into the kinds the results report (`refused`,
//! `timeout`, `handshake_status_NNN`, …) so that a user can tell an overloaded server from a
//! wrong URL at a glance.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::tls::{TlsClient, TlsError, TlsFailure};
use chatbench_model::placeholder::{PlaceholderError, SessionTemplate};
use chatbench_model::profile::SessionRequest;
use chatbench_model::scenario::{ClientSettings, Scenario};

/// Errors about the target URL itself.
#[derive(Debug, Error)]
pub enum TargetError {
    /// Not a `ws://` or `wss://` URL.
    #[error(
        "target {url:?}: {problem} (expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH, e.g. ws://127.0.0.1:8080/ws)"
    )]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The host name did not resolve.
    #[error("target {url:?}: cannot resolve {host:?}: {source}")]
    Resolve {
        /// The URL.
        url: String,
        /// The host part.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Nothing accepts TCP connections there.
    #[error("target {url:?} ({addr}) is unreachable: {source}; is the server running and listening on that address? (chatbench serve --listen {addr})")]
    Unreachable {
        /// The URL.
        url: String,
        /// The resolved address.
        addr: SocketAddr,
        /// The connect error.
        source: std::io::Error,
    },
    /// The TLS client could not be configured (`ca_file`).
    #[error("target {url:?}: {source}")]
    TlsConfig {
        /// The URL.
        url: String,
        /// What is wrong.
        source: TlsError,
    },
    /// The TLS handshake failed (an untrusted certificate, most often).
    #[error("target {url:?}: TLS handshake failed ({label}): {detail}{hint}")]
    Tls {
        /// The URL.
        url: String,
        /// The connect-error label.
        label: &'static str,
        /// rustls's description.
        detail: String,
        /// How to fix it, when it is about the certificate.
        hint: &'static str,
    },
    /// A placeholder in the URL's path or query is wrong.
    #[error("target {url:?}: {source}")]
    Placeholder {
        /// The URL.
        url: String,
        /// What is wrong.
        source: PlaceholderError,
    },
}

const CERT_HINT: &str = "; if the server's certificate comes from a private CA, pass --ca-file \
    CA.pem ([client] ca_file), or --insecure to skip verification (testing only)";

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The resolved socket address.
    pub addr: SocketAddr,
    /// The request path (and query), e.g. `/ws`.
    pub path: String,
    /// The `Host` header value (`host:port` as given).
    pub host_header: String,
    /// The host as written, without brackets: the TLS server name.
    pub host: String,
    /// `wss://`: TLS.
    pub tls: bool,
}

impl Target {
    /// Parses and resolves a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let bad = |problem: &str| TargetError::BadUrl {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let (rest, tls) = if let Some(r) = url.strip_prefix("ws://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (r, true)
        } else {
            return Err(bad("the scheme must be ws:// or wss://"));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            _ => (
                authority.trim_start_matches('[').trim_end_matches(']'),
                if tls { 443 } else { 80 },
            ),
        };
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                url: url.to_string(),
                host: host.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| bad("the host resolved to no address"))?;
        let path = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_string(),
        };
        Ok(Target {
            url: url.to_string(),
            addr,
            path,
            host_header: authority.to_string(),
            host: host.to_string(),
            tls,
        })
    }

    /// The scheme, as written in URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "wss"
        } else {
            "ws"
        }
    }

    /// Whether the target is on this machine's loopback (then clients spread over 127.x
    /// source addresses).
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }

    /// Fails fast with a clear message before a run starts: the placeholders of the URL's
    /// path, one TCP connect, and for `wss://` one TLS handshake (an untrusted certificate is
    /// found here, not as a connect error per connection).
    pub async fn preflight(&self, scenario: &Scenario) -> Result<(), TargetError> {
        let timeout = scenario.connect_timeout;
        self.session_template(scenario)?;
        let unreachable = |source| TargetError::Unreachable {
            url: self.url.clone(),
            addr: self.addr,
            source,
        };
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => {
                return Err(unreachable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                )))
            }
        };
        let Some(tls) = self.tls_client(&scenario.client)? else {
            return Ok(());
        };
        let failed = |f: TlsFailure| TargetError::Tls {
            url: self.url.clone(),
            label: f.label,
            hint: if f.is_certificate() { CERT_HINT } else { "" },
            detail: f.detail,
        };
        match tokio::time::timeout(timeout, tls.handshake(&self.host, tcp)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(failed(f)),
            Err(_) => Err(failed(TlsFailure {
                label: "timeout",
                detail: format!("no TLS handshake within {timeout:?}"),
            })),
        }
    }

    /// The TLS client of this target (`None` for `ws://`), from `[client]`'s trust settings.
    pub fn tls_client(&self, client: &ClientSettings) -> Result<Option<TlsClient>, TargetError> {
        if !self.tls {
            return Ok(None);
        }
        TlsClient::new(client)
            .map(Some)
            .map_err(|source| TargetError::TlsConfig {
                url: self.url.clone(),
                source,
            })
    }

    /// The upgrade request of this target under `scenario`'s profile, its placeholders parsed
    /// against the feeder's columns.
    pub fn session_template(&self, scenario: &Scenario) -> Result<SessionTemplate, TargetError> {
        let request = scenario.session_profile().request(&self.path);
        let columns = scenario.feeder().map(|f| &f.columns[..]);
        SessionTemplate::new(&request, columns).map_err(|(_, source)| TargetError::Placeholder {
            url: self.url.clone(),
            source,
        })
    }
}

/// A connection's byte stream: a bare `TcpStream` (`ws://`) or rustls over it (`wss://`).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + Sized + 'static {
    /// Whether this is the TLS transport (for `wss://` targets).
    const TLS: bool;

    /// The TCP stream underneath.
    fn tcp(&self) -> &TcpStream;

    /// Turns a connected TCP stream into this transport (the TLS handshake, for TLS).
    fn open(
        tcp: TcpStream,
        target: &Target,
        tls: Option<&TlsClient>,
    ) -> impl Future<Output = Result<Self, ConnectError>> + Send;

    /// The HTTP handshake is done; `leftover` came after the response, and frames may carry
    /// up to `max_frame` bytes (the epoll path's tap starts following frames here).
    fn handshaken(&mut self, _leftover: &[u8], _max_frame: usize) {}
}

impl Transport for TcpStream {
    const TLS: bool = false;

    fn tcp(&self) -> &TcpStream {
        self
    }

    async fn open(
        tcp: TcpStream,
        _target: &Target,
        _tls: Option<&TlsClient>,
    ) -> Result<Self, ConnectError> {
        Ok(tcp)
    }
}

impl Transport for TlsStream<TcpStream> {
    const TLS: bool = true;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    async fn open(
        tcp: TcpStream,
        target: &Target,
        tls: Option<&TlsClient>,
    ) -> Result<Self, ConnectError> {
        let tls = tls.ok_or(ConnectError::Tls(TlsFailure {
            label: "tls_config",
            detail: "no TLS client configuration".into(),
        }))?;
        tls.handshake(&target.host, tcp)
            .await
            .map_err(ConnectError::Tls)
    }
}

/// The WebSocket configuration of every client (the design's pitfall: tungstenite's default
/// 128 KiB read buffer per connection).
pub fn ws_config(c: &ClientSettings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_size)
        .write_buffer_size(c.write_buffer_size)
        .max_write_buffer_size(c.max_write_buffer_size)
        .max_message_size(Some(c.max_message_size))
        .max_frame_size(Some(c.max_message_size))
}

/// Why one connection attempt failed; the label is what the results count.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// TCP connection refused.
    #[error("connection refused")]
    Refused,
    /// No answer in time (TCP or handshake).
    #[error("timed out")]
    Timeout,
    /// The server answered the upgrade with another HTTP status.
    #[error("handshake answered with HTTP {0}")]
    Status(u16),
    /// Reset by the peer during connect or handshake.
    #[error("connection reset")]
    Reset,
    /// No local address/port available (ephemeral ports exhausted).
    #[error("no local address or port available: {0}")]
    AddrUnavailable(String),
    /// Another I/O error.
    #[error("I/O error: {0}")]
    Io(String),
    /// Another WebSocket handshake error.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server did not accept the subprotocol the profile asked for.
    #[error("the server did not accept the requested Sec-WebSocket-Protocol")]
    Subprotocol,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {}", .0.detail)]
    Tls(TlsFailure),
}

impl ConnectError {
    /// The label under which the results count this error.
    pub fn label(&self) -> String {
        match self {
            ConnectError::Refused => "refused".into(),
            ConnectError::Timeout => "timeout".into(),
            ConnectError::Status(s) => format!("handshake_status_{s}"),
            ConnectError::Reset => "reset".into(),
            ConnectError::AddrUnavailable(_) => "addr_unavailable".into(),
            ConnectError::Io(_) => "io".into(),
            ConnectError::Handshake(_) => "handshake".into(),
            ConnectError::Subprotocol => "subprotocol_refused".into(),
            ConnectError::Tls(f) => f.label.into(),
        }
    }

    fn from_io(e: std::io::Error) -> ConnectError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ConnectError::Refused,
            K::TimedOut => ConnectError::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                ConnectError::Reset
            }
            K::AddrNotAvailable | K::AddrInUse => ConnectError::AddrUnavailable(e.to_string()),
            _ => ConnectError::Io(e.to_string()),
        }
    }
}

fn set_bind_address_no_port(socket: &TcpSocket) {
    // Best effort: without it the kernel picks the port at bind time, as it always did.
    let _ = crate::sys::set_socket_flag(
        socket,
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        true,
    );
}

/// Opens one WebSocket connection to `target` from `source` (port chosen by the kernel), with
/// the request a protocol profile asks for (path, subprotocol, headers), over transport `S`
/// (`tls` is used by the TLS transport).
pub async fn connect<S: Transport>(
    target: &Target,
    request: &SessionRequest,
    source: Option<IpAddr>,
    config: WebSocketConfig,
    tls: Option<&TlsClient>,
) -> Result<WebSocketStream<S>, ConnectError> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::from_io)?;
    if let Some(ip) = source {
        // Let connect() choose the port for the full 4-tuple, not bind(): bind(port 0) would
        // reserve a port per source address across all destinations (and only half the
        // ephemeral range on Linux), exhausting ports long before ~28k per destination.
        set_bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::from_io)?;
    }
    let tcp = socket
        .connect(target.addr)
        .await
        .map_err(ConnectError::from_io)?;
    let _ = tcp.set_nodelay(true);
    let mut stream = S::open(tcp, target, tls).await?;
    let leftover = handshake(&mut stream, target, request).await?;
    stream.handshaken(&leftover, config.max_frame_size.unwrap_or(usize::MAX));
    // Our own handshake instead of tungstenite's client handshake: the latter keeps its 4 KiB
    // handshake read buffer as the connection's read buffer for life (measured with massif),
    // whatever `read_buffer_size` says. The leftover bytes are copied into an exact-size
    // buffer, which tungstenite then grows to `read_buffer_size`.
    Ok(if leftover.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await
    })
}

/// Most `/metrics` bytes read, and most samples kept, from a target.
const MAX_METRICS_BYTES: usize = 1 << 20;
const MAX_METRICS_SAMPLES: usize = 512;

/// Reads the target's Prometheus `/metrics` (the reference servers serve it on the WebSocket
/// port) and returns its `chatbench_*` samples, keyed by `name{labels}`. `None` if the target
/// has no such endpoint or does not answer within `timeout`.
pub async fn scrape_metrics(
    target: &Target,
    timeout: Duration,
) -> Option<std::collections::BTreeMap<String, f64>> {
    if target.tls {
        // The reference servers serve /metrics in plain HTTP; a TLS target is someone else's.
        return None;
    }
    let fetch = async {
        let mut s = TcpStream::connect(target.addr).await.ok()?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.host_header
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        (&mut s)
            .take(MAX_METRICS_BYTES as u64)
            .read_to_end(&mut body)
            .await
            .ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(timeout, fetch).await.ok()??;
    let text = String::from_utf8_lossy(&body);
    let (head, payload) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(parse_prometheus(payload))
}

/// The sum, sample by sample, of several targets' `/metrics` (the nodes of a cluster, or
/// partitioned servers): counters add up, gauges (`chatbench_connections`, `chatbench_rooms`)
/// give the total over the processes, `chatbench_info` the number of processes; samples whose
/// labels differ (`node="2"`) stay apart. `None` when there is nothing to sum. At most 512
/// samples.
pub fn sum_metrics(
    all: impl IntoIterator<Item = std::collections::BTreeMap<String, f64>>,
) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut sum: Option<std::collections::BTreeMap<String, f64>> = None;
    for m in all {
        let acc = sum.get_or_insert_with(Default::default);
        for (k, v) in m {
            if acc.len() < MAX_METRICS_SAMPLES || acc.contains_key(&k) {
                *acc.entry(k).or_insert(0.0) += v;
            }
        }
    }
    sum
}

/// The `chatbench_*` samples of a Prometheus text exposition (at most 512).
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("chatbench_"))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse::<f64>().ok()?))
        })
        .take(MAX_METRICS_SAMPLES)
        .collect()
}

/// Longest HTTP response head accepted from a target.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// The client side of the RFC 6455 opening handshake; returns the bytes read past the head.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    session: &SessionRequest,
) -> Result<Vec<u8>, ConnectError> {
    use std::fmt::Write;
    let key = tungstenite::handshake::client::generate_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        session.path, target.host_header
    );
    if let Some(p) = &session.subprotocol {
        let _ = write!(request, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    for (name, value) in &session.headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ConnectError::from_io)?;
    let mut buf = [0u8; MAX_RESPONSE_HEAD];
    let mut len = 0;
    loop {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(ConnectError::from_io)?;
        if n == 0 {
            return Err(ConnectError::Reset);
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let code = response.code.unwrap_or(0);
                if code != 101 {
                    return Err(ConnectError::Status(code));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value);
                let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
                if accept != Some(expected.as_bytes()) {
                    return Err(ConnectError::Handshake(
                        "101 response without the right Sec-WebSocket-Accept".into(),
                    ));
                }
                if let Some(wanted) = &session.subprotocol {
                    let chosen = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
                        .map(|h| h.value);
                    if chosen != Some(wanted.as_bytes()) {
                        return Err(ConnectError::Subprotocol);
                    }
                }
                return Ok(buf[head_len..len].to_vec());
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ConnectError::Handshake(format!(
                    "response head longer than {MAX_RESPONSE_HEAD} bytes"
                )))
            }
            Err(e) => return Err(ConnectError::Handshake(format!("bad HTTP response: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thresholds may name one kind of connection error (`connection_errors.refused`): every
    /// label the generator can record must be one the model accepts there, or a user could not
    /// set a limit on it.
    #[test]
    fn every_connection_error_label_is_one_a_threshold_can_name() {
        use chatbench_model::figures::connect_error_label_known;
        let variants = [
            ConnectError::Refused,
            ConnectError::Timeout,
            ConnectError::Status(503),
            ConnectError::Reset,
            ConnectError::AddrUnavailable(String::new()),
            ConnectError::Io(String::new()),
            ConnectError::Handshake(String::new()),
            ConnectError::Subprotocol,
        ];
        for v in variants {
            assert!(connect_error_label_known(&v.label()), "{}", v.label());
        }
        // The labels written as literals where errors are counted: TLS failures and the
        // engine's own (a set-up timeout, a connection that came too late).
        for (file, text) in [
            ("tls.rs", include_str!("tls.rs")),
            ("engine.rs", include_str!("engine.rs")),
        ] {
            let mut labels = Vec::new();
            for part in text.split("label: \"").skip(1) {
                labels.extend(part.split('"').next());
            }
            for part in text.split("=> \"").skip(1) {
                labels.extend(part.split('"').next().filter(|l| l.starts_with("tls_")));
            }
            for part in text.split("connect_errors.add(\"").skip(1) {
                labels.extend(part.split('"').next());
            }
            assert!(file != "tls.rs" || labels.len() >= 7, "{labels:?}");
            for l in labels {
                assert!(connect_error_label_known(l), "{file}: {l}");
            }
        }
    }

    #[test]
    fn metrics_of_several_nodes_are_summed_sample_by_sample() {
        let a = parse_prometheus(
            "chatbench_deliveries_total 10\nchatbench_connections 3\nchatbench_backplane_info{node=\"1\"} 1\n",
        );
        let b = parse_prometheus(
            "chatbench_deliveries_total 5\nchatbench_connections 4\nchatbench_backplane_info{node=\"2\"} 1\n",
        );
        let s = sum_metrics([a, b]).expect("sum");
        assert_eq!(s["chatbench_deliveries_total"], 15.0);
        assert_eq!(s["chatbench_connections"], 7.0);
        assert_eq!(s["chatbench_backplane_info{node=\"1\"}"], 1.0);
        assert_eq!(s["chatbench_backplane_info{node=\"2\"}"], 1.0);
        assert!(sum_metrics(Vec::new()).is_none());
    }

    #[test]
    fn parses_ws_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert!(t.is_loopback());
        assert_eq!(
            (t.path.as_str(), t.host_header.as_str()),
            ("/ws", "127.0.0.1:8080")
        );
        let t = Target::parse("ws://127.0.0.1:8080?room=1").expect("query only");
        assert_eq!(t.path, "/?room=1");
        assert_eq!(
            Target::parse("ws://127.0.0.1:8080").expect("bare").path,
            "/"
        );
        let t = Target::parse("ws://[::1]:9000/ws").expect("valid v6");
        assert_eq!(t.addr.port(), 9000);
        assert_eq!(
            Target::parse("ws://127.0.0.1/ws")
                .expect("default port")
                .addr
                .port(),
            80
        );
        let t = Target::parse("wss://localhost/ws").expect("wss");
        assert_eq!(
            (t.tls, t.addr.port(), t.host.as_str()),
            (true, 443, "localhost")
        );
        let t = Target::parse("wss://[::1]:8443/ws").expect("wss v6");
        assert_eq!((t.tls, t.host.as_str(), t.scheme()), (true, "::1", "wss"));
        assert!(!Target::parse("ws://127.0.0.1:1/").expect("ws").tls);
    }

    #[test]
    fn url_placeholders_are_checked_against_the_feeder() {
        let s = Scenario::parse("name = \"m\"\nconnections = 1\n", "t").expect("scenario");
        let t = Target::parse("ws://127.0.0.1:1/ws/{room}?c={conn}").expect("url");
        assert!(t.session_template(&s).is_ok());
        let t = Target::parse("ws://127.0.0.1:1/ws?t={feeder.token}").expect("url");
        let e = t.session_template(&s).expect_err("no feeder").to_string();
        assert!(e.contains("needs a feeder file"), "{e}");
        let t = Target::parse("ws://127.0.0.1:1/ws?x={nope}").expect("url");
        let e = t.session_template(&s).expect_err("unknown").to_string();
        assert!(e.contains("unknown placeholder {nope}"), "{e}");
    }

    #[test]
    fn prometheus_samples_are_parsed() {
        let m = parse_prometheus(
            "# HELP x\nchatbench_drops_total{reason=\"queue_full\"} 12\nchatbench_rooms 3\nprocess_threads 4\nchatbench_bad x\n",
        );
        assert_eq!(
            m.get("chatbench_drops_total{reason=\"queue_full\"}"),
            Some(&12.0)
        );
        assert_eq!(m.get("chatbench_rooms"), Some(&3.0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, needle) in [
            ("http://127.0.0.1:1/ws", "scheme"),
            ("ws:///ws", "missing host"),
            ("ws://127.0.0.1:notaport/ws", "bad port"),
        ] {
            let e = Target::parse(url).expect_err(url).to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    /// A TLS listener on 127.0.0.1 whose certificate (for `names`) a fresh CA signed; returns
    /// its address and the CA's PEM. It completes handshakes and drops the connections.
    async fn tls_listener(names: &[&str]) -> (SocketAddr, String) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            crate::tls::ring_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        (addr, ca.pem())
    }

    /// The preflight's TLS handshake: trusted with `ca_file`, refused without it or for another
    /// name, with the label the results would count and the way out.
    #[tokio::test]
    async fn preflight_checks_the_certificate_of_a_wss_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Scenario::parse("name = \"m\"\nconnections = 1\n", "t").expect("scenario");
        s.connect_timeout = Duration::from_secs(5);
        let (addr, ca) = tls_listener(&["127.0.0.1"]).await;
        let t = Target::parse(&format!("wss://{addr}/ws")).expect("url");
        let e = t.preflight(&s).await.expect_err("untrusted").to_string();
        assert!(
            e.contains("tls_cert_unknown_issuer") && e.contains("--ca-file"),
            "{e}"
        );
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca).expect("write");
        s.client.ca_file = Some(ca_path.clone());
        t.preflight(&s).await.expect("trusted with ca_file");
        let (addr, ca) = tls_listener(&["chat.example"]).await;
        std::fs::write(&ca_path, ca).expect("write");
        let t = Target::parse(&format!("wss://{addr}/ws")).expect("url");
        let e = t.preflight(&s).await.expect_err("other name").to_string();
        assert!(e.contains("tls_cert_bad_name"), "{e}");
        s.client.insecure = true;
        t.preflight(&s)
            .await
            .expect("insecure accepts any certificate");
    }

    #[tokio::test]
    async fn preflight_names_an_unreachable_target() {
        // Bind then drop a listener to find a port that is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let t = Target::parse(&format!("ws://127.0.0.1:{port}/ws")).expect("valid");
        let mut s = Scenario::parse("name = \"m\"\nconnections = 1\n", "t").expect("scenario");
        s.connect_timeout = Duration::from_secs(2);
        let e = t.preflight(&s).await.expect_err("closed port").to_string();
        assert!(
            e.contains("unreachable") && e.contains(&port.to_string()),
            "{e}"
        );
    }
}
