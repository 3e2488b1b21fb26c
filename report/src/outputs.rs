//! The files a comparison folder holds beside its runs — `comparison.md`, `comparison.json`,
//! `report.html`, `charts/` and `claims.toml` (the text of the claims file its Claims section
//! was judged from) — made by one function for `chatbench compare` and for `chatbench report
//! DIR`, so that a rebuild from the files is the same, byte for byte, even once the claims
//! file it was judged from has moved or changed.

use std::path::{Path, PathBuf};

use chatbench_model::results::{write_file_atomic, ResultsError};

use crate::charts::{ChartInputs, Drawn};
use crate::comparison::{Comparison, Results, Runs};
use crate::page::ColumnDocs;

/// The name of the copy of the judged claims file in a comparison folder.
pub const CLAIMS_COPY: &str = "claims.toml";

/// The text files of a comparison, as they are written.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// `comparison.md`.
    pub markdown: String,
    /// `comparison.json`.
    pub json: Vec<u8>,
    /// `report.html`.
    pub html: String,
    /// `claims.toml`: the text of the claims file the Claims section was judged from, when
    /// there is a section.
    pub claims: Option<String>,
}

/// Draws every chart the runs allow into `out_dir/charts/`. A chart that cannot be drawn is
/// listed in [`Drawn::skipped`] with why; the others are drawn all the same.
pub fn draw_charts(
    out_dir: &Path,
    archs: &[String],
    results: &Results,
    runs: &Runs,
    slo_p99_ms: f64,
    tiny: bool,
) -> Drawn {
    let inputs = ChartInputs {
        archs,
        results,
        runs,
        tiny,
    };
    let mut drawn = Drawn::default();
    drawn.add_or_skip(
        "the comparison charts",
        crate::charts::render_comparison_charts(out_dir, &inputs),
    );
    drawn.add_or_skip(
        "the sweep charts",
        crate::sweep_charts::render_sweep_charts(out_dir, archs, runs, slo_p99_ms, tiny),
    );
    drawn.add_or_skip(
        "the point timelines",
        crate::sweep_charts::render_point_timelines(out_dir, runs, tiny),
    );
    drawn
}

/// The relative path from `page_dir` to docs/architectures.md of the chatbench checkout the
/// folder is in, if it is in one (so the page's column legend links to it).
pub fn docs_link(page_dir: &Path) -> Option<String> {
    let abs = std::fs::canonicalize(page_dir).ok()?;
    let mut up = String::new();
    for dir in abs.ancestors() {
        if dir.join("docs/architectures.md").is_file() && dir.join("Cargo.toml").is_file() {
            return Some(format!("{up}docs/architectures.md"));
        }
        up.push_str("../");
    }
    None
}

/// Renders the files of comparison `c` with the charts drawn (`docs` and `columns` as for
/// [`crate::html::render`]); `claims` is the text its Claims section was judged from (what
/// [`crate::claims::attach`] returned).
pub fn render(
    c: &Comparison,
    results: &Results,
    drawn: &Drawn,
    docs: Option<&str>,
    columns: ColumnDocs,
    claims: Option<&str>,
) -> Result<Outputs, serde_json::Error> {
    Ok(Outputs {
        markdown: crate::comparison::render_markdown(c, columns),
        json: serde_json::to_vec_pretty(c)?,
        html: crate::html::render(c, results, drawn, docs, columns),
        claims: claims.map(str::to_string),
    })
}

/// Writes the files into `dir` (each atomically; the claims copy first, so a folder whose
/// comparison.json names a claims file has its text); returns their paths.
pub fn write(dir: &Path, o: &Outputs) -> Result<Vec<PathBuf>, ResultsError> {
    let claims = o.claims.as_ref().map(|t| (CLAIMS_COPY, t.as_bytes()));
    let files = [
        ("report.html", o.html.as_bytes()),
        ("comparison.md", o.markdown.as_bytes()),
        ("comparison.json", o.json.as_slice()),
    ];
    let mut out = Vec::new();
    for (name, bytes) in claims.into_iter().chain(files) {
        let path = dir.join(name);
        write_file_atomic(&path, bytes)?;
        out.push(path);
    }
    Ok(out)
}

