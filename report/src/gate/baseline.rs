//! Baseline files (`results/baselines/gate/<tier>.json`): what a tier measured on a known
//! commit and machine, written by `chatbench gate … --update-baseline` and read back by every
//! later gate run. The machine fingerprint decides whether a comparison is fair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatbench_model::provenance::Provenance;
use serde::{Deserialize, Serialize};

use super::GateError;

/// The schema tag of baseline files.
pub const SCHEMA: &str = "chatbench-gate-baseline/1";

/// The machine facts a measurement depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// CPU model (`model name` in /proc/cpuinfo).
    pub cpu_model: Option<String>,
    /// CPUs online.
    pub cpu_cores: usize,
    /// Kernel release.
    pub kernel: Option<String>,
    /// RLIMIT_NOFILE (soft, hard) when collected.
    pub rlimit_nofile: Option<(u64, u64)>,
}

impl Fingerprint {
    /// The fingerprint of the machine a provenance was collected on.
    pub fn from_provenance(p: &Provenance) -> Fingerprint {
        Fingerprint {
            cpu_model: p.cpu_model.clone(),
            cpu_cores: p.cpu_cores,
            kernel: p.kernel.clone(),
            rlimit_nofile: p.rlimit_nofile.as_ref().map(|l| (l.soft, l.hard)),
        }
    }

    /// What differs from `other`, one line per fact (empty when they match).
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut d = Vec::new();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".into());
        if self.cpu_model != other.cpu_model {
            d.push(format!(
                "CPU model: {} ≠ {}",
                opt(&self.cpu_model),
                opt(&other.cpu_model)
            ));
        }
        if self.cpu_cores != other.cpu_cores {
            d.push(format!("CPUs: {} ≠ {}", self.cpu_cores, other.cpu_cores));
        }
        if self.kernel != other.kernel && !same_kernel_series(&self.kernel, &other.kernel) {
            d.push(format!(
                "kernel: {} ≠ {}",
                opt(&self.kernel),
                opt(&other.kernel)
            ));
        }
        if self.rlimit_nofile != other.rlimit_nofile {
            let f = |l: &Option<(u64, u64)>| {
                l.map(|(s, h)| format!("{s}/{h}"))
                    .unwrap_or_else(|| "unknown".into())
            };
            d.push(format!(
                "RLIMIT_NOFILE: {} ≠ {}",
                f(&self.rlimit_nofile),
                f(&other.rlimit_nofile)
            ));
        }
        d
    }

    /// Differences that do not stop a comparison but are worth saying: a kernel of the same
    /// major.minor series at another patch level (CI runners update those routinely).
    pub fn warnings(&self, other: &Fingerprint) -> Vec<String> {
        match (&self.kernel, &other.kernel) {
            (Some(a), Some(b)) if a != b && same_kernel_series(&self.kernel, &other.kernel) => {
                vec![format!(
                    "kernel patch level differs: {a} ≠ {b} (same {} series): compared anyway",
                    kernel_series(a)
                        .map(|(x, y)| format!("{x}.{y}"))
                        .unwrap_or_default()
                )]
            }
            _ => Vec::new(),
        }
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} CPUs), kernel {}",
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.cpu_cores,
            self.kernel.as_deref().unwrap_or("?")
        )
    }
}

/// One baseline metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineMetric {
    /// Unit, for display.
    pub unit: String,
    /// The value compared against (deterministic tier: the measurement; statistical tier: the
    /// median of `samples`).
    pub value: f64,
    /// Every observation behind `value` (repeats of a deterministic workload, or the runs of
    /// the statistical tier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

