//! One rustls client configuration (aws-lc-rs, certificate verification on) shared by the WebSocket and
//! the HTTP side.

use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::CertificateDer;

use crate::Error;

/// Installs aws-lc-rs as the process-wide rustls provider if none is installed yet, so that a second
/// provider enabled somewhere in the dependency graph can never make rustls panic at the first handshake.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The configuration for `extra` roots, built once per process and shared by every connection (the
/// root store is the bulk of a connection's memory otherwise).
pub fn shared_client_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, Error> {
    type Cache = Mutex<Vec<(Vec<CertificateDer<'static>>, Arc<rustls::ClientConfig>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = cache.iter().find(|(k, _)| k.as_slice() == extra) {
        return Ok(c.clone());
    }
    let config = Arc::new(client_config(extra)?);
    cache.push((extra.to_vec(), config.clone()));
    Ok(config)
}

/// The Mozilla roots (webpki-roots) plus `extra`, with the aws-lc-rs provider, TLS 1.2 and 1.3, no ALPN.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (i, cert) in extra.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| Error::Tls(format!("extra root certificate #{i} is not usable: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
