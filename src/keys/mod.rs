//! Key backends: where the long-lived host key lives and signs.
//!
//! A backend is synchronous and may wrap blocking FFI with a context that is not `Send`
//! (TPM ESAPI, PKCS#11 sessions). It is therefore built *on* the key thread
//! ([`worker::KeyService`]) and only ever used there.

#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod soft;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod worker;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    #[serde(rename = "p256")]
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    #[serde(rename = "p384")]
    EcdsaP384,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA 3072, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa3072")]
    Rsa3072,
}

impl KeyAlgorithm {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "p256",
            Self::EcdsaP384 => "p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "p256" => Some(Self::EcdsaP256),
            "p384" => Some(Self::EcdsaP384),
            "rsa2048" => Some(Self::Rsa2048),
            "rsa3072" => Some(Self::Rsa3072),
            _ => None,
        }
    }

    /// The rcgen signature algorithm a key of this type signs with.
    pub fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 | Self::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Stable label the key is found by after a restart (`[a-z0-9._-]+`).
    pub label: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
}

/// A handle to a key held by a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The label it was generated under.
    pub label: String,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
}

/// Facts about a key as read back from the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Backend name (`soft`, `tpm`, `pkcs11`).
    pub backend: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// Whether the backend refuses to export the private key.
    pub non_exportable: bool,
    /// Backend-specific facts (device, token, file).
    pub facts: Vec<(String, String)>,
}

/// Key backend errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The label is not a safe file or object name.
    #[error("invalid key label {0:?}")]
    InvalidLabel(String),
    /// No key with that label.
    #[error("no key with label {0:?}")]
    NotFound(String),
    /// The algorithm is not supported by this backend.
    #[error("algorithm {0} is not supported by this backend")]
    Unsupported(KeyAlgorithm),
    /// Key generation failed.
    #[error("could not generate key {label:?}")]
    Generate {
        /// Label.
        label: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored key could not be read or is corrupt.
    #[error("could not load key {label:?} from {path}")]
    Load {
        /// Label.
        label: String,
        /// Where it was read from.
        path: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Storing a key failed.
    #[error("could not store key {label:?}")]
    Store {
        /// Label.
        label: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Signing failed.
    #[error("could not sign with key {0:?}")]
    Sign(String),
    /// Destroying failed.
    #[error("could not destroy key {label:?}")]
    Destroy {
        /// Label.
        label: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key thread is gone.
    #[error("the key service has stopped")]
    ServiceStopped,
    /// The device or module cannot be reached: absent, busy, wrong path. Retried.
    #[error("{backend} unavailable: {what}")]
    Unavailable {
        /// `tpm` or `pkcs11`.
        backend: &'static str,
        /// What could not be reached, e.g. the TCTI or the module path.
        what: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Authentication failed (wrong PIN or auth value). Never retried automatically, so a
    /// token is not locked out by a retry loop.
    #[error("{backend} authentication failed; not retrying, to avoid locking the token")]
    Auth {
        /// `tpm` or `pkcs11`.
        backend: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A device operation failed.
    #[error("{backend}: {operation} failed")]
    Device {
        /// `tpm` or `pkcs11`.
        backend: &'static str,
        /// The operation, e.g. `create primary key` or `C_Sign`.
        operation: &'static str,
        /// Whether a later retry may succeed (busy, session lost).
        retryable: bool,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether retrying later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store { .. } | Self::Sign(_) | Self::Unavailable { .. } => true,
            Self::Device { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// A store of long-lived keys. Object-safe and synchronous; lives on the key thread.
pub trait KeyBackend {
    /// Backend name for status output.
    fn name(&self) -> &'static str;
    /// Generates a new key under `spec.label`, replacing none: fails if the label exists.
    fn generate(&mut self, spec: &KeySpec) -> Result<KeyRef, Error>;
    /// Finds an existing key by label.
    fn open(&mut self, label: &str) -> Result<Option<KeyRef>, Error>;
    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key(&mut self, key: &KeyRef) -> Result<Vec<u8>, Error>;
    /// Signs `msg` (the backend hashes it): DER ECDSA-Sig-Value for EC keys,
    /// PKCS#1 v1.5 for RSA keys.
    fn sign(&mut self, key: &KeyRef, msg: &[u8]) -> Result<Vec<u8>, Error>;
    /// Removes the key.
    fn destroy(&mut self, key: &KeyRef) -> Result<(), Error>;
    /// Facts about the key, read back from the backend.
    fn info(&mut self, key: &KeyRef) -> Result<KeyInfo, Error>;
}

impl Error {
    /// A `Load` error for the key `label` stored at `path`.
    pub fn load(
        label: &str,
        path: &std::path::Path,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Load {
            label: label.to_owned(),
            path: path.display().to_string(),
            source: e.into(),
        }
    }
}

/// Stores a new key file `path` (0600) for `label`: temp file, fsync, hard link, fsync the
/// directory. A hard link, unlike a rename, refuses to replace an existing file: a label
/// names one key for its whole life.
pub fn write_new_key_file(
    path: &std::path::Path,
    label: &str,
    contents: &[u8],
) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let store_err = |source| Error::Store {
        label: label.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(store_err)?;
    let written = f.write_all(contents).and_then(|()| f.sync_all());
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(store_err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(store_err)
}

/// Checks a label is a safe object or file name.
pub fn check_label(label: &str) -> Result<(), Error> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidLabel(label.to_owned()))
    }
}

/// Builds the configured backend. Call it on the key thread (see [`worker::KeyService`]):
/// hardware contexts are not `Send`.
pub fn open_backend(
    settings: &crate::config::KeySettings,
    state_directory: &std::path::Path,
) -> Result<Box<dyn KeyBackend>, Error> {
    use crate::config::BackendKind;
    match &settings.backend {
        BackendKind::Soft => Ok(Box::new(soft::SoftBackend::open(
            &state_directory.join("keys"),
        )?)),
        #[cfg(feature = "tpm")]
        BackendKind::Tpm(t) => Ok(Box::new(tpm::TpmBackend::open(&tpm::TpmConfig {
            tcti: t.tcti.clone(),
            key_dir: state_directory.join("tpm"),
            parent: t.parent,
        })?)),
        #[cfg(feature = "pkcs11")]
        BackendKind::Pkcs11(p) => Ok(Box::new(pkcs11::Pkcs11Backend::open(
            &pkcs11::Pkcs11Config {
                module: p.module.clone(),
                token: match &p.token {
                    crate::config::Pkcs11Token::Label(l) => pkcs11::TokenSelector::Label(l.clone()),
                    crate::config::Pkcs11Token::Serial(s) => {
                        pkcs11::TokenSelector::Serial(s.clone())
                    }
                },
                pin: p.pin.clone(),
            },
        )?)),
        // Config validation refuses backends this build lacks.
        #[allow(unreachable_patterns)]
        other => Err(Error::Unavailable {
            backend: other.name(),
            what: format!("support for the {} backend was not built in", other.name()),
            source: "missing cargo feature".into(),
        }),
    }
}
