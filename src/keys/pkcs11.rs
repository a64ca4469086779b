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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;

use super::{Error, KeyAlgorithm, KeyBackend, KeyInfo, KeyRef, KeySpec, check_label};
use crate::secret::Secret;

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

    /// Finds the token, opens a session and logs in. Any previous session is closed first:
    /// after a module reset the token may hand out the same session handle again.
    fn connect(&mut self) -> Result<(), Error> {
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
    fn run<R>(
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

    fn unavailable(&self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            what: self.selector.to_string(),
            source: source.into(),
        }
    }

    /// Maps a cryptoki error of `operation` onto the backend error kinds.
    fn map_error(&self, operation: &'static str, e: CkError) -> Error {
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
enum Fail {
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

fn is_auth_failure(rv: RvError) -> bool {
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
fn is_session_lost(e: &CkError) -> bool {
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

/// `CKR_USER_NOT_LOGGED_IN` unless the session is logged in as the user. Private objects are
/// invisible to a logged-out session, so "not found" must be checked against this.
fn require_login(session: &Session) -> Result<(), Fail> {
    match session.get_session_info()?.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(Fail::Ck(CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjects,
        ))),
    }
}

/// The key object of `class` labelled `label`, if any.
fn find_key(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, Fail> {
    let found = session.find_objects(&[
        Attribute::Class(class),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    match found.as_slice() {
        [] => {
            if class == ObjectClass::PRIVATE_KEY {
                require_login(session)?;
            }
            Ok(None)
        }
        [one] => Ok(Some(*one)),
        many => Err(Fail::Key(Error::Load {
            label: label.to_owned(),
            path: "token".into(),
            source: format!("{} key objects of one class carry this label", many.len()).into(),
        })),
    }
}

fn find_private(session: &Session, label: &str) -> Result<ObjectHandle, Fail> {
    find_key(session, ObjectClass::PRIVATE_KEY, label)?
        .ok_or_else(|| Fail::Key(Error::NotFound(label.to_owned())))
}

/// The public key object of a key: by label, else by the private key's `CKA_ID` (keys
/// provisioned by other tools may label only the private key).
fn find_public(session: &Session, label: &str) -> Result<ObjectHandle, Fail> {
    if let Some(handle) = find_key(session, ObjectClass::PUBLIC_KEY, label)? {
        return Ok(handle);
    }
    let private = find_private(session, label)?;
    let id = session
        .get_attributes(private, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) if !id.is_empty() => Some(id),
            _ => None,
        });
    if let Some(id) = id {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Id(id),
        ])?;
        if let [one] = found.as_slice() {
            return Ok(*one);
        }
    }
    Err(Fail::Key(load_err(
        label,
        "no public key object for this key",
    )))
}

fn load_err(label: &str, why: &str) -> Error {
    Error::Load {
        label: label.to_owned(),
        path: "token".into(),
        source: why.to_owned().into(),
    }
}

/// The algorithm of an EC key object, from its `CKA_KEY_TYPE` and `CKA_EC_PARAMS`.
fn key_algorithm(session: &Session, key: ObjectHandle, label: &str) -> Result<KeyAlgorithm, Fail> {
    let attrs = session.get_attributes(key, &[AttributeType::KeyType, AttributeType::EcParams])?;
    let mut key_type = None;
    let mut params = None;
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    if key_type != Some(KeyType::EC) {
        return Err(Fail::Key(load_err(
            label,
            "not an EC key; leafd supports EC P-256 and P-384 keys in PKCS#11 tokens",
        )));
    }
    params
        .as_deref()
        .and_then(Curve::from_params)
        .map(|c| c.algorithm)
        .ok_or_else(|| {
            Fail::Key(load_err(
                label,
                "EC key on a curve other than P-256 or P-384",
            ))
        })
}

/// A stable `CKA_ID` for a label: the first 16 bytes of SHA-256("leafd host key" 0 label).
fn key_id(label: &str) -> Vec<u8> {
    let mut input = b"leafd host key\0".to_vec();
    input.extend_from_slice(label.as_bytes());
    ring::digest::digest(&ring::digest::SHA256, &input).as_ref()[..16].to_vec()
}

/// A supported curve.
struct Curve {
    algorithm: KeyAlgorithm,
    /// `CKA_EC_PARAMS`: the DER namedCurve OID.
    params: &'static [u8],
    /// Field size in bytes.
    size: usize,
    digest: &'static ring::digest::Algorithm,
}

const P256: Curve = Curve {
    algorithm: KeyAlgorithm::EcdsaP256,
    params: &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    size: 32,
    digest: &ring::digest::SHA256,
};

const P384: Curve = Curve {
    algorithm: KeyAlgorithm::EcdsaP384,
    params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
    size: 48,
    digest: &ring::digest::SHA384,
};

/// DER OID 1.2.840.10045.2.1 (id-ecPublicKey).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

impl Curve {
    fn for_algorithm(algorithm: KeyAlgorithm) -> Option<&'static Curve> {
        match algorithm {
            KeyAlgorithm::EcdsaP256 => Some(&P256),
            KeyAlgorithm::EcdsaP384 => Some(&P384),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => None,
        }
    }

    fn from_params(params: &[u8]) -> Option<&'static Curve> {
        [&P256, &P384].into_iter().find(|c| c.params == params)
    }
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from unsigned big-endian bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let trimmed = &bytes[skip..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

/// The contents of a DER OCTET STRING filling all of `der`.
fn der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// The uncompressed point from `CKA_EC_POINT`: a DER OCTET STRING as PKCS#11 specifies, or
/// the raw point some modules return.
fn ec_point(value: &[u8], curve: &Curve) -> Option<Vec<u8>> {
    let expected = 1 + 2 * curve.size;
    let point = if value.len() == expected && value[0] == 0x04 {
        value
    } else {
        der_octet_string(value)?
    };
    (point.len() == expected && point[0] == 0x04).then(|| point.to_vec())
}

/// DER SubjectPublicKeyInfo of an EC public key.
fn ec_spki(curve: &Curve, point: &[u8]) -> Vec<u8> {
    let algorithm = der(0x30, &[EC_PUBLIC_KEY_OID, curve.params].concat());
    let mut bits = Vec::with_capacity(point.len() + 1);
    bits.push(0);
    bits.extend_from_slice(point);
    der(0x30, &[algorithm, der(0x03, &bits)].concat())
}

/// DER ECDSA-Sig-Value from the raw `r || s` that `CKM_ECDSA` returns.
fn ecdsa_der(raw: &[u8], curve: &Curve) -> Option<Vec<u8>> {
    if raw.len() != 2 * curve.size {
        return None;
    }
    let (r, s) = raw.split_at(curve.size);
    Some(der(0x30, &[der_uint(r), der_uint(s)].concat()))
}

fn bool_attr(attrs: &[Attribute], ty: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (a, ty) {
        (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::Local(v), AttributeType::Local) => Some(*v),
        _ => None,
    })
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
        let id = key_id(&spec.label);
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(curve.params.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone()),
            Attribute::Id(id),
        ];
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
            Ok(ec_spki(curve, &point))
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
struct ModuleLease {
    key: PathBuf,
    ctx: Pkcs11,
}

fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

impl ModuleLease {
    fn acquire(path: &Path) -> Result<Self, Error> {
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

    #[test]
    fn ecdsa_signature_becomes_der() {
        // r with the top bit set gains a zero byte; s with leading zeros loses them.
        let mut raw = vec![0x80; 32];
        raw.extend(std::iter::repeat_n(0, 31));
        raw.push(0x05);
        let der = ecdsa_der(&raw, &P256).unwrap();
        let mut expected = vec![0x30, 38, 0x02, 33, 0x00];
        expected.extend([0x80; 32]);
        expected.extend([0x02, 1, 0x05]);
        assert_eq!(der, expected);
        assert!(ecdsa_der(&raw[..63], &P256).is_none());
    }

    #[test]
    fn long_der_lengths() {
        let mut out = Vec::new();
        der_len(200, &mut out);
        assert_eq!(out, [0x81, 200]);
        out.clear();
        der_len(0x1234, &mut out);
        assert_eq!(out, [0x82, 0x12, 0x34]);
    }

    #[test]
    fn ec_point_accepts_der_and_raw() {
        let mut point = vec![0x04];
        point.extend([7; 64]);
        let wrapped = der(0x04, &point);
        assert_eq!(ec_point(&wrapped, &P256).unwrap(), point);
        assert_eq!(ec_point(&point, &P256).unwrap(), point);
        assert!(ec_point(&wrapped, &P384).is_none());
        assert!(ec_point(&wrapped[..60], &P256).is_none());
        let mut p384 = vec![0x04];
        p384.extend([9; 96]);
        assert_eq!(ec_point(&der(0x04, &p384), &P384).unwrap(), p384);
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        assert_eq!(key_id("host"), key_id("host"));
        assert_ne!(key_id("host"), key_id("host2"));
        assert_eq!(key_id("host").len(), 16);
    }

    #[test]
    fn debug_hides_the_pin() {
        let config = Pkcs11Config {
            module: "/nonexistent/module.so".into(),
            token: TokenSelector::Label("t".into()),
            pin: Secret::new("123456".into()),
        };
        assert!(!format!("{config:?}").contains("123456"));
    }

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
