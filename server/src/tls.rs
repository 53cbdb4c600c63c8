//! TLS for the second listener: the certificate and key, their reload on
//! SIGHUP, and a self-signed pair for trying it out (`chat-server mkcert`).
//!
//! The server's TLS configuration is built once; what changes on reload is
//! only the certificate it presents, which a [`Certificates`] resolver hands
//! to each new handshake. Connections already established keep the session
//! keys they negotiated, so a reload drops nobody.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// The names a `mkcert` certificate is for when none are given: what a
/// client on the same machine connects to.
pub const MKCERT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate and key the server presents, read from two PEM files and
/// read again on [`reload`](Certificates::reload).
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads the pair; any problem is an error that names the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificates, String> {
        Ok(Certificates {
            current: RwLock::new(read_pair(cert_path, key_path)?),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// Reads the files again; a pair that cannot be used is reported and the
    /// one in use is kept.
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }

    /// A TLS acceptor (TLS 1.2 and 1.3) that presents whatever pair is
    /// current at each handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Reloads `certificates` at each SIGHUP, as an ACME client's deploy hook
/// asks after renewing; a bad pair is logged and the old one kept.
pub fn reload_on_hangup(certificates: Arc<Certificates>) -> std::io::Result<JoinHandle<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match certificates.reload() {
                Ok(()) => info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => warn!(error = %e, "SIGHUP: keeping the TLS certificate in use"),
            }
        }
    }))
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
    let cert_name = cert_path.display();
    let key_name = key_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the TLS certificate {cert_name}: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate in {cert_name}: expected PEM (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read the TLS key {key_name}: {e}"))?;
    let signer = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("cannot use the TLS key {key_name}: {e}"))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        format!("the TLS key {key_name} does not belong to the certificate {cert_name}: {e}")
    })?;
    Ok(Arc::new(pair))
}

/// Writes a self-signed certificate for `names` (host names or IP
/// addresses) and its key to `out/cert.pem` and `out/key.pem`, for trying
/// TLS out: clients must be told to trust it (`chat-client --ca`).
pub fn mkcert(out: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let names = if names.is_empty() {
        MKCERT_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        names.to_vec()
    };
    let pair = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    write_file(&cert, &pair.cert.pem(), 0o644)?;
    write_file(&key, &pair.signing_key.serialize_pem(), 0o600)?;
    Ok((cert, key))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-tls-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn mkcert_makes_a_pair_that_loads() {
        let dir = scratch("mkcert");
        let (cert, key) = mkcert(&dir, &[]).expect("mkcert");
        let certificates = Certificates::load(&cert, &key).expect("load");
        certificates.reload().expect("reload");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = scratch("bad");
        let (cert, key) = mkcert(&dir, &["example.test".into()]).expect("mkcert");
        let missing = dir.join("missing.pem");
        let error = Certificates::load(&missing, &key).expect_err("missing cert");
        assert!(error.contains("missing.pem"), "{error}");
        let error = Certificates::load(&key, &key).expect_err("a key is no certificate");
        assert!(error.contains("no certificate"), "{error}");
        let error = Certificates::load(&cert, &cert).expect_err("a certificate is no key");
        assert!(error.contains("TLS key"), "{error}");
        let (_, other_key) = mkcert(&dir.join("other"), &[]).expect("mkcert");
        let error = Certificates::load(&cert, &other_key).expect_err("mismatched");
        assert!(error.contains("does not belong"), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_reload_keeps_the_pair_in_use() {
        let dir = scratch("reload");
        let (cert, key) = mkcert(&dir, &[]).expect("mkcert");
        let certificates = Certificates::load(&cert, &key).expect("load");
        let before = certificates.current.read().unwrap().clone();
        fs::write(&cert, "garbage").unwrap();
        assert!(certificates.reload().is_err());
        let after = certificates.current.read().unwrap().clone();
        assert!(Arc::ptr_eq(&before, &after));
        let _ = fs::remove_dir_all(&dir);
    }
}
