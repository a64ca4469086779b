//! The PKCS#11 module and the session: the process-wide table of initialized modules, finding
//! the token, logging in (never again after a rejected PIN), and reopening a lost session
//! once per operation.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::error::{Fail, is_auth_failure, is_session_lost};
use super::{BACKEND, Pkcs11Backend, TokenFacts};
use crate::keys::Error;

impl Pkcs11Backend {
    /// Finds the token, opens a session and logs in. Any previous session is closed first:
    /// after a module reset the token may hand out the same session handle again.
    pub(super) fn connect(&mut self) -> Result<(), Error> {
        self.session = None;
        if self.auth_failed {
            return Err(Error::Auth {
                backend: BACKEND,
                source: "the token rejected the PIN earlier; fix the PIN and restart leafd".into(),
            });
        }
        let (slot, token) = self.find_token()?;
        let session = self
            .module
            .ctx
            .open_rw_session(slot)
            .map_err(|e| self.map_error("C_OpenSession", e))?;
        let pin = AuthPin::new(self.pin.expose().into());
        match session.login(UserType::User, Some(&pin)) {
            // Login state is shared by every session of the process: another backend on the
            // same token may already have logged in.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e @ CkError::Pkcs11(rv, _)) if is_auth_failure(rv) => {
                self.auth_failed = true;
                return Err(Error::Auth {
                    backend: BACKEND,
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(self.map_error("C_Login", e)),
        }
        self.token = token;
        self.session = Some(session);
        Ok(())
    }

    fn find_token(&self) -> Result<(Slot, TokenFacts), Error> {
        let ctx = &self.module.ctx;
        let slots = match ctx.get_slots_with_token() {
            // Something finalized the module under us (a reset, or another library of this
            // process): initialize it again.
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                self.module
                    .reinitialize()
                    .map_err(|e| self.map_error("C_Initialize", e))?;
                ctx.get_slots_with_token()
            }
            other => other,
        }
        .map_err(|e| self.map_error("C_GetSlotList", e))?;
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            // A token can disappear between the two calls; skip it.
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if self.selector.matches(&info) {
                found.push((slot, info));
            } else {
                seen.push(format!(
                    "{:?} (serial {:?})",
                    info.label(),
                    info.serial_number()
                ));
            }
        }
        match found.len() {
            1 => {}
            0 => {
                let present = if seen.is_empty() {
                    "no tokens present".to_owned()
                } else {
                    format!("tokens present: {}", seen.join(", "))
                };
                return Err(self.unavailable(format!(
                    "no {} in PKCS#11 module {}; {present}",
                    self.selector,
                    self.module_path.display()
                )));
            }
            n => {
                return Err(self.unavailable(format!(
                    "{n} tokens match; select the token by serial number instead"
                )));
            }
        }
        let (slot, info) = found.remove(0);
        Ok((
            slot,
            TokenFacts {
                slot: slot.id(),
                label: info.label().to_owned(),
                manufacturer: info.manufacturer_id().to_owned(),
                model: info.model().to_owned(),
                serial: info.serial_number().to_owned(),
            },
        ))
    }

    /// Recovers from a lost session: finds the token again (its slot may have changed after
    /// a reset), initializing the module again if needed, and logs in again.
    fn reconnect(&mut self, cause: &CkError) -> Result<(), Error> {
        tracing::warn!(
            backend = BACKEND,
            "PKCS#11 session lost ({cause}); reopening it"
        );
        self.connect()
    }

