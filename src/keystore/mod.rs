//! Keystores and truststores for Kafka: encoding (PKCS#12, JKS, PEM), read-back
//! verification, and atomic file replacement.
//!
//! The daemon's order of operations for one output is:
//!
//! 1. [`encode_keystore`] or [`encode_truststore`] turns the key and certificates into the
//!    file contents;
//! 2. [`verify_keystore`] or [`verify_truststore`] parses those bytes back with the same
//!    crates and checks they hold exactly what was meant, so a broker is never pointed at a
//!    keystore it rejects (validate first);
//! 3. [`write_output`] (or [`write_atomic`]) replaces the file: temporary file, `fsync`,
//!    `rename`, `fsync` of the directory. The new file's millisecond mtime is always newer
//!    than the old one's, because Kafka only reloads a store whose
//!    `Files.getLastModifiedTime(path).toMillis()` changed.
//!
//! Formats (see `shared/notes/kafka.md` §2):
//! - PKCS#12: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key and the certificate bags,
//!   HMAC-SHA256 MAC, one password for store and key. Truststore certificates carry Java's
//!   trusted-key-usage attribute, without which Java ignores them.
//! - JKS: Sun `KeyProtector` for the key, SHA-1 keyed store digest.
//! - PEM: unencrypted PKCS#8 key then the chain, leaf first; Kafka refuses a password for it.
//!
//! Store and key use the same password, so `ssl.key.password` can stay unset.

mod check;
mod jks;
mod pem;
mod pkcs12;
#[cfg(test)]
mod testutil;

use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::settings::{Output, StoreFormat};

pub use crate::atomic::{FileSpec, WriteOutcome, remove_stale_temps, write_atomic};
pub use pkcs12::PBKDF2_ITERATIONS;

/// A private key and its certificate chain, borrowed from the caller.
#[derive(Clone, Copy)]
pub struct KeyMaterial<'a> {
    /// The private key, unencrypted PKCS#8 DER (RSA, ECDSA P-256/P-384 or Ed25519).
    pub key_pkcs8_der: &'a [u8],
    /// The chain in DER, leaf first, then intermediates, each issued by the next. The root
    /// belongs in the truststore; it is written here only if the caller puts it here.
    pub chain_der: &'a [Vec<u8>],
}

impl std::fmt::Debug for KeyMaterial<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("key_pkcs8_der", &"<redacted>")
            .field("chain_len", &self.chain_der.len())
            .finish()
    }
}

