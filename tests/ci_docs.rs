//! docs/ci.md's recipes, run: the scenario block written where the recipes expect it, the
//! stand-in server started on a free loopback port, and every other `chatbench` command of the
//! GitHub Actions and GitLab CI recipes run through `sh` as written (globs, quotes and `$CHAT_URL`
//! included), then the files each recipe keeps checked. A recipe that drifts from the tool fails
//! here.

mod common;
use common::*;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A fenced block of the page: its language and its text.
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The `chatbench` commands of a YAML recipe, continuation lines joined, without the stand-in
/// server's `chatbench serve` (the test starts that one itself).
fn commands(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in yaml.lines() {
        let mut l = line.trim();
        l = l.strip_prefix("- ").unwrap_or(l);
        l = l.strip_prefix("run: ").unwrap_or(l);
        if pending.is_empty() && !l.starts_with("chatbench ") {
            continue;
        }
        match l.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(l);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out.retain(|c| !c.starts_with("chatbench serve "));
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chatbench serve` on a free loopback port, and its ws:// URL.
fn stand_in_server() -> (Server, String) {
    let mut child = chatbench()
        .args([
            "serve",
            "--arch",
            "task-per-conn",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatbench serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let url = line
        .split_whitespace()
        .nth(1)
        .expect("ws:// URL")
        .to_string();
    (Server(child), url)
}

/// Runs one recipe's commands in a fresh folder holding `ci/chat.toml`; returns the folder.
fn run_recipe(name: &str, yaml: &str, toml: &str, url: &str) -> tempfile::TempDir {
    let cmds = commands(yaml);
    assert!(
        cmds.iter()
            .any(|c| c.starts_with("chatbench run ") && c.contains("--junit"))
            && cmds.iter().any(|c| c.starts_with("chatbench report ")),
        "{name}: the recipe lost its run or report command: {cmds:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ci")).expect("mkdir ci");
    std::fs::write(dir.path().join("ci/chat.toml"), toml).expect("scenario");
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_chatbench"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        exe_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for cmd in &cmds {
        let _turn = serial();
        let o = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("CHAT_URL", url)
            .env(
                "GITHUB_STEP_SUMMARY",
                if name == "github" {
                    dir.path().join("step_summary.md")
                } else {
                    Default::default()
                },
            )
            .stdin(Stdio::null())
            .output()
            .expect("sh");
        // 4: a valid run marked generator-bound because the shared machine was busy.
        let ok = match o.status.code() {
            Some(0) => true,
            Some(4) => cmd.starts_with("chatbench run "),
            _ => false,
        };
        assert!(ok, "{name}: `{cmd}` failed: {}", text(&o));
    }
    dir
}

#[test]
fn the_ci_recipes_commands_run_as_written() {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).expect("docs/ci.md");
    let blocks = blocks(&doc);
    let toml = &blocks
        .iter()
        .find(|(lang, _)| lang == "toml")
        .expect("the scenario block")
        .1;
    let yamls: Vec<&String> = blocks
        .iter()
        .filter(|(lang, _)| lang == "yaml")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(yamls.len(), 2, "a GitHub Actions and a GitLab CI recipe");
    let (_server, url) = stand_in_server();
    for (name, yaml) in [("github", yamls[0]), ("gitlab", yamls[1])] {
        let dir = run_recipe(name, yaml, toml, &url);
        let runs: Vec<_> = std::fs::read_dir(dir.path().join("results/ci"))
            .expect("results/ci")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(runs.len(), 1, "{name}: {runs:?}");
        let s = summary(&runs[0]);
        assert_eq!(s["target"]["settings"]["label"], "my-chat", "{name}");
        assert!(
            runs[0].join("report.html").is_file(),
            "{name}: no report.html"
        );
        let junit = std::fs::read_to_string(dir.path().join("chatbench-junit.xml"))
            .unwrap_or_else(|e| panic!("{name}: chatbench-junit.xml: {e}"));
        assert!(
            junit.contains("loss_ratio") && junit.contains("p99_latency"),
            "{junit}"
        );
        let md_file = if name == "github" {
            "step_summary.md"
        } else {
            "chatbench-summary.md"
        };
        let md = std::fs::read_to_string(dir.path().join(md_file))
            .unwrap_or_else(|e| panic!("{name}: {md_file}: {e}"));
        assert!(
            md.starts_with("### chatbench run `ci-chat`"),
            "{name}: {md}"
        );
    }
}

#[test]
fn commands_are_extracted_with_their_continuations() {
    let yaml = "      - name: x\n        run: |\n          chatbench --version\n          chatbench run --a \\\n            --b\n    - chatbench serve --listen 127.0.0.1:8080 &\n    - cargo install x\n";
    assert_eq!(
        commands(yaml),
        ["chatbench --version", "chatbench run --a --b"]
    );
}