    /// Runs `f` in the session; on a lost session reconnects and runs it once more.
    pub(super) fn run<R>(
        &mut self,
        operation: &'static str,
        mut f: impl FnMut(&Session) -> Result<R, Fail>,
    ) -> Result<R, Error> {
        let mut retried = false;
        if self.session.is_none() {
            // An earlier reconnect failed (token absent, say): try once more now.
            self.connect()?;
            retried = true;
        }
        loop {
            let result = match &self.session {
                Some(session) => f(session),
                None => Err(Fail::Ck(CkError::Pkcs11(
                    RvError::SessionHandleInvalid,
                    Function::OpenSession,
                ))),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(Fail::Key(e)) => return Err(e),
                Err(Fail::Ck(e)) if !retried && is_session_lost(&e) => {
                    retried = true;
                    self.reconnect(&e)?;
                }
                Err(Fail::Ck(e)) => return Err(self.map_error(operation, e)),
            }
        }
    }
}

/// `CKR_USER_NOT_LOGGED_IN` unless the session is logged in as the user. Private objects are
/// invisible to a logged-out session, so "not found" must be checked against this.
pub(super) fn require_login(session: &Session) -> Result<(), Fail> {
    match session.get_session_info()?.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(Fail::Ck(CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjects,
        ))),
    }
}

// DEVNOTE: the one process-wide value in leafd, on purpose: it mirrors the PKCS#11 library's
// own per-process state (C_Initialize once per process and module), which no handle can own.
/// Modules initialized by this process, with how many backends use each. PKCS#11 allows one
/// `C_Initialize` per process and module, so backends share it and the last one finalizes.
static MODULES: Mutex<Vec<LoadedModule>> = Mutex::new(Vec::new());

struct LoadedModule {
    /// Canonical path: one library loaded under two names is still one module.
    key: PathBuf,
    ctx: Pkcs11,
    users: usize,
    /// Whether leafd initialized it (and so finalizes it).
    owned: bool,
}

/// One backend's use of an initialized module.
pub(super) struct ModuleLease {
    key: PathBuf,
    ctx: Pkcs11,
}

fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

impl ModuleLease {
    pub(super) fn acquire(path: &Path) -> Result<Self, Error> {
        let unavailable = |source: CkError| Error::Unavailable {
            backend: BACKEND,
            what: format!("PKCS#11 module {}", path.display()),
            source: Box::new(source),
        };
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = modules.iter_mut().find(|m| m.key == key) {
            m.users += 1;
            return Ok(Self {
                key,
                ctx: m.ctx.clone(),
            });
        }
        let ctx = Pkcs11::new(path).map_err(unavailable)?;
        let owned = match ctx.initialize(init_args()) {
            Ok(()) => true,
            // Someone else in this process (another library) initialized it: share it, and
            // leave finalizing to them.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => return Err(unavailable(e)),
        };
        modules.push(LoadedModule {
            key: key.clone(),
            ctx: ctx.clone(),
            users: 1,
            owned,
        });
        Ok(Self { key, ctx })
    }

    /// Initializes the module again after something finalized it under us.
    fn reinitialize(&self) -> Result<(), CkError> {
        let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
        match self.ctx.initialize(init_args()) {
            Ok(()) => {
                if let Some(m) = modules.iter_mut().find(|m| m.key == self.key) {
                    m.owned = true;
                }
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for ModuleLease {
    fn drop(&mut self) {
        let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(i) = modules.iter().position(|m| m.key == self.key) else {
            return;
        };
        modules[i].users -= 1;
        if modules[i].users == 0 {
            let m = modules.swap_remove(i);
            if m.owned {
                if let Err(e) = m.ctx.finalize() {
                    tracing::debug!(backend = BACKEND, "C_Finalize failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::pkcs11::{Pkcs11Config, TokenSelector};
    use crate::secret::Secret;

    #[test]
    fn missing_module_is_unavailable_and_names_the_path() {
        let config = Pkcs11Config {
            module: "/nonexistent/leafd-test-module.so".into(),
            token: TokenSelector::Label("t".into()),
            pin: Secret::new("123456".into()),
        };
        let err = Pkcs11Backend::open(&config).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("/nonexistent/leafd-test-module.so"),
            "{err}"
        );
        assert!(err.is_retryable());
    }
}
