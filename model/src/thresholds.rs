//! Thresholds: pass/fail limits on the figure catalogue's keys, the way k6 thresholds and
//! Artillery's `ensure` work, and the floor every run must clear even without any — that it
//! measured something. Pure: a [`Summary`] and the limits in, verdicts out; `chatbench run`
//! (the scenario's `[thresholds]` and `--threshold`), and the gate read them from here.
//!
//! A limit is written `OP VALUE [UNIT]`, e.g. `"<= 50 ms"` for `p99_latency`: the value is in
//! the unit the figure is *shown* in (`docs/figures.md`, column "shown as"), and the unit, when
//! given, must be that one. A figure the run does not have (no deliveries, not sampled) fails
//! its threshold: a limit that cannot be checked does not pass.

use std::fmt;

use thiserror::Error;

use crate::figures::{self, ByKind, Figure};
use crate::results::{RunStatus, Summary};
use crate::scenario::Scenario;

/// The note a run writes when the target process it samples exits during the run; the
/// nothing-measured check reads it back.
pub const TARGET_EXITED_NOTE: &str = "the target process exited during the run";

/// A comparison against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<=`: the value may be at most the limit.
    AtMost,
    /// `<`
    Below,
    /// `>=`: the value must be at least the limit.
    AtLeast,
    /// `>`
    Above,
}

impl Op {
    /// How it is written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::AtMost => "<=",
            Op::Below => "<",
            Op::AtLeast => ">=",
            Op::Above => ">",
        }
    }

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::AtMost => value <= limit,
            Op::Below => value < limit,
            Op::AtLeast => value >= limit,
            Op::Above => value > limit,
        }
    }

    /// Splits `"<= 50 ms"` into the operator and the rest.
    fn split(expr: &str) -> Option<(Op, &str)> {
        let e = expr.trim_start();
        // Two-character operators first.
        for (text, op) in [
            ("<=", Op::AtMost),
            (">=", Op::AtLeast),
            ("<", Op::Below),
            (">", Op::Above),
        ] {
            if let Some(rest) = e.strip_prefix(text) {
                return Some((op, rest));
            }
        }
        None
    }
}

/// Why a threshold could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum ThresholdError {
    /// The key is not in the figure catalogue.
    #[error("unknown figure {key:?}{suggestion} (valid keys: {valid}; see docs/figures.md)")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// `; did you mean "…"?` or empty.
        suggestion: String,
        /// The catalogue's keys, comma-separated.
        valid: String,
    },
    /// The limit is not `OP VALUE [UNIT]`.
    #[error("{key} {expr:?}: {why} ({form})")]
    BadLimit {
        /// The figure's key.
        key: String,
        /// The limit as written.
        expr: String,
        /// What is wrong with it.
        why: String,
        /// The accepted form, with an example.
        form: String,
    },
    /// A split figure's kind that no run can record.
    #[error(
        "unknown kind {kind:?} of {key}{suggestion} (its kinds: {kinds}; see docs/figures.md)"
    )]
    UnknownKind {
        /// The split figure's key, e.g. `connection_errors`.
        key: String,
        /// The kind as written.
        kind: String,
        /// `; did you mean "…"?` or empty.
        suggestion: String,
        /// What its kinds are.
        kinds: &'static str,
    },
    /// A `[thresholds]` entry that is neither a limit nor a table of limits by kind.
    #[error("{key}: expected a limit such as \"<= 50 ms\", or for a figure split by kind a table such as {{ refused = \"<= 0\" }}")]
    BadEntry {
        /// The entry's key.
        key: String,
    },
    /// A command-line threshold without an operator.
    #[error("--threshold {0:?}: expected KEY<=VALUE (or <, >=, >), e.g. --threshold 'p99_latency<=50ms'")]
    BadFlag(String),
}

/// One limit on one figure, or on one kind of a figure split by kind.
#[derive(Debug, Clone)]
pub struct Threshold {
    /// The figure it judges.
    pub figure: &'static Figure,
    /// The one kind it judges (`connection_errors.refused`), if any.
    pub kind: Option<Kind>,
    /// The comparison.
    pub op: Op,
    /// The limit, in the figure's shown unit.
    pub limit: f64,
}

/// One kind of a split figure: `refused` of `connection_errors`.
#[derive(Debug, Clone)]
pub struct Kind {
    /// How the figure splits.
    pub split: &'static ByKind,
    /// The kind, as the results count it.
    pub name: String,
}

