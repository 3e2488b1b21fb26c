//! End-to-end tests of `chatbench run` against a `wss://` target: a TLS WebSocket echo server in
//! this test (tokio-rustls + tokio-tungstenite on 127.0.0.1:0) with a CA and a server certificate
//! made here (rcgen). The server checks every connection's upgrade request: its
//! `Authorization` header must carry the token of the feeder row of the connection index it
//! gives in the query (`?conn={conn}`), and `from={from}` must name that connection; anything
//! else is answered 401.
//!
//! - `--ca-file` with the test CA: the run connects, echoes, and each row's token reached the
//!   server;
//! - without it: the run fails before any load with a certificate error that says what to do;
//! - `--insecure`: the run connects, warns, and records it;
//! - placeholder mistakes: refused at parse time with the scenario's file:line.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http;

const CONNECTIONS: usize = 4;

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "chatbench test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    let cert = params.signed_by(&key, &ca).expect("server cert");
    Pki {
        ca_pem: ca.pem(),
        server_chain: vec![cert.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// What the server saw: per connection index, whether its token and id were right.
#[derive(Default)]
struct Seen {
    /// Accepted upgrades: the connection index and the `from` it gave.
    good: Vec<(usize, String)>,
    bad: Vec<String>,
}

/// The TLS echo server, on its own thread and runtime; returns its port. It serves until the
/// test process ends.
fn start_server(pki: &Pki, tokens: Vec<String>, seen: Arc<Mutex<Seen>>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        chatbench_loadgen::tls::ring_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let tokens = Arc::new(tokens);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tokens = tokens.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let check = Checker { tokens, seen };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, check).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            return;
                        }
                        if m.is_text() && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    port
}

/// The server's check of one upgrade request.
struct Checker {
    tokens: Arc<Vec<String>>,
    seen: Arc<Mutex<Seen>>,
}

impl Callback for Checker {
    fn on_request(self, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
        match check_request(req, &self.tokens, &self.seen) {
            Ok(()) => Ok(resp),
            Err(why) => Err(http::Response::builder()
                .status(401)
                .body(Some(why))
                .expect("response")),
        }
    }
}

/// Accepts the upgrade when the token is the feeder row's of the connection it names; the
/// reason otherwise.
fn check_request(req: &Request, tokens: &[String], seen: &Mutex<Seen>) -> Result<(), String> {
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let conn: Option<usize> = param("conn").and_then(|c| c.parse().ok());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = match conn {
        Some(c) if c < tokens.len() => {
            let want = format!("Bearer {}", tokens[c]);
            match (auth.as_deref() == Some(want.as_str()), param("from")) {
                (true, Some(from)) if from.starts_with('a') && from.contains(".c") => Ok((c, from)),
                _ => Err(format!("conn {c}: authorization {auth:?}, query {query:?}")),
            }
        }
        _ => Err(format!("no valid conn in {query:?}")),
    };
    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
    match verdict {
        Ok(c) => {
            s.good.push(c);
            Ok(())
        }
        Err(why) => {
            s.bad.push(why.clone());
            Err(why)
        }
    }
}

/// A temporary folder with the CA, the feeder and the scenario.
struct Setup {
    dir: tempfile::TempDir,
    tokens: Vec<String>,
    pki: Pki,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).expect("ca.pem");
        // Tokens with characters that must survive as they are in a header.
        let tokens: Vec<String> = (0..CONNECTIONS)
            .map(|i| format!("tok-{i}.{}/x+y=", 1000 + i * 7))
            .collect();
        let mut csv = String::from("user,token\n");
        for (i, t) in tokens.iter().enumerate() {
            csv.push_str(&format!("user{i},{t}\n"));
        }
        std::fs::write(dir.path().join("tokens.csv"), csv).expect("tokens.csv");
        let s = Setup { dir, tokens, pki };
        s.write_scenario("Bearer {feeder.token}");
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_scenario(&self, authorization: &str) {
        let scenario = format!(
            "name = \"wss\"\nprotocol = \"echo\"\nconnections = {CONNECTIONS}\nrooms = 2\n\
             members_per_room = 2\nsenders_per_room = 2\nrate_per_sender = 20.0\n\
             settle = \"1s\"\nwarmup = \"1s\"\nmeasure = \"1s\"\ncooldown = \"1s\"\n\
             [client]\nfeeder = {feeder:?}\n\
             [profile.headers]\nAuthorization = \"{authorization}\"\n",
            feeder = self.path("tokens.csv").display().to_string(),
        );
        std::fs::write(self.path("wss.toml"), scenario).expect("scenario");
    }

    fn run(&self, port: u16, extra: &[&str]) -> (Output, PathBuf) {
        let out = self.path("out");
        let target = format!("wss://127.0.0.1:{port}/ws?conn={{conn}}&from={{from}}");
        let scenario = self.path("wss.toml");
        let mut args: Vec<&str> = vec![
            "run",
            "--target",
            &target,
            "--scenario",
            scenario.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
            "--progress",
            "lines",
        ];
        args.extend_from_slice(extra);
        let _turn = serial();
        let o = chatbench()
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run chatbench");
        (o, out)
    }
}

