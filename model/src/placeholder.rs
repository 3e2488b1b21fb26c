//! Per-connection placeholders in the upgrade request (path and query, subprotocol, header
//! values) and the CSV feeder file their `{feeder.COLUMN}` values come from.
//!
//! A request field is parsed once per run into a [`Text`] (literal pieces and variables), checked
//! against the feeder's columns when the scenario is validated, and rendered into a fresh string
//! for each connection while it connects (inside the engine's boxed set-up: nothing stays in
//! the connection afterwards). `{{` and `}}` stand for literal braces.
//!
//! Variables: `{conn}` (the connection's global index, 0-based), `{from}` (the sender id the
//! profile puts in `from`, `a{agent}.c{index}`), `{room}` (the room name, `r{index}`; empty for a
//! connection in no room), `{feeder.COLUMN}` (that column of the connection's feeder row: row
//! `conn`, or `conn % rows` with `feeder_policy = "cycle"`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::profile::SessionRequest;

/// Largest feeder file accepted (64 MiB); the whole file is kept in memory once per process.
pub const MAX_FEEDER_BYTES: u64 = 64 << 20;

/// Most rows a feeder may have.
pub const MAX_FEEDER_ROWS: usize = 10_000_000;

/// What to do when a run has more connections than the feeder has rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeederPolicy {
    /// The scenario is refused (each connection gets its own row, e.g. its own token).
    #[default]
    Refuse,
    /// Rows are reused from the top: connection `conn` takes row `conn % rows`.
    Cycle,
}

/// A placeholder problem; the scenario turns it into a file:line error.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlaceholderError {
    /// `{name}` is not a placeholder.
    #[error("unknown placeholder {{{name}}} in {text:?} (placeholders: {{conn}}, {{from}}, {{room}}, {{feeder.COLUMN}}; write {{{{ for a literal brace)")]
    Unknown {
        /// The name between the braces.
        name: String,
        /// The text it is in.
        text: String,
    },
    /// A `{` without its `}` (or a lone `}`).
    #[error("unbalanced brace in {text:?} (placeholders look like {{conn}}; write {{{{ or }}}} for a literal brace)")]
    Unbalanced {
        /// The text.
        text: String,
    },
    /// `{feeder.x}` with no feeder configured.
    #[error("{{feeder.{column}}} in {text:?} needs a feeder file: add `feeder = \"tokens.csv\"` to [client]")]
    NoFeeder {
        /// The column asked for.
        column: String,
        /// The text.
        text: String,
    },
    /// `{feeder.x}` and the feeder has no column `x`.
    #[error("{{feeder.{column}}} in {text:?}: the feeder has no column {column:?} (its columns: {columns})")]
    NoColumn {
        /// The column asked for.
        column: String,
        /// The text.
        text: String,
        /// The feeder's columns.
        columns: String,
    },
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Conn,
    From,
    Room,
    Feeder(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// One request field with its placeholders, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pieces: Vec<Piece>,
}

/// How a value is written into a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As is (header values, subprotocol).
    None,
    /// Percent-encoded except RFC 3986 unreserved characters (path and query).
    Url,
}

/// The values of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnVars<'a> {
    /// Global connection index.
    pub conn: u32,
    /// The sender id (`a{agent}.c{index}`).
    pub from: &'a str,
    /// The room name, empty for none.
    pub room: &'a str,
    /// The connection's feeder row, if there is a feeder.
    pub row: Option<&'a [String]>,
}

