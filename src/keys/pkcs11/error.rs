//! Cryptoki error classification: which return values mean a rejected PIN, a lost session or
//! an absent token, and their mapping onto [`Error`].

use cryptoki::error::{Error as CkError, RvError};

use super::{BACKEND, Pkcs11Backend};
use crate::keys::Error;

impl Pkcs11Backend {
    pub(super) fn unavailable(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            what: self.selector.to_string(),
            source: source.into(),
        }
    }

    /// Maps a cryptoki error of `operation` onto the backend error kinds.
    pub(super) fn map_error(&self, operation: &'static str, e: CkError) -> Error {
        match &e {
            CkError::Pkcs11(rv, _) if is_auth_failure(*rv) => Error::Auth {
                backend: BACKEND,
                source: Box::new(e),
            },
            CkError::Pkcs11(
                RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized,
                _,
            ) => self.unavailable(e),
            CkError::Pkcs11(rv, _) => Error::Device {
                backend: BACKEND,
                operation,
                retryable: is_session_lost(&e)
                    || matches!(
                        rv,
                        RvError::DeviceError
                            | RvError::DeviceMemory
                            | RvError::HostMemory
                            | RvError::SessionCount
                            | RvError::FunctionCanceled
                    ),
                source: Box::new(e),
            },
            _ => Error::Device {
                backend: BACKEND,
                operation,
                retryable: false,
                source: Box::new(e),
            },
        }
    }
}

/// Why a closure run in the session failed.
pub(super) enum Fail {
    /// A PKCS#11 call failed; session loss is recovered from.
    Ck(CkError),
    /// A leafd-level failure, returned as is.
    Key(Error),
}

impl From<CkError> for Fail {
    fn from(e: CkError) -> Self {
        Self::Ck(e)
    }
}

pub(super) fn is_auth_failure(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::UserPinNotInitialized
    )
}

/// Errors after which reopening the session (and logging in again) may help.
pub(super) fn is_session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::CryptokiNotInitialized,
            _,
        )
    )
}

pub(super) fn load_err(label: &str, why: &str) -> Error {
    Error::Load {
        label: label.to_owned(),
        path: "token".into(),
        source: why.to_owned().into(),
    }
}
