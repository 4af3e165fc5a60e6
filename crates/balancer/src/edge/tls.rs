//! TLS termination with rustls: certificates from PEM files, the one that
//! matches the client's SNI name (by the names the certificate itself is
//! valid for; the first pair is the default for clients that send no name
//! or an unknown one), ALPN `h2` and `http/1.1`, and a reload that swaps
//! the certificates for new handshakes while open connections go on with
//! the ones they started with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::Error;

/// A certificate chain file and its private key file (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Certificates chosen by SNI.
#[derive(Debug)]
struct Sni {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok())
        {
            let valid = |k: &&Arc<CertifiedKey>| {
                k.end_entity_cert().is_ok_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                })
            };
            if let Some(k) = self.certs.iter().find(valid) {
                return Some(k.clone());
            }
        }
        self.certs.first().cloned()
    }
}

fn load_pair(p: &CertPair) -> Result<Arc<CertifiedKey>, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("tls {what}: {e}"));
    let chain = CertificateDer::pem_file_iter(&p.cert)
        .map_err(|e| bad(&p.cert.display().to_string(), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&p.cert.display().to_string(), &e))?;
    if chain.is_empty() {
        return Err(bad(
            &p.cert.display().to_string(),
            &"no certificate in the file",
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&p.key).map_err(|e| bad(&p.key.display().to_string(), &e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(&p.key.display().to_string(), &e))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| {
        bad(
            &p.cert.display().to_string(),
            &format!("does not match key {}: {e}", p.key.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// A server config serving `pairs` (the first is the default).
pub fn server_config(pairs: &[CertPair]) -> Result<Arc<ServerConfig>, Error> {
    if pairs.is_empty() {
        return Err(Error::Config("tls: no certificate".into()));
    }
    let certs = pairs.iter().map(load_pair).collect::<Result<Vec<_>, _>>()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Sni { certs }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The TLS side of a listener: the config new handshakes use.
pub struct Tls {
    pairs: RwLock<Vec<CertPair>>,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads `pairs`; an error names the file that failed.
    pub fn new(pairs: Vec<CertPair>) -> Result<Arc<Tls>, Error> {
        let config = server_config(&pairs)?;
        Ok(Arc::new(Tls {
            pairs: RwLock::new(pairs),
            config: RwLock::new(config),
        }))
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files (`pairs` when given, else the current ones).
    /// On any error the running certificates stay.
    pub fn reload(&self, pairs: Option<Vec<CertPair>>) -> Result<(), Error> {
        let pairs =
            pairs.unwrap_or_else(|| self.pairs.read().unwrap_or_else(|p| p.into_inner()).clone());
        let config = server_config(&pairs)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.pairs.write().unwrap_or_else(|p| p.into_inner()) = pairs;
        Ok(())
    }
}
