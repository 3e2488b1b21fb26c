//! `compare --column NAME=ws://URL` and `--column NAME=COMMAND`: a user's own servers as
//! comparison columns, so two builds of one server can be A/B'd with the suite.
//!
//! This module owns the column model — parsing and validating the flag, and what each kind of
//! column gives `chatbench run` — and nothing else; `compare` runs the steps. A URL column is a
//! server that is already running: every step runs against it (`--target`), its memory and CPU
//! are not sampled, and it is not fresh between steps. A command column is started for every
//! run (`--serve-cmd`: split on spaces, no shell; it prints its bound `HOST:PORT` first) and
//! sampled like the built-in servers. Neither gets the steps that need a reference server's
//! flags (the crashing handler's `--fault-injection`) or a cluster (scaling, node loss).

use chatbench_report::comparison::Step;
use thiserror::Error;

/// The longest column name.
pub const MAX_NAME: usize = 40;

/// A bad `--column`: what, which one, how to fix it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ColumnError {
    /// No `=`, or nothing on one side of it.
    #[error("--column {given:?}: expected NAME=ws://HOST:PORT/PATH or NAME=COMMAND, e.g. --column main=ws://127.0.0.1:8080/ws or --column next=\"./target/release/my-server --port 0\"")]
    Shape {
        /// The flag's value.
        given: String,
    },
    /// The name is empty, too long or has other characters.
    #[error("--column {given:?}: the name {name:?} must be 1–{MAX_NAME} letters, digits, '.', '_' or '-' (it names the column, its run folders and charts)")]
    Name {
        /// The flag's value.
        given: String,
        /// The name.
        name: String,
    },
    /// Two columns with one name.
    #[error("--column {name}: the name is given twice; give each column its own name, e.g. main and next")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A user column named like a built-in architecture or peer.
    #[error("--column {name}: {name:?} is a built-in column (--archs / --peer); give yours another name, e.g. my-{name}")]
    BuiltIn {
        /// The name.
        name: String,
    },
    /// A URL that is not a WebSocket URL with a host.
    #[error("--column {name}={url}: not a WebSocket URL: expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH")]
    Url {
        /// The name.
        name: String,
        /// The URL.
        url: String,
    },
}

/// Where a user column's server comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A running server at this URL.
    Url(String),
    /// A command that starts one and prints its address.
    Command(String),
}

/// One user column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserColumn {
    /// Its name in the table.
    pub name: String,
    /// Its server.
    pub source: Source,
}

impl UserColumn {
    /// Parses one `--column` value.
    pub fn parse(given: &str) -> Result<UserColumn, ColumnError> {
        let shape = || ColumnError::Shape {
            given: given.to_string(),
        };
        let (name, value) = given.split_once('=').ok_or_else(shape)?;
        let (name, value) = (name.trim(), value.trim());
        if value.is_empty() {
            return Err(shape());
        }
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !name_ok {
            return Err(ColumnError::Name {
                given: given.to_string(),
                name: name.to_string(),
            });
        }
        let lower = value.to_ascii_lowercase();
        let source = if let Some(rest) = lower
            .strip_prefix("ws://")
            .or_else(|| lower.strip_prefix("wss://"))
        {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            if host.is_empty() || value.contains(char::is_whitespace) {
                return Err(ColumnError::Url {
                    name: name.to_string(),
                    url: value.to_string(),
                });
            }
            Source::Url(value.to_string())
        } else if lower.contains("://") {
            return Err(ColumnError::Url {
                name: name.to_string(),
                url: value.to_string(),
            });
        } else {
            Source::Command(value.to_string())
        };
        Ok(UserColumn {
            name: name.to_string(),
            source,
        })
    }

    /// The `chatbench run` flags that point a run at this column's server, and its name as the
    /// run's `--label` (`target.settings.label`: how `report DIR` tells the column of a run
    /// that has no architecture).
    pub fn run_args(&self) -> Vec<String> {
        let mut args = match &self.source {
            Source::Url(u) => vec!["--target".into(), u.clone()],
            Source::Command(c) => vec!["--serve-cmd".into(), c.clone()],
        };
        args.extend(["--label".into(), self.name.clone()]);
        args
    }

