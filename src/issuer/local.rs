//! The embedded local CA: a root kept in the state directory certifies the host key.
//! For the quickstart and single-host setups; fleets use a real CA.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{Issuer as RcIssuer, KeyPair};
use zeroize::Zeroizing;

use super::{Error, HostCertRequest, IssuedChain};
use crate::atomic::{FileSpec, write_atomic};
use crate::keys::soft::{generate_keypair, keypair_from_pkcs8};
use crate::settings::LocalCaSettings;
use crate::vocab::KeyAlgorithm;
use crate::x509;

/// The local root and its key.
pub struct LocalCa {
    settings: LocalCaSettings,
    root_der: Vec<u8>,
    root_key: KeyPair,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn io_err(
    action: &'static str,
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::LocalCaIo {
        action,
        path: path.display().to_string(),
        source: e.into(),
    }
}

impl LocalCa {
    /// Loads the root from `dir` (`root.crt`, `root.key`), creating a new one if there is none
    /// or the old one expires within two host-certificate lifetimes.
    pub fn open_or_create(
        dir: &Path,
        settings: &LocalCaSettings,
        now: SystemTime,
    ) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let (crt, key) = (dir.join("root.crt"), dir.join("root.key"));
        if let Some(ca) = Self::load(&crt, &key, settings)? {
            let s = x509::summarize(&ca.root_der, "local root")?;
            if s.not_after > now + settings.host_cert_validity * 2 {
                return Ok(ca);
            }
        }
        let (der, kp) = generate_keypair(KeyAlgorithm::EcdsaP256)
            .map_err(|e| io_err("generate key for", &key, e))?;
        let params = x509::root_params(
            &settings.root_common_name,
            now,
            settings.root_validity,
            rand::random(),
        );
        let cert = params
            .self_signed(&kp)
            .map_err(|source| x509::Error::Build {
                what: "local root",
                source,
            })?;
        let key_pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())));
        let private = FileSpec {
            mode: 0o600,
            owner: None,
            group: None,
        };
        write_atomic(&key, key_pem.as_bytes(), &private).map_err(|e| io_err("write", &key, e))?;
        write_atomic(
            &crt,
            cert.pem().as_bytes(),
            &FileSpec {
                mode: 0o644,
                ..private
            },
        )
        .map_err(|e| io_err("write", &crt, e))?;
        Ok(Self {
            settings: settings.clone(),
            root_der: cert.der().to_vec(),
            root_key: kp,
        })
    }

    fn load(
        crt: &PathBuf,
        key: &PathBuf,
        settings: &LocalCaSettings,
    ) -> Result<Option<Self>, Error> {
        let (Ok(crt_pem), Ok(key_pem)) = (fs::read(crt), fs::read(key).map(Zeroizing::new)) else {
            return Ok(None);
        };
        let root = pem::parse(&crt_pem).map_err(|e| io_err("parse", crt, e))?;
        let k = pem::parse(&*key_pem).map_err(|e| io_err("parse", key, e))?;
        let der = Zeroizing::new(k.into_contents());
        let root_key = keypair_from_pkcs8(&der, KeyAlgorithm::EcdsaP256)
            .map_err(|e| io_err("parse", key, e))?;
        Ok(Some(Self {
            settings: settings.clone(),
            root_der: root.into_contents(),
            root_key,
        }))
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Issues a host issuing certificate.
    pub fn issue(&self, req: &HostCertRequest, now: SystemTime) -> Result<IssuedChain, Error> {
        // The names and subjects the host asked for; with no names the certificate permits
        // no usable name at all (see `x509::permitted_subtrees`).
        let issuer = RcIssuer::from_ca_cert_der(&self.root_der.as_slice().into(), &self.root_key)
            .map_err(|source| x509::Error::Build {
            what: "local root issuer",
            source,
        })?;
        let public = x509::SpkiPublicKey::new(&req.spki_der, req.algorithm)?;
        let cn = format!("leafd host issuing CA {}", req.hostname);
        let permitted = x509::Permitted {
            names: req.names.clone(),
            subjects: req.subjects.clone(),
        };
        let params = x509::host_issuing_params(
            &cn,
            &permitted,
            now,
            self.settings.host_cert_validity,
            rand::random(),
        )?;
        let cert = params
            .signed_by(&public, &issuer)
            .map_err(|source| x509::Error::Build {
                what: "host issuing certificate",
                source,
            })?;
        Ok(IssuedChain {
            chain: vec![cert.der().to_vec()],
            roots: vec![self.root_der.clone()],
        })
    }
}
