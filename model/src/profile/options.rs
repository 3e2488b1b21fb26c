//! Reading a profile's `[profile]` options table: typed getters that remember which keys were
//! used, so that an unknown key (a typo) is an error with a suggestion, never silently ignored.

use std::collections::BTreeSet;
use std::time::Duration;

use thiserror::Error;

/// A problem with the `[profile]` table. The scenario turns it into a file:line error.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    /// A key this profile does not have.
    #[error("unknown field \"profile.{key}\" for protocol \"{protocol}\"{suggestion} (valid fields: {valid})")]
    Unknown {
        /// The key as written.
        key: String,
        /// The protocol.
        protocol: &'static str,
        /// `; did you mean "…"?` or empty.
        suggestion: String,
        /// The keys this profile accepts.
        valid: String,
    },
    /// A value that does not work.
    #[error("{message}")]
    Invalid {
        /// The key it is about.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ProfileError {
    pub(crate) fn invalid(key: &'static str, message: String) -> ProfileError {
        ProfileError::Invalid { key, message }
    }

    /// The key the error is about (for the line number).
    pub fn key(&self) -> &str {
        match self {
            ProfileError::Unknown { key, .. } => key,
            ProfileError::Invalid { key, .. } => key,
        }
    }
}

/// Typed access to a `[profile]` table.
pub(crate) struct Opts<'a> {
    table: &'a toml::Table,
    known: BTreeSet<&'static str>,
}

impl<'a> Opts<'a> {
    pub(crate) fn new(table: &'a toml::Table) -> Opts<'a> {
        Opts {
            table,
            known: BTreeSet::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.known.insert(key);
        self.table.get(key)
    }

    /// A string option.
    pub(crate) fn string(&mut self, key: &'static str) -> Result<Option<String>, ProfileError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ProfileError::invalid(
                key,
                format!("profile.{key} = {other}: expected text in quotes, e.g. {key} = \"…\""),
            )),
        }
    }

    /// A boolean option.
    pub(crate) fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, ProfileError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(ProfileError::invalid(
                key,
                format!("profile.{key} = {other}: expected true or false"),
            )),
        }
    }

    /// A duration option (`"30s"`), at least `min`.
    pub(crate) fn duration(
        &mut self,
        key: &'static str,
        min: Duration,
    ) -> Result<Option<Duration>, ProfileError> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            ProfileError::invalid(
                key,
                format!("profile.{key} = {text:?}: {e}; expected a duration like \"30s\""),
            )
        })?;
        let max = crate::scenario::MAX_DURATION;
        if d < min || d > max {
            return Err(ProfileError::invalid(
                key,
                format!(
                    "profile.{key} = {text:?}: must be at least {} and at most {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    /// A JSON pointer (RFC 6901): empty or starting with `/`.
    pub(crate) fn pointer(&mut self, key: &'static str) -> Result<Option<String>, ProfileError> {
        let p = self.string(key)?;
        if let Some(p) = &p {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(ProfileError::invalid(
                    key,
                    format!(
                        "profile.{key} = {p:?}: a JSON pointer starts with '/', e.g. \"/data/from\""
                    ),
                ));
            }
        }
        Ok(p)
    }

    /// A table of string → string (request headers).
    pub(crate) fn headers(
        &mut self,
        key: &'static str,
    ) -> Result<Vec<(String, String)>, ProfileError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Some(t) = v.as_table() else {
            return Err(ProfileError::invalid(
                key,
                format!("profile.{key}: expected a table, e.g. [profile.{key}] Authorization = \"Bearer …\""),
            ));
        };
        let mut out = Vec::new();
        for (name, value) in t {
            let Some(value) = value.as_str() else {
                return Err(ProfileError::invalid(
                    key,
                    format!("profile.{key}.{name} = {value}: header values are text in quotes"),
                ));
            };
            let ok_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_name || value.contains(['\r', '\n']) {
                return Err(ProfileError::invalid(
                    key,
                    format!("profile.{key}.{name}: not a valid HTTP header (letters, digits, '-' in the name; no line breaks in the value)"),
                ));
            }
            out.push((name.clone(), value.to_owned()));
        }
        Ok(out)
    }

    /// Fails on the first key that no getter asked for.
    pub(crate) fn finish(self, protocol: &'static str) -> Result<(), ProfileError> {
        for key in self.table.keys() {
            if !self.known.contains(key.as_str()) {
                let valid: Vec<String> = self.known.iter().map(|k| k.to_string()).collect();
                let suggestion = crate::scenario::closest(key, &valid)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                return Err(ProfileError::Unknown {
                    key: key.clone(),
                    protocol,
                    suggestion,
                    valid: valid.join(", "),
                });
            }
        }
        Ok(())
    }
}