/// Keystore errors. Messages never contain a password or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PKCS#12 and JKS stores need a non-empty password.
    #[error("a {format} store requires a non-empty password")]
    MissingPassword {
        /// `PKCS12` or `JKS`.
        format: &'static str,
    },
    /// Java's PBES2 key derivation (`com.sun.crypto.provider.PBEKey`) refuses passwords
    /// with characters outside printable ASCII, so Java could not open such a PKCS#12 store.
    #[error(
        "a PKCS12 store password must consist of printable ASCII characters (Java cannot decrypt PBES2 with others)"
    )]
    NonAsciiPassword,
    /// Kafka raises `InvalidConfigurationException` for a PEM store with a password.
    #[error("a PEM store must not have a password (Kafka rejects a password for PEM stores)")]
    UnexpectedPassword,
    /// The alias cannot be stored.
    #[error("invalid alias {alias:?}: {reason}")]
    InvalidAlias {
        /// The alias as given.
        alias: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A keystore needs at least the leaf certificate.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// A truststore needs at least one certificate.
    #[error("the truststore has no certificates")]
    NoRoots,
    /// A certificate is not DER X.509.
    #[error("certificate {index} is not a valid DER X.509 certificate")]
    ParseCertificate {
        /// Position in the chain or root list.
        index: usize,
        /// The parser's error.
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    /// The chain is not ordered leaf first, each certificate issued by the next.
    #[error("certificate {index} of the chain is not issued by certificate {next}", next = index + 1)]
    ChainOrder {
        /// Position of the certificate whose issuer does not follow it.
        index: usize,
    },
    /// The leaf certificate's key type is not one leafd writes.
    #[error("unsupported public key algorithm {oid} in the leaf certificate")]
    UnsupportedKeyAlgorithm {
        /// The SubjectPublicKeyInfo algorithm OID (and curve, for EC keys).
        oid: String,
    },
    /// The private key could not be parsed as PKCS#8 of the leaf's key type.
    #[error("the private key is not a PKCS#8 key of the leaf certificate's type ({reason})")]
    InvalidKey {
        /// ring's reason, e.g. `InvalidEncoding` or `WrongAlgorithm`.
        reason: String,
    },
    /// The private key's public half differs from the leaf certificate's.
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    /// p12-keystore could not write the store.
    #[error("could not encode the PKCS12 store")]
    EncodePkcs12 {
        /// The encoder's error.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The jks crate could not write the store.
    #[error("could not encode the JKS store")]
    EncodeJks {
        /// The encoder's error.
        #[source]
        source: ::jks::KeyStoreError,
    },
    /// The PKCS#12 bytes could not be read back (corrupt, or wrong password).
    #[error("could not parse the PKCS12 store (corrupt data or wrong password)")]
    ParsePkcs12 {
        /// The parser's error.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The JKS bytes could not be read back (corrupt, or wrong password).
    #[error("could not parse the JKS store (corrupt data or wrong password)")]
    ParseJks {
        /// The parser's error.
        #[source]
        source: ::jks::KeyStoreError,
    },
    /// The PEM bytes could not be read back.
    #[error("could not parse the PEM store")]
    ParsePem {
        /// The parser's error.
        #[source]
        source: ::pem::PemError,
    },
    /// The store parsed, but does not hold exactly the expected entries.
    #[error("the {format} store does not hold the expected entries: {detail}")]
    Mismatch {
        /// `PKCS12`, `JKS` or `PEM`.
        format: &'static str,
        /// What differs (counts, positions; never key bytes).
        detail: String,
    },
    /// A missing output directory could not be created.
    #[error("could not create the output directory {path}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Replacing the file failed (see [`crate::atomic::Error`]).
    #[error(transparent)]
    File(#[from] crate::atomic::Error),
}

impl Error {
    /// Whether retrying the same operation later might succeed: transient I/O failures
    /// (disk full, interrupted, I/O error). Bad input, password problems, permission and
    /// path problems need a change by the operator or the caller.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::CreateDir { source, .. } => crate::atomic::io_retryable(source),
            Self::File(e) => e.is_retryable(),
            Self::MissingPassword { .. }
            | Self::NonAsciiPassword
            | Self::UnexpectedPassword
            | Self::InvalidAlias { .. }
            | Self::EmptyChain
            | Self::NoRoots
            | Self::ParseCertificate { .. }
            | Self::ChainOrder { .. }
            | Self::UnsupportedKeyAlgorithm { .. }
            | Self::InvalidKey { .. }
            | Self::KeyMismatch
            | Self::EncodePkcs12 { .. }
            | Self::EncodeJks { .. }
            | Self::ParsePkcs12 { .. }
            | Self::ParseJks { .. }
            | Self::ParsePem { .. }
            | Self::Mismatch { .. } => false,
        }
    }
}

/// The password a PKCS#12 or JKS store needs, or `None` for PEM (which refuses one).
fn password_for(format: StoreFormat, password: Option<&Secret>) -> Result<Option<&str>, Error> {
    match format {
        StoreFormat::Pem => match password {
            None => Ok(None),
            Some(_) => Err(Error::UnexpectedPassword),
        },
        StoreFormat::Pkcs12 | StoreFormat::Jks => match password.map(Secret::expose) {
            Some(p)
                if format == StoreFormat::Pkcs12
                    && !p.chars().all(|c| (' '..='~').contains(&c)) =>
            {
                Err(Error::NonAsciiPassword)
            }
            Some(p) if !p.is_empty() => Ok(Some(p)),
            _ => Err(Error::MissingPassword {
                format: format.type_name(),
            }),
        },
    }
}

/// Checks an alias for characters every format can store: non-empty, at most 255
/// characters, no control characters and nothing outside the Basic Multilingual Plane
/// (PKCS#12 friendly names are BMPStrings; JKS writes Java's modified UTF-8).
fn check_alias(alias: &str) -> Result<(), Error> {
    let reason = if alias.is_empty() {
        Some("it is empty")
    } else if alias.chars().count() > 255 {
        Some("it is longer than 255 characters")
    } else if alias.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if alias.chars().any(|c| u32::from(c) > 0xffff) {
        Some("it contains a character outside the Basic Multilingual Plane")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidAlias {
            alias: alias.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Encodes a keystore: one private-key entry named `alias` holding the key and its chain.
///
/// PKCS#12 and JKS need a password (used for the store and the key); PEM refuses one.
/// For JKS the alias is lower-cased, as Java does. The key and chain are checked first
/// (chain order, key matches the leaf). The result holds the key (in clear for PEM), so it
/// is wiped on drop.
pub fn encode_keystore(
    format: StoreFormat,
    material: &KeyMaterial<'_>,
    alias: &str,
    password: Option<&Secret>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let password = password_for(format, password)?;
    check_alias(alias)?;
    check::check_chain(material.chain_der)?;
    check::key_matches_leaf(material.key_pkcs8_der, &material.chain_der[0])?;
    match (format, password) {
        (StoreFormat::Pkcs12, Some(pw)) => pkcs12::encode_keystore(material, alias, pw),
        (StoreFormat::Jks, Some(pw)) => jks::encode_keystore(material, alias, pw),
        (StoreFormat::Pem, None) => Ok(pem::encode_keystore(material)),
        // password_for returns Some exactly for PKCS12 and JKS.
        (StoreFormat::Pem, Some(_)) => Err(Error::UnexpectedPassword),
        (StoreFormat::Pkcs12 | StoreFormat::Jks, None) => Err(Error::MissingPassword {
            format: format.type_name(),
        }),
    }
}

/// Encodes a truststore: one trusted-certificate entry per root, named
/// `<alias_prefix>-0`, `<alias_prefix>-1`, ... in order.
///
/// For PKCS#12 the certificate bags are encrypted, so Kafka must be given
/// `ssl.truststore.password`: without it Java loads an empty truststore.
pub fn encode_truststore(
    format: StoreFormat,
    roots_der: &[Vec<u8>],
    alias_prefix: &str,
    password: Option<&Secret>,
) -> Result<Vec<u8>, Error> {
    let password = password_for(format, password)?;
    check_alias(alias_prefix)?;
    check_alias(&format!("{alias_prefix}-{}", roots_der.len()))?;
    check::check_roots(roots_der)?;
    match (format, password) {
        (StoreFormat::Pkcs12, Some(pw)) => pkcs12::encode_truststore(roots_der, alias_prefix, pw),
        (StoreFormat::Jks, Some(pw)) => jks::encode_truststore(roots_der, alias_prefix, pw),
        (StoreFormat::Pem, None) => Ok(pem::encode_truststore(roots_der)),
        (StoreFormat::Pem, Some(_)) => Err(Error::UnexpectedPassword),
        (StoreFormat::Pkcs12 | StoreFormat::Jks, None) => Err(Error::MissingPassword {
            format: format.type_name(),
        }),
    }
}

/// Parses an encoded keystore back and checks that it holds exactly one private-key entry
/// whose chain is `expected_chain` (same certificates, same order) and whose key decrypts
/// with `password` and matches the leaf. The alias is not checked.
pub fn verify_keystore(
    format: StoreFormat,
    bytes: &[u8],
    password: Option<&Secret>,
    expected_chain: &[Vec<u8>],
) -> Result<(), Error> {
    let password = password_for(format, password)?;
    if expected_chain.is_empty() {
        return Err(Error::EmptyChain);
    }
    match (format, password) {
        (StoreFormat::Pkcs12, Some(pw)) => pkcs12::verify_keystore(bytes, pw, expected_chain),
        (StoreFormat::Jks, Some(pw)) => jks::verify_keystore(bytes, pw, expected_chain),
        (StoreFormat::Pem, None) => pem::verify_keystore(bytes, expected_chain),
        (StoreFormat::Pem, Some(_)) => Err(Error::UnexpectedPassword),
        (StoreFormat::Pkcs12 | StoreFormat::Jks, None) => Err(Error::MissingPassword {
            format: format.type_name(),
        }),
    }
}

/// Parses an encoded truststore back and checks that it holds exactly the
/// `expected_roots` as trusted certificates (for PKCS#12: with Java's trusted-key-usage
/// attribute) and nothing else.
pub fn verify_truststore(
    format: StoreFormat,
    bytes: &[u8],
    password: Option<&Secret>,
    expected_roots: &[Vec<u8>],
) -> Result<(), Error> {
    let password = password_for(format, password)?;
    if expected_roots.is_empty() {
        return Err(Error::NoRoots);
    }
    match (format, password) {
        (StoreFormat::Pkcs12, Some(pw)) => pkcs12::verify_truststore(bytes, pw, expected_roots),
        (StoreFormat::Jks, Some(pw)) => jks::verify_truststore(bytes, pw, expected_roots),
        (StoreFormat::Pem, None) => pem::verify_truststore(bytes, expected_roots),
        (StoreFormat::Pem, Some(_)) => Err(Error::UnexpectedPassword),
        (StoreFormat::Pkcs12 | StoreFormat::Jks, None) => Err(Error::MissingPassword {
            format: format.type_name(),
        }),
    }
}

impl From<&Output> for FileSpec {
    fn from(output: &Output) -> Self {
        Self {
            mode: output.mode,
            owner: output.owner,
            group: output.group,
        }
    }
}

/// Atomically replaces `output.path` with `bytes`, with the output's mode, owner and group.
/// Verify the bytes first ([`verify_keystore`], [`verify_truststore`]).
/// A missing parent directory is created with mode 0755: the files inside carry their own
/// modes, and the broker's user must be able to reach them.
pub fn write_output(output: &Output, bytes: &[u8]) -> Result<WriteOutcome, Error> {
    if let Some(dir) = output
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| Error::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
    }
    Ok(write_atomic(&output.path, bytes, &FileSpec::from(output))?)
}

#[cfg(test)]
mod tests {
    use super::testutil::{Pki, keytool, openssl, pki};
    use super::*;

    const PASSWORD: &str = "s3cret-Pa55word";

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    fn material(p: &Pki) -> KeyMaterial<'_> {
        KeyMaterial {
            key_pkcs8_der: &p.leaf_key_pkcs8,
            chain_der: &p.chain,
        }
    }

    fn encode_both(format: StoreFormat, p: &Pki, pw: Option<&Secret>) -> (Vec<u8>, Vec<u8>) {
        let ks = encode_keystore(format, &material(p), "kafka", pw).unwrap();
        verify_keystore(format, &ks, pw, &p.chain).unwrap();
        let ts = encode_truststore(format, &p.roots, "leafd-ca", pw).unwrap();
        verify_truststore(format, &ts, pw, &p.roots).unwrap();
        (ks.to_vec(), ts)
    }

    #[test]
    fn round_trip_every_format() {
        let p = pki();
        let pw = secret(PASSWORD);
        encode_both(StoreFormat::Pkcs12, &p, Some(&pw));
        encode_both(StoreFormat::Jks, &p, Some(&pw));
        encode_both(StoreFormat::Pem, &p, None);
    }

    #[test]
    fn round_trip_p384_and_chain_of_one() {
        let p = testutil::pki_with(&rcgen::PKCS_ECDSA_P384_SHA384);
        let pw = secret(PASSWORD);
        let leaf_only = vec![p.chain[0].clone()];
        for (format, pw) in [
            (StoreFormat::Pkcs12, Some(&pw)),
            (StoreFormat::Jks, Some(&pw)),
            (StoreFormat::Pem, None),
        ] {
            encode_both(format, &p, pw);
            let m = KeyMaterial {
                key_pkcs8_der: &p.leaf_key_pkcs8,
                chain_der: &leaf_only,
            };
            let ks = encode_keystore(format, &m, "kafka", pw).unwrap();
            verify_keystore(format, &ks, pw, &leaf_only).unwrap();
            // The same bytes do not verify against a different chain.
            assert!(matches!(
                verify_keystore(format, &ks, pw, &p.chain),
                Err(Error::Mismatch { .. })
            ));
        }
    }

    #[test]
    fn verify_rejects_wrong_password_and_wrong_roots() {
        let p = pki();
        let pw = secret(PASSWORD);
        let wrong = secret("not-the-password");
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            let (ks, ts) = encode_both(format, &p, Some(&pw));
            let e = verify_keystore(format, &ks, Some(&wrong), &p.chain).unwrap_err();
            assert!(
                matches!(e, Error::ParsePkcs12 { .. } | Error::ParseJks { .. }),
                "{e:?}"
            );
            assert!(
                verify_truststore(format, &ts, Some(&wrong), &p.roots).is_err(),
                "{format:?}"
            );
            let other = pki();
            assert!(matches!(
                verify_truststore(format, &ts, Some(&pw), &other.roots),
                Err(Error::Mismatch { .. })
            ));
            // A keystore is not a truststore and the other way round.
            assert!(verify_truststore(format, &ks, Some(&pw), &p.roots).is_err());
            assert!(verify_keystore(format, &ts, Some(&pw), &p.chain).is_err());
        }
    }

    #[test]
    fn truststore_aliases_are_numbered() {
        let p = pki();
        let q = pki();
        let roots = vec![p.roots[0].clone(), q.roots[0].clone()];
        let pw = secret(PASSWORD);
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            let ts = encode_truststore(format, &roots, "leafd-ca", Some(&pw)).unwrap();
            verify_truststore(format, &ts, Some(&pw), &roots).unwrap();
            let out = keytool(&format, &ts, PASSWORD, &[]);
            assert!(out.contains("leafd-ca-0"), "{out}");
            assert!(out.contains("leafd-ca-1"), "{out}");
            assert_eq!(out.matches("trustedCertEntry").count(), 2, "{out}");
        }
        let ts = encode_truststore(StoreFormat::Pem, &roots, "leafd-ca", None).unwrap();
        verify_truststore(StoreFormat::Pem, &ts, None, &roots).unwrap();
        // Only one of the two roots: mismatch.
        assert!(verify_truststore(StoreFormat::Pem, &ts, None, &roots[..1]).is_err());
    }

    #[test]
    fn keytool_reads_keystores_and_truststores() {
        let p = pki();
        let pw = secret(PASSWORD);
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            let (ks, ts) = encode_both(format, &p, Some(&pw));
            let out = keytool(&format, &ks, PASSWORD, &["-v"]);
            assert!(out.contains("Entry type: PrivateKeyEntry"), "{out}");
            assert!(out.contains("Certificate chain length: 2"), "{out}");
            assert!(out.contains("Your keystore contains 1 entry"), "{out}");
            assert!(out.contains("Alias name: kafka"), "{out}");
            let out = keytool(&format, &ts, PASSWORD, &[]);
            assert!(out.contains("trustedCertEntry"), "{out}");
            assert!(out.contains("Your keystore contains 1 entry"), "{out}");
            // Java can also recover the private key with the store password (what Kafka's
            // KeyManagerFactory does): convert the keystore with keytool.
            testutil::keytool_import(&format, &ks, PASSWORD);
        }
    }

    #[test]
    fn jks_non_ascii_password_is_read_by_keytool() {
        // JKS hashes the password as UTF-16BE (Java chars). '€' is outside Latin-1, so the
        // jks crate's byte-wise encoding would give a store Java rejects.
        let password = "pässwörd-€uro";
        let p = pki();
        let pw = secret(password);
        let (ks, ts) = encode_both(StoreFormat::Jks, &p, Some(&pw));
        let out = keytool(&StoreFormat::Jks, &ks, password, &["-v"]);
        assert!(out.contains("Certificate chain length: 2"), "{out}");
        let out = keytool(&StoreFormat::Jks, &ts, password, &[]);
        assert!(out.contains("trustedCertEntry"), "{out}");
        testutil::keytool_import(&StoreFormat::Jks, &ks, password);
    }

    #[test]
    fn pkcs12_password_must_be_printable_ascii() {
        let p = pki();
        for bad in ["pässwörd", "tab\there", "del\u{7f}"] {
            let pw = secret(bad);
            let e = encode_keystore(StoreFormat::Pkcs12, &material(&p), "kafka", Some(&pw))
                .unwrap_err();
            assert!(matches!(e, Error::NonAsciiPassword), "{e:?}");
            assert!(!e.to_string().contains(bad));
            let e = encode_truststore(StoreFormat::Pkcs12, &p.roots, "ca", Some(&pw)).unwrap_err();
            assert!(matches!(e, Error::NonAsciiPassword), "{e:?}");
        }
        // Every printable ASCII character is fine, for Java too.
        let all: String = (' '..='~').collect();
        let pw = secret(&all);
        let (ks, _) = encode_both(StoreFormat::Pkcs12, &p, Some(&pw));
        let out = keytool(&StoreFormat::Pkcs12, &ks, &all, &["-v"]);
        assert!(out.contains("Certificate chain length: 2"), "{out}");
    }

    /// Why the rule above exists: Java refuses a PBES2 PKCS#12 with a non-ASCII password
    /// ("getSecretKey failed: Password is not ASCII"), even though the file is valid.
    #[test]
    fn java_cannot_read_pkcs12_with_non_ascii_password() {
        let password = "pässwörd";
        let p = pki();
        let ks = pkcs12::encode_keystore(&material(&p), "kafka", password).unwrap();
        pkcs12::verify_keystore(&ks, password, &p.chain).unwrap();
        let out = testutil::keytool_raw(&StoreFormat::Pkcs12, &ks, password, &["-v"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("Password is not ASCII"), "{text}");
    }

    #[test]
    fn keytool_rejects_wrong_password() {
        let p = pki();
        let pw = secret(PASSWORD);
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            let (ks, _) = encode_both(format, &p, Some(&pw));
            let out = testutil::keytool_raw(&format, &ks, "wrong-password", &[]);
            assert!(!out.status.success(), "{format:?}");
        }
    }

    #[test]
    fn openssl_reads_pkcs12_with_pbes2_aes256_and_sha256_mac() {
        let p = pki();
        let pw = secret(PASSWORD);
        let (ks, ts) = encode_both(StoreFormat::Pkcs12, &p, Some(&pw));
        let iter = format!("Iteration {PBKDF2_ITERATIONS}");
        for (bytes, bag) in [(&ks, "Shrouded Keybag: PBES2"), (&ts, "Certificate bag")] {
            let info = openssl(bytes, PASSWORD);
            assert!(info.contains(&format!("MAC: sha256, {iter}")), "{info}");
            assert!(
                info.contains(&format!(
                    "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, {iter}, PRF hmacWithSHA256"
                )),
                "{info}"
            );
            assert!(info.contains(bag), "{info}");
        }
        let info = openssl(&ks, PASSWORD);
        assert!(
            info.contains(&format!(
                "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, {iter}, PRF hmacWithSHA256"
            )),
            "{info}"
        );
        assert!(info.contains("BEGIN PRIVATE KEY"), "{info}");
        assert_eq!(info.matches("BEGIN CERTIFICATE").count(), 2, "{info}");
    }

    #[test]
    fn pem_keystore_layout() {
        let p = pki();
        let ks = encode_keystore(StoreFormat::Pem, &material(&p), "kafka", None).unwrap();
        let text = std::str::from_utf8(&ks).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        assert_eq!(text.matches("PRIVATE KEY-----").count(), 2); // BEGIN and END
        assert_eq!(text.matches("-----BEGIN ").count(), 3);
        assert!(!text.contains('\r'));
        assert!(!text.contains("\n\n"));
        let blocks = ::pem::parse_many(text).unwrap();
        assert_eq!(blocks[0].tag(), "PRIVATE KEY");
        assert_eq!(blocks[0].contents(), &p.leaf_key_pkcs8[..]);
        assert_eq!(blocks[1].tag(), "CERTIFICATE");
        assert_eq!(blocks[1].contents(), &p.chain[0][..], "leaf first");
        assert_eq!(blocks[2].contents(), &p.chain[1][..]);
        let ts = encode_truststore(StoreFormat::Pem, &p.roots, "x", None).unwrap();
        let t = std::str::from_utf8(&ts).unwrap();
        assert_eq!(t.matches("-----BEGIN CERTIFICATE-----").count(), 1);
        assert!(!t.contains("PRIVATE"));
    }

    #[test]
    fn password_rules() {
        let p = pki();
        let m = material(&p);
        let pw = secret(PASSWORD);
        let empty = secret("");
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            for bad in [None, Some(&empty)] {
                let e = encode_keystore(format, &m, "kafka", bad).unwrap_err();
                assert!(matches!(e, Error::MissingPassword { .. }), "{e:?}");
                assert!(!e.is_retryable());
                let e = encode_truststore(format, &p.roots, "ca", bad).unwrap_err();
                assert!(matches!(e, Error::MissingPassword { .. }), "{e:?}");
                assert!(verify_keystore(format, b"x", bad, &p.chain).is_err());
            }
        }
        let e = encode_keystore(StoreFormat::Pem, &m, "kafka", Some(&pw)).unwrap_err();
        assert!(matches!(e, Error::UnexpectedPassword), "{e:?}");
        let e = encode_truststore(StoreFormat::Pem, &p.roots, "ca", Some(&pw)).unwrap_err();
        assert!(matches!(e, Error::UnexpectedPassword), "{e:?}");
    }

    /// Every error a bad call can produce, with the password in play: none of the messages
    /// (including the source chain) contains it.
    #[test]
    fn errors_never_contain_the_password() {
        let p = pki();
        let q = pki();
        let pw = secret(PASSWORD);
        let m = material(&p);
        let mut errors = Vec::new();
        let wrong_key = KeyMaterial {
            key_pkcs8_der: &q.leaf_key_pkcs8,
            chain_der: &p.chain,
        };
        let reversed: Vec<Vec<u8>> = p.chain.iter().rev().cloned().collect();
        let bad_order = KeyMaterial {
            key_pkcs8_der: &p.leaf_key_pkcs8,
            chain_der: &reversed,
        };
        let garbage = vec![b"not a certificate".to_vec()];
        for format in [StoreFormat::Pkcs12, StoreFormat::Jks] {
            let (ks, ts) = encode_both(format, &p, Some(&pw));
            errors.push(encode_keystore(format, &wrong_key, "kafka", Some(&pw)).unwrap_err());
            errors.push(encode_keystore(format, &bad_order, "kafka", Some(&pw)).unwrap_err());
            errors.push(encode_keystore(format, &m, "", Some(&pw)).unwrap_err());
            errors.push(encode_truststore(format, &garbage, "ca", Some(&pw)).unwrap_err());
            errors.push(encode_truststore(format, &[], "ca", Some(&pw)).unwrap_err());
            errors
                .push(verify_keystore(format, &ks, Some(&secret("other")), &p.chain).unwrap_err());
            errors.push(verify_keystore(format, &ks, Some(&pw), &q.chain).unwrap_err());
            errors.push(
                verify_keystore(format, &ks[..ks.len() / 2], Some(&pw), &p.chain).unwrap_err(),
            );
            errors.push(verify_truststore(format, &ts, Some(&pw), &q.roots).unwrap_err());
            errors.push(verify_truststore(format, b"junk", Some(&pw), &p.roots).unwrap_err());
        }
        errors.push(encode_keystore(StoreFormat::Pem, &m, "kafka", Some(&pw)).unwrap_err());
        errors.push(verify_keystore(StoreFormat::Pem, b"junk", None, &p.chain).unwrap_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("regular-file");
        std::fs::write(&file, b"x").unwrap();
        let spec = FileSpec {
            mode: 0o600,
            owner: None,
            group: None,
        };
        errors.push(Error::File(
            write_atomic(&file.join("keystore.p12"), b"x", &spec).unwrap_err(),
        ));
        for e in &errors {
            let mut text = format!("{e} / {e:?}");
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(" / {s} / {s:?}"));
                source = s.source();
            }
            assert!(!text.contains(PASSWORD), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            let first = e.to_string();
            assert!(!first.ends_with('.'), "{first}");
            assert!(
                first.chars().next().is_some_and(|c| !c.is_uppercase()),
                "{first}"
            );
        }
    }

    #[test]
    fn write_output_uses_output_settings() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let output = Output {
            format: StoreFormat::Pem,
            path: dir.path().join("ts.pem"),
            password: None,
            password_source: None,
            alias: "leafd-ca".into(),
            owner: None,
            group: None,
            mode: 0o640,
        };
        let p = pki();
        let ts = encode_truststore(output.format, &p.roots, &output.alias, None).unwrap();
        write_output(&output, &ts).unwrap();
        let meta = std::fs::metadata(&output.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&output.path).unwrap(), ts);
    }

    #[test]
    fn retryable_split() {
        let e = Error::File(crate::atomic::Error::Write {
            path: "/x".into(),
            temp: "/.x.tmp".into(),
            source: std::io::Error::from_raw_os_error(28), // ENOSPC
        });
        assert!(e.is_retryable());
        let e = Error::File(crate::atomic::Error::CreateTemp {
            dir: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert!(!e.is_retryable());
        assert!(!Error::KeyMismatch.is_retryable());
    }

    /// Release-mode timing of the PKCS#12 encode and verify, printed for the iteration
    /// count comment in `pkcs12.rs` (`cargo test --release --lib keystore::tests::timing
    /// -- --nocapture`). Asserts only a generous bound, so it never flakes.
    #[test]
    fn timing() {
        use std::time::SystemTime;
        let p = pki();
        let pw = secret(PASSWORD);
        let m = material(&p);
        let mut samples = Vec::new();
        for _ in 0..21 {
            let t0 = SystemTime::now();
            let ks = encode_keystore(StoreFormat::Pkcs12, &m, "kafka", Some(&pw)).unwrap();
            let ts = encode_truststore(StoreFormat::Pkcs12, &p.roots, "ca", Some(&pw)).unwrap();
            let t1 = SystemTime::now();
            verify_keystore(StoreFormat::Pkcs12, &ks, Some(&pw), &p.chain).unwrap();
            verify_truststore(StoreFormat::Pkcs12, &ts, Some(&pw), &p.roots).unwrap();
            let t2 = SystemTime::now();
            samples.push((
                t1.duration_since(t0).unwrap_or_default(),
                t2.duration_since(t1).unwrap_or_default(),
            ));
        }
        samples.sort();
        let (enc, _) = samples[samples.len() / 2];
        let mut mint: Vec<_> = (0..21)
            .map(|_| {
                let t0 = SystemTime::now();
                let _ = pki();
                SystemTime::now().duration_since(t0).unwrap_or_default()
            })
            .collect();
        mint.sort();
        let dir = tempfile::tempdir().unwrap();
        let mut write: Vec<_> = (0..21)
            .map(|_| {
                let spec = FileSpec {
                    mode: 0o600,
                    owner: None,
                    group: None,
                };
                let t0 = SystemTime::now();
                write_atomic(&dir.path().join("ks.p12"), &[1; 2500], &spec).unwrap();
                SystemTime::now().duration_since(t0).unwrap_or_default()
            })
            .collect();
        write.sort();
        let jks_pem = {
            let t0 = SystemTime::now();
            for _ in 0..21 {
                encode_keystore(StoreFormat::Jks, &m, "kafka", Some(&pw)).unwrap();
                encode_keystore(StoreFormat::Pem, &m, "kafka", None).unwrap();
            }
            SystemTime::now().duration_since(t0).unwrap_or_default() / 21
        };
        let mut ver: Vec<_> = samples.iter().map(|s| s.1).collect();
        ver.sort();
        let ver = ver[ver.len() / 2];
        println!(
            "PKCS12 at {PBKDF2_ITERATIONS} iterations: encode keystore+truststore median {enc:?}, verify both median {ver:?}; \
             test PKI (3 keys, 3 certs) median {:?}; JKS+PEM keystore encode mean {jks_pem:?}; \
             write_atomic median {:?}",
            mint[mint.len() / 2],
            write[write.len() / 2]
        );
        assert!(enc.as_secs() < 5);
    }
}
