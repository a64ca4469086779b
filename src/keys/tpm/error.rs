//! TSS error classification: response codes decoded by layer, and the mapping of failed
//! TPM commands onto [`Error`].

use std::fmt;
use std::path::Path;

use tss_esapi::constants::{Tss2ResponseCode, Tss2ResponseCodeKind};

use super::{BACKEND, LOAD};
use crate::keys::Error;

/// A TSS error with its raw response code decoded by layer, because tss-esapi describes
/// TCTI and ESAPI codes as if they came from the TPM.
#[derive(Debug)]
pub(super) struct TssError {
    rc: Option<u32>,
    inner: Option<tss_esapi::Error>,
    text: Option<String>,
}

const LAYER_TPM: u32 = 0;
const LAYER_ESAPI: u32 = 7;
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR_TPM: u32 = 11;
const LAYER_RESMGR: u32 = 12;

impl TssError {
    pub(super) fn other(text: String) -> Self {
        Self {
            rc: None,
            inner: None,
            text: Some(text),
        }
    }

    fn layer(&self) -> Option<u32> {
        self.rc.map(|rc| (rc >> 16) & 0xff)
    }

    /// The TPM's response code kind, for codes that come from the TPM.
    pub(super) fn kind(&self) -> Option<Tss2ResponseCodeKind> {
        match self.layer() {
            Some(LAYER_TPM | LAYER_RESMGR_TPM) => Tss2ResponseCode::from(self.rc? & 0xffff).kind(),
            _ => None,
        }
    }

    /// The TSS base error number (`TSS2_BASE_RC_*`) of a TCTI, ESAPI or resource manager code.
    fn base(&self) -> Option<u32> {
        match self.layer() {
            Some(LAYER_ESAPI | LAYER_TCTI | LAYER_RESMGR) => self.rc.map(|rc| rc & 0xffff),
            _ => None,
        }
    }

    /// The connection to the TPM broke (I/O error, no connection): reconnecting may help.
    pub(super) fn connection_lost(&self) -> bool {
        // TSS2_BASE_RC_NO_CONNECTION, TSS2_BASE_RC_IO_ERROR.
        matches!(self.base(), Some(8 | 10))
    }

    fn retryable(&self) -> bool {
        use Tss2ResponseCodeKind as K;
        // TSS2_BASE_RC_NO_CONNECTION, TRY_AGAIN, IO_ERROR.
        matches!(self.base(), Some(8..=10))
            || matches!(
                self.kind(),
                Some(
                    K::ContextGap
                        | K::ObjectMemory
                        | K::SessionMemory
                        | K::Memory
                        | K::SessionHandles
                        | K::ObjectHandles
                        | K::Yielded
                        | K::Canceled
                        | K::Testing
                        | K::NvRate
                        | K::NvUnavailable
                        | K::Retry
                )
            )
    }

    fn auth_failure(&self) -> bool {
        use Tss2ResponseCodeKind as K;
        // TSS2_ESYS_RC_RSP_AUTH_FAILED: the response HMAC did not verify.
        matches!(
            self.kind(),
            Some(K::AuthFail | K::BadAuth | K::Lockout | K::AuthUnavailable)
        ) || (self.layer() == Some(LAYER_ESAPI) && self.base() == Some(27))
    }

    /// A TPM-side error other than a warning or an auth failure: during `TPM2_Load` this
    /// means the TPM rejected the key file.
    fn rejected_by_tpm(&self) -> bool {
        matches!(self.layer(), Some(LAYER_TPM | LAYER_RESMGR_TPM))
            && !self.retryable()
            && !self.auth_failure()
    }
}

/// The raw code of a response code, read back from its `Display` because tss-esapi 7.7 keeps
/// the number private.
fn rc_code(rc: Tss2ResponseCode) -> Option<u32> {
    let inner = std::error::Error::source(&rc)?;
    let text = inner.to_string();
    let hex = text.strip_prefix("Response code value: 0x")?;
    u32::from_str_radix(hex, 16).ok()
}

impl From<tss_esapi::Error> for TssError {
    fn from(e: tss_esapi::Error) -> Self {
        let rc = match e {
            tss_esapi::Error::Tss2Error(rc) => rc_code(rc),
            tss_esapi::Error::WrapperError(_) => None,
        };
        Self {
            rc,
            inner: Some(e),
            text: None,
        }
    }
}

