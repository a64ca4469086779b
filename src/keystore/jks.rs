//! JKS via the `jks` crate's low-level encoder, decoder and key protector.
//!
//! Layout (Sun `JavaKeyStore`): magic `FEEDFEED`, version 2, entry count, then per entry a
//! tag (1 = private key, 2 = trusted certificate), the alias (u16-length string), the
//! creation time in milliseconds, and either the protected key plus the chain or one
//! certificate; certificates are the type `X.509` plus u32-length DER. The file ends with
//! SHA-1(password, "Mighty Aphrodite", everything before). The key is protected with Sun's
//! `KeyProtector` (OID 1.3.6.1.4.1.42.2.17.1.1): 20-byte salt, SHA-1 keystream XOR,
//! SHA-1(password, plain key) check.
//!
//! DEVNOTE: why not `jks::KeyStore::store`/`load`. Java turns the password into bytes as
//! UTF-16BE of its `char`s, both for the store digest and for the `KeyProtector`. The crate
//! lets the key protector use a custom transform (`KeyStoreOptions::password_bytes`), but
//! `store` and `load` hard-code `common::password_bytes`, which prefixes each *UTF-8 byte*
//! with a zero: right for ASCII only. Any other password gives a store Java rejects
//! ("Keystore was tampered with, or password was incorrect"). The crate's `Encoder`,
//! `Decoder` and `keyprotector` are public and correct, so this module drives them with
//! the UTF-16BE password itself (`keytool_reads_non_ascii_passwords` checks it against
//! Java). Two more reasons to stay off `KeyStore`: it writes entries in `HashMap` order,
//! and it insists on six-character passwords, which Java's `KeyStore` API does not.
//! `keyprotector::decrypt` indexes its input without bounds checks, so
//! [`check_protected_key`] validates the DER structure before calling it.

use std::time::SystemTime;

use ::jks::common::{MAGIC, SystemRandom, VERSION_02, WHITENER_MESSAGE};
use ::jks::decoder::Decoder;
use ::jks::encoder::Encoder;
use ::jks::{Certificate, Entry, KeyStoreError, PrivateKeyEntry, TrustedCertificateEntry};
use x509_parser::der_parser;
use zeroize::{Zeroize, Zeroizing};

use super::{Error, KeyMaterial, check};

const FORMAT: &str = crate::vocab::StoreFormat::Jks.type_name();
const CERT_TYPE: &str = "X.509";
/// Sun's proprietary key protection algorithm, 1.3.6.1.4.1.42.2.17.1.1.
const KEY_PROTECTOR_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 42, 2, 17, 1, 1];
/// Salt and check digest around the encrypted key.
const PROTECTOR_OVERHEAD: usize = 20 + 20;
/// More entries than this in a file leafd is verifying means it is not ours.
const MAX_ENTRIES: u32 = 10_000;

/// Java's password bytes: UTF-16BE of the password's chars.
fn java_password_bytes(password: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(password.encode_utf16().flat_map(u16::to_be_bytes).collect())
}

/// The `KeyStoreOptions::password_bytes` shape for `keyprotector`: the input is the
/// password's UTF-8 bytes (always valid UTF-8 here, as it comes from a `&str`).
fn java_password_bytes_from_utf8(utf8: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(utf8)
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect()
}

fn encode_err(source: KeyStoreError) -> Error {
    Error::EncodeJks { source }
}

fn parse_err(source: KeyStoreError) -> Error {
    Error::ParseJks { source }
}

fn mismatch(detail: impl Into<String>) -> Error {
    Error::Mismatch {
        format: FORMAT,
        detail: detail.into(),
    }
}

fn x509(der: &[u8]) -> Certificate {
    Certificate {
        cert_type: CERT_TYPE.to_owned(),
        content: der.to_vec(),
    }
}

/// Java's `JavaKeyStore.convertAlias`: aliases are stored lower-case.
fn java_alias(alias: &str) -> String {
    alias.to_lowercase()
}

/// Writes a whole store: header, entries, keyed digest.
fn write_store(
    password: &str,
    write_entries: impl FnOnce(&mut Encoder<'_, Vec<u8>>) -> Result<u32, KeyStoreError>,
    count: u32,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out);
    enc.update_digest(&java_password_bytes(password));
    enc.update_digest(WHITENER_MESSAGE);
    enc.write_u32(MAGIC).map_err(encode_err)?;
    enc.write_u32(VERSION_02).map_err(encode_err)?;
    enc.write_u32(count).map_err(encode_err)?;
    let written = write_entries(&mut enc).map_err(encode_err)?;
    if written != count {
        return Err(mismatch(format!(
            "wrote {written} entries, announced {count}"
        )));
    }
    enc.write_digest().map_err(encode_err)?;
    Ok(out)
}

