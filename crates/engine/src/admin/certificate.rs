//! The certificate a TLS node presents, read with a handshake of our own: redis-rs does not
//! expose the peer's certificate, and a renewed certificate is only proven in use when the
//! node presents it (the operator compares it with its Secret to know a reload took).
//! Touches the network: one TCP connect and TLS handshake, no Redis command.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tracing::instrument;

use super::{AdminError, TlsConfig};
use crate::model::NodeAddr;

/// The first certificate (the leaf) of a PEM chain, as DER; `None` when there is none.
pub fn leaf_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
}

/// The leaf certificate (DER) that the node at `addr` presents, verified against `tls`' CA
/// (host names not checked, as for every admin connection). Offers `tls`' client certificate,
/// which nodes require by default. Bounded by `timeout` as a whole.
#[instrument(level = "debug", skip(tls), fields(node = %addr))]
pub async fn served_certificate(
    addr: &NodeAddr,
    tls: &TlsConfig,
    timeout: Duration,
) -> Result<Vec<u8>, AdminError> {
    let handshake = |source: std::io::Error| AdminError::Handshake {
        addr: addr.clone(),
        source,
    };
    let invalid = |e: String| handshake(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    let config = client_config(tls).map_err(invalid)?;
    let name = ServerName::try_from(addr.host.clone())
        .map_err(|e| invalid(format!("invalid host {}: {e}", addr.host)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(handshake)?;
        let stream = connector.connect(name, tcp).await.map_err(handshake)?;
        let (_, session) = stream.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
            .ok_or_else(|| invalid("the node presented no certificate".into()))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(AdminError::Timeout {
            addr: addr.clone(),
            op: "TLS handshake",
            after: timeout,
        }),
    }
}

fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let (roots, client) = tls.rustls_parts()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(verifier)));
    match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The CA's verdict on a node certificate, except that the name need not match: nodes are
/// addressed by IP, which is not known when their certificate is issued (Redis Cluster
/// checks no names between nodes either).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