    /// Whether the column runs `step`: not the crashing handler (it needs a reference
    /// server's `--fault-injection`), nor the cluster steps.
    pub fn runs(&self, step: Step) -> bool {
        !matches!(step, Step::Poison | Step::Scaling | Step::NodeLoss)
    }

    /// What the comparison's notes say about this column.
    pub fn note(&self) -> String {
        match &self.source {
            Source::Url(u) => format!(
                "Column {}: the running server at {u}, not restarted between steps and not sampled (no memory or CPU figures); the crashing-handler and cluster steps are not run.",
                self.name
            ),
            Source::Command(c) => format!(
                "Column {}: `{c}`, started for every run and sampled; the crashing-handler and cluster steps are not run.",
                self.name
            ),
        }
    }
}

/// Parses and checks every `--column`: names unique and none of `builtin`'s.
pub fn parse_all(given: &[String], builtin: &[&str]) -> Result<Vec<UserColumn>, ColumnError> {
    let mut out: Vec<UserColumn> = Vec::with_capacity(given.len());
    for g in given {
        let c = UserColumn::parse(g)?;
        if builtin.contains(&c.name.as_str()) {
            return Err(ColumnError::BuiltIn { name: c.name });
        }
        if out.iter().any(|o| o.name == c.name) {
            return Err(ColumnError::Duplicate { name: c.name });
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_commands_are_told_apart() {
        let u = UserColumn::parse("main=ws://127.0.0.1:8080/ws").expect("url");
        assert_eq!(u.source, Source::Url("ws://127.0.0.1:8080/ws".into()));
        assert_eq!(
            u.run_args(),
            ["--target", "ws://127.0.0.1:8080/ws", "--label", "main"]
        );
        let c = UserColumn::parse("next=./my-server --port 0 --mode=fast").expect("command");
        assert_eq!(c.name, "next");
        assert_eq!(
            c.run_args(),
            [
                "--serve-cmd",
                "./my-server --port 0 --mode=fast",
                "--label",
                "next"
            ]
        );
        assert!(UserColumn::parse("s=WSS://example.com/chat").is_ok());
        assert!(!c.runs(Step::Poison) && c.runs(Step::Broadcast) && c.runs(Step::Idle));
    }

    #[test]
    fn bad_columns_say_what_and_how() {
        for (given, want) in [
            ("main", "expected NAME=ws://"),
            ("main=", "expected NAME=ws://"),
            ("=ws://h:1/ws", "the name \"\""),
            ("a b=ws://h:1/ws", "letters, digits"),
            (".x=ws://h:1/ws", "letters, digits"),
            ("m=ws:///ws", "not a WebSocket URL"),
            ("m=http://h:1/ws", "not a WebSocket URL"),
            ("m=ws://h:1/ws extra", "not a WebSocket URL"),
        ] {
            let e = UserColumn::parse(given).expect_err(given).to_string();
            assert!(e.contains(want), "{given}: {e}");
            assert!(e.starts_with("--column"), "{e}");
        }
        let long = format!("{}=ws://h:1/ws", "a".repeat(MAX_NAME + 1));
        assert!(matches!(
            UserColumn::parse(&long),
            Err(ColumnError::Name { .. })
        ));
    }

    #[test]
    fn names_are_unique_and_not_built_in() {
        let two = ["a=ws://h:1/ws".to_string(), "a=./srv".to_string()];
        assert_eq!(
            parse_all(&two, &[]),
            Err(ColumnError::Duplicate { name: "a".into() })
        );
        let clash = ["epoll=./srv".to_string()];
        let e = parse_all(&clash, &["epoll"]).expect_err("built-in");
        assert!(e.to_string().contains("my-epoll"), "{e}");
        let ok = ["main=ws://h:1/ws".to_string(), "next=./srv".to_string()];
        assert_eq!(parse_all(&ok, &["epoll"]).expect("ok").len(), 2);
    }
}
