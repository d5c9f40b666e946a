//! TLS for the uplink (rustls with ring). The agent trusts exactly the CA it is configured
//! with — a gateway can power every server the agent reaches, so no system roots and no
//! "insecure" mode. The gateway presents a chain issued by that CA.

use std::sync::Arc;

pub use futures_rustls::client::TlsStream as ClientStream;
pub use futures_rustls::rustls;
pub use futures_rustls::server::TlsStream as ServerStream;
pub use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ring's suites, AES-128-GCM first: consoles stream bulk bytes over uplink data connections,
/// and AES-128 takes 10 rounds per block to AES-256's 14 (128-bit security suffices here).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// The agent's configuration: trust only the certificates in `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots
        .add_parsable_certificates(CertificateDer::pem_slice_iter(ca_pem).filter_map(Result::ok));
    if added == 0 {
        return Err("no CA certificate in the PEM".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The gateway's configuration: its certificate chain and private key (PEM).
pub fn server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key PEM: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_built_from_pem_and_refuse_garbage() {
        let ca = rcgen::generate_simple_self_signed(vec!["gw.test".into()]).unwrap();
        let cert = ca.cert.pem();
        let key = ca.key_pair.serialize_pem();
        assert!(client_config(cert.as_bytes()).is_ok());
        assert!(server_config(cert.as_bytes(), key.as_bytes()).is_ok());
        assert!(client_config(b"not pem").is_err());
        assert!(server_config(b"", key.as_bytes()).is_err());
        assert!(server_config(cert.as_bytes(), b"nope").is_err());
        assert_eq!(
            provider().cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }
}
