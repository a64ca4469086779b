//! Opening the configured host key backend: the one place that maps `[key]` settings to a
//! backend implementation.

use std::path::Path;

use crate::keys::{Error, KeyBackend, soft};
use crate::settings::{BackendKind, KeySettings};

/// Builds the configured backend. Call it on the key thread (see
/// [`crate::keys::worker::KeyService`]): hardware contexts are not `Send`.
pub fn open(settings: &KeySettings, state_directory: &Path) -> Result<Box<dyn KeyBackend>, Error> {
    match &settings.backend {
        BackendKind::Soft => Ok(Box::new(soft::SoftBackend::open(
            &state_directory.join("keys"),
        )?)),
        #[cfg(feature = "tpm")]
        BackendKind::Tpm(t) => {
            use crate::keys::tpm;
            Ok(Box::new(tpm::TpmBackend::open(&tpm::TpmConfig {
                tcti: t.tcti.clone(),
                key_dir: state_directory.join("tpm"),
                parent: t.parent,
            })?))
        }
        #[cfg(feature = "pkcs11")]
        BackendKind::Pkcs11(p) => {
            use crate::keys::pkcs11;
            use crate::settings::Pkcs11Token;
            Ok(Box::new(pkcs11::Pkcs11Backend::open(
                &pkcs11::Pkcs11Config {
                    module: p.module.clone(),
                    token: match &p.token {
                        Pkcs11Token::Label(l) => pkcs11::TokenSelector::Label(l.clone()),
                        Pkcs11Token::Serial(s) => pkcs11::TokenSelector::Serial(s.clone()),
                    },
                    pin: p.pin.clone(),
                },
            )?))
        }
        // Config validation refuses backends this build lacks.
        #[allow(unreachable_patterns)]
        other => Err(Error::Unavailable {
            backend: other.name(),
            what: format!("support for the {} backend was not built in", other.name()),
            source: "missing cargo feature".into(),
        }),
    }
}
