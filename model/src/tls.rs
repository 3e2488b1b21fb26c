//! The TLS settings of a run, as far as they are data: reading a `ca_file` (PEM, parsed with
//! rustls-pki-types, which needs no TLS stack) when a scenario is validated, and the summary's
//! note on what a `wss://` run's figures include. The TLS client itself (rustls, tokio-rustls)
//! is the load generator's (`chatbench_loadgen::tls`).

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::scenario::ClientSettings;

/// Most certificates read from a `ca_file`.
const MAX_CA_CERTS: usize = 1000;

/// Why the TLS client configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path:?}: {problem} (expected a PEM file with one or more \"-----BEGIN CERTIFICATE-----\" blocks)")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificates of a PEM CA file (at least one, at most 1000).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError::CaFile {
        path: path.display().to_string(),
        problem,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for c in iter.take(MAX_CA_CERTS) {
        certs.push(c.map_err(|e| bad(e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

/// The summary's note about TLS, for a run whose targets are `url` (`None` for `ws://`): what
/// the figures include, and what the server's certificate was checked against.
pub fn summary_note(url: &str, c: &ClientSettings) -> Option<String> {
    if !url.starts_with("wss://") {
        return None;
    }
    let trust = match (&c.ca_file, c.insecure) {
        (_, true) => "certificate verification was OFF (--insecure / client.insecure): the \
                      target's identity was not checked"
            .to_string(),
        (Some(path), false) => {
            format!("certificates checked against the CAs of {}", path.display())
        }
        (None, false) => {
            "certificates checked against the built-in Mozilla roots (webpki-roots)".into()
        }
    };
    Some(format!(
        "wss://: every connection runs TLS (rustls); connect times include the TLS handshake and \
         the generator's memory per connection is higher than for ws://; {trust}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_tls_trusted() {
        let mut c = ClientSettings::default();
        assert_eq!(summary_note("ws://127.0.0.1:1/ws", &c), None);
        let n = summary_note("wss://127.0.0.1:1/ws", &c).expect("note");
        assert!(n.contains("handshake") && n.contains("webpki-roots"), "{n}");
        c.ca_file = Some("ca.pem".into());
        let n = summary_note("wss://h/ws", &c).expect("note");
        assert!(n.contains("CAs of ca.pem"), "{n}");
        c.insecure = true;
        let n = summary_note("wss://h/ws", &c).expect("note");
        assert!(n.contains("verification was OFF"), "{n}");
    }
}
