//! TLS for `--tls`: whom to trust, and the handshake.
//!
//! By default the server's certificate must chain to a root the operating
//! system trusts (rustls-native-certs reads the system's store, so a
//! company's own CA installed there works as it does for other programs);
//! `--ca <pem>` trusts the certificates in that file instead, for a private
//! CA or a self-signed test certificate. A certificate that does not verify
//! ends the attempt: the client never falls back to plaintext.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The port of the server's TLS listener unless its `--tls-addr` says
/// otherwise, for the hint when `--tls` reaches a plaintext port.
pub const DEFAULT_TLS_PORT: u16 = 8443;

/// Which certificates the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's roots.
    System,
    /// Only the certificates in this PEM file.
    Ca(PathBuf),
}

/// Why TLS could not be set up or the handshake failed; the text says what
/// to do about it.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes the TLS connection over `stream`, checking the server's
/// certificate against `trust` for the host part of `addr`.
pub async fn handshake(
    stream: TcpStream,
    addr: &str,
    trust: &Trust,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let connector = connector(trust)?;
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError(format!("{host:?} is not a host name TLS can check")))?;
    connector
        .connect(name, stream)
        .await
        .map_err(|e| TlsError(explain(addr, trust, &e)))
}

fn connector(trust: &Trust) -> Result<TlsConnector, TlsError> {
    let mut roots = RootCertStore::empty();
    match trust {
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError(
                    "no trusted certificates found on this system; give --ca <pem>".into(),
                ));
            }
        }
        Trust::Ca(path) => {
            let (added, _) = roots.add_parsable_certificates(read_certificates(path)?);
            if added == 0 {
                return Err(TlsError(format!(
                    "no usable certificate in {}",
                    path.display()
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |e: &dyn std::fmt::Display| {
        TlsError(format!(
            "cannot read the CA certificate {}: {e}",
            path.display()
        ))
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(&e))
}

/// What to do when `--tls` reached a port that does not speak TLS.
fn plaintext_hint(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
    if port == DEFAULT_TLS_PORT.to_string() {
        return "is this the server's TLS port (its --tls-addr)?".to_owned();
    }
    format!(
        "this looks like a plaintext port; the server's TLS port is \
         {DEFAULT_TLS_PORT} by default (--addr {host}:{DEFAULT_TLS_PORT})"
    )
}

/// The host part of `host:port` (`[::1]:8443` gives `::1`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A failed handshake, in words: above all whether the server's
/// certificate was not trusted, or what answered does not speak TLS at all
/// (the usual reason: `--tls` with the plaintext port, 8000 by default).
fn explain(addr: &str, trust: &Trust, error: &io::Error) -> String {
    let cause = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match cause {
        Some(rustls::Error::InvalidCertificate(_)) => {}
        // What came back is not TLS records: a plaintext listener, such
        // as the chat server's own, answering the TLS greeting.
        Some(rustls::Error::InvalidMessage(_)) => {
            return format!(
                "TLS handshake with {addr} failed: it does not answer in TLS ({error}); {}",
                plaintext_hint(addr)
            );
        }
        _ => return format!("TLS handshake with {addr} failed: {error}"),
    }
    let hint = match trust {
        Trust::System => "not trusted by this system; give --ca <pem> for a private CA",
        Trust::Ca(_) => "not trusted by the --ca certificate",
    };
    format!("the certificate of {addr} does not verify ({error}): {hint}; not connecting")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("chat.example.org:8443"), "chat.example.org");
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn a_plaintext_port_points_to_the_tls_one() {
        assert_eq!(
            plaintext_hint("127.0.0.1:8000"),
            "this looks like a plaintext port; the server's TLS port is 8443 \
             by default (--addr 127.0.0.1:8443)"
        );
        assert!(plaintext_hint("[::1]:8000").ends_with("(--addr [::1]:8443)"));
        assert!(plaintext_hint("chat.example.org:8443").contains("--tls-addr"));
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let Err(error) = connector(&Trust::Ca("/nonexistent/ca.pem".into())) else {
            panic!("a missing CA file was accepted");
        };
        assert!(error.0.contains("/nonexistent/ca.pem"), "{error}");
    }
}