impl fmt::Display for TssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = &self.text {
            return f.write_str(text);
        }
        let Some(rc) = self.rc else {
            return match &self.inner {
                Some(e) => write!(f, "tss-esapi: {e}"),
                None => f.write_str("unknown TSS error"),
            };
        };
        let base = rc & 0xffff;
        let layer = match self.layer() {
            Some(LAYER_TPM) => None,
            Some(LAYER_ESAPI) => Some("ESAPI"),
            Some(LAYER_TCTI) => Some("TCTI"),
            Some(LAYER_RESMGR_TPM) => None,
            Some(LAYER_RESMGR) => Some("resource manager"),
            Some(8) => Some("marshalling"),
            Some(6) => Some("SAPI"),
            _ => Some("TSS"),
        };
        match layer {
            None => match &self.inner {
                Some(e) => write!(f, "TPM: {e} (TPM_RC {rc:#x})"),
                None => write!(f, "TPM_RC {rc:#x}"),
            },
            Some(layer) => {
                let what = match base {
                    1 => "general failure",
                    2 => "not implemented",
                    3 => "bad context",
                    5 => "bad reference",
                    6 => "insufficient buffer",
                    7 => "bad sequence",
                    8 => "no connection",
                    9 => "try again",
                    10 => "I/O error",
                    11 => "bad value",
                    12 => "not permitted",
                    16 => "bad size",
                    17 => "malformed response",
                    21 => "not supported",
                    23 => "out of memory",
                    27 => "response authorization failed",
                    _ => "error",
                };
                write!(f, "{layer}: {what} ({rc:#x})")
            }
        }
    }
}

impl std::error::Error for TssError {}

/// A message with an optional cause.
#[derive(Debug)]
pub(super) struct Detail {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Detail {
    pub(super) fn new(message: String) -> Self {
        Self {
            message,
            source: None,
        }
    }

    pub(super) fn with_source(
        message: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message,
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Detail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// One failed TPM command.
#[derive(Debug)]
pub(super) struct Step {
    pub(super) operation: &'static str,
    pub(super) error: TssError,
}

impl Step {
    pub(super) fn new(operation: &'static str, e: tss_esapi::Error) -> Self {
        Self {
            operation,
            error: TssError::from(e),
        }
    }
}

/// Why [`TpmBackend::run`](super::TpmBackend::run) failed.
pub(super) enum Failure {
    /// No connection: already an [`Error::Unavailable`].
    Connect(Error),
    /// A command failed.
    Step(Step),
}

impl Failure {
    /// Maps to the generic error variants: auth, device (retryable or not).
    pub(super) fn into_error(self) -> Error {
        let step = match self {
            Self::Connect(e) => return e,
            Self::Step(s) => s,
        };
        if step.error.auth_failure() {
            return Error::Auth {
                backend: BACKEND,
                source: Box::new(Detail::with_source(
                    format!("{} was refused", step.operation),
                    step.error,
                )),
            };
        }
        Error::Device {
            backend: BACKEND,
            operation: step.operation,
            retryable: step.error.retryable(),
            source: Box::new(step.error),
        }
    }

    /// Like [`Self::into_error`], but a key file the TPM refuses to load is a [`Error::Load`].
    pub(super) fn into_load_error(self, label: &str, path: &Path) -> Error {
        match self {
            Self::Step(step) if step.operation == LOAD && step.error.rejected_by_tpm() => load_err(
                label,
                path,
                Detail::with_source(
                    "the TPM rejected the key file: it is corrupt, was created on another \
                         TPM or under another parent, or the TPM was cleared since"
                        .into(),
                    step.error,
                ),
            ),
            other => other.into_error(),
        }
    }

    pub(super) fn into_generate_error(self, label: &str) -> Error {
        match self {
            Self::Step(step) if !step.error.retryable() && !step.error.auth_failure() => {
                Error::Generate {
                    label: label.to_owned(),
                    source: Box::new(Detail::with_source(
                        format!("could not {}", step.operation),
                        step.error,
                    )),
                }
            }
            other => other.into_error(),
        }
    }
}

pub(super) fn load_err(
    label: &str,
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::load(label, path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_are_classified_by_layer() {
        let tss = |rc: u32| TssError::from(tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc)));
        // TPM_RC_INTEGRITY on parameter 1: the TPM rejected a key file.
        let integrity = tss(0x19f);
        assert_eq!(integrity.rc, Some(0x19f));
        assert!(integrity.rejected_by_tpm() && !integrity.retryable());
        // TPM_RC_RETRY and TPM_RC_OBJECT_MEMORY are warnings: retry later.
        assert!(tss(0x922).retryable());
        assert!(tss(0x902).retryable());
        // TPM_RC_AUTH_FAIL on session 1, TPM_RC_LOCKOUT.
        assert!(tss(0x98e).auth_failure());
        assert!(tss(0x921).auth_failure());
        // TCTI I/O error: the connection broke, not a TPM "testing" warning.
        let io = tss(0xa000a);
        assert!(io.connection_lost() && io.retryable() && !io.rejected_by_tpm());
        assert_eq!(io.to_string(), "TCTI: I/O error (0xa000a)");
        // ESAPI bad reference is no TPM verdict.
        assert!(!tss(0x70005).rejected_by_tpm());
    }
}
