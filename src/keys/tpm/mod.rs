//! TPM 2.0 key backend: host keys that never leave the TPM.
//!
//! # Design
//!
//! - **Keys** are ECDSA signing keys (NIST P-256 with SHA-256, or P-384 with SHA-384) created
//!   *inside* the TPM with `fixedTPM`, `fixedParent`, `sensitiveDataOrigin`, `userWithAuth`,
//!   `noDA` and `sign` set, and `decrypt` and `restricted` clear: the private part can neither
//!   be exported nor duplicated, and was never outside the TPM. The auth value is empty, so
//!   whoever can read the key file *and* talk to the TPM can sign with it; the key file lives
//!   in a 0700 directory owned by leafd. `noDA` keeps a stray wrong-auth attempt from
//!   counting towards the TPM's dictionary-attack lockout, which would hit every TPM user.
//! - **Parent.** Keys live under a storage parent: either an existing persistent storage key
//!   ([`TpmConfig::parent`], e.g. the shared SRK at `0x81000001`) or, by default, a primary
//!   key re-created for each operation under the owner hierarchy from the TCG ECC P-256 SRK
//!   template ("L-2", as systemd uses it). Primary keys are derived deterministically from the
//!   owner seed, so the same parent comes back after a reboot, until the TPM is cleared.
//! - **Storage.** `TPM2_Create` returns the public area and the private area encrypted and
//!   integrity-protected by the parent. Both are written to `key_dir/<label>.tpm` as a PEM
//!   `TSS2 PRIVATE KEY` (the ASN.1 TPM key file format of the OpenSSL TPM engines, loadable key
//!   OID `2.23.133.10.1.3`, parent handle `0x40000001` for the owner-hierarchy SRK template).
//!   The file is written to a 0600 temporary file, fsynced, then hard-linked into place, so an
//!   existing label is never replaced, then the directory is fsynced.
//! - **Transient objects.** Without a resource manager a TPM holds only about three transient
//!   objects, and objects outlive the client's connection. Every operation therefore loads what
//!   it needs (parent, key: at most two objects) and flushes both before returning, also on
//!   errors. Nothing stays loaded between operations.
//! - **Connection.** One ESAPI context is opened by [`TpmBackend::open`] and kept. If the
//!   connection breaks (an I/O error from the TCTI: the TPM simulator or the resource manager
//!   restarted), the context is dropped, and the operation reconnects and runs once more; there
//!   are no retry loops here: retrying later is the caller's decision, guided by
//!   [`Error::is_retryable`].
//! - **Busy TPMs.** The ESAPI waits for the TPM without a time limit. `swtpm` serves one client
//!   connection at a time (the `swtpm:` TCTI connects for each command), so while another
//!   client holds it, for example `tpm2-abrmd`, a command would block forever. For `swtpm:`
//!   TCTIs every operation therefore first sends `TPM2_GetRandom` over a plain socket with a
//!   [`PROBE_TIMEOUT`]; no answer means another client holds the simulator, reported as
//!   [`Error::Unavailable`]. A client that grabs the simulator between the probe and the
//!   command still blocks us until it lets go. The device TCTI needs no probe: `/dev/tpmrm0`
//!   multiplexes clients, and a busy `/dev/tpm0` fails to open at once.
//! - **Signing** hashes in software, then runs `TPM2_Sign` with the ECDSA scheme and converts
//!   the TPM's `(r, s)` into a DER `ECDSA-Sig-Value`. Public keys are returned as DER
//!   SubjectPublicKeyInfo built from the TPM's public point.
//! - **Errors.** TPM absent or unreachable → [`Error::Unavailable`]; TPM warnings such as
//!   `TPM_RC_RETRY`, `TPM_RC_TESTING` or `TPM_RC_OBJECT_MEMORY` → retryable [`Error::Device`];
//!   `TPM_RC_AUTH_FAIL`, `TPM_RC_BAD_AUTH` and `TPM_RC_LOCKOUT` → [`Error::Auth`]; a key file
//!   that does not parse, or that the TPM refuses to load (integrity or binding failure: a
//!   corrupt file, a file from another TPM, or a TPM cleared since) → [`Error::Load`] naming
//!   the file.
//!
//! The ESAPI context is not `Send`: build the backend on the key thread
//! ([`super::worker::KeyService::spawn`]).
//!
//! The backend and its TPM operations are here; `session` opens the ESAPI context (TCTI,
//! `swtpm:` probe, reconnect once), `error` classifies TSS errors and maps them onto
//! [`Error`], and `keyfile` reads and writes the `TSS2 PRIVATE KEY` files.

