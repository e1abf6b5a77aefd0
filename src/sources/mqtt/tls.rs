//! TLS to the broker: rustls with the ring provider, built once at startup so that a missing
//! or broken file fails `start` with a clear error instead of every connection attempt.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::warn;

use super::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("cert_file is set without key_file (or the other way round)")]
    HalfClientAuth,
    #[error("no usable CA certificate: {0}")]
    Roots(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit, so that another crate enabling a second rustls provider cannot make
    // `ClientConfig::builder()` panic on an ambiguous process default.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    match rustls_pemfile::private_key(&mut BufReader::new(&pem[..])) {
        Ok(Some(k)) => Ok(k),
        _ => Err(TlsError::NoKey {
            path: path.to_path_buf(),
        }),
    }
}

fn roots(cfg: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let (added, _ignored) = store.add_parsable_certificates(certs(path)?);
            if added == 0 {
                return Err(TlsError::Roots(format!(
                    "{} holds no valid CA certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
            if store.is_empty() {
                let why: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::Roots(format!(
                    "no ca_file is set and the system has no CA certificates{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join("; "))
                    }
                )));
            }
        }
    }
    Ok(store)
}

/// Builds the client configuration for one connection.
pub fn client_config(cfg: &TlsConfig, connection: &str) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if cfg.insecure {
        warn!(
            connection,
            "TLS certificate verification is OFF (tls.insecure = true): anyone on the network path can impersonate the broker. Do not use this in production."
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
    } else {
        builder.with_root_certificates(roots(cfg)?)
    };
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(k)) => builder.with_client_auth_cert(certs(cert)?, key(k)?)?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientAuth),
    };
    Ok(config)
}

/// `tls.insecure`: accepts any server certificate. Signatures are still checked, so the
/// handshake itself stays sound; only the identity of the broker is not.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
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
    fn missing_ca_file_names_the_file() {
        let cfg = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = client_config(&cfg, "t").expect_err("must fail").to_string();
        assert!(err.starts_with("cannot read /nonexistent/ca.pem:"), "{err}");
    }

    #[test]
    fn a_file_without_pem_is_not_a_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let cfg = TlsConfig {
            ca_file: Some(path.clone()),
            ..TlsConfig::default()
        };
        let err = client_config(&cfg, "t").expect_err("must fail").to_string();
        assert_eq!(err, format!("{} holds no PEM certificate", path.display()));
    }

    #[test]
    fn insecure_needs_no_roots() {
        let cfg = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert!(client_config(&cfg, "t").is_ok());
    }
}
