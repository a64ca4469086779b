//! Key backends: where the long-lived host key lives and signs.
//!
//! A backend is synchronous and may wrap blocking FFI with a context that is not `Send`
//! (TPM ESAPI, PKCS#11 sessions). It is therefore built *on* the key thread
//! ([`worker::KeyService`]) and only ever used there.

#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod signer;
pub mod soft;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod worker;

pub use crate::vocab::{KeyAlgorithm, KeyInfo};

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
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// Stores a new key file `path` (0600) for `label` ([`crate::atomic::create_new`]): a
/// label names one key for its whole life, so an existing file is never replaced.
pub fn write_new_key_file(
    path: &std::path::Path,
    label: &str,
    contents: &[u8],
) -> Result<(), Error> {
    crate::atomic::create_new(path, contents, 0o600).map_err(|e| Error::Store {
        label: label.to_owned(),
        source: e.into(),
    })
}

/// Creates the directory key files live in, if needed, and sets its mode to 0700.
pub fn create_key_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let store_err = |source: std::io::Error| Error::Store {
        label: String::new(),
        source: source.into(),
    };
    std::fs::create_dir_all(dir).map_err(store_err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(store_err)
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