impl PartialEq for Threshold {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key() && self.op == other.op && self.limit == other.limit
    }
}

impl Threshold {
    /// Its key as written: `p99_latency`, or `connection_errors.refused` for one kind.
    pub fn key(&self) -> String {
        match &self.kind {
            Some(k) => format!("{}.{}", self.figure.key, k.name),
            None => self.figure.key.to_string(),
        }
    }

    /// The judged value in the shown unit, `None` when the run has none.
    fn shown(&self, s: &Summary) -> Option<f64> {
        match &self.kind {
            Some(k) => Some((k.split.read)(s, &k.name) / self.figure.show.divisor),
            None => self.figure.shown(s),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.key(),
            self.op.as_str(),
            self.figure.show.format(self.limit)
        )
    }
}

/// The catalogue's keys, comma-separated (for messages).
pub fn valid_keys() -> String {
    figures::CATALOGUE
        .iter()
        .map(|f| f.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The figure named `key`, or the error naming the valid keys.
pub fn figure(key: &str) -> Result<&'static Figure, ThresholdError> {
    figures::by_key(key).ok_or_else(|| {
        let keys: Vec<String> = figures::CATALOGUE.iter().map(|f| f.key.into()).collect();
        ThresholdError::UnknownKey {
            key: key.into(),
            suggestion: crate::scenario::closest(key, &keys)
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_default(),
            valid: valid_keys(),
        }
    })
}

/// The kind named after a split figure's key (`connection_errors.refused`), or the error naming
/// its kinds.
fn kind(figure: &'static Figure, kind: &str) -> Result<Kind, ThresholdError> {
    let Some(split) = figures::by_kind(figure.key) else {
        let splits: Vec<&str> = figures::BY_KIND.iter().map(|b| b.key).collect();
        return Err(ThresholdError::UnknownKey {
            key: format!("{}.{kind}", figure.key),
            suggestion: format!("; {} is not split by kind", figure.key),
            valid: format!("{}; by kind: {}", valid_keys(), splits.join(", ")),
        });
    };
    if !(split.known)(kind) {
        let known: Vec<String> = figures::CONNECT_ERROR_LABELS
            .iter()
            .map(|l| l.to_string())
            .collect();
        let suggestion = if split.key == "connection_errors" {
            crate::scenario::closest(kind, &known)
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        return Err(ThresholdError::UnknownKind {
            key: figure.key.into(),
            kind: kind.into(),
            suggestion,
            kinds: split.kinds,
        });
    }
    Ok(Kind {
        split,
        name: kind.into(),
    })
}

/// Reads `expr` (`"<= 50 ms"`) as a limit on the figure `key`, or on one kind of a figure
/// split by kind (`connection_errors.refused`).
pub fn parse(key: &str, expr: &str) -> Result<Threshold, ThresholdError> {
    let (figure, kind) = match key.split_once('.') {
        Some((base, k)) => {
            let figure = figure(base)?;
            (figure, Some(kind(figure, k)?))
        }
        None => (figure(key)?, None),
    };
    let unit = figure.show.unit;
    let form = if unit.is_empty() {
        format!(
            "write e.g. \"<= 10\": <=, <, >= or >, then a number in {} (no unit)",
            figure.unit
        )
    } else {
        format!("write e.g. \"<= 10 {unit}\": <=, <, >= or >, then a number in {unit}, optionally followed by \"{unit}\"")
    };
    let bad = |why: String| ThresholdError::BadLimit {
        key: key.into(),
        expr: expr.into(),
        why,
        form: form.clone(),
    };
    let (op, rest) = Op::split(expr).ok_or_else(|| bad("no comparison".into()))?;
    let rest = rest.trim();
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let limit: f64 = number
        .parse()
        .map_err(|_| bad(format!("{number:?} is not a number")))?;
    if !limit.is_finite() {
        return Err(bad("the limit must be a finite number".into()));
    }
    let suffix = suffix.trim();
    if !suffix.is_empty() && suffix != unit {
        return Err(bad(if unit.is_empty() {
            format!("{suffix:?}: this figure takes no unit")
        } else {
            format!("{suffix:?}: this figure's limit is in {unit}")
        }));
    }
    Ok(Threshold {
        figure,
        kind,
        op,
        limit,
    })
}

/// Reads a command-line threshold, `KEY<=VALUE` (spaces allowed around the operator).
pub fn parse_flag(flag: &str) -> Result<Threshold, ThresholdError> {
    let at = flag
        .find(['<', '>'])
        .ok_or_else(|| ThresholdError::BadFlag(flag.into()))?;
    let (key, expr) = flag.split_at(at);
    parse(key.trim(), expr)
}

/// A command-line threshold as the `--set` override it stands for
/// (`thresholds.KEY="<=VALUE"`), so that it is validated and recorded with the scenario.
pub fn flag_as_override(flag: &str) -> Result<String, ThresholdError> {
    let t = parse_flag(flag)?;
    let at = flag.find(['<', '>']).unwrap_or(0);
    let expr = toml::Value::String(flag[at..].trim().to_string());
    Ok(format!("thresholds.{}={expr}", t.key()))
}

/// A threshold judged against a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The threshold.
    pub threshold: Threshold,
    /// The figure's value, shown unit; `None` when the run has none.
    pub value: Option<f64>,
    /// Whether the value satisfies the limit (a missing value does not).
    pub passed: bool,
}

impl Judged {
    /// `p99_latency 62.000 ms <= 50.000 ms: crossed`.
    pub fn line(&self) -> String {
        let t = &self.threshold;
        let value = self
            .value
            .map(|v| t.figure.show.format(v))
            .unwrap_or_else(|| "no value".into());
        let verdict = match (self.passed, self.value) {
            (true, _) => "ok",
            (false, Some(_)) => "CROSSED",
            (false, None) => "CROSSED (the run has no value for it)",
        };
        format!(
            "{}: {value} (limit {} {}): {verdict}",
            t.key(),
            t.op.as_str(),
            t.figure.show.format(t.limit)
        )
    }
}

/// Judges each threshold against the run.
pub fn judge(s: &Summary, thresholds: &[Threshold]) -> Vec<Judged> {
    thresholds
        .iter()
        .map(|t| {
            let value = t.shown(s).filter(|v| v.is_finite());
            Judged {
                threshold: t.clone(),
                value,
                passed: value.is_some_and(|v| t.op.holds(v, t.limit)),
            }
        })
        .collect()
}

/// A `[thresholds]` table's entries as (key, limit) pairs: `key = "limit"`, and for a figure
/// split by kind `key.kind = "limit"` (a table of kinds), flattened to `key.kind`. An entry of
/// another shape is an error naming it.
pub fn entries<'a>(
    table: impl IntoIterator<Item = (&'a String, &'a toml::Value)>,
) -> Result<Vec<(String, String)>, ThresholdError> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::String(expr) => out.push((key.clone(), expr.clone())),
            toml::Value::Table(kinds) => {
                for (kind, v) in kinds {
                    let flat = format!("{key}.{kind}");
                    let Some(expr) = v.as_str() else {
                        return Err(ThresholdError::BadEntry { key: flat });
                    };
                    out.push((flat, expr.to_string()));
                }
            }
            _ => return Err(ThresholdError::BadEntry { key: key.clone() }),
        }
    }
    Ok(out)
}

