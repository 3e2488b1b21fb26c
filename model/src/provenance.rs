//! Provenance: where and how a result was produced (tool version, git commit, kernel, CPU,
//! affinity, descriptor limit, host, times, command line), as every result records it.
//!
//! A number without its setup cannot be compared or reproduced, so every result carries one of
//! these. Collecting it on this host is the load generator's (`chatbench_loadgen::provenance`).

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The setup a result was produced on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// chatbench version (`CARGO_PKG_VERSION`).
    pub tool_version: String,
    /// The commit the chatbench binary was built from (`chatbench --version`'s, `-dirty` when
    /// built from a tree with uncommitted changes; "unknown" outside a checkout); `None` in
    /// results written before it was recorded, or by a library user that did not set it. The
    /// figures come from this build, which need not be `git_commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_commit: Option<String>,
    /// `git rev-parse HEAD` in the working directory at run time (where the scenario and
    /// peers were read from); `None` outside a repository.
    pub git_commit: Option<String>,
    /// Whether tracked files had uncommitted changes; `None` outside a repository.
    pub git_dirty: Option<bool>,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// Operating system: `PRETTY_NAME` from /etc/os-release, else the target OS name.
    pub os: String,
    /// CPU model (`model name` in /proc/cpuinfo).
    pub cpu_model: Option<String>,
    /// CPUs online on the host.
    pub cpu_cores: usize,
    /// CPUs this process may run on.
    pub cpu_affinity: Vec<usize>,
    /// `RLIMIT_NOFILE` when collected (raise it before collecting to record the raised value).
    pub rlimit_nofile: Option<NofileLimit>,
    /// Host name (`uname -n`).
    pub hostname: Option<String>,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// When the run finished, RFC 3339 UTC; set by [`Provenance::finish`].
    pub finished_at: Option<String>,
    /// This process's command line.
    pub command_line: Vec<String>,
}

/// Current time as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `RLIMIT_NOFILE` of a process. `u64::MAX` stands for "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NofileLimit {
    /// Current (soft) limit: what the process may open now.
    pub soft: u64,
    /// Hard limit: the most the soft limit can be raised to without privileges.
    pub hard: u64,
    /// The soft limit before it was raised (`chatbench_loadgen::sys::raise_nofile`; equal to
    /// `soft` when nothing changed).
    pub raised_from: u64,
}

impl Provenance {
    /// One line naming the machine and the build: `host, CPU (N CPUs), kernel K; chatbench V
    /// (build B)` (see [`Provenance::build_line`]), for reports and chart footnotes.
    pub fn machine(&self) -> String {
        format!("{}; {}", self.host(), self.build_line())
    }

    /// The build the figures came from: `chatbench V (build B)` when the binary's commit was
    /// recorded, else `chatbench V (commit C[, dirty])` from the working directory (results
    /// written before the build was recorded).
    pub fn build_line(&self) -> String {
        if let Some(build) = &self.build_commit {
            return format!("chatbench {} (build {build})", self.tool_version);
        }
        format!(
            "chatbench {} ({}{})",
            self.tool_version,
            self.git_commit
                .as_deref()
                .map(|c| c.get(..10).unwrap_or(c))
                .unwrap_or("no commit recorded"),
            if self.git_dirty == Some(true) {
                ", dirty"
            } else {
                ""
            },
        )
    }

    /// `host, CPU (N CPUs), kernel K`.
    fn host(&self) -> String {
        format!(
            "{}{} ({} CPUs), kernel {}",
            self.hostname
                .as_deref()
                .map(|h| format!("{h}, "))
                .unwrap_or_default(),
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.cpu_cores,
            self.kernel.as_deref().unwrap_or("?"),
        )
    }

    /// Record the finish time (now).
    pub fn finish(&mut self) {
        self.finished_at = Some(now_rfc3339());
    }
}
