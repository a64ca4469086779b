//! Reads the serial of the certificate a TLS listener serves.
//!
//! The handshake uses a verifier that records the end-entity certificate and accepts it
//! without trusting it: only its serial is read, nothing is sent over the connection. Under
//! TLS 1.3 the server's Certificate arrives before the server learns whether the client has
//! a certificate, so no client certificate is needed; if the server then aborts because it
//! requires one, the captured serial is still returned.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::Error;

/// The serial (lower-case hex, no colons, like `x509::CertSummary::serial`) of the
/// end-entity certificate served at `addr`, sending `server_name` as SNI.
pub async fn served_serial(
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| Error::ServerName(server_name.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Capture {
        algorithms: provider.signature_verification_algorithms,
        leaf: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Protocol(format!("tls client config: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Unreachable { addr, source })?;
        connector
            .connect(name, tcp)
            .await
            .map(drop)
            .map_err(|source| Error::Handshake { addr, source })
    };
    let outcome = match tokio::time::timeout(timeout, handshake).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Timeout {
            addr,
            during: "the tls handshake",
            timeout,
        }),
    };
    let captured = verifier.take();
    match (captured, outcome) {
        (Some(der), _) => serial_of(&der),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(Error::Protocol(
            "tls handshake finished without a server certificate".to_owned(),
        )),
    }
}

/// Polls [`served_serial`] every `poll` until it returns `expected` (compared ignoring case
/// and colons). After `timeout` it fails with [`Error::Mismatch`] if a different serial was
/// served last, or with the last connection error.
pub async fn wait_for_serial(
    addr: SocketAddr,
    server_name: &str,
    expected: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), Error> {
    let expected = normalize(expected);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut mismatch: Option<Error> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = served_serial(addr, server_name, left.max(Duration::from_millis(1))).await;
        let last = match attempt {
            Ok(served) if served == expected => return Ok(()),
            Ok(served) => Error::Mismatch {
                served,
                expected: expected.clone(),
            },
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            // A serial seen earlier says more than a final attempt cut short by the deadline.
            return Err(match (last, mismatch) {
                (last @ Error::Mismatch { .. }, _) | (last, None) => last,
                (_, Some(earlier)) => earlier,
            });
        }
        if matches!(last, Error::Mismatch { .. }) {
            mismatch = Some(last);
            tracing::debug!(%addr, "served certificate not yet the expected one");
            tokio::time::sleep(poll.min(deadline - now)).await;
            continue;
        }
        tracing::debug!(%addr, error = %last, "served certificate not yet the expected one");
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

fn normalize(serial: &str) -> String {
    serial.replace(':', "").to_ascii_lowercase()
}

fn serial_of(der: &[u8]) -> Result<String, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(cert.raw_serial_as_string().replace(':', ""))
}

/// Records the end-entity certificate and accepts any server certificate.
#[derive(Debug)]
struct Capture {
    algorithms: WebPkiSupportedAlgorithms,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl Capture {
    fn take(&self) -> Option<Vec<u8>> {
        match self.leaf.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let der = end_entity.as_ref().to_vec();
        match self.leaf.lock() {
            Ok(mut guard) => *guard = Some(der),
            Err(poisoned) => *poisoned.into_inner() = Some(der),
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
