//! A small rcgen PKI for TLS tests: one CA, a server certificate for `localhost` and
//! `127.0.0.1`, and a client certificate; rustls server and client configs built from them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixture: a broken fixture must panic"
)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

/// The name the server certificate carries and clients check.
pub const SERVER_NAME: &str = "localhost";
/// The client certificate's common name.
pub const CLIENT_CN: &str = "leafd-admin";

/// Whether the server asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate issued by the test CA is required (`ssl.client.auth=required`).
    Required,
}

pub struct TestPki {
    ca: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert: CertificateDer<'static>,
    client_key: Vec<u8>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn leaf(
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (CertificateDer<'static>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), key.serialize_der())
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "leafd test admin CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let (server_cert, server_key) = leaf(
            vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()],
            "broker-1",
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client_cert, client_key) = leaf(
            Vec::new(),
            CLIENT_CN,
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        TestPki {
            ca: ca.der().clone(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// The test CA certificate as PEM (for a `ca-file`).
    pub fn ca_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.ca.to_vec()))
    }

    /// A server config whose client certificates must chain to `client_roots` (DER).
    pub fn server_config_with_client_roots(
        &self,
        client_roots: &[Vec<u8>],
    ) -> Arc<rustls::ServerConfig> {
        // leafd's client certificates chain through a host issuing CA with subject
        // constraints, which rustls-webpki alone refuses: verify as leafd's own clients do.
        let verifier = Arc::new(LeafdClientVerifier {
            roots: client_roots
                .iter()
                .map(|r| CertificateDer::from(r.clone()))
                .collect(),
        });
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![self.server_cert.clone()], key)
                .unwrap(),
        )
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    pub fn server_config(&self, client_auth: ClientAuth) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
                    .build()
                    .unwrap(),
            ),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        Arc::new(
            builder
                .with_single_cert(vec![self.server_cert.clone()], key)
                .unwrap(),
        )
    }

    /// A client config trusting the test CA, presenting the client certificate if asked to.
    pub fn client_config(&self, with_client_cert: bool) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let config = if with_client_cert {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key.clone()));
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], key)
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).unwrap()
    }
}

/// A client-certificate verifier that checks chains with `leafd::reload::pki`, which takes
/// host issuing CAs with subject (directoryName) constraints.
#[derive(Debug)]
struct LeafdClientVerifier {
    roots: Vec<CertificateDer<'static>>,
}

impl rustls::server::danger::ClientCertVerifier for LeafdClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        leafd::reload::pki::verify_chain(
            end_entity,
            intermediates,
            &self.roots,
            now,
            leafd::reload::pki::Usage::Client,
        )
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