impl Text {
    /// Parses `text`; `columns` are the feeder's (`None`: no feeder configured).
    pub fn parse(text: &str, columns: Option<&[String]>) -> Result<Text, PlaceholderError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        let unbalanced = || PlaceholderError::Unbalanced {
            text: text.to_owned(),
        };
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(unbalanced());
            }
            let end = tail.find('}').ok_or_else(unbalanced)?;
            let name = &tail[1..end];
            let var = match name {
                "conn" => Var::Conn,
                "from" => Var::From,
                "room" => Var::Room,
                _ => match name.strip_prefix("feeder.") {
                    Some(column) => {
                        let Some(columns) = columns else {
                            return Err(PlaceholderError::NoFeeder {
                                column: column.to_owned(),
                                text: text.to_owned(),
                            });
                        };
                        let at = columns.iter().position(|c| c == column).ok_or_else(|| {
                            PlaceholderError::NoColumn {
                                column: column.to_owned(),
                                text: text.to_owned(),
                                columns: columns.join(", "),
                            }
                        })?;
                        Var::Feeder(at)
                    }
                    None => {
                        return Err(PlaceholderError::Unknown {
                            name: name.to_owned(),
                            text: text.to_owned(),
                        })
                    }
                },
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(var));
            rest = &tail[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Text { pieces })
    }

    /// Whether the field is the same for every connection.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Lit(_)))
    }

    /// The field for one connection.
    pub fn render(&self, v: &ConnVars<'_>, escape: Escape) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for p in &self.pieces {
            let value: &str = match p {
                Piece::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Var(Var::Conn) => {
                    let _ = write!(out, "{}", v.conn);
                    continue;
                }
                Piece::Var(Var::From) => v.from,
                Piece::Var(Var::Room) => v.room,
                Piece::Var(Var::Feeder(i)) => v
                    .row
                    .and_then(|r| r.get(*i))
                    .map(String::as_str)
                    .unwrap_or(""),
            };
            match escape {
                Escape::None => out.push_str(value),
                Escape::Url => {
                    for b in value.bytes() {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            out.push(char::from(b));
                        } else {
                            let _ = write!(out, "%{b:02X}");
                        }
                    }
                }
            }
        }
        out
    }
}

/// A profile's session request with its placeholders parsed: rendered per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTemplate {
    path: Text,
    subprotocol: Option<Text>,
    headers: Vec<(String, Text)>,
}

/// Which request field a placeholder error is in (for the scenario's line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The path and query (`[profile] path` or the target URL's).
    Path,
    /// `[profile] subprotocol`.
    Subprotocol,
    /// `[profile] headers`, the named one.
    Header(String),
}

impl SessionTemplate {
    /// Parses every field of `request` against the feeder's `columns`.
    pub fn new(
        request: &SessionRequest,
        columns: Option<&[String]>,
    ) -> Result<SessionTemplate, (Field, PlaceholderError)> {
        let path = Text::parse(&request.path, columns).map_err(|e| (Field::Path, e))?;
        let subprotocol = request
            .subprotocol
            .as_deref()
            .map(|s| Text::parse(s, columns))
            .transpose()
            .map_err(|e| (Field::Subprotocol, e))?;
        let headers = request
            .headers
            .iter()
            .map(|(n, v)| match Text::parse(v, columns) {
                Ok(t) => Ok((n.clone(), t)),
                Err(e) => Err((Field::Header(n.clone()), e)),
            })
            .collect::<Result<_, _>>()?;
        Ok(SessionTemplate {
            path,
            subprotocol,
            headers,
        })
    }

    /// The request of one connection.
    pub fn render(&self, v: &ConnVars<'_>) -> SessionRequest {
        SessionRequest {
            path: self.path.render(v, Escape::Url),
            subprotocol: self.subprotocol.as_ref().map(|s| s.render(v, Escape::None)),
            headers: self
                .headers
                .iter()
                .map(|(n, t)| (n.clone(), t.render(v, Escape::None)))
                .collect(),
        }
    }
}

/// A CSV feeder: a header row naming the columns, then one row per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feeder {
    /// The file it was read from.
    pub path: PathBuf,
    /// The column names, from the header row.
    pub columns: Vec<String>,
    rows: Vec<Box<[String]>>,
    policy: FeederPolicy,
}

