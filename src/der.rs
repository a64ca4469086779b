//! The few DER structures leafd writes and reads by hand around its key backends: TLVs,
//! unsigned INTEGERs, `ECDSA-Sig-Value`, EC `SubjectPublicKeyInfo`, and the TLV reader the
//! `TSS2 PRIVATE KEY` file format needs. Pure.
//!
//! Certificates and CSRs go through rcgen and x509-parser; these are the fixed shapes a
//! TPM or PKCS#11 token returns in raw form (an EC point, `r || s`). Single-byte tags and
//! definite lengths only, which is all these structures use; a general ASN.1 crate would
//! add a schema layer for five functions.

/// `id-ecPublicKey` (1.2.840.10045.2.1) as a DER OBJECT IDENTIFIER TLV.
pub const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7) as a DER OBJECT IDENTIFIER TLV.
pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `secp384r1` (1.3.132.0.34) as a DER OBJECT IDENTIFIER TLV.
pub const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// One TLV with a single-byte `tag`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8); // < 0x80: fits
    } else {
        let bytes = len.to_be_bytes();
        let bytes = trim_leading_zeros(&bytes);
        out.push(0x80 | bytes.len() as u8); // at most 8 length octets
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// `bytes` without its leading zero bytes.
pub fn trim_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// The content octets of an INTEGER holding the unsigned big-endian `n`: minimal, with a
/// leading zero where the high bit would make it negative.
pub fn uint_content(n: &[u8]) -> Vec<u8> {
    let n = trim_leading_zeros(n);
    let mut out = Vec::with_capacity(n.len() + 1);
    if n.first().is_none_or(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(n);
    out
}

/// A whole INTEGER TLV holding the unsigned big-endian `n`.
pub fn uint(n: &[u8]) -> Vec<u8> {
    tlv(0x02, &uint_content(n))
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from unsigned `r` and `s`.
pub fn ecdsa_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
    tlv(0x30, &[uint(r), uint(s)].concat())
}

/// The `SubjectPublicKeyInfo` of an EC key: `curve_oid` is the named curve's OID TLV
/// ([`P256_OID`], [`P384_OID`]), `point` the uncompressed point.
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let algorithm = tlv(0x30, &[EC_PUBLIC_KEY_OID, curve_oid].concat());
    let mut bits = Vec::with_capacity(point.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(point);
    tlv(0x30, &[algorithm, tlv(0x03, &bits)].concat())
}

/// Splits one TLV off `input`: `(tag, content, rest)`. `None` for a truncated TLV, an
/// indefinite length or a length of more than four octets.
pub fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    Some((tag, value, after))
}

/// The content of a TLV with `tag` that fills all of `input`.
pub fn read_whole(tag: u8, input: &[u8]) -> Option<&[u8]> {
    match read_tlv(input)? {
        (t, content, []) if t == tag => Some(content),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(uint_content(&[0, 0, 0x12]), vec![0x12]);
        assert_eq!(uint_content(&[0x80, 1]), vec![0, 0x80, 1]);
        assert_eq!(uint_content(&[0, 0]), vec![0]);
        assert_eq!(uint(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
    }

    #[test]
    fn long_lengths() {
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
        let t = tlv(0x04, &[7; 300]);
        assert_eq!(read_tlv(&t), Some((0x04, &[7u8; 300][..], &[][..])));
    }

    #[test]
    fn reader_refuses_truncated_and_odd_lengths() {
        assert_eq!(
            read_tlv(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(read_tlv(&[0x04, 0x03, 1, 2]), None);
        assert_eq!(read_tlv(&[0x04, 0x82, 0x01]), None);
        assert_eq!(read_tlv(&[0x04, 0x80]), None);
        assert_eq!(read_tlv(&[]), None);
        assert_eq!(read_whole(0x04, &[0x04, 0x01, 5]), Some(&[5u8][..]));
        assert_eq!(read_whole(0x04, &[0x04, 0x01, 5, 0]), None);
        assert_eq!(read_whole(0x03, &[0x04, 0x01, 5]), None);
    }

    #[test]
    fn ecdsa_signature_and_spki() {
        assert_eq!(
            ecdsa_sig(&[0xff], &[0x01]),
            vec![0x30, 0x07, 0x02, 0x02, 0x00, 0xff, 0x02, 0x01, 0x01]
        );
        let spki = ec_spki(P256_OID, &[0x04; 65]);
        let (tag, body, rest) = read_tlv(&spki).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (tag, alg, bits) = read_tlv(body).unwrap();
        assert_eq!(tag, 0x30);
        assert_eq!(alg, [EC_PUBLIC_KEY_OID, P256_OID].concat());
        assert_eq!(read_whole(0x03, bits).unwrap().len(), 66);
    }
}