mod error;
mod keyfile;
mod session;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, EccCurveIdentifier, Tss2ResponseCodeKind};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Public,
    PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::{Error, KeyAlgorithm, KeyBackend, KeyInfo, KeyRef, KeySpec, check_label};
use crate::der;
use error::{Detail, Failure, Step, TssError, load_err};
use keyfile::KeyFile;

const BACKEND: &str = "tpm";

/// The TCTI used when none is configured: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = crate::settings::defaults::TPM_TCTI;

/// How long the `swtpm:` pre-flight probe waits to connect and for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `TPM_RH_OWNER`: in a key file, "the owner-hierarchy primary from the standard template".
const OWNER_PARENT: u32 = 0x4000_0001;

/// Where and how the TPM backend keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    /// The TCTI: `device:/dev/tpmrm0` (the default, [`DEFAULT_TCTI`]), `tabrmd:...` (needs
    /// `libtss2-tcti-tabrmd0`) or `swtpm:host=127.0.0.1,port=P` (tests).
    pub tcti: String,
    /// Directory of the key files (`<label>.tpm`); created with mode 0700.
    pub key_dir: PathBuf,
    /// Persistent storage key to create keys under, such as `0x81000001`. `None` creates the
    /// TCG ECC P-256 SRK-template primary under the owner hierarchy for each operation (needs
    /// an empty owner auth).
    pub parent: Option<u32>,
}

impl TpmConfig {
    /// The default TCTI and parent, keys in `key_dir`.
    pub fn new(key_dir: impl Into<PathBuf>) -> Self {
        Self {
            tcti: DEFAULT_TCTI.to_owned(),
            key_dir: key_dir.into(),
            parent: None,
        }
    }
}

/// Host keys in a TPM 2.0. See the module documentation.
pub struct TpmBackend {
    tcti_text: String,
    tcti: TctiNameConf,
    key_dir: PathBuf,
    parent: Option<u32>,
    ctx: Option<Context>,
    keys: HashMap<String, KeyFile>,
    tpm_facts: Vec<(String, String)>,
}

impl TpmBackend {
    /// Connects to the TPM, checks the parent key and opens (creating with mode 0700 if
    /// needed) the key directory.
    pub fn open(config: &TpmConfig) -> Result<Self, Error> {
        let tcti = session::parse_tcti(&config.tcti)?;
        if let Some(handle) = config.parent {
            if PersistentTpmHandle::new(handle).is_err() {
                return Err(Error::Device {
                    backend: BACKEND,
                    operation: "check the parent key",
                    retryable: false,
                    source: Detail::new(format!(
                        "parent {handle:#010x} is not a persistent handle (0x81000000-0x81ffffff)"
                    ))
                    .into(),
                });
            }
        }
        super::create_key_dir(&config.key_dir)?;
        let mut backend = Self {
            tcti_text: config.tcti.clone(),
            tcti,
            key_dir: config.key_dir.clone(),
            parent: config.parent,
            ctx: None,
            keys: HashMap::new(),
            tpm_facts: Vec::new(),
        };
        backend.connect()?;
        if let Some(handle) = backend.parent {
            backend
                .run(|ctx, _| check_persistent_parent(ctx, handle))
                .map_err(|f| f.into_error())?;
        }
        Ok(backend)
    }

    /// The key algorithms this TPM can generate: ECDSA on the curves it implements.
    pub fn supported_algorithms(&mut self) -> Result<Vec<KeyAlgorithm>, Error> {
        let curves = self
            .run(|ctx, _| {
                let (data, _) = ctx
                    .execute_without_session(|c| c.get_capability(CapabilityType::EccCurves, 0, 64))
                    .map_err(|e| Step::new("read the ECC curves", e))?;
                Ok(match data {
                    CapabilityData::EccCurves(list) => list.into_inner(),
                    _ => Vec::new(),
                })
            })
            .map_err(|f| f.into_error())?;
        let mut out = Vec::new();
        if curves.contains(&EccCurveIdentifier::NistP256) {
            out.push(KeyAlgorithm::EcdsaP256);
        }
        if curves.contains(&EccCurveIdentifier::NistP384) {
            out.push(KeyAlgorithm::EcdsaP384);
        }
        Ok(out)
    }