/// The thresholds of a scenario's `[thresholds]` table (validated when it was parsed, so an
/// entry that does not read is skipped here).
pub fn of_scenario(scenario: &Scenario) -> Vec<Threshold> {
    entries(&scenario.thresholds)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| parse(k, v).ok())
        .collect()
}

/// The thresholds recorded with a run: its scenario's `[thresholds]`, command-line ones
/// included (they are recorded as overrides merged into the scenario text).
pub fn of_summary(s: &Summary) -> Result<Vec<Threshold>, ThresholdError> {
    let Ok(table) = s.scenario.text.parse::<toml::Table>() else {
        return Ok(Vec::new());
    };
    let Some(toml::Value::Table(t)) = table.get("thresholds") else {
        return Ok(Vec::new());
    };
    entries(t)?.iter().map(|(k, v)| parse(k, v)).collect()
}

/// A scenario's text without its `[thresholds]` table, for deciding whether two runs measured
/// the same thing (a limit is no condition of the measurement). Text without the table is
/// returned as it is.
pub fn without_thresholds(scenario_text: &str) -> String {
    let Ok(mut t) = scenario_text.parse::<toml::Table>() else {
        return scenario_text.to_string();
    };
    if t.remove("thresholds").is_none() {
        return scenario_text.to_string();
    }
    toml::to_string(&t).unwrap_or_else(|_| scenario_text.to_string())
}

