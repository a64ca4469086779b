//! Software key backend: PKCS#8 files (0600) in a directory. For development and the
//! quickstart; the keys are exportable by anyone who can read the state directory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData, SigningKey};
use zeroize::Zeroizing;

use super::{Error, KeyAlgorithm, KeyBackend, KeyInfo, KeyRef, KeySpec, check_label};

/// Generates a software key pair: PKCS#8 DER plus a ready-to-sign rcgen key.
pub fn generate_keypair(algorithm: KeyAlgorithm) -> Result<(Zeroizing<Vec<u8>>, KeyPair), String> {
    let der = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let kp = KeyPair::generate_for(algorithm.rcgen_alg()).map_err(|e| e.to_string())?;
            return Ok((Zeroizing::new(kp.serialize_der()), kp));
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
            use rsa::pkcs8::EncodePrivateKey;
            let bits = if algorithm == KeyAlgorithm::Rsa2048 {
                2048
            } else {
                3072
            };
            let key =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|e| e.to_string())?;
            let doc = key.to_pkcs8_der().map_err(|e| e.to_string())?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
    };
    let kp = keypair_from_pkcs8(&der, algorithm)?;
    Ok((der, kp))
}

/// Loads a PKCS#8 DER key of the given algorithm.
pub fn keypair_from_pkcs8(der: &[u8], algorithm: KeyAlgorithm) -> Result<KeyPair, String> {
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, algorithm.rcgen_alg()).map_err(|e| e.to_string())
}

/// Keys as PKCS#8 PEM files named `<label>.key` in one directory.
pub struct SoftBackend {
    dir: PathBuf,
    loaded: HashMap<String, (KeyAlgorithm, KeyPair)>,
}

impl SoftBackend {
    /// Opens (creating with mode 0700 if needed) the key directory.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        super::create_key_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            loaded: HashMap::new(),
        })
    }

    fn path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }

    fn load(&mut self, label: &str) -> Result<Option<&(KeyAlgorithm, KeyPair)>, Error> {
        check_label(label)?;
        if !self.loaded.contains_key(label) {
            let path = self.path(label);
            let text = match fs::read_to_string(&path) {
                Ok(t) => Zeroizing::new(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(load_err(label, &path, e)),
            };
            let parsed = pem::parse(text.as_bytes()).map_err(|e| load_err(label, &path, e))?;
            let algorithm = parsed
                .headers()
                .get("Leafd-Algorithm")
                .and_then(KeyAlgorithm::parse)
                .ok_or_else(|| {
                    load_err(label, &path, "missing or unknown Leafd-Algorithm header")
                })?;
            let der = Zeroizing::new(parsed.into_contents());
            let kp = keypair_from_pkcs8(&der, algorithm).map_err(|e| load_err(label, &path, e))?;
            self.loaded.insert(label.to_owned(), (algorithm, kp));
        }
        Ok(self.loaded.get(label))
    }

    fn keypair(&mut self, key: &KeyRef) -> Result<&KeyPair, Error> {
        match self.load(&key.label)? {
            Some((_, kp)) => Ok(kp),
            None => Err(Error::NotFound(key.label.clone())),
        }
    }
}

fn load_err(
    label: &str,
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::load(label, path, e)
}

impl KeyBackend for SoftBackend {
    fn name(&self) -> &'static str {
        "soft"
    }

    fn generate(&mut self, spec: &KeySpec) -> Result<KeyRef, Error> {
        check_label(&spec.label)?;
        let (der, kp) = generate_keypair(spec.algorithm).map_err(|e| Error::Generate {
            label: spec.label.clone(),
            source: e.into(),
        })?;
        let mut block = pem::Pem::new("PRIVATE KEY", der.to_vec());
        block
            .headers_mut()
            .add("Leafd-Algorithm", spec.algorithm.as_str())
            .map_err(|e| Error::Generate {
                label: spec.label.clone(),
                source: e.to_string().into(),
            })?;
        let text = Zeroizing::new(pem::encode(&block));
        drop(block);
        super::write_new_key_file(&self.path(&spec.label), &spec.label, text.as_bytes())?;
        self.loaded.insert(spec.label.clone(), (spec.algorithm, kp));
        Ok(KeyRef {
            label: spec.label.clone(),
            algorithm: spec.algorithm,
        })
    }

    fn open(&mut self, label: &str) -> Result<Option<KeyRef>, Error> {
        Ok(self.load(label)?.map(|(algorithm, _)| KeyRef {
            label: label.to_owned(),
            algorithm: *algorithm,
        }))
    }

    fn public_key(&mut self, key: &KeyRef) -> Result<Vec<u8>, Error> {
        Ok(self.keypair(key)?.subject_public_key_info())
    }

    fn sign(&mut self, key: &KeyRef, msg: &[u8]) -> Result<Vec<u8>, Error> {
        self.keypair(key)?
            .sign(msg)
            .map_err(|_| Error::Sign(key.label.clone()))
    }

    fn destroy(&mut self, key: &KeyRef) -> Result<(), Error> {
        check_label(&key.label)?;
        self.loaded.remove(&key.label);
        match fs::remove_file(self.path(&key.label)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(key.label.clone()))
            }
            Err(source) => Err(Error::Destroy {
                label: key.label.clone(),
                source,
            }),
        }
    }

    fn info(&mut self, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.keypair(key)?;
        Ok(KeyInfo {
            backend: "soft".into(),
            algorithm: key.algorithm,
            non_exportable: false,
            facts: vec![("file".into(), self.path(&key.label).display().to_string())],
        })
    }
}
