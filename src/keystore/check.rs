//! Input checks shared by the formats: certificates parse, the chain is ordered, the key
//! belongs to the leaf.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};

use super::Error;

/// Parses one DER certificate; trailing bytes are an error.
pub(super) fn parse_cert(index: usize, der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::ParseCertificate {
            index,
            source: x509_parser::nom::Err::Error(X509Error::InvalidCertificate),
        }),
        Err(source) => Err(Error::ParseCertificate { index, source }),
    }
}

/// Checks a keystore chain: not empty, every certificate parses, and each one's issuer is
/// the next one's subject (Java's `PKCS12KeyStore` rejects other orders, and builds the
/// chain of a PKCS#12 key entry by following issuer names).
pub(super) fn check_chain(chain: &[Vec<u8>]) -> Result<(), Error> {
    if chain.is_empty() {
        return Err(Error::EmptyChain);
    }
    let certs = chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse_cert(i, der))
        .collect::<Result<Vec<_>, _>>()?;
    for (index, pair) in certs.windows(2).enumerate() {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let same = cert.issuer().as_raw() == issuer.subject().as_raw()
            || cert.issuer().to_string() == issuer.subject().to_string();
        if !same {
            return Err(Error::ChainOrder { index });
        }
    }
    Ok(())
}

/// Checks truststore roots: at least one, and every one parses.
pub(super) fn check_roots(roots: &[Vec<u8>]) -> Result<(), Error> {
    if roots.is_empty() {
        return Err(Error::NoRoots);
    }
    for (i, der) in roots.iter().enumerate() {
        parse_cert(i, der)?;
    }
    Ok(())
}

/// Checks that the PKCS#8 key is the private half of the leaf certificate's public key:
/// the key is loaded with ring for the leaf's algorithm and its public key compared with
/// the certificate's.
pub(super) fn key_matches_leaf(key_pkcs8: &[u8], leaf_der: &[u8]) -> Result<(), Error> {
    let leaf = parse_cert(0, leaf_der)?;
    let spki = leaf.public_key();
    let alg = &spki.algorithm;
    let invalid = |e: ring::error::KeyRejected| Error::InvalidKey {
        reason: e.to_string(),
    };
    let public: Vec<u8> = if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| Error::UnsupportedKeyAlgorithm {
                oid: format!("{} without a named curve", alg.algorithm),
            })?;
        let signing = if curve == OID_EC_P256 {
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING
        } else if curve == OID_NIST_EC_P384 {
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING
        } else {
            return Err(Error::UnsupportedKeyAlgorithm {
                oid: format!("{} curve {curve}", alg.algorithm),
            });
        };
        let pair =
            EcdsaKeyPair::from_pkcs8(signing, key_pkcs8, &SystemRandom::new()).map_err(invalid)?;
        pair.public_key().as_ref().to_vec()
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        let pair = RsaKeyPair::from_pkcs8(key_pkcs8).map_err(invalid)?;
        pair.public_key().as_ref().to_vec()
    } else if alg.algorithm == OID_SIG_ED25519 {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key_pkcs8).map_err(invalid)?;
        pair.public_key().as_ref().to_vec()
    } else {
        return Err(Error::UnsupportedKeyAlgorithm {
            oid: alg.algorithm.to_string(),
        });
    };
    if public.as_slice() == spki.subject_public_key.data.as_ref() {
        Ok(())
    } else {
        Err(Error::KeyMismatch)
    }
}
