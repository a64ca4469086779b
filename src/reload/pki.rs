//! Certificate path verification for leafd's own TLS connections, including chains through a
//! host issuing CA with subject (directoryName) constraints.
//!
//! rustls verifies with rustls-webpki, which does not implement directoryName constraints:
//! it rejects every certificate below a CA that carries one (rustls/webpki#19; still so in
//! 0.103 and 0.104). leafd's host issuing certificates carry them, so that a host can mint
//! only the principals it was given. A chain is therefore checked in two steps:
//!
//! 1. as rustls would: webpki against the trust anchors, with the presented intermediates;
//! 2. if that fails and the end entity's issuer is a presented CA certificate with name
//!    constraints: that CA certificate is checked against the trust anchors (signature by a
//!    root, validity, `CA:TRUE`, keyCertSign), the end entity is checked by webpki against
//!    that CA as trust anchor with its constraints set aside (signature, validity, key
//!    usage, EKU), and then the CA's constraints are applied here: every SAN inside its DNS
//!    and IP subtrees, the subject inside its directoryName subtrees. Constraint forms leafd
//!    does not write (excluded subtrees, other name types, IP ranges) fail closed.
//!
//! Only a chain of exactly root → constrained CA → end entity takes the second step: the
//! shape of leafd's chains. Anything else stays with webpki's verdict.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::ParsedCertificate;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::x509;

/// Which end of the connection the end entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server certificate (id-kp-serverAuth).
    Server,
    /// A client certificate (id-kp-clientAuth).
    Client,
}

/// Why a chain was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// webpki refused the chain, and it is no chain through a constrained host CA.
    #[error("certificate not trusted: {0:?}")]
    Untrusted(webpki::Error),
    /// A certificate could not be parsed.
    #[error("could not parse the {0} certificate")]
    Parse(&'static str),
    /// The host CA is not signed by any trust anchor, or not valid now.
    #[error("the issuing CA certificate is not trusted: {0}")]
    IssuerUntrusted(String),
    /// The end entity is outside the host CA's constraints.
    #[error("the certificate is outside its issuer's name constraints: {0}")]
    Constraint(String),
}

/// Verifies `end_entity` (with the presented `intermediates`) against `roots` for `usage`
/// at `now`, as the module documentation describes.
pub fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    now: UnixTime,
    usage: Usage,
) -> Result<(), Error> {
    let anchors: Vec<TrustAnchor<'_>> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| Error::Parse("end-entity"))?;
    let key_usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let algs = webpki::ALL_VERIFICATION_ALGS;
    let plain = ee.verify_for_usage(algs, &anchors, intermediates, now, key_usage, None, None);
    let first_error = match plain {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let Some(ca) = constrained_issuer(end_entity, intermediates)? else {
        return Err(Error::Untrusted(first_error));
    };
    check_ca(ca, roots, now)?;
    // The end entity against the CA itself, its constraints set aside (applied below).
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|_| Error::Parse("issuing CA"))?;
    let anchor = TrustAnchor {
        subject: anchor.subject,
        subject_public_key_info: anchor.subject_public_key_info,
        name_constraints: None,
    };
    ee.verify_for_usage(algs, &[anchor], &[], now, key_usage, None, None)
        .map_err(Error::Untrusted)?;
    check_constraints(end_entity, ca)
}

/// The presented CA certificate that issued `end_entity`, if it carries name constraints.
fn constrained_issuer<'a>(
    end_entity: &CertificateDer<'_>,
    intermediates: &'a [CertificateDer<'a>],
) -> Result<Option<&'a CertificateDer<'a>>, Error> {
    let (_, ee) = X509Certificate::from_der(end_entity).map_err(|_| Error::Parse("end-entity"))?;
    for der in intermediates {
        let Ok((_, ca)) = X509Certificate::from_der(der) else {
            continue;
        };
        if ca.subject().as_raw() == ee.issuer().as_raw()
            && ca.name_constraints().ok().flatten().is_some()
        {
            return Ok(Some(der));
        }
    }
    Ok(None)
}