/// Whether a `--set` override sets a threshold (see [`flag_as_override`]).
pub fn is_threshold_override(o: &str) -> bool {
    o.trim_start().starts_with("thresholds.")
}

/// Why a run measured nothing meaningful (empty when it did): nothing sent though senders were
/// planned, nothing delivered though deliveries were expected, every connection closed by the
/// server, or the target process exited. A run with such a reason fails (exit 3) even with no
/// threshold. A run that already failed (no connection) gets none: it says so itself. A run
/// that injects a fault (`poison_after`, `[[fault]]`) measures what the crash does: closes and
/// a dead target are its result there, not a broken measurement.
pub fn nothing_measured(s: &Summary) -> Vec<String> {
    if s.status == RunStatus::Failed {
        return Vec::new();
    }
    let scenario = toml::from_str::<Scenario>(&s.scenario.text).ok();
    let faults = scenario
        .as_ref()
        .is_some_and(|sc| sc.poison_after.is_some() || !sc.faults.is_empty());
    let mut why = Vec::new();
    let c = &s.connections;
    let m = &s.messages;
    let closed: u64 = c.closed_by_server.values().sum();
    let recovered = c.reconnect.as_ref().is_some_and(|r| r.reconnected > 0);
    if c.ready > 0 && closed >= c.ready && !recovered && !faults {
        why.push(format!(
            "the server closed every connection ({closed} closes of {} ready connections: {:?}); nothing after that was measured",
            c.ready, c.closed_by_server
        ));
    }
    if !faults && s.notes.iter().any(|n| n == TARGET_EXITED_NOTE) {
        why.push("the target process died during the run".into());
    }
    let senders = scenario.as_ref().map_or(0, Scenario::sender_count);
    if m.sent == 0 && senders > 0 {
        why.push(format!(
            "nothing was sent in the measurement window, though {senders} senders were planned"
        ));
    } else if m.expected > 0 && m.delivered == 0 {
        why.push(format!(
            "nothing was delivered: 0 of {} expected deliveries (100 % loss); does the server speak the scenario's protocol (`protocol`, and `[profile]` options such as a template's from_pointer)?",
            m.expected
        ));
    }
    why
}

