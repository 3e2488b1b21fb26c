//! End-to-end tests of `chatbench serve --arch cluster`: two real node processes on 127.0.0.1
//! linked over the mesh (port 0 everywhere, addresses read from the startup line), a message
//! crossing from a client of one to a client of the other (authenticated with a secret file),
//! and the flag checks — a mesh off loopback without a secret, secret files others may read —
//! and the Redis start-up error with their exit codes.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A node process, stopped with SIGTERM (by PID) when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    cluster: SocketAddr,
}

impl Node {
    fn start(id: u64, peers: &[SocketAddr], secret_file: &std::path::Path) -> Node {
        let mut cmd = chatbench();
        cmd.env_remove("CHATBENCH_CLUSTER_SECRET")
            .args(["serve", "--arch", "cluster", "--backplane", "mesh"])
            .arg("--cluster-secret-file")
            .arg(secret_file)
            .args(["--node-id", &id.to_string()])
            .args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"]);
        if !peers.is_empty() {
            let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            cmd.args(["--peers", &list.join(",")]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chatbench serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("startup line");
        // `<addr> ws://<addr>/ws arch=cluster pid=<pid> cluster=<addr>`
        let addr = line
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        assert!(line.contains(" arch=cluster "), "{line}");
        let cluster = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("cluster="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no cluster= in {line:?}"));
        Node {
            child,
            addr,
            cluster,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

async fn peers_up(addr: SocketAddr) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("response");
    body.lines()
        .find_map(|l| l.strip_prefix("chatbench_backplane_peers_up "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peers_up in {body}"))
}

#[test]
fn two_node_processes_link_and_carry_a_message_across() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = secret_file(dir.path(), "0123456789abcdef0123456789abcdef\n", 0o600);
    let a = Node::start(1, &[], &secret);
    let b = Node::start(2, &[a.cluster], &secret);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while peers_up(a.addr).await != 1.0 || peers_up(b.addr).await != 1.0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (mut ca, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", a.addr))
                .await
                .expect("client of node 1");
            let (mut cb, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", b.addr))
                .await
                .expect("client of node 2");
            for c in [&mut ca, &mut cb] {
                c.send(Message::text(r#"{"t":"join","room":"r"}"#))
                    .await
                    .unwrap();
                let joined = c.next().await.unwrap().unwrap();
                assert_eq!(joined.to_text().unwrap(), r#"{"t":"joined","room":"r"}"#);
            }
            let m = r#"{"t":"msg","room":"r","from":"a","seq":1,"ts":2,"body":"hi"}"#;
            ca.send(Message::text(m)).await.unwrap();
            let got = cb.next().await.unwrap().unwrap();
            assert_eq!(got.to_text().unwrap(), m);
        })
        .await
        .expect("the nodes linked and the message crossed within 10 s");
    });
}

/// Writes a secret file with `mode`.
fn secret_file(dir: &std::path::Path, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("secret-{mode:o}"));
    std::fs::write(&path, text).expect("write the secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn serve_fails(args: &[&str]) -> Output {
    serve_fails_env(args, None)
}

/// `serve ARGS` with `CHATBENCH_CLUSTER_SECRET` set to `secret` (or unset).
fn serve_fails_env(args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = chatbench();
    match secret {
        Some(s) => cmd.env("CHATBENCH_CLUSTER_SECRET", s),
        None => cmd.env_remove("CHATBENCH_CLUSTER_SECRET"),
    };
    let o = cmd
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench serve");
    assert!(!o.status.success(), "{}", text(&o));
    o
}

#[test]
fn cluster_flags_are_checked_with_usage_errors() {
    for (args, want) in [
        (
            &["--arch", "cluster", "--backplane", "mesh"][..],
            "--node-id",
        ),
        (&["--arch", "cluster", "--node-id", "1"][..], "--backplane"),
        (
            &["--arch", "cluster", "--node-id", "1", "--backplane", "mesh"][..],
            "--cluster-listen",
        ),
        (
            &[
                "--arch",
                "cluster",
                "--node-id",
                "1",
                "--backplane",
                "redis",
            ][..],
            "--redis-url",
        ),
        (
            &[
                "--arch",
                "cluster",
                "--node-id",
                "1",
                "--backplane",
                "redis",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--peers",
                "127.0.0.1:2",
            ][..],
            "--peers apply to --backplane mesh",
        ),
        (
            &["--arch", "epoll", "--node-id", "1"][..],
            "only apply to --arch cluster",
        ),
    ] {
        let o = serve_fails(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn a_mesh_off_loopback_needs_a_secret_and_secret_files_must_be_private() {
    let dir = tempfile::tempdir().expect("dir");
    let open = secret_file(dir.path(), "0123456789abcdef0123456789abcdef", 0o644);
    let short = secret_file(dir.path(), "tooshort", 0o600);
    let good = secret_file(dir.path(), "0123456789abcdef0123456789abcdef", 0o400);
    let mesh = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--arch", "cluster", "--node-id", "1", "--backplane", "mesh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let p = |path: &std::path::Path| path.to_str().expect("utf-8 path").to_string();
    let cases: Vec<(Vec<String>, Option<&str>, String)> = vec![
        (
            mesh(&["--cluster-listen", "0.0.0.0:0"]),
            None,
            "--cluster-listen 0.0.0.0:0 is not a loopback address".into(),
        ),
        (
            mesh(&[
                "--cluster-listen",
                "127.0.0.1:0",
                "--peers",
                "192.0.2.1:9000",
            ]),
            None,
            "--peers 192.0.2.1:9000 is not a loopback address".into(),
        ),
        (
            mesh(&[
                "--cluster-listen",
                "0.0.0.0:0",
                "--cluster-secret-file",
                &p(&open),
            ]),
            None,
            format!("chmod 600 {}", open.display()),
        ),
        (
            mesh(&[
                "--cluster-listen",
                "0.0.0.0:0",
                "--cluster-secret-file",
                &p(&short),
            ]),
            None,
            "openssl rand".into(),
        ),
        (
            mesh(&[
                "--cluster-listen",
                "0.0.0.0:0",
                "--cluster-secret-file",
                &p(&good),
            ]),
            Some("0123456789abcdef-from-the-environment"),
            "both --cluster-secret-file and CHATBENCH_CLUSTER_SECRET".into(),
        ),
        (
            mesh(&["--cluster-listen", "0.0.0.0:0"]),
            Some("short"),
            "CHATBENCH_CLUSTER_SECRET: the cluster secret has 5 bytes".into(),
        ),
    ];
    for (args, env, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = serve_fails_env(&args, env);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&want),
            "{args:?}: want {want:?}: {}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
}

#[test]
fn redis_unreachable_at_start_names_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let o = serve_fails(&[
        "--arch",
        "cluster",
        "--node-id",
        "1",
        "--backplane",
        "redis",
        "--redis-url",
        &url,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot reach Redis at {url}")),
        "{}",
        text(&o)
    );
    assert!(
        o.stdout.is_empty(),
        "no startup line before the error: {}",
        text(&o)
    );
}
