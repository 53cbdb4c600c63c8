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
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
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

/// Watches for SIGHUP for as long as the server runs, so that the signal
/// never takes the process down (its default action ends it, cutting every
/// user off without a word, which is what `systemctl reload` would do).
/// With `certificates`, each SIGHUP reloads them, as an ACME client's
/// deploy hook asks after renewing; a bad pair is logged and the old one
/// kept. Without, there is nothing to reload: it is logged and nothing
/// changes.
pub fn reload_on_hangup(
    certificates: Option<Arc<Certificates>>,
) -> std::io::Result<JoinHandle<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &certificates {
                None => info!(
                    "SIGHUP: nothing to reload (no --tls-cert and --tls-key); \
                     nothing changed, nobody was disconnected"
                ),
                Some(certificates) => match certificates.reload() {
                    Ok(()) => info!("SIGHUP: reloaded the TLS certificate and key"),
                    Err(e) => warn!("SIGHUP: {e}; keeping the TLS certificate and key in use"),
                },
            }
        }
    }))
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
    let cert_name = cert_path.display();
    let key_name = key_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the TLS certificate {cert_name}: {}",
                pem_problem(&e, "CERTIFICATE")
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate in {cert_name}: expected PEM (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "cannot read the TLS key {key_name}: {}",
            pem_problem(&e, "PRIVATE KEY")
        )
    })?;
    let signer = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("cannot use the TLS key {key_name}: {e}"))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        format!("the TLS key {key_name} does not belong to the certificate {cert_name}: {e}")
    })?;
    Ok(Arc::new(pair))
}

/// What is wrong with a PEM file, in words: the parser's own messages
/// print the lines it choked on as lists of byte values.
fn pem_problem(error: &pem::Error, kind: &str) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "it stops in the middle of a PEM block, without its closing line \
             -----END {}-----; was it only partly written or copied?",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "a line that should open a PEM block is malformed ({:?})",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(_) => {
            "a PEM block holds something other than base64; the file is damaged".to_owned()
        }
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => {
            format!("nothing in it is PEM of that kind (-----BEGIN {kind}-----)")
        }
        pem::Error::SectionTooLarge => "a PEM block in it is larger than 256 MB".to_owned(),
        other => other.to_string(),
    }
}

/// Writes a self-signed certificate for `names` (host names or IP
/// addresses) and its key to `out/cert.pem` and `out/key.pem`, for trying
/// TLS out: clients must be told to trust it (`chat-client --ca`).
///
/// Unless `force`, an existing file at either path is an error and neither
/// is written: overwriting a key by mistake cannot be undone.
pub fn mkcert(out: &Path, names: &[String], force: bool) -> Result<(PathBuf, PathBuf), String> {
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    if !force {
        let existing: Vec<String> = [&cert, &key]
            .into_iter()
            .filter(|path| path.symlink_metadata().is_ok())
            .map(|path| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(format!(
                "{} already {}; not overwriting (give --force to replace the pair, \
                 or --out another directory)",
                existing.join(" and "),
                if existing.len() == 1 {
                    "exists"
                } else {
                    "exist"
                }
            ));
        }
    }
    let names = if names.is_empty() {
        MKCERT_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        names.to_vec()
    };
    let pair = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write_file(&cert, &pair.cert.pem(), 0o644, force)?;
    write_file(&key, &pair.signing_key.serialize_pem(), 0o600, force)?;
    Ok((cert, key))
}

/// Writes `text` to `path`; without `replace`, only if nothing is there
/// yet (checked by the kernel as the file is made, not before).
fn write_file(path: &Path, text: &str, mode: u32, replace: bool) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(failed)?;
    // A replaced file keeps its old mode otherwise: a key must not stay
    // readable by others.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
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
        let (cert, key) = mkcert(&dir, &[], false).expect("mkcert");
        let certificates = Certificates::load(&cert, &key).expect("load");
        certificates.reload().expect("reload");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = scratch("bad");
        let (cert, key) = mkcert(&dir, &["example.test".into()], false).expect("mkcert");
        let missing = dir.join("missing.pem");
        let error = Certificates::load(&missing, &key).expect_err("missing cert");
        assert!(error.contains("missing.pem"), "{error}");
        let error = Certificates::load(&key, &key).expect_err("a key is no certificate");
        assert!(error.contains("no certificate"), "{error}");
        let error = Certificates::load(&cert, &cert).expect_err("a certificate is no key");
        assert!(error.contains("TLS key"), "{error}");
        let (_, other_key) = mkcert(&dir.join("other"), &[], false).expect("mkcert");
        let error = Certificates::load(&cert, &other_key).expect_err("mismatched");
        assert!(error.contains("does not belong"), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_certificate_is_told_in_words() {
        let dir = scratch("truncated");
        let (cert, key) = mkcert(&dir, &[], false).expect("mkcert");
        let pem = fs::read_to_string(&cert).unwrap();
        fs::write(&cert, &pem[..pem.len() / 2]).unwrap();
        let error = Certificates::load(&cert, &key).expect_err("truncated");
        assert!(
            error.starts_with(&format!(
                "cannot read the TLS certificate {}",
                cert.display()
            )),
            "{error}"
        );
        assert!(error.contains("-----END CERTIFICATE-----"), "{error}");
        assert!(error.contains("partly written"), "{error}");
        assert!(!error.contains("[45, 45"), "bytes: {error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn mkcert_leaves_an_existing_pair_alone_unless_forced() {
        let dir = scratch("force");
        let (cert, key) = mkcert(&dir, &[], false).expect("mkcert");
        let before = fs::read(&key).unwrap();
        let error = mkcert(&dir, &[], false).expect_err("a pair is there");
        assert!(error.contains("already exist;"), "{error}");
        assert!(error.contains("--force"), "{error}");
        assert_eq!(fs::read(&key).unwrap(), before);
        fs::remove_file(&cert).unwrap();
        let error = mkcert(&dir, &[], false).expect_err("the key is there");
        assert!(error.contains("key.pem already exists;"), "{error}");
        assert!(!cert.exists(), "nothing written when refusing");
        mkcert(&dir, &[], true).expect("forced");
        assert_ne!(fs::read(&key).unwrap(), before);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_reload_keeps_the_pair_in_use() {
        let dir = scratch("reload");
        let (cert, key) = mkcert(&dir, &[], false).expect("mkcert");
        let certificates = Certificates::load(&cert, &key).expect("load");
        let before = certificates.current.read().unwrap().clone();
        fs::write(&cert, "garbage").unwrap();
        assert!(certificates.reload().is_err());
        let after = certificates.current.read().unwrap().clone();
        assert!(Arc::ptr_eq(&before, &after));
        let _ = fs::remove_dir_all(&dir);
    }
}