/// The CA certificate is a CA, valid now, and signed by one of `roots`.
fn check_ca(
    ca_der: &CertificateDer<'_>,
    roots: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), Error> {
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|_| Error::Parse("issuing CA"))?;
    if !ca.is_ca() {
        return Err(Error::IssuerUntrusted("it is not a CA".into()));
    }
    if ca
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|ku| !ku.value.key_cert_sign())
    {
        return Err(Error::IssuerUntrusted(
            "it may not sign certificates".into(),
        ));
    }
    let at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = ca.validity();
    if at < validity.not_before.timestamp() || at > validity.not_after.timestamp() {
        return Err(Error::IssuerUntrusted("it is not valid now".into()));
    }
    let signed_by_root = roots.iter().any(|r| {
        X509Certificate::from_der(r).is_ok_and(|(_, root)| {
            root.subject().as_raw() == ca.issuer().as_raw()
                && ca.verify_signature(Some(root.public_key())).is_ok()
        })
    });
    if signed_by_root {
        Ok(())
    } else {
        Err(Error::IssuerUntrusted("no trusted root signed it".into()))
    }
}

/// The end entity's SANs and subject are inside the CA's name constraints.
fn check_constraints(
    end_entity: &CertificateDer<'_>,
    ca_der: &CertificateDer<'_>,
) -> Result<(), Error> {
    let ca = x509::summarize(ca_der, "issuing CA").map_err(|_| Error::Parse("issuing CA"))?;
    if ca.unsupported_constraints {
        return Err(Error::Constraint(
            "the issuer's constraints use forms leafd does not check (excluded subtrees, \
             other name types or address ranges)"
                .into(),
        ));
    }
    let ee = x509::summarize(end_entity, "end-entity").map_err(|_| Error::Parse("end-entity"))?;
    if let Some(name) = ee
        .sans
        .iter()
        .find(|n| !x509::name_permitted(n, &ca.permitted))
    {
        return Err(Error::Constraint(format!("name {name:?} is not permitted")));
    }
    if !ca.permitted_subjects.is_empty() {
        let permitted = ee
            .subject_dn
            .as_ref()
            .is_some_and(|s| s.is_empty() || x509::subject_permitted(s, &ca.permitted_subjects));
        if !permitted {
            return Err(Error::Constraint(format!(
                "subject {} is not permitted",
                ee.subject
            )));
        }
    }
    Ok(())
}

