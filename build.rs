//! Build script of the `chatbench` binary: records the commit the binary is built from, so
//! `chatbench --version` (and, through `CHATBENCH_BUILD_COMMIT`, anything that reports provenance)
//! names the build's commit rather than whatever the working directory holds when it runs.
//!
//! Outside a git checkout (a source tarball, `cargo install` from a registry) the commit is
//! "unknown". A working tree with uncommitted changes is marked "-dirty".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    let described = match (commit, dirty) {
        (Some(c), Some(true)) => format!("{c}-dirty"),
        (Some(c), _) => c,
        (None, _) => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=CHATBENCH_BUILD_COMMIT={described}");
    // Rebuild when HEAD moves or the index changes (a commit, a checkout, a staged edit).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = PathBuf::from(dir);
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
                println!(
                    "cargo:rerun-if-changed={}",
                    PathBuf::from(common).join(head).display()
                );
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
