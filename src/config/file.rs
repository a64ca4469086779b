//! File structs: what one config file may contain, parsed typed and on its own.
//!
//! Every value that validation may complain about is a `Spanned` so that errors can point
//! at it. Enumerated values are plain strings here and checked in `validate`, which gives
//! better messages than serde's ("not supported yet" against "unknown").

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

/// One config file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub daemon: Option<DaemonFile>,
    pub host: Option<HostFile>,
    pub key: Option<KeyFile>,
    pub issuer: Option<IssuerFile>,
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub identity: Vec<IdentityFile>,
}

/// `[daemon]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct DaemonFile {
    pub state_directory: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
    pub testing_short_lifetimes: Option<Spanned<bool>>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct MetricsFile {
    pub textfile: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
}

/// `[host]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct HostFile {
    pub hostname: Option<Spanned<String>>,
    pub fqdn: Option<Spanned<String>>,
    pub broker_id: Option<Spanned<Scalar>>,
    pub cluster: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub zone: Option<Spanned<String>>,
    pub facts: Option<BTreeMap<Spanned<String>, Spanned<Scalar>>>,
}

/// `[key]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub backend: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
    pub tpm: Option<TpmFile>,
    pub pkcs11: Option<Pkcs11File>,
}

/// `[key.tpm]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct TpmFile {
    pub tcti: Option<Spanned<String>>,
    pub parent: Option<Spanned<Scalar>>,
}

/// `[key.pkcs11]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Pkcs11File {
    pub module: Option<Spanned<String>>,
    pub token_label: Option<Spanned<String>>,
    pub token_serial: Option<Spanned<String>>,
    pub pin_file: Option<Spanned<String>>,
    pub pin_credential: Option<Spanned<String>>,
}

/// `[issuer]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct IssuerFile {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub host_cert_validity: Option<Spanned<String>>,
    pub root_validity: Option<Spanned<String>>,
    pub root_common_name: Option<Spanned<String>>,
    pub constrain_subjects: Option<Spanned<bool>>,
}

/// `[[identity]]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct IdentityFile {
    pub name: Spanned<String>,
    pub subject: Option<Spanned<String>>,
    pub sans: Option<Vec<Spanned<String>>>,
    pub key_type: Option<Spanned<String>>,
    pub eku: Option<Spanned<Vec<Spanned<String>>>>,
    pub lifetime: Option<Spanned<String>>,
    pub renew_at: Option<Spanned<String>>,
    pub renew_jitter: Option<Spanned<String>>,
    pub allow_dn_change: Option<bool>,
    pub allow_san_change: Option<bool>,
    #[serde(default)]
    pub keystore: Vec<OutputFile>,
    #[serde(default)]
    pub truststore: Vec<OutputFile>,
    #[serde(default)]
    pub reload: Vec<ReloadFile>,
    pub verify: Option<VerifyFile>,
    pub reload_retry_for: Option<Spanned<String>>,
}

/// `[[identity.reload]]`: one table for every action type; validation checks which keys
/// each type takes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ReloadFile {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    // kafka
    pub bootstrap: Option<Spanned<String>>,
    pub broker_id: Option<Spanned<Scalar>>,
    pub listener: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub security: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub client_identity: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub sasl_mechanism: Option<Spanned<String>>,
    pub sasl_username: Option<Spanned<String>>,
    pub sasl_password_file: Option<Spanned<String>>,
    pub sasl_password_credential: Option<Spanned<String>>,
    // systemd, signal
    pub unit: Option<Spanned<String>>,
    pub action: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
    pub signal: Option<Spanned<String>>,
    // exec
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    // kafka, exec
    pub timeout: Option<Spanned<String>>,
}

/// `[identity.verify]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct VerifyFile {
    pub addresses: Spanned<Vec<Spanned<String>>>,
    pub server_name: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

/// `[[identity.keystore]]` and `[[identity.truststore]]`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct OutputFile {
    pub format: Spanned<String>,
    pub path: Spanned<String>,
    pub password_file: Option<Spanned<String>>,
    pub password_credential: Option<Spanned<String>>,
    pub alias: Option<Spanned<String>>,
    pub owner: Option<Spanned<Scalar>>,
    pub group: Option<Spanned<Scalar>>,
    pub mode: Option<Spanned<String>>,
}

/// A value written as a string or an integer (`broker-id = 1` or `broker-id = "b1"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}
