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

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{
    CapabilityType, EccCurveIdentifier, PropertyTag, Tss2ResponseCode, Tss2ResponseCodeKind,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Private, Public,
    PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::{Error, KeyAlgorithm, KeyBackend, KeyInfo, KeyRef, KeySpec, check_label};

const BACKEND: &str = "tpm";

/// The TCTI used when none is configured: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

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
        let tcti = TctiNameConf::from_str(&config.tcti).map_err(|e| Error::Device {
            backend: BACKEND,
            operation: "parse the TCTI",
            retryable: false,
            source: Box::new(Detail::with_source(
                format!("invalid TCTI {:?}", config.tcti),
                TssError::from(e),
            )),
        })?;
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
        let store_err = |source| Error::Store {
            label: String::new(),
            source,
        };
        fs::create_dir_all(&config.key_dir).map_err(store_err)?;
        fs::set_permissions(&config.key_dir, fs::Permissions::from_mode(0o700))
            .map_err(store_err)?;
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

    /// Opens the ESAPI context if there is none; `swtpm:` TCTIs are probed each time.
    fn connect(&mut self) -> Result<&mut Context, Error> {
        if let TctiNameConf::Swtpm(_) = self.tcti {
            // The swtpm TCTI opens a connection for every command, and the ESAPI waits for
            // it without a limit: check the simulator answers before every operation.
            probe_swtpm(&self.tcti_text).map_err(|source| self.unavailable(source))?;
        }
        match self.ctx {
            Some(ref mut ctx) => Ok(ctx),
            None => {
                let mut ctx = Context::new(self.tcti.clone())
                    .map_err(|e| self.unavailable(Box::new(TssError::from(e))))?;
                if self.tpm_facts.is_empty() {
                    self.tpm_facts = read_tpm_facts(&mut ctx);
                }
                Ok(self.ctx.insert(ctx))
            }
        }
    }

    fn unavailable(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            what: format!("TPM at TCTI {:?}", self.tcti_text),
            source,
        }
    }

    /// Runs `f` with a connected context and the parent handle. If the connection turns out
    /// to be broken, reconnects once and runs `f` once more.
    fn run<T>(
        &mut self,
        mut f: impl FnMut(&mut Context, Option<u32>) -> Result<T, Step>,
    ) -> Result<T, Failure> {
        let parent = self.parent;
        let mut reconnected = false;
        loop {
            let ctx = self.connect().map_err(Failure::Connect)?;
            match f(ctx, parent) {
                Ok(v) => return Ok(v),
                Err(step) if step.error.connection_lost() => {
                    // The context is useless now; the next call opens a new one.
                    self.ctx = None;
                    if reconnected {
                        return Err(Failure::Step(step));
                    }
                    tracing::warn!(backend = BACKEND, "TPM connection lost; reconnecting once");
                    reconnected = true;
                }
                Err(step) => return Err(Failure::Step(step)),
            }
        }
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
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", path.display()),
                ),
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
            Signature::EcDsa(sig) => Ok(ecdsa_sig_der(
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

fn load_err(
    label: &str,
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::load(label, path, e)
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

    /// DER of the SubjectPublicKeyInfo AlgorithmIdentifier: id-ecPublicKey plus the curve.
    fn spki_algorithm(self) -> &'static [u8] {
        match self {
            // SEQUENCE { 1.2.840.10045.2.1, 1.2.840.10045.3.1.7 }
            Self::P256 => &[
                0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
                0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ],
            // SEQUENCE { 1.2.840.10045.2.1, 1.3.132.0.34 }
            Self::P384 => &[
                0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
                0x81, 0x04, 0x00, 0x22,
            ],
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

/// Manufacturer and firmware version, as facts for `info`. Best effort: a TPM that cannot
/// say is still usable.
fn read_tpm_facts(ctx: &mut Context) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if let Ok(Some(m)) = ctx.get_tpm_property(PropertyTag::Manufacturer) {
        let text: String = m
            .to_be_bytes()
            .iter()
            .filter(|b| b.is_ascii_graphic() || **b == b' ')
            .map(|b| char::from(*b))
            .collect();
        facts.push(("manufacturer".into(), text.trim().to_owned()));
    }
    if let (Ok(Some(v1)), Ok(Some(v2))) = (
        ctx.get_tpm_property(PropertyTag::FirmwareVersion1),
        ctx.get_tpm_property(PropertyTag::FirmwareVersion2),
    ) {
        facts.push((
            "firmware".into(),
            format!("{}.{}.{}.{}", v1 >> 16, v1 & 0xffff, v2 >> 16, v2 & 0xffff),
        ));
    }
    facts
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

/// Sends `TPM2_GetRandom` to a `swtpm:` TCTI's server port and waits for the answer, so a
/// simulator held by another client is reported instead of blocking the ESAPI forever.
fn probe_swtpm(tcti: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let conf = tcti.strip_prefix("swtpm").unwrap_or(tcti);
    let conf = conf.strip_prefix(':').unwrap_or(conf);
    let (mut host, mut port) = ("localhost".to_owned(), 2321u16);
    for part in conf.split(',') {
        if let Some(h) = part.strip_prefix("host=") {
            h.clone_into(&mut host);
        } else if let Some(p) = part.strip_prefix("port=") {
            port = p
                .parse()
                .map_err(|_| Detail::new(format!("invalid port {p:?}")))?;
        }
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Detail::new(format!("{host} has no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| Detail::with_source(format!("cannot connect to swtpm at {addr}"), e))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    // TPM2_GetRandom(2): tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested.
    stream.write_all(&[
        0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x02,
    ])?;
    let mut header = [0u8; 10];
    match stream.read_exact(&mut header) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(Detail::new(format!(
                "swtpm at {addr} accepted the connection but did not answer within {}s: it \
                 serves one client at a time and another client holds it",
                PROBE_TIMEOUT.as_secs()
            ))
            .into())
        }
        Err(e) => {
            Err(Detail::with_source(format!("swtpm at {addr} closed the connection"), e).into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A TSS error with its raw response code decoded by layer, because tss-esapi describes
/// TCTI and ESAPI codes as if they came from the TPM.
#[derive(Debug)]
struct TssError {
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
    fn other(text: String) -> Self {
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
    fn kind(&self) -> Option<Tss2ResponseCodeKind> {
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
    fn connection_lost(&self) -> bool {
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
struct Detail {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Detail {
    fn new(message: String) -> Self {
        Self {
            message,
            source: None,
        }
    }

    fn with_source(
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
struct Step {
    operation: &'static str,
    error: TssError,
}

impl Step {
    fn new(operation: &'static str, e: tss_esapi::Error) -> Self {
        Self {
            operation,
            error: TssError::from(e),
        }
    }
}

/// Why [`TpmBackend::run`] failed.
enum Failure {
    /// No connection: already an [`Error::Unavailable`].
    Connect(Error),
    /// A command failed.
    Step(Step),
}

impl Failure {
    /// Maps to the generic error variants: auth, device (retryable or not).
    fn into_error(self) -> Error {
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
    fn into_load_error(self, label: &str, path: &Path) -> Error {
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

    fn into_generate_error(self, label: &str) -> Error {
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

// ---------------------------------------------------------------------------------------------
// Key files: PEM "TSS2 PRIVATE KEY"
// ---------------------------------------------------------------------------------------------

const PEM_LABEL: &str = "TSS2 PRIVATE KEY";
/// 2.23.133.10.1.3, id-loadablekey.
const LOADABLE_KEY_OID: &[u8] = &[0x67, 0x81, 0x05, 0x0a, 0x01, 0x03];

/// A key as stored: parent, public area and the parent-encrypted private area.
#[derive(Clone)]
struct KeyFile {
    parent: u32,
    public: Public,
    private: Private,
    algorithm: KeyAlgorithm,
    curve: Curve,
    /// The uncompressed point, `04 || x || y`.
    point: Vec<u8>,
}

impl KeyFile {
    fn new(parent: u32, public: Public, private: Private) -> Result<Self, Detail> {
        let Public::Ecc {
            parameters,
            unique,
            object_attributes,
            ..
        } = &public
        else {
            return Err(Detail::new("not an ECC key".into()));
        };
        let curve = Curve::from_tpm(parameters.ecc_curve()).ok_or_else(|| {
            Detail::new(format!("unsupported curve {:?}", parameters.ecc_curve()))
        })?;
        if !object_attributes.sign_encrypt() {
            return Err(Detail::new("not a signing key".into()));
        }
        let (x, y) = (unique.x().value(), unique.y().value());
        let mut point = Vec::with_capacity(1 + 2 * curve.size());
        point.push(0x04);
        for coordinate in [x, y] {
            let c = strip_zeros(coordinate);
            if c.len() > curve.size() {
                return Err(Detail::new("public point does not fit the curve".into()));
            }
            point.resize(point.len() + curve.size() - c.len(), 0);
            point.extend_from_slice(c);
        }
        Ok(Self {
            parent,
            algorithm: curve.algorithm(),
            curve,
            point,
            public,
            private,
        })
    }

    fn spki(&self) -> Vec<u8> {
        let mut bits = Vec::with_capacity(self.point.len() + 1);
        bits.push(0); // no unused bits
        bits.extend_from_slice(&self.point);
        let mut body = self.curve.spki_algorithm().to_vec();
        body.extend(der(0x03, &bits));
        der(0x30, &body)
    }

    fn encode(&self) -> Result<String, Detail> {
        let public = self.public.marshall().map_err(|e| {
            Detail::with_source(
                "could not marshal the public area".into(),
                TssError::from(e),
            )
        })?;
        let private = self.private.value();
        let mut body = der(0x06, LOADABLE_KEY_OID);
        body.extend(der(0xa0, &der(0x01, &[0xff]))); // emptyAuth [0] EXPLICIT TRUE
        body.extend(der(0x02, &der_uint(&self.parent.to_be_bytes())));
        body.extend(der(0x04, &tpm2b(&public)?));
        body.extend(der(0x04, &tpm2b(private)?));
        Ok(pem::encode(&pem::Pem::new(PEM_LABEL, der(0x30, &body))))
    }

    fn decode(text: &[u8]) -> Result<Self, Detail> {
        let block =
            pem::parse(text).map_err(|e| Detail::with_source("not a PEM file".into(), e))?;
        if block.tag() != PEM_LABEL {
            return Err(Detail::new(format!(
                "expected a {PEM_LABEL:?} PEM block, found {:?}",
                block.tag()
            )));
        }
        let malformed = |what: &str| Detail::new(format!("malformed TSS2 key: {what}"));
        let (tag, seq, rest) = read_tlv(block.contents()).ok_or_else(|| malformed("outer"))?;
        if tag != 0x30 || !rest.is_empty() {
            return Err(malformed("outer SEQUENCE"));
        }
        let (tag, oid, mut rest) = read_tlv(seq).ok_or_else(|| malformed("type"))?;
        if tag != 0x06 || oid != LOADABLE_KEY_OID {
            return Err(Detail::new(
                "not a loadable TPM key (type is not 2.23.133.10.1.3)".into(),
            ));
        }
        let mut empty_auth = false;
        loop {
            let (tag, value, after) = read_tlv(rest).ok_or_else(|| malformed("fields"))?;
            match tag {
                0xa0 => {
                    empty_auth = matches!(read_tlv(value), Some((0x01, [0xff], [])));
                    rest = after;
                }
                0xa1..=0xbf => {
                    return Err(Detail::new(
                        "keys with policies or an imported secret are not supported".into(),
                    ));
                }
                _ => break,
            }
        }
        if !empty_auth {
            return Err(Detail::new(
                "keys with an auth value are not supported".into(),
            ));
        }
        let (tag, parent, rest) = read_tlv(rest).ok_or_else(|| malformed("parent"))?;
        let parent = match (tag, strip_zeros(parent)) {
            (0x02, p) if p.len() <= 4 => p.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)),
            _ => return Err(malformed("parent")),
        };
        let (tag, public, rest) = read_tlv(rest).ok_or_else(|| malformed("pubkey"))?;
        if tag != 0x04 {
            return Err(malformed("pubkey"));
        }
        let (tag, private, rest) = read_tlv(rest).ok_or_else(|| malformed("privkey"))?;
        if tag != 0x04 || !rest.is_empty() {
            return Err(malformed("privkey"));
        }
        let public = Public::unmarshall(untpm2b(public).ok_or_else(|| malformed("pubkey size"))?)
            .map_err(|e| {
            Detail::with_source("malformed public area".into(), TssError::from(e))
        })?;
        let private = Private::try_from(untpm2b(private).ok_or_else(|| malformed("privkey size"))?)
            .map_err(|e| Detail::with_source("malformed private area".into(), TssError::from(e)))?;
        Self::new(parent, public, private)
    }
}

/// `u16` size prefix, as a `TPM2B_*`.
fn tpm2b(data: &[u8]) -> Result<Vec<u8>, Detail> {
    let len = u16::try_from(data.len()).map_err(|_| Detail::new("TPM2B too large".into()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(data);
    Ok(out)
}

fn untpm2b(data: &[u8]) -> Option<&[u8]> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*len)) == rest.len()).then_some(rest)
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

/// DER TLV.
fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let bytes = strip_zeros(&bytes);
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(value);
    out
}

/// The content octets of a DER INTEGER holding the unsigned big-endian `n`.
fn der_uint(n: &[u8]) -> Vec<u8> {
    let n = strip_zeros(n);
    let mut out = Vec::with_capacity(n.len() + 1);
    if n.first().is_none_or(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(n);
    out
}

/// Splits one DER TLV (single-byte tags, definite lengths) off `input`.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    Some((tag, value, after))
}

/// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
fn ecdsa_sig_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut body = der(0x02, &der_uint(r));
    body.extend(der(0x02, &der_uint(s)));
    der(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_uint(&[0, 0, 0x12]), vec![0x12]);
        assert_eq!(der_uint(&[0x80, 1]), vec![0, 0x80, 1]);
        assert_eq!(der_uint(&[0, 0]), vec![0]);
        assert_eq!(
            ecdsa_sig_der(&[0xff], &[0x01]),
            vec![0x30, 0x07, 0x02, 0x02, 0x00, 0xff, 0x02, 0x01, 0x01]
        );
        assert_eq!(der(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn tlv_reader_rejects_truncation() {
        assert_eq!(
            read_tlv(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(read_tlv(&[0x04, 0x03, 1, 2]), None);
        assert_eq!(read_tlv(&[0x04, 0x82, 0x01]), None);
        assert_eq!(read_tlv(&[]), None);
    }

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

    #[test]
    fn oids_match_the_spki_encoding() {
        // id-ecPublicKey + prime256v1 / secp384r1 as rcgen writes them.
        let p256 = Curve::P256.spki_algorithm();
        assert_eq!(read_tlv(p256).map(|t| t.2.len()), Some(0));
        let p384 = Curve::P384.spki_algorithm();
        assert_eq!(read_tlv(p384).map(|t| t.2.len()), Some(0));
    }
}
