//! One rustls client configuration (aws-lc-rs, certificate verification on) shared by the WebSocket and
//! the HTTP side.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::Error;

/// Installs aws-lc-rs as the process-wide rustls provider if none is installed yet, so that a second
/// provider enabled somewhere in the dependency graph can never make rustls panic at the first handshake.
pub(crate) fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The Mozilla roots (webpki-roots) plus `extra`, with the aws-lc-rs provider, TLS 1.2 and 1.3, no ALPN.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, Error> {
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
