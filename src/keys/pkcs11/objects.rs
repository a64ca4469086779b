//! Key objects: the templates of a new key pair, finding a key's objects by label, and the
//! EC curves, points and signatures as PKCS#11 represents them.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::error::{Fail, load_err};
use super::session::require_login;
use crate::der;
use crate::keys::{Error, KeyAlgorithm};

/// The templates of a new key pair labelled `label` on `curve`: a token public key that only
/// verifies, and a private, sensitive, non-extractable token private key that only signs.
/// Both carry the label and its [`key_id`].
pub(super) fn key_templates(curve: &Curve, label: &str) -> ([Attribute; 8], [Attribute; 10]) {
    let id = key_id(label);
    let label = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::EcParams(curve.params.to_vec()),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    (public, private)
}

/// The key object of `class` labelled `label`, if any.
pub(super) fn find_key(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, Fail> {
    let found = session.find_objects(&[
        Attribute::Class(class),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    match found.as_slice() {
        [] => {
            if class == ObjectClass::PRIVATE_KEY {
                require_login(session)?;
            }
            Ok(None)
        }
        [one] => Ok(Some(*one)),
        many => Err(Fail::Key(Error::Load {
            label: label.to_owned(),
            path: "token".into(),
            source: format!("{} key objects of one class carry this label", many.len()).into(),
        })),
    }
}

pub(super) fn find_private(session: &Session, label: &str) -> Result<ObjectHandle, Fail> {
    find_key(session, ObjectClass::PRIVATE_KEY, label)?
        .ok_or_else(|| Fail::Key(Error::NotFound(label.to_owned())))
}

/// The public key object of a key: by label, else by the private key's `CKA_ID` (keys
/// provisioned by other tools may label only the private key).
pub(super) fn find_public(session: &Session, label: &str) -> Result<ObjectHandle, Fail> {
    if let Some(handle) = find_key(session, ObjectClass::PUBLIC_KEY, label)? {
        return Ok(handle);
    }
    let private = find_private(session, label)?;
    let id = session
        .get_attributes(private, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) if !id.is_empty() => Some(id),
            _ => None,
        });
    if let Some(id) = id {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Id(id),
        ])?;
        if let [one] = found.as_slice() {
            return Ok(*one);
        }
    }
    Err(Fail::Key(load_err(
        label,
        "no public key object for this key",
    )))
}

/// The algorithm of an EC key object, from its `CKA_KEY_TYPE` and `CKA_EC_PARAMS`.
pub(super) fn key_algorithm(
    session: &Session,
    key: ObjectHandle,
    label: &str,
) -> Result<KeyAlgorithm, Fail> {
    let attrs = session.get_attributes(key, &[AttributeType::KeyType, AttributeType::EcParams])?;
    let mut key_type = None;
    let mut params = None;
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    if key_type != Some(KeyType::EC) {
        return Err(Fail::Key(load_err(
            label,
            "not an EC key; leafd supports EC P-256 and P-384 keys in PKCS#11 tokens",
        )));
    }
    params
        .as_deref()
        .and_then(Curve::from_params)
        .map(|c| c.algorithm)
        .ok_or_else(|| {
            Fail::Key(load_err(
                label,
                "EC key on a curve other than P-256 or P-384",
            ))
        })
}

/// A stable `CKA_ID` for a label: the first 16 bytes of SHA-256("leafd host key" 0 label).
fn key_id(label: &str) -> Vec<u8> {
    let mut input = b"leafd host key\0".to_vec();
    input.extend_from_slice(label.as_bytes());
    ring::digest::digest(&ring::digest::SHA256, &input).as_ref()[..16].to_vec()
}

/// A supported curve.
pub(super) struct Curve {
    algorithm: KeyAlgorithm,
    /// `CKA_EC_PARAMS`: the DER namedCurve OID.
    pub(super) params: &'static [u8],
    /// Field size in bytes.
    pub(super) size: usize,
    pub(super) digest: &'static ring::digest::Algorithm,
}

const P256: Curve = Curve {
    algorithm: KeyAlgorithm::EcdsaP256,
    params: der::P256_OID,
    size: 32,
    digest: &ring::digest::SHA256,
};

const P384: Curve = Curve {
    algorithm: KeyAlgorithm::EcdsaP384,
    params: der::P384_OID,
    size: 48,
    digest: &ring::digest::SHA384,
};

impl Curve {
    pub(super) fn for_algorithm(algorithm: KeyAlgorithm) -> Option<&'static Curve> {
        match algorithm {
            KeyAlgorithm::EcdsaP256 => Some(&P256),
            KeyAlgorithm::EcdsaP384 => Some(&P384),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => None,
        }
    }

    fn from_params(params: &[u8]) -> Option<&'static Curve> {
        [&P256, &P384].into_iter().find(|c| c.params == params)
    }
}

/// The uncompressed point from `CKA_EC_POINT`: a DER OCTET STRING as PKCS#11 specifies, or
/// the raw point some modules return.
pub(super) fn ec_point(value: &[u8], curve: &Curve) -> Option<Vec<u8>> {
    let expected = 1 + 2 * curve.size;
    let point = if value.len() == expected && value[0] == 0x04 {
        value
    } else {
        der::read_whole(0x04, value)?
    };
    (point.len() == expected && point[0] == 0x04).then(|| point.to_vec())
}

/// DER ECDSA-Sig-Value from the raw `r || s` that `CKM_ECDSA` returns.
pub(super) fn ecdsa_der(raw: &[u8], curve: &Curve) -> Option<Vec<u8>> {
    if raw.len() != 2 * curve.size {
        return None;
    }
    let (r, s) = raw.split_at(curve.size);
    Some(der::ecdsa_sig(r, s))
}

pub(super) fn bool_attr(attrs: &[Attribute], ty: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (a, ty) {
        (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::Local(v), AttributeType::Local) => Some(*v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signature_becomes_der() {
        // r with the top bit set gains a zero byte; s with leading zeros loses them.
        let mut raw = vec![0x80; 32];
        raw.extend(std::iter::repeat_n(0, 31));
        raw.push(0x05);
        let der = ecdsa_der(&raw, &P256).unwrap();
        let mut expected = vec![0x30, 38, 0x02, 33, 0x00];
        expected.extend([0x80; 32]);
        expected.extend([0x02, 1, 0x05]);
        assert_eq!(der, expected);
        assert!(ecdsa_der(&raw[..63], &P256).is_none());
    }

    #[test]
    fn ec_point_accepts_der_and_raw() {
        let mut point = vec![0x04];
        point.extend([7; 64]);
        let wrapped = der::tlv(0x04, &point);
        assert_eq!(ec_point(&wrapped, &P256).unwrap(), point);
        assert_eq!(ec_point(&point, &P256).unwrap(), point);
        assert!(ec_point(&wrapped, &P384).is_none());
        assert!(ec_point(&wrapped[..60], &P256).is_none());
        let mut p384 = vec![0x04];
        p384.extend([9; 96]);
        assert_eq!(ec_point(&der::tlv(0x04, &p384), &P384).unwrap(), p384);
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        assert_eq!(key_id("host"), key_id("host"));
        assert_ne!(key_id("host"), key_id("host2"));
        assert_eq!(key_id("host").len(), 16);
    }
}