    fn path(&self, label: &str) -> PathBuf {
        self.key_dir.join(format!("{label}.tpm"))
    }

    fn expected_parent(&self) -> u32 {
        self.parent.unwrap_or(OWNER_PARENT)
    }

    /// Reads, parses and (once per backend) test-loads the key file of `label`.
    fn load_key(&mut self, label: &str) -> Result<Option<&KeyFile>, Error> {
        check_label(label)?;
        if !self.keys.contains_key(label) {
            let path = self.path(label);
            let text = match fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(load_err(label, &path, e)),
            };
            let file = KeyFile::decode(&text).map_err(|e| load_err(label, &path, e))?;
            let expected = self.expected_parent();
            if file.parent != expected {
                return Err(load_err(
                    label,
                    &path,
                    Detail::new(format!(
                        "the key was created under parent {:#010x}, but this backend uses parent \
                         {expected:#010x}",
                        file.parent
                    )),
                ));
            }
            // Let the TPM check the file: the private area is integrity-protected by the
            // parent, so a corrupt file or one from another TPM fails here, at startup.
            self.run(|ctx, parent| with_key(ctx, parent, &file, |_, _| Ok(())))
                .map_err(|f| f.into_load_error(label, &path))?;
            self.keys.insert(label.to_owned(), file);
        }
        Ok(self.keys.get(label))
    }

    fn key(&mut self, key: &KeyRef) -> Result<KeyFile, Error> {
        let path = self.path(&key.label);
        match self.load_key(&key.label)? {
            Some(file) if file.algorithm == key.algorithm => Ok(file.clone()),
            Some(file) => Err(load_err(
                &key.label,
                &path,
                Detail::new(format!(
                    "the file holds a {} key, not {}",
                    file.algorithm, key.algorithm
                )),
            )),
            None => Err(Error::NotFound(key.label.clone())),
        }
    }

    fn write_key_file(&self, label: &str, text: &[u8]) -> Result<(), Error> {
        super::write_new_key_file(&self.path(label), label, text)
    }
}

