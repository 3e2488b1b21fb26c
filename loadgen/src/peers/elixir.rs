//! Building and starting the Elixir peer (`servers/peers/elixir/`, a mix project with no Hex
//! dependencies): the compile step that makes a fresh clone work, and the `elixir` command line
//! with the BEAM's schedulers sized to the server's CPUs.
//!
//! The build is cached per source content: `mix compile` runs with `MIX_BUILD_PATH` set to
//! `_build/chatbench-<hash of mix.exs and lib/>`, into a temporary folder first, renamed into
//! place when complete, so concurrent starts (parallel tests, two runs) never see half a build
//! and never rebuild what is there. Within one process, builds are serialised by a lock.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{find_on_path, PeerError};

const PEER: &str = "elixir";
/// The application's name in mix.exs (its ebin folder under the build path).
const APP: &str = "chatbench_peer";

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The program and arguments that start the Elixir peer from `dir` (`servers/peers`), with
/// `schedulers` BEAM schedulers, listening on 127.0.0.1 port 0, plus `extra` server flags.
pub(super) fn command(
    dir: &Path,
    schedulers: usize,
    extra: &[String],
) -> Result<(PathBuf, Vec<String>), PeerError> {
    let project = dir.join("elixir");
    let mix_exs = project.join("mix.exs");
    if !mix_exs.is_file() {
        return Err(PeerError::Missing { path: mix_exs });
    }
    let elixir = find_on_path("elixir").ok_or(PeerError::NoElixir {
        tool: "elixir",
        peer: PEER,
    })?;
    let ebin = build(&project)?;
    let schedulers = schedulers.max(1);
    let mut args = vec![
        "--erl".to_string(),
        // Schedulers sized to the CPUs the server is pinned to; no busy-waiting, so the CPU
        // the sampler measures is work (spinning schedulers would also steal the generator's
        // cores on a small machine).
        format!("+S {schedulers}:{schedulers} +sbwt none +sbwtdcpu none +sbwtdio none"),
        "-pa".into(),
        ebin.display().to_string(),
        "-e".into(),
        "ChatbenchPeer.CLI.main(System.argv())".into(),
        "--no-halt".into(),
        "--".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().cloned());
    Ok((elixir, args))
}

/// Compiles the project unless this exact source is built already; returns the ebin folder.
fn build(project: &Path) -> Result<PathBuf, PeerError> {
    let root = project
        .join("_build")
        .join(format!("chatbench-{:016x}", source_hash(project)?));
    let ebin = root.join("lib").join(APP).join("ebin");
    let app_file = ebin.join(format!("{APP}.app"));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if app_file.is_file() {
        return Ok(ebin);
    }
    let mix = find_on_path("mix").ok_or(PeerError::NoElixir {
        tool: "mix",
        peer: PEER,
    })?;
    let tmp = project.join("_build").join(format!(
        "tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let out = Command::new(mix)
        .arg("compile")
        .current_dir(project)
        .env("MIX_BUILD_PATH", &tmp)
        .env("MIX_ENV", "prod")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: "could not run mix".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    // Another process may have finished the same build first: theirs is as good as ours.
    if std::fs::rename(&tmp, &root).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if app_file.is_file() {
        Ok(ebin)
    } else {
        Err(PeerError::Build {
            peer: PEER,
            dir: project.display().to_string(),
            status: "no application file after the build".into(),
            output: format!("expected {}", app_file.display()),
        })
    }
}

/// A hash of `mix.exs` and every file under `lib/` (names and contents, in name order).
fn source_hash(project: &Path) -> Result<u64, PeerError> {
    let mut files = vec![project.join("mix.exs")];
    let mut dirs = vec![project.join("lib")];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|_| PeerError::Missing { path: d.clone() })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|_| PeerError::Missing { path: f.clone() })?;
        f.strip_prefix(project).unwrap_or(f).hash(&mut h);
        bytes.hash(&mut h);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("lib/a")).expect("mkdir");
        std::fs::write(dir.path().join("mix.exs"), "x").expect("write");
        std::fs::write(dir.path().join("lib/a/b.ex"), "1").expect("write");
        let one = source_hash(dir.path()).expect("hash");
        assert_eq!(one, source_hash(dir.path()).expect("hash"));
        std::fs::write(dir.path().join("lib/a/b.ex"), "2").expect("write");
        assert_ne!(one, source_hash(dir.path()).expect("hash"));
    }

    #[test]
    fn a_missing_project_says_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = command(dir.path(), 1, &[]).expect_err("no project");
        assert!(e.to_string().contains("mix.exs"), "{e}");
    }
}