/// A baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `deterministic` or `statistical`.
    pub tier: String,
    /// When it was written, RFC 3339 UTC.
    pub created_at: String,
    /// The commit measured (`git rev-parse HEAD`), and whether the tree was dirty.
    pub commit: Option<String>,
    /// Whether tracked files had uncommitted changes when it was measured.
    pub dirty: Option<bool>,
    /// The machine it was measured on.
    pub fingerprint: Fingerprint,
    /// How it was measured (workload sizes, build profile, tools, scenario …).
    pub settings: BTreeMap<String, String>,
    /// Metric name → value.
    pub metrics: BTreeMap<String, BaselineMetric>,
}

impl Baseline {
    /// Reads and checks a baseline file.
    pub fn load(path: &Path) -> Result<Baseline, GateError> {
        let text = std::fs::read_to_string(path).map_err(|source| GateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let b: Baseline = serde_json::from_str(&text).map_err(|source| GateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if b.schema != SCHEMA {
            return Err(GateError::Schema {
                path: path.to_path_buf(),
                found: b.schema,
            });
        }
        Ok(b)
    }

    /// Writes the file atomically (temporary file, then rename), creating its folder.
    pub fn save(&self, path: &Path) -> Result<(), GateError> {
        let write_err = |source| GateError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut text = serde_json::to_string_pretty(self).map_err(|e| GateError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        let tmp: PathBuf = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}

/// A kernel release's major.minor (`6.1.0-28-amd64` → (6, 1)).
fn kernel_series(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let num = |p: Option<&str>| -> Option<u32> {
        let p = p?;
        let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
        p[..end].parse().ok()
    };
    Some((num(parts.next())?, num(parts.next())?))
}

/// Whether two kernel releases are of the same major.minor series (both known).
fn same_kernel_series(a: &Option<String>, b: &Option<String>) -> bool {
    match (
        a.as_deref().and_then(kernel_series),
        b.as_deref().and_then(kernel_series),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            cpu_model: Some("Xeon".into()),
            cpu_cores: 2,
            kernel: Some("6.1".into()),
            rlimit_nofile: Some((1024, 20000)),
        }
    }

    #[test]
    fn fingerprint_differences_name_each_fact() {
        assert!(fp().differences(&fp()).is_empty());
        let other = Fingerprint {
            cpu_cores: 4,
            kernel: None,
            ..fp()
        };
        let d = fp().differences(&other);
        assert_eq!(d.len(), 2);
        assert!(d[0].contains("CPUs: 2 ≠ 4") && d[1].contains("kernel: 6.1 ≠ unknown"));
    }

    #[test]
    fn a_kernel_patch_level_is_a_warning_not_a_difference() {
        let k = |r: &str| Fingerprint {
            kernel: Some(r.into()),
            ..fp()
        };
        let (a, b) = (k("6.1.0-28-amd64"), k("6.1.0-31-amd64"));
        assert!(a.differences(&b).is_empty());
        let w = a.warnings(&b);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("same 6.1 series"), "{w:?}");
        // Another minor series is another kernel.
        let c = k("6.12.48+deb13-amd64");
        assert_eq!(a.differences(&c).len(), 1);
        assert!(a.warnings(&c).is_empty());
    }

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/det.json");
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "x".to_string(),
            BaselineMetric {
                unit: "Ir".into(),
                value: 1.5,
                samples: vec![1.5, 1.5],
            },
        );
        let b = Baseline {
            schema: SCHEMA.into(),
            tier: "deterministic".into(),
            created_at: "now".into(),
            commit: Some("abc".into()),
            dirty: Some(false),
            fingerprint: fp(),
            settings: BTreeMap::new(),
            metrics,
        };
        b.save(&path).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), b);
        let e = Baseline::load(&dir.path().join("none.json")).unwrap_err();
        assert!(e.to_string().contains("none.json"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Baseline::load(&path),
            Err(GateError::Parse { .. })
        ));
        let wrong = serde_json::to_string(&Baseline {
            schema: "other/9".into(),
            ..b
        })
        .unwrap();
        std::fs::write(&path, wrong).unwrap();
        let e = Baseline::load(&path).unwrap_err();
        assert!(e.to_string().contains("other/9"), "{e}");
    }
}
