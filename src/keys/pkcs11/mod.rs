//! PKCS#11 key backend: the host key lives in an HSM or token (SoftHSM2 in tests), created
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, and signs through `CKM_ECDSA`.
//!
//! The backend loads the module with cryptoki, finds the token by label or serial number
//! (never by slot id, which may change between runs and after a device reset), opens one
//! read/write session and logs in as the normal user. A lost session is reopened, and the
//! operation retried, once per operation. A rejected PIN is never presented again: after
//! `CKR_PIN_INCORRECT` or `CKR_PIN_LOCKED` every operation fails with [`Error::Auth`]
//! without calling `C_Login`, so leafd cannot lock a token out by retrying.
//!
//! Like every backend, it is built on the key thread and never leaves it.
//!
//! The backend is here; `session` loads and shares the module, logs in and recovers lost
//! sessions, `error` maps cryptoki errors onto [`Error`], and `objects` holds the key
//! templates, object lookup and the EC curve, point and signature handling.

mod error;
mod objects;
mod session;

use std::fmt;
use std::path::PathBuf;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::TokenInfo;

use super::{Error, KeyBackend, KeyInfo, KeyRef, KeySpec, check_label};
use crate::der;
use crate::secret::Secret;
use error::{Fail, load_err};
use objects::{
    Curve, bool_attr, ec_point, ecdsa_der, find_key, find_private, find_public, key_algorithm,
    key_templates,
};
use session::{ModuleLease, require_login};

const BACKEND: &str = "pkcs11";

/// How to find the token in the module. Slot ids are not stable, so they are not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token label (`CK_TOKEN_INFO.label`, without the blank padding).
    Label(String),
    /// The token serial number (`CK_TOKEN_INFO.serialNumber`, without the blank padding).
    Serial(String),
}

impl TokenSelector {
    fn matches(&self, info: &TokenInfo) -> bool {
        match self {
            Self::Label(label) => info.label() == label,
            Self::Serial(serial) => info.serial_number() == serial,
        }
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "token with label {label:?}"),
            Self::Serial(serial) => write!(f, "token with serial {serial:?}"),
        }
    }
}

/// Where the host key's token is and how to log in to it.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Which token to use.
    pub token: TokenSelector,
    /// The user PIN. Never logged; presented to the token at most once after a failure.
    pub pin: Secret,
}

/// Host keys in a PKCS#11 token. Build it on the key thread; it is not `Send`.
pub struct Pkcs11Backend {
    // DEVNOTE: `session` must be dropped before `module`, whose last lease finalizes the
    // module; `Drop` below takes it out first, and the declaration order agrees.
    session: Option<Session>,
    module: ModuleLease,
    module_path: PathBuf,
    selector: TokenSelector,
    pin: Secret,
    token: TokenFacts,
    /// Set once the token rejected the PIN: from then on nothing calls `C_Login` again.
    auth_failed: bool,
}

/// Token identity as read at the last login, for `info`.
#[derive(Debug, Clone, Default)]
struct TokenFacts {
    slot: u64,
    label: String,
    manufacturer: String,
    model: String,
    serial: String,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module_path)
            .field("token", &self.selector)
            .field("pin", &self.pin)
            .field("session", &self.session.as_ref().map(Session::handle))
            .field("auth_failed", &self.auth_failed)
            .finish()
    }
}

impl Drop for Pkcs11Backend {
    fn drop(&mut self) {
        // Close (and so log out) the session while the module is still initialized.
        self.session = None;
    }
}

impl Pkcs11Backend {
    /// Loads the module (or shares it with another backend of this process), finds the token,
    /// opens a read/write session and logs in as the user.
    ///
    /// Errors: [`Error::Unavailable`] when the module cannot be loaded or initialized (naming
    /// its path) or the token is absent (naming the selector); [`Error::Auth`] when the token
    /// rejects the PIN. `C_Login` is called at most once.
    pub fn open(config: &Pkcs11Config) -> Result<Self, Error> {
        let module = ModuleLease::acquire(&config.module)?;
        let mut backend = Self {
            session: None,
            module,
            module_path: config.module.clone(),
            selector: config.token.clone(),
            pin: config.pin.clone(),
            token: TokenFacts::default(),
            auth_failed: false,
        };
        backend.connect()?;
        Ok(backend)
    }
}

