//! [`BackendKey`]: an rcgen signing key whose private half stays in a [`KeyBackend`]. The
//! certificate profiles in `x509` sign through it without knowing where the key lives.

use std::cell::RefCell;

use rcgen::{PublicKeyData, SigningKey};

use super::{Error, KeyBackend, KeyRef};
use crate::x509::raw_public_key;

/// An rcgen signing key backed by a [`KeyBackend`] key. Use it inside
/// `KeyService::with_backend`, so signing runs on the key thread.
pub struct BackendKey<'a> {
    backend: RefCell<&'a mut dyn KeyBackend>,
    key: KeyRef,
    raw_public: Vec<u8>,
    failed: RefCell<Option<Error>>,
}

impl<'a> BackendKey<'a> {
    /// Wraps `key` held by `backend`.
    pub fn new(backend: &'a mut dyn KeyBackend, key: KeyRef) -> Result<Self, Error> {
        let spki = backend.public_key(&key)?;
        let raw_public = raw_public_key(&spki).ok_or_else(|| Error::Sign(key.label.clone()))?;
        Ok(Self {
            backend: RefCell::new(backend),
            key,
            raw_public,
            failed: RefCell::new(None),
        })
    }

    /// The backend error behind a failed signature, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.failed.borrow_mut().take()
    }
}

impl PublicKeyData for BackendKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key.algorithm.rcgen_alg()
    }
}

impl SigningKey for BackendKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.backend.borrow_mut().sign(&self.key, msg).map_err(|e| {
            *self.failed.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}