impl Feeder {
    /// Reads `path`. Errors name the file (and the line) and say how to fix it.
    pub fn load(path: &Path, policy: FeederPolicy) -> Result<Feeder, String> {
        let name = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
        if meta.len() > MAX_FEEDER_BYTES {
            return Err(format!(
                "{name}: {} bytes, more than the {MAX_FEEDER_BYTES} a feeder may have",
                meta.len()
            ));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(path)
            .map_err(|e| format!("{name}: cannot read: {e}"))?;
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| format!("{name}: bad header row: {e}"))?
            .iter()
            .map(|c| c.trim().to_owned())
            .collect();
        if columns.iter().all(String::is_empty) {
            return Err(format!(
                "{name}: empty feeder: the first line must name the columns, e.g. `token`"
            ));
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| format!("{name}: {e}"))?;
            let line = record.position().map_or(0, |p| p.line());
            if let Some(bad) = record.iter().position(|v| v.chars().any(char::is_control)) {
                return Err(format!(
                    "{name}:{line}: the value of column {:?} has a control character or line \
                     break (not allowed in a request header)",
                    columns.get(bad).map_or("?", String::as_str)
                ));
            }
            if rows.len() >= MAX_FEEDER_ROWS {
                return Err(format!(
                    "{name}: more than {MAX_FEEDER_ROWS} rows; a feeder needs one row per connection"
                ));
            }
            rows.push(record.iter().map(str::to_owned).collect());
        }
        if rows.is_empty() {
            return Err(format!(
                "{name}: empty feeder: no rows after the header row (one row per connection)"
            ));
        }
        Ok(Feeder {
            path: path.to_path_buf(),
            columns,
            rows,
            policy,
        })
    }

    /// Rows in the file.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the file has no rows (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of connection `conn` (global index), `None` past the end under `refuse`.
    pub fn row(&self, conn: u32) -> Option<&[String]> {
        let i = conn as usize;
        match self.policy {
            FeederPolicy::Refuse => self.rows.get(i).map(|r| &r[..]),
            FeederPolicy::Cycle => self.rows.get(i % self.rows.len()).map(|r| &r[..]),
        }
    }

    /// Whether `connections` connections can each have a row.
    pub fn covers(&self, connections: u32) -> bool {
        self.policy == FeederPolicy::Cycle || connections as usize <= self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(row: Option<&'a [String]>) -> ConnVars<'a> {
        ConnVars {
            conn: 7,
            from: "a0.c7",
            room: "r3",
            row,
        }
    }

    #[test]
    fn placeholders_render_per_connection_and_escape_in_urls() {
        let cols = vec!["user".to_string(), "token".to_string()];
        let row = vec!["ann".to_string(), "a b/c".to_string()];
        let t = Text::parse(
            "/ws/{room}?id={conn}&t={feeder.token}&f={from}",
            Some(&cols),
        )
        .expect("valid");
        assert!(!t.is_literal());
        assert_eq!(
            t.render(&vars(Some(&row)), Escape::Url),
            "/ws/r3?id=7&t=a%20b%2Fc&f=a0.c7"
        );
        let h = Text::parse("Bearer {feeder.token}", Some(&cols)).expect("valid");
        assert_eq!(h.render(&vars(Some(&row)), Escape::None), "Bearer a b/c");
        let lit = Text::parse("{{literal}}", None).expect("escaped braces");
        assert!(lit.is_literal());
        assert_eq!(lit.render(&vars(None), Escape::None), "{literal}");
    }

    #[test]
    fn bad_placeholders_are_named() {
        let cols = vec!["token".to_string()];
        let e = Text::parse("/x/{connn}", None).expect_err("unknown");
        assert!(e.to_string().contains("unknown placeholder {connn}"), "{e}");
        let e = Text::parse("{feeder.tokn}", Some(&cols)).expect_err("column");
        assert!(
            e.to_string().contains("no column \"tokn\"") && e.to_string().contains("token"),
            "{e}"
        );
        let e = Text::parse("{feeder.token}", None).expect_err("no feeder");
        assert!(e.to_string().contains("needs a feeder file"), "{e}");
        for bad in ["{conn", "x}", "{"] {
            assert!(
                matches!(
                    Text::parse(bad, None),
                    Err(PlaceholderError::Unbalanced { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn feeder_rows_cycle_or_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "token,user\nt0,u0\nt1,u1\n").expect("write");
        let f = Feeder::load(&p, FeederPolicy::Refuse).expect("load");
        assert_eq!(f.columns, ["token", "user"]);
        assert_eq!((f.len(), f.covers(2), f.covers(3)), (2, true, false));
        assert_eq!(f.row(1).map(|r| r[0].as_str()), Some("t1"));
        assert_eq!(f.row(2), None);
        let f = Feeder::load(&p, FeederPolicy::Cycle).expect("load");
        assert!(f.covers(1000));
        assert_eq!(f.row(5).map(|r| r[0].as_str()), Some("t1"));
    }

    #[test]
    fn empty_or_bad_feeders_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "token\n").expect("write");
        let e = Feeder::load(&p, FeederPolicy::Refuse).expect_err("no rows");
        assert!(e.contains("t.csv") && e.contains("empty feeder"), "{e}");
        std::fs::write(&p, "").expect("write");
        let e = Feeder::load(&p, FeederPolicy::Refuse).expect_err("empty");
        assert!(e.contains("empty feeder"), "{e}");
        std::fs::write(&p, "token\n\"a\rb\"\n").expect("write");
        let e = Feeder::load(&p, FeederPolicy::Refuse).expect_err("control");
        assert!(
            e.contains("t.csv:2") && e.contains("control character"),
            "{e}"
        );
        let e =
            Feeder::load(&dir.path().join("none.csv"), FeederPolicy::Refuse).expect_err("missing");
        assert!(e.contains("none.csv"), "{e}");
    }
}
