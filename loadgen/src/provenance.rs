//! Collecting a result's provenance on this host: tool version, git commit, kernel, CPU,
//! affinity, descriptor limit, host, start time, command line (the record itself is
//! `chatbench_model::provenance::Provenance`).
//!
//! Collecting it never fails: a piece that cannot be read is `None`, and a run is never
//! refused because, say, `git` is not installed.

use std::path::Path;
use std::process::Command;

use chatbench_model::provenance::{now_rfc3339, Provenance};

use crate::sys;

/// The commit the running binary was built from, set once by the binary at start-up
/// ([`set_build_commit`]); a library's own crate cannot see the binary's build script.
static BUILD_COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the commit this binary was built from (its `chatbench --version` commit), for every
/// provenance collected afterwards. The first call wins.
pub fn set_build_commit(commit: &str) {
    let _ = BUILD_COMMIT.set(commit.to_owned());
}

/// Collect everything now; `started_at` is now.
pub fn collect() -> Provenance {
    let (kernel, hostname) = uname();
    let (git_commit, git_dirty) = git_state(Path::new("."));
    Provenance {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        build_commit: BUILD_COMMIT.get().cloned(),
        git_commit,
        git_dirty,
        kernel,
        os: std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| parse_os_release(&t))
            .unwrap_or_else(|| std::env::consts::OS.to_owned()),
        cpu_model: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| parse_cpu_model(&t)),
        cpu_cores: sys::online_cpus(),
        cpu_affinity: sys::cpu_affinity(),
        rlimit_nofile: sys::current_nofile().ok(),
        hostname,
        started_at: now_rfc3339(),
        finished_at: None,
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    }
}

/// The first `model name` in /proc/cpuinfo text (x86); falls back to `Hardware`/`CPU part`-less
/// `cpu model` lines found on other architectures.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "cpu model", "Hardware"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

/// `PRETTY_NAME` from /etc/os-release text, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let v = line.strip_prefix("PRETTY_NAME=")?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// `(release, nodename)` from `uname(2)`.
fn uname() -> (Option<String>, Option<String>) {
    // SAFETY: utsname is plain data; zeroed is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (None, None);
    }
    (c_field(&u.release), c_field(&u.nodename))
}

fn c_field(field: &[libc::c_char]) -> Option<String> {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let s = String::from_utf8_lossy(&bytes).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// `(commit, dirty)` of the repository containing `dir`; `(None, None)` outside one or without git.
fn git_state(dir: &Path) -> (Option<String>, Option<bool>) {
    let Some(commit) = git(dir, &["rev-parse", "HEAD"]) else {
        return (None, None);
    };
    let commit = commit.trim().to_owned();
    if commit.is_empty() {
        return (None, None);
    }
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.trim().is_empty());
    (Some(commit), dirty)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_this_host() {
        let mut p = collect();
        assert_eq!(p.tool_version, env!("CARGO_PKG_VERSION"));
        assert!(p.kernel.is_some());
        assert!(p.cpu_cores >= 1);
        assert!(!p.cpu_affinity.is_empty());
        assert!(p.rlimit_nofile.is_some());
        assert!(!p.command_line.is_empty());
        assert!(p.started_at.ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(&p.started_at).is_ok());
        // Tests run inside the chatbench git repository.
        if let Some(c) = &p.git_commit {
            assert_eq!(c.len(), 40, "{c}");
            assert!(p.git_dirty.is_some());
        }
        assert_eq!(p.finished_at, None);
        p.finish();
        assert!(p.finished_at.is_some());
        let json = serde_json::to_string(&p).expect("serialise");
        let back: Provenance = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, p);
    }

    #[test]
    fn cpu_model_parses() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\
                    processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            parse_cpu_model(text).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(parse_cpu_model("processor : 0\n"), None);
        assert_eq!(parse_cpu_model("model name :   \n"), None);
    }

    #[test]
    fn os_release_parses() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n";
        assert_eq!(
            parse_os_release(text).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(parse_os_release("NAME=x\n"), None);
    }

    #[test]
    fn git_outside_a_repository_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(git_state(dir.path()), (None, None));
    }

    #[test]
    fn git_in_this_repository() {
        let (commit, dirty) = git_state(Path::new(env!("CARGO_MANIFEST_DIR")));
        // The crate lives in the chatbench repository; skip the check when git is absent.
        if Command::new("git").arg("--version").output().is_ok() {
            assert!(commit.is_some_and(|c| c.len() == 40));
            assert!(dirty.is_some());
        }
    }
}