pub(super) fn encode_keystore(
    material: &KeyMaterial<'_>,
    alias: &str,
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let protected = ::jks::keyprotector::encrypt(
        &mut SystemRandom,
        material.key_pkcs8_der,
        password.as_bytes(),
        java_password_bytes_from_utf8,
    )
    .map_err(encode_err)?;
    let entry = PrivateKeyEntry {
        creation_time: SystemTime::now(),
        private_key: protected,
        certificate_chain: material.chain_der.iter().map(|c| x509(c)).collect(),
    };
    let alias = java_alias(alias);
    write_store(
        password,
        |enc| {
            enc.write_private_key_entry(&alias, &entry)?;
            Ok(1)
        },
        1,
    )
    .map(Zeroizing::new)
}

pub(super) fn encode_truststore(
    roots_der: &[Vec<u8>],
    alias_prefix: &str,
    password: &str,
) -> Result<Vec<u8>, Error> {
    let count = u32::try_from(roots_der.len()).map_err(|_| mismatch("too many roots"))?;
    let now = SystemTime::now();
    let prefix = java_alias(alias_prefix);
    write_store(
        password,
        |enc| {
            let mut n = 0;
            for (i, der) in roots_der.iter().enumerate() {
                let entry = TrustedCertificateEntry {
                    creation_time: now,
                    certificate: x509(der),
                };
                enc.write_trusted_certificate_entry(&format!("{prefix}-{i}"), &entry)?;
                n += 1;
            }
            Ok(n)
        },
        count,
    )
}

/// Reads a whole store and checks its digest; returns the entries in file order.
fn read_store(bytes: &[u8], password: &str) -> Result<Vec<(String, Entry)>, Error> {
    let mut reader = bytes;
    let mut entries = Vec::new();
    {
        let mut dec = Decoder::new(&mut reader);
        dec.update_digest(&java_password_bytes(password));
        dec.update_digest(WHITENER_MESSAGE);
        if dec.read_u32().map_err(parse_err)? != MAGIC {
            return Err(parse_err(KeyStoreError::InvalidMagic));
        }
        let version = dec.read_u32().map_err(parse_err)?;
        if version != VERSION_02 {
            return Err(parse_err(KeyStoreError::UnknownVersion(version)));
        }
        let count = dec.read_u32().map_err(parse_err)?;
        if count > MAX_ENTRIES {
            return Err(mismatch(format!("{count} entries")));
        }
        for _ in 0..count {
            entries.push(dec.read_entry(version).map_err(parse_err)?);
        }
        dec.verify_digest().map_err(parse_err)?;
    }
    if !reader.is_empty() {
        return Err(mismatch(format!("{} bytes after the digest", reader.len())));
    }
    Ok(entries)
}

/// Checks that `data` is exactly `SEQUENCE { SEQUENCE { OID KeyProtector [, NULL] },
/// OCTET STRING (salt, key, digest) }`, so that `keyprotector::decrypt` (which indexes
/// without bounds checks) cannot panic on it.
fn check_protected_key(data: &[u8]) -> Result<(), Error> {
    let bad = || mismatch("the protected private key is malformed");
    let (rest, outer) = der_parser::parse_der(data).map_err(|_| bad())?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let outer = outer.as_sequence().map_err(|_| bad())?;
    let [alg, octets] = outer.as_slice() else {
        return Err(bad());
    };
    let alg = alg.as_sequence().map_err(|_| bad())?;
    let (oid, params) = match alg.as_slice() {
        [oid] => (oid, None),
        [oid, params] => (oid, Some(params)),
        _ => return Err(bad()),
    };
    let expected = der_parser::oid::Oid::from(KEY_PROTECTOR_OID).map_err(|_| bad())?;
    if oid.as_oid().map_err(|_| bad())? != &expected {
        return Err(mismatch(
            "the private key is not protected with Sun's KeyProtector",
        ));
    }
    if params.is_some_and(|p| p.content != der_parser::ber::BerObjectContent::Null) {
        return Err(bad());
    }
    let content = octets.as_slice().map_err(|_| bad())?;
    if content.len() <= PROTECTOR_OVERHEAD {
        return Err(bad());
    }
    Ok(())
}

pub(super) fn verify_keystore(
    bytes: &[u8],
    password: &str,
    expected_chain: &[Vec<u8>],
) -> Result<(), Error> {
    let entries = read_store(bytes, password)?;
    let [(_alias, entry)] = entries.as_slice() else {
        return Err(mismatch(format!(
            "expected 1 entry, found {}",
            entries.len()
        )));
    };
    let Entry::PrivateKey(entry) = entry else {
        return Err(mismatch("the entry is not a private key entry"));
    };
    let chain = &entry.certificate_chain;
    if chain.len() != expected_chain.len() {
        return Err(mismatch(format!(
            "expected {} chain certificates, found {}",
            expected_chain.len(),
            chain.len()
        )));
    }
    for (i, (cert, expected)) in chain.iter().zip(expected_chain).enumerate() {
        if cert.cert_type != CERT_TYPE || cert.content != *expected {
            return Err(mismatch(format!("chain certificate {i} differs")));
        }
    }
    check_protected_key(&entry.private_key)?;
    let mut key = ::jks::keyprotector::decrypt(
        &entry.private_key,
        password.as_bytes(),
        java_password_bytes_from_utf8,
    )
    .map_err(parse_err)?;
    let result = check::check_chain(expected_chain)
        .and_then(|()| check::key_matches_leaf(&key, &expected_chain[0]));
    key.zeroize();
    result
}