/// Why a comparison folder could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Its runs could not be read.
    #[error(transparent)]
    Load(#[from] crate::comparison::ReportError),
    /// The claims file does not judge.
    #[error(transparent)]
    Claims(#[from] crate::claims::ClaimsError),
    /// The folder's copy of its claims file does not judge (it was edited since).
    #[error("{path} (the comparison's copy of its claims file): {source}")]
    StoredClaims {
        /// The copy.
        path: PathBuf,
        /// Why it does not judge.
        source: crate::claims::ClaimsError,
    },
    /// The folder's copy of its claims file could not be read.
    #[error("{path}: cannot read the comparison's copy of its claims file: {source}")]
    ReadClaims {
        /// The copy.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `comparison.json` could not be encoded.
    #[error("encoding comparison.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// A comparison rebuilt from its folder's files ([`rebuild`]).
#[derive(Debug)]
pub struct Rebuilt {
    /// The comparison.
    pub comparison: Comparison,
    /// The three files.
    pub outputs: Outputs,
    /// The charts drawn (and those that could not be).
    pub drawn: Drawn,
    /// What the reader should know about the rebuild, e.g. that the folder was judged against
    /// a claims file not given this time.
    pub warnings: Vec<String>,
    /// Which claims file the Claims section was judged from, in words (`None`: no section).
    pub claims_used: Option<String>,
}

/// Rebuilds the files of the comparison folder `dir` from its results files alone, exactly as
/// `chatbench compare` wrote them (notes, `--tiny` and provenance from its `comparison.json`),
/// drawing the charts into `out/charts/`. When `out` is not `dir`, `prefix` is the path from
/// `out` to `dir` and every link to a run's `summary.json` goes through it. `columns` says
/// what each column stands for (as `compare` gave it).
pub fn rebuild(
    dir: &Path,
    out: &Path,
    prefix: Option<&str>,
    claims: Option<(&str, &str)>,
    columns: ColumnDocs,
) -> Result<Rebuilt, RebuildError> {
    let loaded = crate::comparison::load(dir)?;
    let slo = loaded
        .slo_p99_ms
        .unwrap_or(crate::sweeps::DEFAULT_SLO_P99_MS);
    let mut c = loaded.comparison(dir);
    let copy_path = dir.join(CLAIMS_COPY);
    let stored = stored_claims(&copy_path, loaded.claims_file.as_deref())?;
    let (judged, claims_used) = match (claims, &stored) {
        (Some((name, text)), _) => (
            crate::claims::attach(&mut c, Some((name, text)), &loaded.results)?,
            Some(format!("claims judged from {name} (--claims)")),
        ),
        (None, Some((name, text))) => {
            let judged = crate::claims::attach(&mut c, Some((name, text)), &loaded.results)
                .map_err(|source| RebuildError::StoredClaims {
                    path: copy_path.clone(),
                    source,
                })?;
            let how = format!(
                "claims judged from {}, the copy of {name} the comparison was judged from",
                copy_path.display()
            );
            (judged, Some(how))
        }
        (None, None) => {
            let judged = crate::claims::attach(&mut c, None, &loaded.results)?;
            let how = c.claims.as_ref().map(|s| {
                format!(
                    "claims judged from the shipped {} (the folder has no {CLAIMS_COPY})",
                    s.file
                )
            });
            (judged, how)
        }
    };
    let mut warnings = Vec::new();
    let judged_now = c.claims.as_ref().map(|s| s.file.as_str());
    if let Some(before) = &loaded.claims_file {
        if judged_now != Some(before.as_str()) {
            warnings.push(format!(
                "the comparison was judged against the claims file {before}; give --claims {before} to rebuild the same Claims section"
            ));
        }
    }
    if let Some(prefix) = prefix {
        rebase(&mut c, prefix);
    }
    // The page embeds the charts drawn now, from memory: never a file of the folder's charts/.
    let drawn = draw_charts(
        out,
        &loaded.archs,
        &loaded.results,
        &loaded.runs,
        slo,
        loaded.tiny,
    );
    let docs = docs_link(out);
    let outputs = render(
        &c,
        &loaded.results,
        &drawn,
        docs.as_deref(),
        columns,
        judged,
    )?;
    Ok(Rebuilt {
        comparison: c,
        outputs,
        drawn,
        warnings,
        claims_used,
    })
}

/// The folder's copy of the claims file it was judged from (`copy`), if it has one: the name
/// the comparison recorded for it (`recorded`; the copy's own path when none) and its text.
fn stored_claims(
    copy: &Path,
    recorded: Option<&str>,
) -> Result<Option<(String, String)>, RebuildError> {
    match std::fs::read_to_string(copy) {
        Ok(text) => {
            let name = recorded.map_or_else(|| copy.display().to_string(), str::to_string);
            Ok(Some((name, text)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RebuildError::ReadClaims {
            path: copy.to_path_buf(),
            source,
        }),
    }
}

/// Puts `prefix` before every link to a run's files — the table's, the provenance's and the
/// Claims section's (a comparison written to another folder).
fn rebase(c: &mut Comparison, prefix: &str) {
    let join = |s: &mut String| *s = format!("{}/{s}", prefix.trim_end_matches('/'));
    for row in &mut c.rows {
        for cell in row.cells.values_mut() {
            if let Some(s) = cell.source.as_mut() {
                join(s);
            }
        }
    }
    if let Some(p) = c.provenance.as_mut() {
        for r in &mut p.runs {
            if let Some(s) = r.source.as_mut() {
                join(s);
            }
        }
    }
    if let Some(claims) = c.claims.as_mut() {
        for j in &mut claims.judged {
            if let Some(s) = j.cell_source.as_mut() {
                join(s);
            }
        }
    }
}

/// The relative path from folder `from` to folder `to` (both existing), e.g. `../cmp`.
pub fn relative(from: &Path, to: &Path) -> std::io::Result<String> {
    let (from, to) = (std::fs::canonicalize(from)?, std::fs::canonicalize(to)?);
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

/// Runs of the folder `dir` whose `timeseries.csv` is missing (nor gzipped): their timelines
/// cannot be drawn, so rewriting the folder's page would drop charts it has.
pub fn runs_without_timeseries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("runs")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.join("summary.json").is_file()
                && !p.join("timeseries.csv").is_file()
                && !p.join(crate::charts::TIMESERIES_GZ).is_file()
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_go_up_then_down() {
        let root = tempfile::tempdir().expect("tempdir");
        let (a, b) = (root.path().join("x/new"), root.path().join("y/cmp"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        assert_eq!(relative(&a, &b).expect("paths"), "../../y/cmp");
        assert_eq!(relative(&a, &a).expect("paths"), ".");
    }

    #[test]
    fn the_column_legend_links_the_docs_of_the_checkout_it_is_in() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        assert_eq!(
            docs_link(&here).as_deref(),
            Some("../../../docs/architectures.md")
        );
        let outside = tempfile::tempdir().expect("tempdir");
        assert_eq!(docs_link(outside.path()), None);
    }
}
