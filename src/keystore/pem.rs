//! PEM stores as Kafka's `ssl.keystore.type=PEM` / `ssl.truststore.type=PEM` read them
//! from a file (KIP-651): keystore = one unencrypted `PRIVATE KEY` (PKCS#8) block, then the
//! chain as `CERTIFICATE` blocks, leaf first; truststore = `CERTIFICATE` blocks.
//!
//! Kafka accepts an encrypted key only with `ssl.key.password`, and Java 17 cannot decrypt
//! OpenSSL's default PBES2 encryption (JDK-8231581), so the key is written in clear and
//! the file's mode protects it.

use ::pem::{EncodeConfig, LineEnding, Pem};
use zeroize::{Zeroize, Zeroizing};

use super::{Error, KeyMaterial, check};

const FORMAT: &str = "PEM";
const KEY_TAG: &str = "PRIVATE KEY";
const CERT_TAG: &str = "CERTIFICATE";

fn config() -> EncodeConfig {
    EncodeConfig::new().set_line_ending(LineEnding::LF)
}

fn mismatch(detail: impl Into<String>) -> Error {
    Error::Mismatch {
        format: FORMAT,
        detail: detail.into(),
    }
}

fn push_certs(out: &mut String, certs: &[Vec<u8>]) {
    for der in certs {
        out.push_str(&::pem::encode_config(
            &Pem::new(CERT_TAG, der.as_slice()),
            config(),
        ));
    }
}

pub(super) fn encode_keystore(material: &KeyMaterial<'_>) -> Zeroizing<Vec<u8>> {
    let key = Pem::new(KEY_TAG, material.key_pkcs8_der);
    let key_text = Zeroizing::new(::pem::encode_config(&key, config()));
    key.into_contents().zeroize();
    let mut out = Zeroizing::new(String::with_capacity(
        key_text.len()
            + material
                .chain_der
                .iter()
                .map(|c| c.len() * 2 + 64)
                .sum::<usize>(),
    ));
    out.push_str(&key_text);
    push_certs(&mut out, material.chain_der);
    // Moving the String's buffer into the Vec does not copy it.
    Zeroizing::new(std::mem::take(&mut *out).into_bytes())
}

pub(super) fn encode_truststore(roots_der: &[Vec<u8>]) -> Vec<u8> {
    let mut out = String::new();
    push_certs(&mut out, roots_der);
    out.into_bytes()
}

/// Parses all blocks. `parse_many` silently skips a block it cannot match, so every
/// `-----BEGIN ` line must have produced a block.
fn parse(bytes: &[u8]) -> Result<Vec<Pem>, Error> {
    let blocks = ::pem::parse_many(bytes).map_err(|source| Error::ParsePem { source })?;
    let text = std::str::from_utf8(bytes).map_err(|_| mismatch("the file is not UTF-8"))?;
    let begins = text.matches("-----BEGIN ").count();
    if begins != blocks.len() {
        return Err(mismatch(format!(
            "{begins} BEGIN lines but {} parsable blocks",
            blocks.len()
        )));
    }
    Ok(blocks)
}

fn wipe(blocks: Vec<Pem>) {
    for block in blocks {
        block.into_contents().zeroize();
    }
}

pub(super) fn verify_keystore(bytes: &[u8], expected_chain: &[Vec<u8>]) -> Result<(), Error> {
    let blocks = parse(bytes)?;
    let result = check_keystore_blocks(&blocks, expected_chain);
    wipe(blocks);
    result
}

fn check_keystore_blocks(blocks: &[Pem], expected_chain: &[Vec<u8>]) -> Result<(), Error> {
    let Some((key, certs)) = blocks.split_first() else {
        return Err(mismatch("the file has no PEM blocks"));
    };
    if key.tag() != KEY_TAG {
        return Err(mismatch(format!(
            "the first block is {:?}, not {KEY_TAG:?}",
            key.tag()
        )));
    }
    let keys = blocks.iter().filter(|b| b.tag().contains(KEY_TAG)).count();
    if keys != 1 {
        return Err(mismatch(format!(
            "expected 1 private key block, found {keys}"
        )));
    }
    if certs.len() != expected_chain.len() {
        return Err(mismatch(format!(
            "expected {} chain certificates, found {}",
            expected_chain.len(),
            certs.len()
        )));
    }
    for (i, (block, expected)) in certs.iter().zip(expected_chain).enumerate() {
        if block.tag() != CERT_TAG || block.contents() != expected.as_slice() {
            return Err(mismatch(format!("chain certificate {i} differs")));
        }
    }
    check::check_chain(expected_chain)?;
    check::key_matches_leaf(key.contents(), &expected_chain[0])
}

pub(super) fn verify_truststore(bytes: &[u8], expected_roots: &[Vec<u8>]) -> Result<(), Error> {
    let blocks = parse(bytes)?;
    let result = if blocks.len() != expected_roots.len() {
        Err(mismatch(format!(
            "expected {} certificates, found {} blocks",
            expected_roots.len(),
            blocks.len()
        )))
    } else {
        blocks
            .iter()
            .zip(expected_roots)
            .enumerate()
            .try_for_each(|(i, (block, expected))| {
                if block.tag() == CERT_TAG && block.contents() == expected.as_slice() {
                    Ok(())
                } else {
                    Err(mismatch(format!("certificate {i} differs")))
                }
            })
    };
    wipe(blocks);
    result
}