pub(super) fn verify_truststore(
    bytes: &[u8],
    password: &str,
    expected_roots: &[Vec<u8>],
) -> Result<(), Error> {
    let entries = read_store(bytes, password)?;
    if entries.len() != expected_roots.len() {
        return Err(mismatch(format!(
            "expected {} trusted certificates, found {}",
            expected_roots.len(),
            entries.len()
        )));
    }
    let mut unmatched: Vec<&[u8]> = expected_roots.iter().map(Vec::as_slice).collect();
    for (i, (_alias, entry)) in entries.iter().enumerate() {
        let Entry::TrustedCertificate(entry) = entry else {
            return Err(mismatch(format!("entry {i} is not a trusted certificate")));
        };
        if entry.certificate.cert_type != CERT_TYPE {
            return Err(mismatch(format!("entry {i} is not an X.509 certificate")));
        }
        let Some(pos) = unmatched
            .iter()
            .position(|e| *e == entry.certificate.content.as_slice())
        else {
            return Err(mismatch(format!(
                "entry {i} is not one of the expected roots"
            )));
        };
        unmatched.swap_remove(pos);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_bytes_are_utf16be() {
        assert_eq!(&*java_password_bytes("ab"), &[0, b'a', 0, b'b']);
        assert_eq!(&*java_password_bytes("€"), &[0x20, 0xac]);
        assert_eq!(
            java_password_bytes_from_utf8("p€".as_bytes()),
            java_password_bytes("p€").to_vec()
        );
        // The crate's own transform is byte-wise and differs for non-ASCII.
        assert_ne!(
            ::jks::common::password_bytes("€".as_bytes()),
            java_password_bytes("€").to_vec()
        );
    }

    #[test]
    fn header_and_digest_match_java_layout() {
        let p = super::super::testutil::pki();
        let bytes = encode_truststore(&p.roots, "CA", "changeit").unwrap();
        assert_eq!(&bytes[..4], &[0xfe, 0xed, 0xfe, 0xed]);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 2]);
        assert_eq!(&bytes[8..12], &[0, 0, 0, 1]);
        assert_eq!(&bytes[12..16], &[0, 0, 0, 2], "trusted certificate tag");
        assert_eq!(&bytes[16..22], b"\0\x04ca-0", "alias lower-cased");
        // Digest: SHA-1 over UTF-16BE password, "Mighty Aphrodite", the body.
        let (body, digest) = bytes.split_at(bytes.len() - 20);
        let mut input = java_password_bytes("changeit").to_vec();
        input.extend_from_slice(b"Mighty Aphrodite");
        input.extend_from_slice(body);
        let expected = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        assert_eq!(digest, expected.as_ref());
        // The crate's high-level loader reads an ASCII-password store too.
        let mut ks = ::jks::KeyStore::new();
        ks.load(bytes.as_slice(), b"changeit").unwrap();
        assert!(ks.is_trusted_certificate_entry("ca-0"));
    }

    /// The reason this module bypasses `jks::KeyStore::store`: with a non-ASCII password
    /// its output is rejected by Java, while ours is read (see the keystore tests).
    #[test]
    fn crate_store_with_non_ascii_password_is_rejected_by_java() {
        use crate::vocab::StoreFormat;
        let password = "pässwörd-€uro";
        let p = super::super::testutil::pki();
        let mut ks = ::jks::KeyStore::new();
        let entry = TrustedCertificateEntry {
            creation_time: SystemTime::now(),
            certificate: x509(&p.roots[0]),
        };
        ks.set_trusted_certificate_entry("ca", entry).unwrap();
        let mut bytes = Vec::new();
        ks.store(&mut bytes, password.as_bytes()).unwrap();
        let out = super::super::testutil::keytool_raw(&StoreFormat::Jks, &bytes, password, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("password was incorrect"), "{text}");
        // Same certificate and password through this module: Java reads it.
        let ours = encode_truststore(&p.roots, "ca", password).unwrap();
        let out = super::super::testutil::keytool_raw(&StoreFormat::Jks, &ours, password, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn malformed_protected_keys_are_rejected_without_panicking() {
        for data in [
            &b""[..],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x30, 0x05, 0x30, 0x03, 0x06, 0x01, 0x2b],
            &[0x30, 0x80, 0x00, 0x00],
        ] {
            assert!(check_protected_key(data).is_err(), "{data:?}");
        }
        let good = ::jks::keyprotector::encrypt(
            &mut SystemRandom,
            b"0123456789",
            b"pw",
            java_password_bytes_from_utf8,
        )
        .unwrap();
        check_protected_key(&good).unwrap();
        for cut in 0..good.len() {
            assert!(check_protected_key(&good[..cut]).is_err());
        }
    }
}
