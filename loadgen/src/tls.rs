//! TLS for `wss://` targets: the client configuration built once per run from the scenario's
//! `[client]` settings (`ca_file`, `insecure`; `run --ca-file`, `--insecure`), the TLS handshake
//! of one connection, and the classification of its failures into connect-error labels.
//!
//! rustls with the ring provider (no C toolchain beyond `cc`), through tokio-rustls, the same TLS
//! stream tokio-tungstenite's rustls features wrap; the WebSocket handshake on top stays our own
//! ([`crate::target`]) so that a TLS connection keeps the same small buffers as a plain one.
//!
//! Trust: Mozilla's roots compiled in (`webpki-roots`: the same on every machine and container,
//! recorded by version, nothing read from the host), or, with `ca_file`, only the CAs in that PEM
//! file (as `curl --cacert` does). `insecure` accepts any certificate (the handshake signatures
//! are still checked); it is printed as a warning and recorded with the scenario in the results.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use chatbench_model::scenario::ClientSettings;
pub use chatbench_model::tls::{load_ca_file, TlsError};

/// rustls's ring provider: X25519/P-256/P-384 key exchange, AES-GCM and ChaCha20 suites.
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (X25519MLKEM768, in its
/// aws-lc-rs provider), which needs cmake/a larger C build; a load generator's handshake does
/// not need it, but a server that prefers hybrid groups does a classical handshake with us.
#[allow(deprecated)]
pub fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS side of every `wss://` connection of a run; cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// What the results record: `webpki-roots`, `ca_file`, or `insecure`.
    pub trust: &'static str,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("trust", &self.trust)
            .finish()
    }
}

impl TlsClient {
    /// Builds the client configuration from `[client] ca_file` and `insecure`.
    pub fn new(c: &ClientSettings) -> Result<TlsClient, TlsError> {
        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let trust = match &c.ca_file {
            Some(path) => {
                for cert in load_ca_file(path)? {
                    roots.add(cert).map_err(|e| TlsError::CaFile {
                        path: path.display().to_string(),
                        problem: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                "ca_file"
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                "webpki-roots"
            }
        };
        let mut config = builder.with_root_certificates(roots).with_no_client_auth();
        let trust = if c.insecure {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AnyCertificate(provider)));
            "insecure"
        } else {
            trust
        };
        // The upgrade is HTTP/1.1; a server that offers h2 must not pick it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            trust,
        })
    }

    /// The TLS handshake over `tcp` with server `host` (a name or an IP address, as in the URL).
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, TlsFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| TlsFailure {
            label: "tls_server_name",
            detail: format!("{host:?} is not a valid TLS server name: {e}"),
        })?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(TlsFailure::from_io)
    }
}

/// A failed TLS handshake: the label the results count, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// `tls_cert_unknown_issuer`, `tls_cert_bad_name`, `tls_cert_expired`, `tls_cert_invalid`,
    /// `tls_alert`, `tls_handshake`, `tls_server_name`, or an I/O label (`reset`, …).
    pub label: &'static str,
    /// rustls's description.
    pub detail: String,
}

impl TlsFailure {
    fn from_io(e: std::io::Error) -> TlsFailure {
        let detail = e.to_string();
        let label = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::UnknownIssuer => "tls_cert_unknown_issuer",
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => "tls_cert_bad_name",
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "tls_cert_expired"
                }
                _ => "tls_cert_invalid",
            },
            Some(rustls::Error::AlertReceived(_)) => "tls_alert",
            Some(_) => "tls_handshake",
            None => match e.kind() {
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => "reset",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "tls_handshake",
            },
        };
        TlsFailure { label, detail }
    }

    /// Whether the server's certificate was refused (then `ca_file`/`insecure` is the fix).
    pub fn is_certificate(&self) -> bool {
        self.label.starts_with("tls_cert_")
    }
}

/// `insecure`: any certificate is accepted; the handshake's signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = load_ca_file(&empty).expect_err("no certs").to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = load_ca_file(&missing).expect_err("missing").to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn trust_is_named_for_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).expect("write");
        let mut c = ClientSettings::default();
        assert_eq!(TlsClient::new(&c).expect("roots").trust, "webpki-roots");
        c.ca_file = Some(path);
        assert_eq!(TlsClient::new(&c).expect("ca").trust, "ca_file");
        c.insecure = true;
        assert_eq!(TlsClient::new(&c).expect("insecure").trust, "insecure");
    }

    #[test]
    fn io_errors_without_tls_cause_keep_their_kind() {
        let f = TlsFailure::from_io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(f.label, "reset");
        let f = TlsFailure::from_io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        assert_eq!(f.label, "tls_cert_unknown_issuer");
        assert!(f.is_certificate());
    }
}
