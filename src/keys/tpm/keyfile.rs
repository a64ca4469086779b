//! The key file format: a PEM `TSS2 PRIVATE KEY`, the ASN.1 TPM key file of the OpenSSL TPM
//! engines (loadable key OID `2.23.133.10.1.3`).

use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use super::Curve;
use super::error::{Detail, TssError};
use crate::der;
use crate::keys::KeyAlgorithm;

const PEM_LABEL: &str = "TSS2 PRIVATE KEY";
/// 2.23.133.10.1.3, id-loadablekey.
const LOADABLE_KEY_OID: &[u8] = &[0x67, 0x81, 0x05, 0x0a, 0x01, 0x03];

/// A key as stored: parent, public area and the parent-encrypted private area.
#[derive(Clone)]
pub(super) struct KeyFile {
    pub(super) parent: u32,
    pub(super) public: Public,
    pub(super) private: Private,
    pub(super) algorithm: KeyAlgorithm,
    pub(super) curve: Curve,
    /// The uncompressed point, `04 || x || y`.
    point: Vec<u8>,
}

impl KeyFile {
    pub(super) fn new(parent: u32, public: Public, private: Private) -> Result<Self, Detail> {
        let Public::Ecc {
            parameters,
            unique,
            object_attributes,
            ..
        } = &public
        else {
            return Err(Detail::new("not an ECC key".into()));
        };
        let curve = Curve::from_tpm(parameters.ecc_curve()).ok_or_else(|| {
            Detail::new(format!("unsupported curve {:?}", parameters.ecc_curve()))
        })?;
        if !object_attributes.sign_encrypt() {
            return Err(Detail::new("not a signing key".into()));
        }
        let (x, y) = (unique.x().value(), unique.y().value());
        let mut point = Vec::with_capacity(1 + 2 * curve.size());
        point.push(0x04);
        for coordinate in [x, y] {
            let c = der::trim_leading_zeros(coordinate);
            if c.len() > curve.size() {
                return Err(Detail::new("public point does not fit the curve".into()));
            }
            point.resize(point.len() + curve.size() - c.len(), 0);
            point.extend_from_slice(c);
        }
        Ok(Self {
            parent,
            algorithm: curve.algorithm(),
            curve,
            point,
            public,
            private,
        })
    }

    pub(super) fn spki(&self) -> Vec<u8> {
        der::ec_spki(self.curve.oid(), &self.point)
    }

    pub(super) fn encode(&self) -> Result<String, Detail> {
        let public = self.public.marshall().map_err(|e| {
            Detail::with_source(
                "could not marshal the public area".into(),
                TssError::from(e),
            )
        })?;
        let private = self.private.value();
        let mut body = der::tlv(0x06, LOADABLE_KEY_OID);
        body.extend(der::tlv(0xa0, &der::tlv(0x01, &[0xff]))); // emptyAuth [0] EXPLICIT TRUE
        body.extend(der::uint(&self.parent.to_be_bytes()));
        body.extend(der::tlv(0x04, &tpm2b(&public)?));
        body.extend(der::tlv(0x04, &tpm2b(private)?));
        Ok(pem::encode(&pem::Pem::new(
            PEM_LABEL,
            der::tlv(0x30, &body),
        )))
    }

    pub(super) fn decode(text: &[u8]) -> Result<Self, Detail> {
        let block =
            pem::parse(text).map_err(|e| Detail::with_source("not a PEM file".into(), e))?;
        if block.tag() != PEM_LABEL {
            return Err(Detail::new(format!(
                "expected a {PEM_LABEL:?} PEM block, found {:?}",
                block.tag()
            )));
        }
        let malformed = |what: &str| Detail::new(format!("malformed TSS2 key: {what}"));
        let (tag, seq, rest) = der::read_tlv(block.contents()).ok_or_else(|| malformed("outer"))?;
        if tag != 0x30 || !rest.is_empty() {
            return Err(malformed("outer SEQUENCE"));
        }
        let (tag, oid, mut rest) = der::read_tlv(seq).ok_or_else(|| malformed("type"))?;
        if tag != 0x06 || oid != LOADABLE_KEY_OID {
            return Err(Detail::new(
                "not a loadable TPM key (type is not 2.23.133.10.1.3)".into(),
            ));
        }
        let mut empty_auth = false;
        loop {
            let (tag, value, after) = der::read_tlv(rest).ok_or_else(|| malformed("fields"))?;
            match tag {
                0xa0 => {
                    empty_auth = matches!(der::read_tlv(value), Some((0x01, [0xff], [])));
                    rest = after;
                }
                0xa1..=0xbf => {
                    return Err(Detail::new(
                        "keys with policies or an imported secret are not supported".into(),
                    ));
                }
                _ => break,
            }
        }
        if !empty_auth {
            return Err(Detail::new(
                "keys with an auth value are not supported".into(),
            ));
        }
        let (tag, parent, rest) = der::read_tlv(rest).ok_or_else(|| malformed("parent"))?;
        let parent = match (tag, der::trim_leading_zeros(parent)) {
            (0x02, p) if p.len() <= 4 => p.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)),
            _ => return Err(malformed("parent")),
        };
        let (tag, public, rest) = der::read_tlv(rest).ok_or_else(|| malformed("pubkey"))?;
        if tag != 0x04 {
            return Err(malformed("pubkey"));
        }
        let (tag, private, rest) = der::read_tlv(rest).ok_or_else(|| malformed("privkey"))?;
        if tag != 0x04 || !rest.is_empty() {
            return Err(malformed("privkey"));
        }
        let public = Public::unmarshall(untpm2b(public).ok_or_else(|| malformed("pubkey size"))?)
            .map_err(|e| {
            Detail::with_source("malformed public area".into(), TssError::from(e))
        })?;
        let private = Private::try_from(untpm2b(private).ok_or_else(|| malformed("privkey size"))?)
            .map_err(|e| Detail::with_source("malformed private area".into(), TssError::from(e)))?;
        Self::new(parent, public, private)
    }
}

/// `u16` size prefix, as a `TPM2B_*`.
fn tpm2b(data: &[u8]) -> Result<Vec<u8>, Detail> {
    let len = u16::try_from(data.len()).map_err(|_| Detail::new("TPM2B too large".into()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(data);
    Ok(out)
}

fn untpm2b(data: &[u8]) -> Option<&[u8]> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*len)) == rest.len()).then_some(rest)
}
