//! Minting a leaf and turning it into validated store bytes. Used by the engine and the
//! benchmarks; no scheduling here.

use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::keys::signer::BackendKey;
use crate::keys::soft::generate_keypair;
use crate::keys::{KeyBackend, KeyRef};
use crate::keystore::{self, KeyMaterial};
use crate::settings::{Identity, Output};
use crate::x509;

/// A freshly minted leaf: a new software key and its certificate.
pub struct Minted {
    /// PKCS#8 DER of the leaf key.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// Leaf certificate DER.
    pub cert_der: Vec<u8>,
}

/// Minting errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Leaf key generation failed.
    #[error("could not generate the leaf key")]
    KeyGen(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The host key could not be used.
    #[error("host key unavailable")]
    HostKey(#[source] crate::keys::Error),
    /// The certificate could not be built or signed.
    #[error("could not sign the leaf certificate")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A store could not be encoded or failed its own validation.
    #[error("could not build {path}")]
    Encode {
        /// The output path.
        path: String,
        /// Cause.
        #[source]
        source: keystore::Error,
    },
}

/// Mints a leaf for `identity` with a fresh key, signed by the host key on `backend`; its
/// notAfter is cut at the host certificate's. Run it on the key thread.
pub fn mint_leaf(
    backend: &mut dyn KeyBackend,
    host_key: &KeyRef,
    host_cert_der: &[u8],
    identity: &Identity,
    now: SystemTime,
) -> Result<Minted, Error> {
    let (key_pkcs8, leaf_key) =
        generate_keypair(identity.key_type).map_err(|e| Error::KeyGen(e.into()))?;
    let host = x509::summarize(host_cert_der, "host issuing certificate")
        .map_err(|e| Error::Sign(e.into()))?;
    let spec = x509::LeafSpec {
        not_after_limit: Some(host.not_after),
        ..identity.leaf_spec()
    };
    let params =
        x509::leaf_params(&spec, now, rand::random()).map_err(|e| Error::Sign(e.into()))?;
    let signer = BackendKey::new(backend, host_key.clone()).map_err(Error::HostKey)?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&host_cert_der.into(), &signer)
        .map_err(|e| Error::Sign(e.into()))?;
    let cert = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| match signer.take_error() {
            Some(k) => Error::HostKey(k),
            None => Error::Sign(e.into()),
        })?;
    Ok(Minted {
        key_pkcs8,
        cert_der: cert.der().to_vec(),
    })
}

/// Encoded bytes for one output, validated by parsing them back.
pub struct Encoded<'a> {
    /// Where it goes.
    pub output: &'a Output,
    /// The bytes.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// Builds and validates every store of `identity`: truststores first, then keystores, the
/// order they must be written in (a broker must trust a new CA before it meets it).
pub fn encode_outputs<'a>(
    identity: &'a Identity,
    minted: &Minted,
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
) -> Result<Vec<Encoded<'a>>, Error> {
    let mut out = Vec::with_capacity(identity.truststores.len() + identity.keystores.len());
    let err = |o: &Output, source| Error::Encode {
        path: o.path.display().to_string(),
        source,
    };
    for o in &identity.truststores {
        let bytes = keystore::encode_truststore(o.format, roots, &o.alias, o.password.as_ref())
            .map_err(|e| err(o, e))?;
        keystore::verify_truststore(o.format, &bytes, o.password.as_ref(), roots)
            .map_err(|e| err(o, e))?;
        out.push(Encoded {
            output: o,
            bytes: Zeroizing::new(bytes),
        });
    }
    let mut full_chain = Vec::with_capacity(chain.len() + 1);
    full_chain.push(minted.cert_der.clone());
    full_chain.extend(chain.iter().cloned());
    let material = KeyMaterial {
        key_pkcs8_der: &minted.key_pkcs8,
        chain_der: &full_chain,
    };
    for o in &identity.keystores {
        let bytes = keystore::encode_keystore(o.format, &material, &o.alias, o.password.as_ref())
            .map_err(|e| err(o, e))?;
        keystore::verify_keystore(o.format, &bytes, o.password.as_ref(), &full_chain)
            .map_err(|e| err(o, e))?;
        out.push(Encoded { output: o, bytes });
    }
    Ok(out)
}