impl KeyBackend for TpmBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn generate(&mut self, spec: &KeySpec) -> Result<KeyRef, Error> {
        check_label(&spec.label)?;
        let curve = Curve::of(spec.algorithm).ok_or(Error::Unsupported(spec.algorithm))?;
        let path = self.path(&spec.label);
        if path.symlink_metadata().is_ok() {
            return Err(Error::Store {
                label: spec.label.clone(),
                source: format!("{} already exists", path.display()).into(),
            });
        }
        let template = signing_template(curve).map_err(|e| Error::Generate {
            label: spec.label.clone(),
            source: Box::new(TssError::from(e)),
        })?;
        let created = self.run(|ctx, parent| {
            with_parent(ctx, parent, |ctx, parent_handle| {
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(parent_handle, template.clone(), None, None, None, None)
                })
                .map_err(|e| Step::new("create the key", e))
            })
        });
        let created = match created {
            Ok(c) => c,
            Err(Failure::Step(step)) if step.error.kind() == Some(Tss2ResponseCodeKind::Curve) => {
                return Err(Error::Unsupported(spec.algorithm));
            }
            Err(f) => return Err(f.into_generate_error(&spec.label)),
        };
        let file = KeyFile::new(
            self.expected_parent(),
            created.out_public,
            created.out_private,
        )
        .map_err(|e| Error::Generate {
            label: spec.label.clone(),
            source: e.into(),
        })?;
        let text = file.encode().map_err(|e| Error::Generate {
            label: spec.label.clone(),
            source: e.into(),
        })?;
        self.write_key_file(&spec.label, text.as_bytes())?;
        self.keys.insert(spec.label.clone(), file);
        Ok(KeyRef {
            label: spec.label.clone(),
            algorithm: spec.algorithm,
        })
    }

    fn open(&mut self, label: &str) -> Result<Option<KeyRef>, Error> {
        Ok(self.load_key(label)?.map(|file| KeyRef {
            label: label.to_owned(),
            algorithm: file.algorithm,
        }))
    }

    fn public_key(&mut self, key: &KeyRef) -> Result<Vec<u8>, Error> {
        Ok(self.key(key)?.spki())
    }

    fn sign(&mut self, key: &KeyRef, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let file = self.key(key)?;
        let curve = file.curve;
        let digest = ring::digest::digest(curve.digest_alg(), msg);
        let digest =
            Digest::try_from(digest.as_ref()).map_err(|_| Error::Sign(key.label.clone()))?;
        let signature = self
            .run(|ctx, parent| {
                with_key(ctx, parent, &file, |ctx, handle| {
                    let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
                        tag: TPM2_ST_HASHCHECK,
                        hierarchy: TPM2_RH_NULL,
                        digest: Default::default(),
                    })
                    .map_err(|e| Step::new("sign", e))?;
                    ctx.execute_with_session(Some(AuthSession::Password), |c| {
                        c.sign(
                            handle,
                            digest.clone(),
                            SignatureScheme::EcDsa {
                                hash_scheme: HashScheme::new(curve.hash()),
                            },
                            ticket,
                        )
                    })
                    .map_err(|e| Step::new("sign", e))
                })
            })
            .map_err(|f| f.into_error())?;
        match signature {
            Signature::EcDsa(sig) => Ok(der::ecdsa_sig(
                sig.signature_r().value(),
                sig.signature_s().value(),
            )),
            _ => Err(Error::Sign(key.label.clone())),
        }
    }

    fn destroy(&mut self, key: &KeyRef) -> Result<(), Error> {
        check_label(&key.label)?;
        self.keys.remove(&key.label);
        // The key exists only as this file: the TPM keeps no copy, so removing it destroys
        // the key (a copy of the file would stay usable on this TPM until it is cleared).
        match fs::remove_file(self.path(&key.label)) {
            Ok(()) => {
                if let Ok(d) = fs::File::open(&self.key_dir) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(key.label.clone()))
            }
            Err(source) => Err(Error::Destroy {
                label: key.label.clone(),
                source,
            }),
        }
    }

    fn info(&mut self, key: &KeyRef) -> Result<KeyInfo, Error> {
        let file = self.key(key)?;
        let public = self
            .run(|ctx, parent| {
                with_key(ctx, parent, &file, |ctx, handle| {
                    ctx.execute_without_session(|c| c.read_public(handle))
                        .map(|(public, _, _)| public)
                        .map_err(|e| Step::new("read the key's public area", e))
                })
            })
            .map_err(|f| f.into_error())?;
        let attrs = public.object_attributes();
        let non_exportable =
            attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin();
        let mut facts = self.tpm_facts.clone();
        facts.push(("tcti".into(), self.tcti_text.clone()));
        facts.push(("file".into(), self.path(&key.label).display().to_string()));
        facts.push((
            "parent".into(),
            match self.parent {
                Some(h) => format!("{h:#010x}"),
                None => "owner hierarchy primary (TCG ECC P-256 SRK template)".into(),
            },
        ));
        facts.push(("attributes".into(), describe_attributes(attrs)));
        Ok(KeyInfo {
            backend: BACKEND.into(),
            algorithm: file.algorithm,
            non_exportable,
            facts,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// TPM operations
// ---------------------------------------------------------------------------------------------

/// The ECC curves leafd creates keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn of(algorithm: KeyAlgorithm) -> Option<Self> {
        match algorithm {
            KeyAlgorithm::EcdsaP256 => Some(Self::P256),
            KeyAlgorithm::EcdsaP384 => Some(Self::P384),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => None,
        }
    }

    fn from_tpm(curve: EccCurve) -> Option<Self> {
        match curve {
            EccCurve::NistP256 => Some(Self::P256),
            EccCurve::NistP384 => Some(Self::P384),
            _ => None,
        }
    }

    fn algorithm(self) -> KeyAlgorithm {
        match self {
            Self::P256 => KeyAlgorithm::EcdsaP256,
            Self::P384 => KeyAlgorithm::EcdsaP384,
        }
    }

    fn tpm(self) -> EccCurve {
        match self {
            Self::P256 => EccCurve::NistP256,
            Self::P384 => EccCurve::NistP384,
        }
    }

    fn hash(self) -> HashingAlgorithm {
        match self {
            Self::P256 => HashingAlgorithm::Sha256,
            Self::P384 => HashingAlgorithm::Sha384,
        }
    }

    fn digest_alg(self) -> &'static ring::digest::Algorithm {
        match self {
            Self::P256 => &ring::digest::SHA256,
            Self::P384 => &ring::digest::SHA384,
        }
    }

    /// Field size in bytes.
    fn size(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// The named curve's OID TLV for the SubjectPublicKeyInfo.
    fn oid(self) -> &'static [u8] {
        match self {
            Self::P256 => der::P256_OID,
            Self::P384 => der::P384_OID,
        }
    }
}