fn show(v: Option<bool>) -> String {
    v.map_or_else(|| "unavailable".to_owned(), |v| v.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn generate(&mut self, spec: &KeySpec) -> Result<KeyRef, Error> {
        check_label(&spec.label)?;
        let curve =
            Curve::for_algorithm(spec.algorithm).ok_or(Error::Unsupported(spec.algorithm))?;
        let label = spec.label.as_bytes().to_vec();
        let (public, private) = key_templates(curve, &spec.label);
        self.run("C_GenerateKeyPair", |session| {
            // A label names one key for its whole life. Private objects are only visible when
            // logged in, so make sure of that before trusting an empty answer.
            require_login(session)?;
            let existing = session.find_objects(&[Attribute::Label(label.clone())])?;
            if !existing.is_empty() {
                return Err(Fail::Key(Error::Generate {
                    label: spec.label.clone(),
                    source: "the token already holds an object with this label".into(),
                }));
            }
            session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
            Ok(())
        })?;
        tracing::info!(backend = BACKEND, key = %spec.label, "generated host key in PKCS#11 token");
        Ok(KeyRef {
            label: spec.label.clone(),
            algorithm: spec.algorithm,
        })
    }

    fn open(&mut self, label: &str) -> Result<Option<KeyRef>, Error> {
        check_label(label)?;
        self.run("C_FindObjects", |session| {
            let Some(key) = find_key(session, ObjectClass::PRIVATE_KEY, label)? else {
                return Ok(None);
            };
            let algorithm = key_algorithm(session, key, label)?;
            Ok(Some(KeyRef {
                label: label.to_owned(),
                algorithm,
            }))
        })
    }

    fn public_key(&mut self, key: &KeyRef) -> Result<Vec<u8>, Error> {
        check_label(&key.label)?;
        let curve = Curve::for_algorithm(key.algorithm).ok_or(Error::Unsupported(key.algorithm))?;
        self.run("C_GetAttributeValue", |session| {
            let public = find_public(session, &key.label)?;
            let attrs = session
                .get_attributes(public, &[AttributeType::EcPoint, AttributeType::EcParams])?;
            let mut point = None;
            for a in attrs {
                match a {
                    Attribute::EcPoint(p) => point = Some(p),
                    Attribute::EcParams(p) if p != curve.params => {
                        return Err(Fail::Key(load_err(
                            &key.label,
                            "the public key is on another curve than the key reference says",
                        )));
                    }
                    _ => {}
                }
            }
            let point = point
                .as_deref()
                .and_then(|p| ec_point(p, curve))
                .ok_or_else(|| Fail::Key(load_err(&key.label, "malformed CKA_EC_POINT")))?;
            Ok(der::ec_spki(curve.params, &point))
        })
    }

    fn sign(&mut self, key: &KeyRef, msg: &[u8]) -> Result<Vec<u8>, Error> {
        check_label(&key.label)?;
        let curve = Curve::for_algorithm(key.algorithm).ok_or(Error::Unsupported(key.algorithm))?;
        let digest = ring::digest::digest(curve.digest, msg);
        let raw = self.run("C_Sign", |session| {
            let private = find_private(session, &key.label)?;
            Ok(session.sign(&Mechanism::Ecdsa, private, digest.as_ref())?)
        })?;
        ecdsa_der(&raw, curve).ok_or_else(|| Error::Device {
            backend: BACKEND,
            operation: "C_Sign",
            retryable: false,
            source: format!(
                "the token returned a {}-byte ECDSA signature; expected {}",
                raw.len(),
                2 * curve.size
            )
            .into(),
        })
    }

    fn destroy(&mut self, key: &KeyRef) -> Result<(), Error> {
        check_label(&key.label)?;
        self.run("C_DestroyObject", |session| {
            let private = find_private(session, &key.label)?;
            let public = find_key(session, ObjectClass::PUBLIC_KEY, &key.label)?;
            session.destroy_object(private)?;
            if let Some(public) = public {
                session.destroy_object(public)?;
            }
            Ok(())
        })?;
        tracing::info!(backend = BACKEND, key = %key.label, "destroyed host key in PKCS#11 token");
        Ok(())
    }

    fn info(&mut self, key: &KeyRef) -> Result<KeyInfo, Error> {
        check_label(&key.label)?;
        let attrs = self.run("C_GetAttributeValue", |session| {
            let private = find_private(session, &key.label)?;
            Ok(session.get_attributes(
                private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Local,
                    AttributeType::Id,
                ],
            )?)
        })?;
        let sensitive = bool_attr(&attrs, AttributeType::Sensitive);
        let extractable = bool_attr(&attrs, AttributeType::Extractable);
        let id = attrs.iter().find_map(|a| match a {
            Attribute::Id(id) => Some(hex(id)),
            _ => None,
        });
        // An attribute the token does not report counts against the key.
        let non_exportable = sensitive == Some(true) && extractable == Some(false);
        let t = &self.token;
        let mut facts = vec![
            ("module".to_owned(), self.module_path.display().to_string()),
            ("token".to_owned(), t.label.clone()),
            ("manufacturer".to_owned(), t.manufacturer.clone()),
            ("model".to_owned(), t.model.clone()),
            ("serial".to_owned(), t.serial.clone()),
            ("slot".to_owned(), t.slot.to_string()),
            ("label".to_owned(), key.label.clone()),
        ];
        if let Some(id) = id {
            facts.push(("id".to_owned(), id));
        }
        for (name, ty) in [
            ("sensitive", AttributeType::Sensitive),
            ("extractable", AttributeType::Extractable),
            ("never-extractable", AttributeType::NeverExtractable),
            ("always-sensitive", AttributeType::AlwaysSensitive),
            ("local", AttributeType::Local),
        ] {
            facts.push((name.to_owned(), show(bool_attr(&attrs, ty))));
        }
        Ok(KeyInfo {
            backend: BACKEND.into(),
            algorithm: key.algorithm,
            non_exportable,
            facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_pin() {
        let config = Pkcs11Config {
            module: "/nonexistent/module.so".into(),
            token: TokenSelector::Label("t".into()),
            pin: Secret::new("123456".into()),
        };
        assert!(!format!("{config:?}").contains("123456"));
    }
}