/// A rustls server-certificate verifier that applies [`verify_chain`], then checks the
/// server name as rustls does.
#[derive(Debug)]
pub struct Verifier {
    roots: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    /// A verifier trusting `roots`.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Arc<Self> {
        Arc::new(Self {
            roots,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(end_entity, intermediates, &self.roots, now, Usage::Server)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rcgen::{Issuer, KeyPair};

    use super::*;
    use crate::vocab::{DnAttribute, Eku, KeyAlgorithm, San};
    use crate::x509::{LeafSpec, Permitted};

    fn subject(cn: &str) -> Vec<(DnAttribute, String)> {
        vec![
            (DnAttribute::Organization, "Example".into()),
            (DnAttribute::CommonName, cn.into()),
        ]
    }

    struct Pki {
        root: CertificateDer<'static>,
        host: CertificateDer<'static>,
        host_key: KeyPair,
        now: SystemTime,
    }

    fn pki(permitted: &Permitted) -> Pki {
        let now = SystemTime::now();
        let root_key = KeyPair::generate().unwrap();
        let root = x509::root_params("root", now, Duration::from_secs(86400), [1; 16])
            .self_signed(&root_key)
            .unwrap();
        let host_key = KeyPair::generate().unwrap();
        let root_issuer = Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
        let host =
            x509::host_issuing_params("host", permitted, now, Duration::from_secs(3600), [2; 16])
                .unwrap()
                .signed_by(&host_key, &root_issuer)
                .unwrap();
        Pki {
            root: root.der().clone(),
            host: host.der().clone(),
            host_key,
            now,
        }
    }

    fn leaf(
        p: &Pki,
        subject: &[(DnAttribute, String)],
        sans: &[San],
        eku: Eku,
    ) -> CertificateDer<'static> {
        let spec = LeafSpec {
            subject,
            sans,
            ekus: &[eku],
            key_type: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(600),
            not_after_limit: None,
        };
        let issuer = Issuer::from_ca_cert_der(&p.host, &p.host_key).unwrap();
        x509::leaf_params(&spec, p.now, [3; 16])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .clone()
    }

    fn verify(p: &Pki, ee: &CertificateDer<'_>, usage: Usage) -> Result<(), Error> {
        let now = UnixTime::since_unix_epoch(p.now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        verify_chain(
            ee,
            std::slice::from_ref(&p.host),
            std::slice::from_ref(&p.root),
            now,
            usage,
        )
    }

    #[test]
    fn chains_under_subject_constraints_verify_and_outsiders_do_not() {
        let broker = subject("b1");
        let client = subject("client");
        let names = vec![San::Dns("b1.example".into()), San::Dns("client".into())];
        let p = pki(&Permitted {
            names: names.clone(),
            subjects: vec![broker.clone(), client.clone()],
        });
        let server_leaf = leaf(&p, &broker, &names[..1], Eku::ServerAuth);
        let client_leaf = leaf(&p, &client, &[], Eku::ClientAuth);
        // webpki alone refuses every leaf below directoryName constraints.
        let ee = webpki::EndEntityCert::try_from(&server_leaf).unwrap();
        let anchors = [webpki::anchor_from_trusted_cert(&p.root).unwrap()];
        let now = UnixTime::since_unix_epoch(p.now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        assert!(
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                std::slice::from_ref(&p.host),
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None
            )
            .is_err()
        );
        verify(&p, &server_leaf, Usage::Server).unwrap();
        verify(&p, &client_leaf, Usage::Client).unwrap();
        // The wrong usage, another subject, a name outside: refused.
        assert!(matches!(
            verify(&p, &client_leaf, Usage::Server),
            Err(Error::Untrusted(_))
        ));
        let mallory = leaf(&p, &subject("admin"), &[], Eku::ClientAuth);
        let e = verify(&p, &mallory, Usage::Client).unwrap_err();
        assert!(
            e.to_string()
                .contains("subject CN=admin,O=Example is not permitted"),
            "{e}"
        );
        let elsewhere = leaf(
            &p,
            &broker,
            &[San::Dns("evil.example".into())],
            Eku::ServerAuth,
        );
        assert!(matches!(
            verify(&p, &elsewhere, Usage::Server),
            Err(Error::Constraint(_))
        ));
    }

    #[test]
    fn the_issuing_ca_must_chain_to_a_trusted_root() {
        let permitted = Permitted {
            names: vec![San::Dns("b1.example".into())],
            subjects: vec![subject("b1")],
        };
        let p = pki(&permitted);
        let other = pki(&permitted);
        let ee = leaf(&p, &subject("b1"), &permitted.names, Eku::ServerAuth);
        let now = UnixTime::since_unix_epoch(p.now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        let e = verify_chain(
            &ee,
            std::slice::from_ref(&p.host),
            std::slice::from_ref(&other.root),
            now,
            Usage::Server,
        )
        .unwrap_err();
        assert!(matches!(e, Error::IssuerUntrusted(_)), "{e}");
        // Expired host CA.
        let later = UnixTime::since_unix_epoch(
            (p.now + Duration::from_secs(7200))
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap(),
        );
        assert!(
            verify_chain(
                &ee,
                std::slice::from_ref(&p.host),
                std::slice::from_ref(&p.root),
                later,
                Usage::Server
            )
            .is_err()
        );
    }

    #[test]
    fn chains_without_subject_constraints_are_webpki_s_alone() {
        let p = pki(&Permitted {
            names: vec![San::Dns("b1.example".into())],
            subjects: vec![],
        });
        let ee = leaf(
            &p,
            &subject("anyone"),
            &[San::Dns("b1.example".into())],
            Eku::ServerAuth,
        );
        verify(&p, &ee, Usage::Server).unwrap();
    }
}