/// The public template of a leafd host key.
fn signing_template(curve: Curve) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(false)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(curve.hash())),
                curve.tpm(),
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// The TCG ECC P-256 SRK template ("L-2" with an empty unique field, as systemd uses).
fn srk_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// Makes the parent available for `f`, then releases it: a fresh SRK primary is flushed, a
/// persistent parent's ESAPI handle is closed.
fn with_parent<T>(
    ctx: &mut Context,
    parent: Option<u32>,
    f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, Step>,
) -> Result<T, Step> {
    let handle = match parent {
        None => {
            let template = srk_template().map_err(|e| Step::new("create the parent key", e))?;
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(|e| Step::new("create the parent key", e))?
            .key_handle
        }
        Some(h) => persistent_handle(ctx, h)?,
    };
    let result = f(ctx, handle);
    let released = match parent {
        None => ctx.flush_context(ObjectHandle::from(handle)),
        Some(_) => ctx.tr_close(&mut ObjectHandle::from(handle)),
    };
    if let Err(e) = released {
        tracing::warn!(backend = BACKEND, error = %TssError::from(e), "could not release the parent key");
    }
    result
}

/// Loads `file` under the parent for `f`, then flushes it (and the parent).
fn with_key<T>(
    ctx: &mut Context,
    parent: Option<u32>,
    file: &KeyFile,
    f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, Step>,
) -> Result<T, Step> {
    with_parent(ctx, parent, |ctx, parent_handle| {
        let handle = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent_handle, file.private.clone(), file.public.clone())
            })
            .map_err(|e| Step::new(LOAD, e))?;
        let result = f(ctx, handle);
        if let Err(e) = ctx.flush_context(ObjectHandle::from(handle)) {
            tracing::warn!(backend = BACKEND, error = %TssError::from(e), "could not flush the key");
        }
        result
    })
}

const LOAD: &str = "load the key";

fn persistent_handle(ctx: &mut Context, handle: u32) -> Result<KeyHandle, Step> {
    let tpm_handle = PersistentTpmHandle::new(handle)
        .map(TpmHandle::Persistent)
        .map_err(|e| Step::new("open the parent key", e))?;
    ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
        .map(KeyHandle::from)
        .map_err(|e| Step::new("open the parent key", e))
}

/// Checks the persistent parent exists and is a storage key.
fn check_persistent_parent(ctx: &mut Context, handle: u32) -> Result<(), Step> {
    let key = persistent_handle(ctx, handle)?;
    let public = ctx.execute_without_session(|c| c.read_public(key));
    let _ = ctx.tr_close(&mut ObjectHandle::from(key));
    let (public, _, _) = public.map_err(|e| Step::new("read the parent key", e))?;
    let attrs = public.object_attributes();
    if attrs.restricted() && attrs.decrypt() && !attrs.sign_encrypt() {
        Ok(())
    } else {
        Err(Step {
            operation: "check the parent key",
            error: TssError::other(format!(
                "the persistent key at {handle:#010x} is not a storage key (restricted, decrypt)"
            )),
        })
    }
}

fn describe_attributes(a: ObjectAttributes) -> String {
    let names = [
        (a.fixed_tpm(), "fixedTPM"),
        (a.st_clear(), "stClear"),
        (a.fixed_parent(), "fixedParent"),
        (a.sensitive_data_origin(), "sensitiveDataOrigin"),
        (a.user_with_auth(), "userWithAuth"),
        (a.admin_with_policy(), "adminWithPolicy"),
        (a.no_da(), "noDA"),
        (a.encrypted_duplication(), "encryptedDuplication"),
        (a.restricted(), "restricted"),
        (a.decrypt(), "decrypt"),
        (a.sign_encrypt(), "sign"),
    ];
    names
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}