/// Escapes text for XML content and attribute values.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report: one test case per threshold (named by its key and limit), a failed one
/// with a `<failure>` giving the value against the limit; `failed_run`, when given, adds a
/// failed `run` case first (the run measured nothing meaningful, or failed).
pub fn junit(suite: &str, judged: &[Judged], failed_run: Option<&str>) -> String {
    use std::fmt::Write;
    let tests = judged.len() + usize::from(failed_run.is_some());
    let failures = judged.iter().filter(|j| !j.passed).count() + usize::from(failed_run.is_some());
    let suite = xml_escape(suite);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"chatbench\" tests=\"{tests}\" failures=\"{failures}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">"
    );
    if let Some(why) = failed_run {
        let _ = writeln!(
            out,
            "    <testcase classname=\"{suite}\" name=\"run measured something\">\n      <failure message=\"{}\"/>\n    </testcase>",
            xml_escape(why)
        );
    }
    for j in judged {
        let name = xml_escape(&j.threshold.to_string());
        if j.passed {
            let _ = writeln!(out, "    <testcase classname=\"{suite}\" name=\"{name}\"/>");
        } else {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{suite}\" name=\"{name}\">\n      <failure message=\"{}\"/>\n    </testcase>",
                xml_escape(&j.line())
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_in_the_shown_unit_with_an_optional_unit() {
        let t = parse("p99_latency", "<= 50 ms").expect("reads");
        assert_eq!((t.op, t.limit), (Op::AtMost, 50.0));
        let t = parse("p99_latency", "<50").expect("reads");
        assert_eq!((t.op, t.limit), (Op::Below, 50.0));
        let t = parse("deliveries_per_s", ">= 1000 /s").expect("reads");
        assert_eq!((t.op, t.limit), (Op::AtLeast, 1000.0));
        assert_eq!(t.to_string(), "deliveries_per_s >= 1000 /s");
        let e = parse("p99_latency", "<= 50 s").expect_err("wrong unit");
        assert!(e.to_string().contains("in ms"), "{e}");
        let e = parse("p99_latency", "50").expect_err("no operator");
        assert!(e.to_string().contains("no comparison"), "{e}");
        let e = parse("p99_latency", "<= fast").expect_err("not a number");
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn unknown_keys_list_the_valid_ones_and_suggest() {
        let e = parse("p99_latncy", "<= 5").expect_err("unknown");
        let text = e.to_string();
        assert!(text.contains("did you mean \"p99_latency\""), "{text}");
        for f in figures::CATALOGUE {
            assert!(text.contains(f.key), "{text} lacks {}", f.key);
        }
    }

    #[test]
    fn flags_read_and_become_overrides() {
        let t = parse_flag("p99_latency<=50ms").expect("reads");
        assert_eq!(
            (t.figure.key, t.op, t.limit),
            ("p99_latency", Op::AtMost, 50.0)
        );
        assert_eq!(
            flag_as_override("loss_ratio < 0.01").expect("reads"),
            "thresholds.loss_ratio=\"< 0.01\""
        );
        assert!(matches!(
            parse_flag("p99_latency=50"),
            Err(ThresholdError::BadFlag(_))
        ));
    }

    #[test]
    fn thresholds_are_no_condition_of_the_measurement() {
        let plain = "name = \"t\"\nconnections = 10\n";
        assert_eq!(
            without_thresholds(plain),
            plain,
            "untouched without the table"
        );
        let with = format!("{plain}[thresholds]\np99_latency = \"<= 5 ms\"\n");
        let merged: toml::Table = plain.parse().expect("toml");
        assert_eq!(
            without_thresholds(&with),
            toml::to_string(&merged).expect("toml")
        );
        assert!(is_threshold_override("thresholds.p99_latency=\"<=5\""));
        assert!(!is_threshold_override("measure=\"1s\""));
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;?"
        );
    }

    #[test]
    fn a_figure_split_by_kind_is_judged_for_one_kind_and_an_unknown_kind_is_refused() {
        let s = run(ROOM, |i| {
            i.conns.errors = [("refused".to_string(), 3), ("timeout".to_string(), 1)].into();
            i.conns.closed_by_server = [("4401".to_string(), 2)].into();
        });
        let ts = [
            parse("connection_errors.refused", "<= 0").expect("reads"),
            parse("connection_errors.timeout", "<= 1").expect("reads"),
            parse("connection_errors.handshake_status_503", "<= 0").expect("reads"),
            parse("closed_by_server.4401", "< 2").expect("reads"),
            parse("connection_errors", "<= 4").expect("reads"),
        ];
        let j = judge(&s, &ts);
        assert_eq!(
            j[0].line(),
            "connection_errors.refused: 3 (limit <= 0): CROSSED"
        );
        assert!(j[1].passed, "{}", j[1].line());
        assert!(
            j[2].passed,
            "a kind the run never saw reads 0: {}",
            j[2].line()
        );
        assert!(!j[3].passed, "{}", j[3].line());
        assert!(j[4].passed, "the sum over kinds: {}", j[4].line());
        assert_eq!(ts[0].to_string(), "connection_errors.refused <= 0");
        let e = parse("connection_errors.refusd", "<= 0").expect_err("typo");
        assert!(e.to_string().contains("did you mean \"refused\""), "{e}");
        assert!(e.to_string().contains("handshake_status_NNN"), "{e}");
        let e = parse("closed_by_server.99", "<= 0").expect_err("no such close code");
        assert!(e.to_string().contains("1000–4999"), "{e}");
        let e = parse("p99_latency.refused", "<= 0").expect_err("not split");
        assert!(
            e.to_string().contains("p99_latency is not split by kind"),
            "{e}"
        );
        assert_eq!(
            flag_as_override("connection_errors.refused<=0").expect("reads"),
            "thresholds.connection_errors.refused=\"<=0\""
        );
    }

    #[test]
    fn a_table_of_kinds_is_flattened_and_another_shape_is_named() {
        let t: toml::Table = "p99_latency = \"<= 5 ms\"\nconnection_errors = { refused = \"<= 0\", timeout = \"<= 2\" }\n"
            .parse()
            .expect("toml");
        assert_eq!(
            entries(&t).expect("reads"),
            vec![
                ("connection_errors.refused".to_string(), "<= 0".to_string()),
                ("connection_errors.timeout".to_string(), "<= 2".to_string()),
                ("p99_latency".to_string(), "<= 5 ms".to_string()),
            ]
        );
        let t: toml::Table = "p99_latency = 5\n".parse().expect("toml");
        assert_eq!(
            entries(&t),
            Err(ThresholdError::BadEntry {
                key: "p99_latency".into()
            })
        );
        let t: toml::Table = "connection_errors = { refused = 0 }\n"
            .parse()
            .expect("toml");
        assert!(entries(&t)
            .expect_err("a number")
            .to_string()
            .contains("connection_errors.refused: expected a limit"));
    }

    fn run(text: &str, tweak: impl FnOnce(&mut crate::summary::SummaryInput<'_>)) -> Summary {
        let scenario = Scenario::parse(text, "t").expect("valid");
        let hist = crate::hist::new_hist();
        let mut input = crate::summary::testing::input(&scenario, &hist);
        tweak(&mut input);
        crate::summary::build(input)
    }

    const ROOM: &str = "name='t'\nconnections=10\nrooms=1\nmembers_per_room=8\n";

    #[test]
    fn judged_with_value_against_limit_and_missing_values_fail() {
        // 63 of 70 delivered over 5 s: 12.6 /s, loss 0.1; no latency recorded.
        let s = run(ROOM, |_| {});
        let ts = [
            parse("deliveries_per_s", ">= 10").expect("reads"),
            parse("loss_ratio", "<= 0.05").expect("reads"),
            parse("p99_latency", "<= 50").expect("reads"),
        ];
        let j = judge(&s, &ts);
        assert!(j[0].passed, "{}", j[0].line());
        assert!(!j[1].passed);
        assert_eq!(j[1].line(), "loss_ratio: 0.1000 (limit <= 0.0500): CROSSED");
        assert!(!j[2].passed, "no latency: cannot pass");
        assert!(j[2].line().contains("no value"), "{}", j[2].line());
        let xml = junit("t", &j, None);
        assert_eq!(xml.matches("<testcase").count(), 3);
        assert_eq!(xml.matches("<failure").count(), 2);
        assert!(xml.contains("tests=\"3\" failures=\"2\""), "{xml}");
        assert!(xml.contains("name=\"loss_ratio &lt;= 0.0500\""), "{xml}");
    }

    #[test]
    fn a_run_that_measured_something_has_no_reason() {
        assert_eq!(nothing_measured(&run(ROOM, |_| {})), Vec::<String>::new());
        // An idle scenario sends nothing and that is fine.
        let idle = run("name='t'\nconnections=10\n", |i| {
            i.msgs.sent_window = 0;
            i.msgs.expected = 0;
            i.msgs.delivered = 0;
        });
        assert_eq!(nothing_measured(&idle), Vec::<String>::new());
    }

    #[test]
    fn each_way_of_measuring_nothing_is_named() {
        let none_delivered = run(ROOM, |i| i.msgs.delivered = 0);
        let why = nothing_measured(&none_delivered);
        assert!(why[0].contains("nothing was delivered: 0 of 70"), "{why:?}");
        let none_sent = run(ROOM, |i| {
            i.msgs.sent_window = 0;
            i.msgs.expected = 0;
            i.msgs.delivered = 0;
        });
        let why = nothing_measured(&none_sent);
        assert!(why[0].contains("nothing was sent"), "{why:?}");
        let all_closed = run(ROOM, |i| {
            i.conns.closed_by_server = [("4401".to_string(), 8)].into();
        });
        let why = nothing_measured(&all_closed);
        assert!(why[0].contains("closed every connection"), "{why:?}");
        assert!(why[0].contains("4401"), "{why:?}");
        let died = run(ROOM, |i| i.notes.push(TARGET_EXITED_NOTE.into()));
        let why = nothing_measured(&died);
        assert!(why[0].contains("died"), "{why:?}");
        // With a fault injected, the crash is the measurement.
        let poisoned = run(&format!("{ROOM}poison_after = \"1s\"\n"), |i| {
            i.notes.push(TARGET_EXITED_NOTE.into());
            i.conns.closed_by_server = [("none".to_string(), 8)].into();
        });
        assert!(nothing_measured(&poisoned).is_empty());
        // A failed run says why itself.
        let failed = run(ROOM, |i| {
            i.status = RunStatus::Failed;
            i.msgs.delivered = 0;
        });
        assert!(nothing_measured(&failed).is_empty());
    }
}