fn assert_every_connection_echoed(s: &serde_json::Value) {
    assert_eq!(
        s["connections"]["ready"].as_u64(),
        Some(CONNECTIONS as u64),
        "{s:#}"
    );
    let errors = s["connections"]["errors"].as_object().expect("errors");
    assert!(errors.is_empty(), "connect errors: {errors:?}");
    let m = &s["messages"];
    assert!(m["sent"].as_u64().unwrap_or(0) > 0, "{m:#}");
    assert_eq!(m["lost"].as_u64(), Some(0), "{m:#}");
}

#[test]
fn wss_with_ca_file_delivers_and_each_feeder_token_reaches_the_server() {
    let setup = Setup::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_server(&setup.pki, setup.tokens.clone(), seen.clone());
    let ca = setup.path("ca.pem");
    let (out, dir) = setup.run(port, &["--ca-file", ca.to_str().expect("utf-8")]);
    let s = assert_finished(&out, &dir);
    assert_every_connection_echoed(&s);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    assert!(seen.bad.is_empty(), "requests refused: {:?}", seen.bad);
    let mut good = seen.good.clone();
    good.sort_unstable();
    // The preflight handshake is TLS only; every WebSocket upgrade is a planned connection,
    // and `{from}` is the id its messages carry.
    let want: Vec<(usize, String)> = (0..CONNECTIONS).map(|c| (c, format!("a0.c{c}"))).collect();
    assert_eq!(good, want);
    let overrides = s["scenario"]["overrides"].to_string();
    assert!(overrides.contains("client.ca_file"), "{overrides}");
    let notes = s["notes"].to_string();
    assert!(
        notes.contains("TLS handshake") && notes.contains("ca.pem"),
        "{notes}"
    );
}

/// Over two local agents, `{conn}` is the index in the whole run: each connection still gets
/// its own feeder row, and its own `{from}`.
#[test]
fn wss_over_agents_gives_every_connection_its_own_row() {
    let setup = Setup::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_server(&setup.pki, setup.tokens.clone(), seen.clone());
    let ca = setup.path("ca.pem");
    let (out, dir) = setup.run(
        port,
        &[
            "--ca-file",
            ca.to_str().expect("utf-8"),
            "--agents",
            "local:2",
        ],
    );
    let s = assert_finished(&out, &dir);
    assert_every_connection_echoed(&s);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    assert!(seen.bad.is_empty(), "requests refused: {:?}", seen.bad);
    let mut conns: Vec<usize> = seen.good.iter().map(|(c, _)| *c).collect();
    conns.sort_unstable();
    assert_eq!(conns, (0..CONNECTIONS).collect::<Vec<_>>());
    let froms: std::collections::BTreeSet<&str> =
        seen.good.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(froms.len(), CONNECTIONS, "{froms:?}");
    assert!(
        froms.iter().any(|f| f.starts_with("a0.")) && froms.iter().any(|f| f.starts_with("a1.")),
        "both agents connected: {froms:?}"
    );
}

#[test]
fn wss_without_the_ca_fails_before_the_load_with_a_certificate_error() {
    let setup = Setup::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_server(&setup.pki, setup.tokens.clone(), seen.clone());
    let (out, dir) = setup.run(port, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(
        err.contains("tls_cert_unknown_issuer")
            && err.contains("certificate")
            && err.contains("--ca-file")
            && err.contains("--insecure"),
        "{err}"
    );
    assert!(!dir.exists() || std::fs::read_dir(&dir).map_or(0, |d| d.count()) == 0);
    assert!(seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .good
        .is_empty());
}

#[test]
fn wss_insecure_connects_warns_and_is_recorded() {
    let setup = Setup::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_server(&setup.pki, setup.tokens.clone(), seen.clone());
    let (out, dir) = setup.run(port, &["--insecure"]);
    let s = assert_finished(&out, &dir);
    assert_every_connection_echoed(&s);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: --insecure"),
        "{}",
        text(&out)
    );
    assert!(s["scenario"]["overrides"]
        .to_string()
        .contains("client.insecure=true"));
    assert!(
        s["notes"].to_string().contains("verification was OFF"),
        "{s:#}"
    );
}

#[test]
fn placeholder_mistakes_are_refused_with_the_scenario_line() {
    let setup = Setup::new();
    // No server: parse-time errors come before any connection.
    for (authorization, needle) in [
        ("Bearer {feeder.tokn}", "no column \"tokn\""),
        ("Bearer {token}", "unknown placeholder {token}"),
    ] {
        setup.write_scenario(authorization);
        let (out, _) = setup.run(9, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("wss.toml") && err.contains("wss.toml:15:") && err.contains(needle),
            "{authorization}: {err}"
        );
    }
    // A mistake in the target URL is refused before any connection, naming the URL.
    setup.write_scenario("Bearer {feeder.token}");
    let out = chatbench()
        .args([
            "run",
            "--target",
            "wss://127.0.0.1:9/ws?c={conection}",
            "--scenario",
            setup.path("wss.toml").to_str().expect("utf-8"),
            "--out",
            setup.path("out").to_str().expect("utf-8"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wss://127.0.0.1:9/ws?c={conection}")
            && err.contains("unknown placeholder {conection}"),
        "{err}"
    );
}
