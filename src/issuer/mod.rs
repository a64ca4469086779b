//! Issuers of the host issuing certificate. The host key signs leaves itself; an issuer
//! only certifies the host key (as a name-constrained CA) and names the roots to trust.

pub mod local;

use std::time::SystemTime;

use crate::vocab::{KeyAlgorithm, San, Subject};

/// What the host asks an issuer to certify.
#[derive(Debug, Clone)]
pub struct HostCertRequest {
    /// Host key SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// Host key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Names the host may issue for (become dNSName and iPAddress constraints).
    pub names: Vec<San>,
    /// Subjects the host may issue for (become directoryName constraints).
    pub subjects: Vec<Subject>,
    /// Host name, for the certificate subject.
    pub hostname: String,
}

/// An issued host issuing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChain {
    /// The host issuing certificate first, then any intermediates (no root).
    pub chain: Vec<Vec<u8>>,
    /// The roots relying parties should trust.
    pub roots: Vec<Vec<u8>>,
}

/// Issuer errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Local CA files could not be read or written.
    #[error("could not {action} local CA file {path}")]
    LocalCaIo {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building a certificate failed.
    #[error("could not build certificate")]
    Build(#[from] crate::x509::Error),
    /// The request is not acceptable.
    #[error("request refused: {0}")]
    Refused(String),
    /// The issuer could not be reached or did not answer; try again later.
    #[error("issuer unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Whether retrying later could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::LocalCaIo { .. } | Self::Unavailable(_))
    }
}

/// Certifies host keys.
pub trait Issuer {
    /// Issues a host issuing certificate for `req`, valid from `now`.
    fn issue_host_cert(
        &self,
        req: &HostCertRequest,
        now: SystemTime,
    ) -> impl std::future::Future<Output = Result<IssuedChain, Error>> + Send;
}

/// The configured issuer.
pub enum IssuerKind {
    /// The embedded local CA.
    Local(local::LocalCa),
}

impl Issuer for IssuerKind {
    async fn issue_host_cert(
        &self,
        req: &HostCertRequest,
        now: SystemTime,
    ) -> Result<IssuedChain, Error> {
        match self {
            Self::Local(ca) => ca.issue(req, now),
        }
    }
}
