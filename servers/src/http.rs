//! HTTP routing on the one port every architecture serves: `GET /ws` upgrades to WebSocket,
//! `GET /metrics` and `GET /healthz` answer plain HTTP, the rest is 404/400.
//!
//! Everything here is synchronous and does no I/O — parsing a request head held in a buffer,
//! validating the upgrade, building response bytes — so the tokio, thread-pool and epoll
//! architectures share one implementation and differ only in how they read and write bytes.
//! The head is bounded ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]): a peer cannot make the server
//! buffer more than that before it is answered 431 and closed.

use tungstenite::handshake::derive_accept_key;

use crate::metrics::{HttpPath, Metrics};

/// Largest request head accepted; longer heads get 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers accepted; more get 431.
pub const MAX_HEADERS: usize = 32;
/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a complete, valid request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ws` with a valid WebSocket upgrade; carries the `Sec-WebSocket-Accept` value.
    Upgrade {
        /// The derived `Sec-WebSocket-Accept` header value.
        accept_key: String,
    },
    /// `GET /metrics`
    Metrics,
    /// `GET /healthz`
    Healthz,
    /// A known path with a method other than GET.
    MethodNotAllowed,
    /// Any other path.
    NotFound,
}

impl Route {
    /// The bounded label this request is counted under in `chatbench_http_requests_total`.
    pub fn path(&self) -> HttpPath {
        match self {
            Route::Upgrade { .. } => HttpPath::Ws,
            Route::Metrics => HttpPath::Metrics,
            Route::Healthz => HttpPath::Healthz,
            Route::MethodNotAllowed | Route::NotFound => HttpPath::Other,
        }
    }
}

/// Why a request head is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Malformed HTTP, or `/ws` without a valid upgrade: 400.
    BadRequest(&'static str),
    /// Head longer than [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] headers: 431.
    HeadTooLarge,
    /// `/ws` upgrade with a `Sec-WebSocket-Version` other than 13: 426.
    UnsupportedVersion,
}

/// The result of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The head is not complete yet: read more (unless the buffer is already at the limit, in
    /// which case [`parse_head`] returns [`Reject::HeadTooLarge`]).
    Partial,
    /// The head is complete: `head_len` bytes belong to it; bytes after it (a client may send
    /// its first WebSocket frame right behind the request) belong to the WebSocket.
    Complete {
        /// What the request asks for.
        route: Route,
        /// Length of the head in the buffer.
        head_len: usize,
    },
}

/// Parses the request head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Result<Head, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(Reject::HeadTooLarge)
            } else {
                Ok(Head::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadTooLarge),
        Err(_) => return Err(Reject::BadRequest("malformed HTTP request")),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(Reject::HeadTooLarge);
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let route = match path {
        "/ws" | "/metrics" | "/healthz" if method != "GET" => Route::MethodNotAllowed,
        "/ws" => upgrade(req.version, req.headers)?,
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        _ => Route::NotFound,
    };
    Ok(Head::Complete { route, head_len })
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Validates an RFC 6455 §4.2.1 opening handshake and derives the accept key.
fn upgrade(version: Option<u8>, headers: &[httparse::Header<'_>]) -> Result<Route, Reject> {
    if version != Some(1) {
        return Err(Reject::BadRequest("WebSocket upgrade needs HTTP/1.1"));
    }
    if !header(headers, "upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(Reject::BadRequest("missing \"Upgrade: websocket\""));
    }
    if !header(headers, "connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(Reject::BadRequest("missing \"Connection: upgrade\""));
    }
    if header(headers, "sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Reject::UnsupportedVersion);
    }
    let key = header(headers, "sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or(Reject::BadRequest("missing Sec-WebSocket-Key"))?;
    // A base64-encoded 16-byte nonce: 22 characters and "==".
    let valid_key = key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_key {
        return Err(Reject::BadRequest("invalid Sec-WebSocket-Key"));
    }
    Ok(Route::Upgrade {
        accept_key: derive_accept_key(key),
    })
}

/// The `101 Switching Protocols` response completing a WebSocket upgrade.
pub fn switching_protocols(accept_key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    )
    .into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

/// A complete response with a body; the connection closes after it (no keep-alive: the
/// metrics scraper and health checks open one connection per request).
pub fn response(status: u16, content_type: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The response to a refused head.
pub fn reject_response(reject: Reject) -> Vec<u8> {
    let text = "text/plain; charset=utf-8";
    match reject {
        Reject::BadRequest(why) => response(400, text, "", format!("{why}\n").as_bytes()),
        Reject::HeadTooLarge => response(431, text, "", b"request head too large\n"),
        Reject::UnsupportedVersion => response(
            426,
            text,
            "Sec-WebSocket-Version: 13\r\n",
            b"WebSocket version 13 required\n",
        ),
    }
}

/// The response to a plain-HTTP route, or `None` for [`Route::Upgrade`] (build that with
/// [`switching_protocols`]).
pub fn route_response(route: &Route, metrics: &Metrics) -> Option<Vec<u8>> {
    let text = "text/plain; charset=utf-8";
    Some(match route {
        Route::Upgrade { .. } => return None,
        Route::Metrics => response(
            200,
            PROMETHEUS_CONTENT_TYPE,
            "",
            metrics.render().as_bytes(),
        ),
        Route::Healthz => response(200, text, "", b"ok\n"),
        Route::MethodNotAllowed => response(405, text, "Allow: GET\r\n", b"method not allowed\n"),
        Route::NotFound => response(404, text, "", b"not found\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn upgrade_derives_the_rfc_accept_key_and_keeps_leftover_bytes() {
        let mut buf = UPGRADE.as_bytes().to_vec();
        buf.extend_from_slice(b"\x81\x80rest");
        match parse_head(&buf) {
            Ok(Head::Complete {
                route: Route::Upgrade { accept_key },
                head_len,
            }) => {
                // RFC 6455 §1.3 example.
                assert_eq!(accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
                assert_eq!(&buf[head_len..], b"\x81\x80rest");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_heads_wait_and_oversized_heads_are_refused() {
        assert_eq!(parse_head(&UPGRADE.as_bytes()[..30]), Ok(Head::Partial));
        let mut big = b"GET /ws HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(parse_head(&big), Err(Reject::HeadTooLarge));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("h{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse_head(many.as_bytes()), Err(Reject::HeadTooLarge));
    }

    #[test]
    fn routes_plain_paths() {
        let route = |s: &str| match parse_head(s.as_bytes()) {
            Ok(Head::Complete { route, .. }) => route,
            other => panic!("{other:?}"),
        };
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET /healthz?x=1 HTTP/1.0\r\n\r\n"), Route::Healthz);
        assert_eq!(route("GET /nope HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
    }

    #[test]
    fn bad_upgrades_are_refused() {
        assert!(matches!(
            parse_head(b"GET /ws HTTP/1.1\r\n\r\n"),
            Err(Reject::BadRequest(_))
        ));
        let v8 = UPGRADE.replace("Version: 13", "Version: 8");
        assert_eq!(parse_head(v8.as_bytes()), Err(Reject::UnsupportedVersion));
        let badkey = UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert!(matches!(
            parse_head(badkey.as_bytes()),
            Err(Reject::BadRequest(_))
        ));
        assert!(matches!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(Reject::BadRequest(_))
        ));
    }

    #[test]
    fn responses_are_well_formed() {
        let r = String::from_utf8(switching_protocols("abc")).unwrap();
        assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(r.ends_with("Sec-WebSocket-Accept: abc\r\n\r\n"));
        let r = String::from_utf8(response(404, "text/plain", "", b"nf")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.ends_with("\r\n\r\nnf"));
        let r = String::from_utf8(reject_response(Reject::HeadTooLarge)).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 "));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Any bytes from a peer: a verdict, never a panic; a complete head never claims more
        /// bytes than were given or than the head limit; a partial one stays under the limit.
        #[test]
        fn any_bytes_get_a_verdict_within_bounds(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            match parse_head(&bytes) {
                Ok(Head::Complete { head_len, .. }) => {
                    proptest::prop_assert!(head_len <= bytes.len() && head_len <= MAX_HEAD_BYTES);
                }
                Ok(Head::Partial) => proptest::prop_assert!(bytes.len() < MAX_HEAD_BYTES),
                Err(_) => {}
            }
        }

        /// The upgrade request with its header lines mangled, cut or repeated: a verdict, and
        /// a complete head covers exactly the request it was given (nothing after it is taken).
        #[test]
        fn mangled_upgrades_get_a_verdict(
            cut in 0usize..300,
            extra in "[ -~]{0,80}",
            repeat in 0usize..40,
        ) {
            let mut req = UPGRADE.replace("\r\n\r\n", "\r\n");
            for _ in 0..repeat {
                req.push_str("X-Pad: ");
                req.push_str(&extra);
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            let bytes = req.as_bytes();
            let cut = cut.min(bytes.len());
            let _ = parse_head(&bytes[..cut]);
            if let Ok(Head::Complete { head_len, .. }) = parse_head(bytes) {
                proptest::prop_assert_eq!(head_len, bytes.len());
            }
        }
    }
}
