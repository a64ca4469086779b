//! Validation: merged file values to [`Settings`], with defaults resolved in one place.
//!
//! Every check reports the file, line and column of the offending value. Apart from
//! reading password files (unless [`Secrets::SourcesOnly`]) and looking up users and
//! groups, this is pure: the process environment comes in through [`LoadEnv`].

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::Error;
use super::file::{IdentityFile, OutputFile, Scalar};
use super::merge::Merged;
use super::names::{self, NameError};
use super::source::{At, Sources};
use super::{LoadEnv, Secrets, file_warnings};
use crate::secret::Secret;
use crate::settings::*;
use crate::template::{self, Vars};
use crate::vocab::KeyAlgorithm;

mod reload;

use crate::settings::defaults as default;

/// Keystore or truststore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Keystore,
    Truststore,
}

impl OutputKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Keystore => "keystore",
            Self::Truststore => "truststore",
        }
    }
}

/// The host certificate validity and where it was set, if it was: identity lifetimes
/// must be shorter.
struct HostCertValidity {
    value: Duration,
    at: Option<At<()>>,
}

/// A secret as validation resolved it.
struct SecretRef {
    /// Where it is.
    source: PasswordSource,
    /// Its value; `None` when the load reads no secrets ([`Secrets::SourcesOnly`]).
    value: Option<Secret>,
}

impl SecretRef {
    /// The value, or with [`Secrets::SourcesOnly`] an empty placeholder. A load that
    /// reads secrets never yields an empty one (`read_password` refuses empty files), so
    /// the placeholder cannot pass for a real PIN or SASL password.
    fn value_or_placeholder(self) -> Secret {
        self.value.unwrap_or_else(|| Secret::new(String::new()))
    }
}

/// An output path already claimed, for the duplicate check.
struct Claimed {
    normalized: PathBuf,
    at: At<()>,
    owner: String,
}

struct Validator<'a> {
    sources: &'a Sources,
    env: &'a LoadEnv,
    /// Whether secrets are read or only located.
    secrets: Secrets,
    warnings: &'a mut Vec<String>,
    claimed: Vec<Claimed>,
    /// `client-identity` references, checked once every identity is known.
    client_refs: Vec<reload::ClientIdentityRef>,
}

/// Validates the merged files into [`Settings`]. `warnings` collects what is allowed but
/// probably unintended. With [`Secrets::SourcesOnly`] no secret is read (see
/// [`super::load_sources_only`]).
pub(crate) fn validate(
    sources: &Sources,
    merged: Merged,
    env: &LoadEnv,
    secrets: Secrets,
    warnings: &mut Vec<String>,
) -> Result<Settings, Error> {
    let mut v = Validator {
        sources,
        env,
        secrets,
        warnings,
        claimed: Vec::new(),
        client_refs: Vec::new(),
    };
    let daemon = v.daemon(&merged)?;
    let host = v.host(&merged)?;
    let key = v.key(&merged)?;
    let (issuer, host_cert_validity) = v.issuer(&merged, &host)?;
    let metrics = v.metrics(&merged)?;
    let vars = Vars::new(&host);

    let mut identities = Vec::with_capacity(merged.identities.len());
    for (file, identity) in merged.identities {
        identities.push(v.identity(file, identity, &vars, &daemon, &host, &host_cert_validity)?);
    }
    v.check_client_identities(&identities)?;
    if identities.is_empty() {
        v.warnings.push(format!(
            "{}: no [[identity]] is configured; leafd will keep the host key fresh and idle",
            sources.path(0).display()
        ));
    }

    Ok(Settings {
        sources: sources.files.iter().map(|s| s.display.clone()).collect(),
        daemon,
        host,
        key,
        issuer,
        metrics,
        identities,
    })
}

/// Joins a relative path to the directory of the file it was written in; drops `.`
/// components. `..` is kept: it is resolved by the kernel, through symlinks.
fn resolve(dir: &Path, path: &str) -> PathBuf {
    dir.join(path).components().collect()
}

/// Lexical normal form, used only to detect two outputs naming the same file.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Parses a humantime duration; zero is refused.
fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("duration {s:?} must be longer than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "invalid duration {s:?} ({e}); write e.g. \"90s\", \"10m\", \"1h\" or \"7d\""
        )),
    }
}

/// Parses `"67%"` or `"66.5%"` into a share (0.67).
fn parse_percent(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid percentage {s:?}; write e.g. \"67%\"");
    let number = s.trim().strip_suffix('%').ok_or_else(bad)?.trim();
    let well_formed = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    if !well_formed {
        return Err(bad());
    }
    number.parse::<f64>().map(|p| p / 100.0).map_err(|_| bad())
}

/// Parses an octal mode string such as `"0640"`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "invalid mode {s:?}; write an octal string such as \"0640\""
        ));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("invalid mode {s:?}: {e}"))?;
    if mode > 0o777 {
        return Err(format!(
            "mode {s:?} sets setuid, setgid or sticky bits; use permission bits only (at most 0777)"
        ));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "mode {s:?} makes the file writable by every user; refused"
        ));
    }
    Ok(mode)
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn fmt_percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

impl Validator<'_> {
    fn err<T>(&self, at: &At<T>, message: impl Into<String>) -> Error {
        self.sources.invalid(at, message)
    }

    fn non_empty(&self, at: &At<String>, what: &str) -> Result<(), Error> {
        if at.value.trim().is_empty() {
            return Err(self.err(at, format!("{what} must not be empty")));
        }
        Ok(())
    }

    fn daemon(&mut self, m: &Merged) -> Result<DaemonSettings, Error> {
        let state_directory = match &m.daemon.state_directory {
            Some(at) => {
                self.non_empty(at, "state-directory")?;
                resolve(self.sources.dir(at.file), &at.value)
            }
            None => PathBuf::from(default::STATE_DIRECTORY),
        };
        let log_level = match &m.daemon.log_level {
            Some(at) => {
                self.non_empty(at, "log-level")?;
                if let Err(e) = tracing_subscriber::EnvFilter::try_new(&at.value) {
                    return Err(self.err(
                        at,
                        format!(
                            "invalid log-level {:?} ({e}); write a tracing filter such as \
                             \"info\" or \"info,leafd=debug\"",
                            at.value
                        ),
                    ));
                }
                at.value.clone()
            }
            None => default::LOG_LEVEL.to_owned(),
        };
        let testing_short_lifetimes = m
            .daemon
            .testing_short_lifetimes
            .as_ref()
            .is_some_and(|at| at.value);
        Ok(DaemonSettings {
            state_directory,
            log_level,
            testing_short_lifetimes,
        })
    }

    fn metrics(&mut self, m: &Merged) -> Result<MetricsSettings, Error> {
        let textfile = match &m.metrics.textfile {
            Some(at) => {
                self.non_empty(at, "textfile")?;
                let path = resolve(self.sources.dir(at.file), &at.value);
                if at.value.ends_with('/') || path.file_name().is_none() {
                    return Err(self.err(
                        at,
                        format!(
                            "textfile {:?} is not a file name; write e.g. \
                             \"/var/lib/prometheus/node-exporter/leafd.prom\"",
                            at.value
                        ),
                    ));
                }
                if path.extension().is_none_or(|e| e != "prom") {
                    self.warnings.push(format!(
                        "{}: the metrics textfile {} does not end in .prom; node-exporter's \
                         textfile collector reads *.prom files only",
                        self.sources.describe(at),
                        path.display()
                    ));
                }
                Some(path)
            }
            None => None,
        };
        let listen = match &m.metrics.listen {
            Some(at) => {
                self.non_empty(at, "listen")?;
                let addr: SocketAddr = at.value.parse().map_err(|_| {
                    self.err(
                        at,
                        format!(
                            "listen {:?} is not an IP address and port such as \
                             \"127.0.0.1:9477\" or \"[::1]:9477\" (leafd does not resolve names \
                             here)",
                            at.value
                        ),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(self.err(
                        at,
                        format!(
                            "listen address {addr} is not a loopback address: the metrics \
                             endpoint is unauthenticated, so leafd serves it on 127.0.0.0/8 or \
                             [::1] only (scrape it locally, or use textfile with node-exporter)"
                        ),
                    ));
                }
                if addr.port() == 0 {
                    return Err(self.err(
                        at,
                        format!("listen address {addr} needs a port, such as 9477"),
                    ));
                }
                Some(addr)
            }
            None => None,
        };
        Ok(MetricsSettings { textfile, listen })
    }

    fn optional(&self, at: &Option<At<String>>, key: &str) -> Result<Option<String>, Error> {
        match at {
            Some(at) => {
                self.non_empty(at, key)?;
                Ok(Some(at.value.clone()))
            }
            None => Ok(None),
        }
    }

    fn scalar(&self, at: &At<Scalar>, key: &str) -> Result<String, Error> {
        match &at.value {
            Scalar::Int(n) if *n < 0 => Err(self.err(at, format!("{key} must not be negative"))),
            Scalar::Int(n) => Ok(n.to_string()),
            Scalar::Str(s) if s.trim().is_empty() => {
                Err(self.err(at, format!("{key} must not be empty")))
            }
            Scalar::Str(s) => Ok(s.clone()),
        }
    }

    fn host(&mut self, m: &Merged) -> Result<HostFacts, Error> {
        let h = &m.host;
        let hostname = match &h.hostname {
            Some(at) => {
                self.non_empty(at, "hostname")?;
                at.value.clone()
            }
            None if self.env.hostname.trim().is_empty() => {
                return Err(Error::NoHostname {
                    path: self.sources.path(0).to_owned(),
                });
            }
            None => self.env.hostname.trim().to_owned(),
        };
        let fqdn = self
            .optional(&h.fqdn, "fqdn")?
            .unwrap_or_else(|| hostname.clone());
        let broker_id = match &h.broker_id {
            Some(at) => Some(self.scalar(at, "broker-id")?),
            None => None,
        };
        let mut facts = std::collections::BTreeMap::new();
        for (name, (name_at, value_at)) in &h.facts {
            if !template::is_valid_name(name) {
                return Err(self.err(
                    name_at,
                    format!("invalid fact name {name:?}; names match [a-z][a-z0-9_]*"),
                ));
            }
            if let Some((_, key)) = template::BUILTINS.iter().find(|(n, _)| n == name) {
                return Err(self.err(
                    name_at,
                    format!(
                        "fact {name:?} shadows the built-in variable {{{name}}}; set {key} in \
                         [host] instead"
                    ),
                ));
            }
            facts.insert(
                name.clone(),
                self.scalar(value_at, &format!("fact {name}"))?,
            );
        }
        Ok(HostFacts {
            hostname,
            fqdn,
            broker_id,
            cluster: self.optional(&h.cluster, "cluster")?,
            region: self.optional(&h.region, "region")?,
            zone: self.optional(&h.zone, "zone")?,
            facts,
        })
    }

    fn key(&mut self, m: &Merged) -> Result<KeySettings, Error> {
        let backend = match &m.key.backend {
            None => BackendKind::Soft,
            Some(at) => match at.value.as_str() {
                "soft" => BackendKind::Soft,
                "tpm" if !cfg!(feature = "tpm") => {
                    return Err(self.err(
                        at,
                        "this leafd was built without TPM support (cargo feature tpm); \
                         install a package built with it",
                    ));
                }
                "pkcs11" if !cfg!(feature = "pkcs11") => {
                    return Err(self.err(
                        at,
                        "this leafd was built without PKCS#11 support (cargo feature pkcs11)",
                    ));
                }
                "tpm" => BackendKind::Tpm(self.tpm(m)?),
                "pkcs11" => BackendKind::Pkcs11(self.pkcs11(m, at)?),
                other => {
                    return Err(self.err(
                        at,
                        format!(
                            "unknown key backend {other:?}; expected one of: soft, tpm, pkcs11"
                        ),
                    ));
                }
            },
        };
        let algorithm = match &m.key.algorithm {
            None => KeyAlgorithm::EcdsaP256,
            Some(at) => match KeyAlgorithm::parse(&at.value) {
                Some(a @ (KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384)) => a,
                Some(a) => {
                    return Err(self.err(
                        at,
                        format!("host key algorithm {a} is not supported; expected p256 or p384"),
                    ));
                }
                None => {
                    return Err(self.err(
                        at,
                        format!(
                            "unknown host key algorithm {:?}; expected p256 or p384",
                            at.value
                        ),
                    ));
                }
            },
        };
        Ok(KeySettings { backend, algorithm })
    }

    fn tpm(&mut self, m: &Merged) -> Result<TpmSettings, Error> {
        let tcti = match &m.key.tpm_tcti {
            Some(at) => {
                self.non_empty(at, "tcti")?;
                at.value.clone()
            }
            None => default::TPM_TCTI.to_owned(),
        };
        let parent = match &m.key.tpm_parent {
            None => None,
            Some(at) => {
                let value = match &at.value {
                    Scalar::Int(i) => u32::try_from(*i).ok(),
                    Scalar::Str(s) => s
                        .strip_prefix("0x")
                        .or_else(|| s.strip_prefix("0X"))
                        .and_then(|h| u32::from_str_radix(h, 16).ok()),
                };
                match value {
                    Some(h) if (0x8100_0000..=0x81ff_ffff).contains(&h) => Some(h),
                    _ => {
                        return Err(self.err(
                            at,
                            "parent must be a persistent handle from 0x81000000 to 0x81FFFFFF, \
                             e.g. \"0x81000001\"",
                        ));
                    }
                }
            }
        };
        Ok(TpmSettings { tcti, parent })
    }

    fn pkcs11(&mut self, m: &Merged, backend_at: &At<String>) -> Result<Pkcs11Settings, Error> {
        let k = &m.key;
        let Some(module_at) = &k.pkcs11_module else {
            return Err(self.err(
                backend_at,
                "backend \"pkcs11\" needs module in [key.pkcs11]",
            ));
        };
        self.non_empty(module_at, "module")?;
        let module = resolve(self.sources.dir(module_at.file), &module_at.value);
        let token = match (&k.pkcs11_token_label, &k.pkcs11_token_serial) {
            (Some(_), Some(s)) => {
                return Err(self.err(s, "set either token-label or token-serial, not both"));
            }
            (Some(l), None) => {
                self.non_empty(l, "token-label")?;
                Pkcs11Token::Label(l.value.clone())
            }
            (None, Some(s)) => {
                self.non_empty(s, "token-serial")?;
                Pkcs11Token::Serial(s.value.clone())
            }
            (None, None) => {
                return Err(self.err(
                    module_at,
                    "[key.pkcs11] needs token-label or token-serial (slot ids change, so leafd \
                     does not use them)",
                ));
            }
        };
        let pin = self
            .secret(
                k.pkcs11_pin_file.as_ref(),
                k.pkcs11_pin_credential.as_ref(),
                "pin",
            )?
            .ok_or_else(|| self.err(module_at, "[key.pkcs11] needs pin-file or pin-credential"))?
            .value_or_placeholder();
        Ok(Pkcs11Settings { module, token, pin })
    }

    /// A secret given as `<what>-file` (relative to its config file) or
    /// `<what>-credential` (a file in `$CREDENTIALS_DIRECTORY`), at most one of the two:
    /// where it is and, unless this load reads no secrets, its value.
    fn secret(
        &mut self,
        file_at: Option<&At<String>>,
        credential_at: Option<&At<String>>,
        what: &str,
    ) -> Result<Option<SecretRef>, Error> {
        match (file_at, credential_at) {
            (Some(_), Some(c)) => Err(self.err(
                c,
                format!("set either {what}-file or {what}-credential, not both"),
            )),
            (None, None) => Ok(None),
            (Some(p), None) => {
                self.non_empty(p, &format!("{what}-file"))?;
                let file_path = resolve(self.sources.dir(p.file), &p.value);
                // A stat, not a read: it runs in both modes (and finds nothing if the
                // file cannot be reached).
                self.warnings.extend(file_warnings(&file_path));
                let value = match self.secrets {
                    Secrets::Read => Some(self.read_password(p, &file_path)?),
                    Secrets::SourcesOnly => None,
                };
                Ok(Some(SecretRef {
                    source: PasswordSource::File(file_path),
                    value,
                }))
            }
            (None, Some(c)) => {
                let name = &c.value;
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.contains('/')
                    || name.contains('\0')
                {
                    return Err(self.err(
                        c,
                        format!("invalid credential name {name:?}; it must be a plain file name"),
                    ));
                }
                let value = match self.secrets {
                    Secrets::Read => {
                        let Some(dir) = &self.env.credentials_directory else {
                            return Err(self.err(
                                c,
                                format!(
                                    "{what}-credential {name:?} needs $CREDENTIALS_DIRECTORY, \
                                     which is not set; pass it with LoadCredential= in the unit \
                                     or use {what}-file"
                                ),
                            ));
                        };
                        Some(self.read_password(c, &dir.join(name))?)
                    }
                    Secrets::SourcesOnly => None,
                };
                Ok(Some(SecretRef {
                    source: PasswordSource::Credential(name.clone()),
                    value,
                }))
            }
        }
    }

    fn duration(&self, at: &At<String>) -> Result<Duration, Error> {
        parse_duration(&at.value).map_err(|m| self.err(at, m))
    }

    /// The issuer, and the host certificate validity with where it was set (if it was).
    fn issuer(
        &mut self,
        m: &Merged,
        host: &HostFacts,
    ) -> Result<(IssuerSettings, HostCertValidity), Error> {
        let i = &m.issuer;
        if let Some(at) = &i.kind {
            match at.value.as_str() {
                "local" => {}
                "acme" | "private-ca" => {
                    return Err(self.err(
                        at,
                        format!(
                            "issuer type {:?} is not supported yet; supported: local",
                            at.value
                        ),
                    ));
                }
                other => {
                    return Err(self.err(
                        at,
                        format!("unknown issuer type {other:?}; expected one of: local"),
                    ));
                }
            }
        }
        let host_cert_validity = match &i.host_cert_validity {
            Some(at) => self.duration(at)?,
            None => default::HOST_CERT_VALIDITY,
        };
        let root_validity = match &i.root_validity {
            Some(at) => self.duration(at)?,
            None => default::ROOT_VALIDITY,
        };
        if root_validity <= host_cert_validity {
            let message = format!(
                "root-validity ({}) must be longer than host-cert-validity ({})",
                fmt_duration(root_validity),
                fmt_duration(host_cert_validity)
            );
            let at = i.root_validity.as_ref().or(i.host_cert_validity.as_ref());
            if let Some(at) = at {
                return Err(self.err(at, message));
            }
        }
        let root_common_name = match &i.root_common_name {
            Some(at) => {
                self.non_empty(at, "root-common-name")?;
                if let Err(e) = names::check_dn_value(DnAttribute::CommonName, &at.value) {
                    return Err(self.err(at, format!("root-common-name: {}", e.message)));
                }
                at.value.clone()
            }
            None => {
                let mut cn = format!("leafd local CA {}", host.hostname);
                // Keep the default within the 64-character CN limit.
                while cn.chars().count() > 64 {
                    cn.pop();
                }
                cn
            }
        };
        let validity_at = i.host_cert_validity.as_ref().map(|at| at.with(()));
        Ok((
            IssuerSettings::Local(LocalCaSettings {
                host_cert_validity,
                root_validity,
                root_common_name,
                constrain_subjects: i.constrain_subjects.as_ref().is_none_or(|at| at.value),
            }),
            HostCertValidity {
                value: host_cert_validity,
                at: validity_at,
            },
        ))
    }

    /// An error at byte `offset` inside a string value.
    fn err_in(&self, at: &At<String>, offset: usize, message: impl Into<String>) -> Error {
        self.sources.invalid_in(at, offset, message)
    }

    fn subject(&self, at: &At<String>, vars: &Vars) -> Result<Vec<(DnAttribute, String)>, Error> {
        let parts = names::parse_dn(&at.value)
            .map_err(|NameError { offset, message }| self.err_in(at, offset, message))?;
        let mut subject = Vec::with_capacity(parts.len());
        let mut seen = Vec::with_capacity(parts.len());
        for part in parts {
            // One attribute of each type: the certificate and its subject constraint carry
            // one, and Kafka's principal would differ from the configured subject otherwise.
            if seen.contains(&part.attribute) {
                return Err(self.err_in(
                    at,
                    part.attribute_offset,
                    format!("subject has more than one {}", part.attribute.keyword()),
                ));
            }
            seen.push(part.attribute);
            let value = template::expand(&part.value, vars)
                .map_err(|e| self.err_in(at, part.offset_of(e.offset()), e.to_string()))?;
            if let Err(e) = names::check_dn_value(part.attribute, &value) {
                return Err(self.err_in(at, part.offset_of(0), e.message));
            }
            subject.push((part.attribute, value));
        }
        // Written as Kafka prints it (CN first); stored in DER order (most general first).
        subject.reverse();
        Ok(subject)
    }

    fn sans(&self, entries: &[At<String>], vars: &Vars) -> Result<Vec<San>, Error> {
        let mut sans: Vec<San> = Vec::with_capacity(entries.len());
        for at in entries {
            let (kind, n) = names::san_prefix(&at.value);
            let value = template::expand(&at.value[n..], vars)
                .map_err(|e| self.err_in(at, n + e.offset(), e.to_string()))?;
            let san = names::parse_san(kind, &value).map_err(|e| {
                if value == at.value[n..] {
                    self.err_in(at, n + e.offset, format!("invalid SAN: {}", e.message))
                } else {
                    // The problem is in the expansion: point at the template, show both.
                    let message =
                        format!("invalid SAN: {} (expanded from {:?})", e.message, at.value);
                    self.err_in(at, n, message)
                }
            })?;
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        Ok(sans)
    }

    fn identity(
        &mut self,
        file: usize,
        identity: IdentityFile,
        vars: &Vars,
        daemon: &DaemonSettings,
        host: &HostFacts,
        host_cert_validity: &HostCertValidity,
    ) -> Result<Identity, Error> {
        let at = |s: toml::Spanned<String>| At::new(file, s);
        let name_at = at(identity.name);
        let name = name_at.value.clone();
        if !is_valid_identity_name(&name) {
            return Err(self.err(
                &name_at,
                format!("invalid identity name {name:?}; names match [a-z0-9][a-z0-9._-]{{0,62}}"),
            ));
        }

        let subject_at = identity.subject.map(at);
        let subject = match &subject_at {
            Some(s) => self.subject(s, vars)?,
            None => Vec::new(),
        };
        let san_ats: Option<Vec<At<String>>> =
            identity.sans.map(|v| v.into_iter().map(at).collect());
        let sans = match &san_ats {
            Some(entries) => self.sans(entries, vars)?,
            None => Vec::new(),
        };
        let has_cn = subject.iter().any(|(a, _)| *a == DnAttribute::CommonName);
        if sans.is_empty() && !has_cn {
            let message =
                format!("identity {name:?} has no SAN and no CN; set sans or a CN in subject");
            let pos = subject_at
                .as_ref()
                .map(|a| a.with(()))
                .or_else(|| san_ats.as_ref().and_then(|v| v.first().map(|a| a.with(()))))
                .unwrap_or_else(|| name_at.with(()));
            return Err(self.err(&pos, message));
        }
        // The host issuing certificate must be able to permit what validators check.
        if let Err(e) = crate::x509::cn_name_constraint(&subject, &sans)
            && let Some(pos) = &subject_at
        {
            return Err(self.err(
                pos,
                format!(
                    "subject of identity {name:?} cannot be expressed in the host issuing \
                     certificate's name constraints: {e}"
                ),
            ));
        }

        let key_type = match identity.key_type.map(at) {
            None => KeyAlgorithm::EcdsaP256,
            Some(a) => KeyAlgorithm::parse(&a.value).ok_or_else(|| {
                self.err(
                    &a,
                    format!(
                        "unknown key-type {:?}; expected one of: p256, p384, rsa2048, rsa3072",
                        a.value
                    ),
                )
            })?,
        };

        let ekus = match identity.eku {
            None => vec![Eku::ServerAuth, Eku::ClientAuth],
            Some(list) => {
                let list_at = At::new(file, list);
                if list_at.value.is_empty() {
                    return Err(self.err(
                        &list_at,
                        "eku must list at least one of: server-auth, client-auth",
                    ));
                }
                let mut ekus = Vec::new();
                for e in &list_at.value {
                    let eku = match e.get_ref().as_str() {
                        "server-auth" => Eku::ServerAuth,
                        "client-auth" => Eku::ClientAuth,
                        other => {
                            return Err(self.err(
                                &At::new(file, e.clone()),
                                format!(
                                    "unknown eku {other:?}; expected one of: server-auth, \
                                     client-auth"
                                ),
                            ));
                        }
                    };
                    if !ekus.contains(&eku) {
                        ekus.push(eku);
                    }
                }
                ekus
            }
        };

        let lifetime_at = identity.lifetime.map(at);
        let lifetime = match &lifetime_at {
            Some(a) => self.duration(a)?,
            None => default::LIFETIME,
        };
        let min = if daemon.testing_short_lifetimes {
            default::MIN_LIFETIME_TESTING
        } else {
            default::MIN_LIFETIME
        };
        if lifetime < min {
            if let Some(a) = &lifetime_at {
                let hint = if daemon.testing_short_lifetimes {
                    ""
                } else {
                    " (daemon.testing-short-lifetimes lowers it to 1s, for tests only)"
                };
                return Err(self.err(
                    a,
                    format!(
                        "lifetime {} is below the minimum of {}{hint}",
                        fmt_duration(lifetime),
                        fmt_duration(min)
                    ),
                ));
            }
        }
        let HostCertValidity {
            value: validity,
            at: validity_at,
        } = host_cert_validity;
        if lifetime >= *validity {
            let message = format!(
                "lifetime {} of identity {name:?} must be shorter than the issuer's \
                 host-cert-validity {}",
                fmt_duration(lifetime),
                fmt_duration(*validity)
            );
            let pos = lifetime_at
                .as_ref()
                .map(|a| a.with(()))
                .or_else(|| validity_at.clone())
                .unwrap_or_else(|| name_at.with(()));
            return Err(self.err(&pos, message));
        }

        let renew_at_at = identity.renew_at.map(at);
        let renew_at = match &renew_at_at {
            Some(a) => {
                let p = parse_percent(&a.value).map_err(|m| self.err(a, m))?;
                if !(0.01..=0.99).contains(&p) {
                    return Err(self.err(
                        a,
                        format!("renew-at {:?} is out of range; allowed: 1% to 99%", a.value),
                    ));
                }
                p
            }
            None => default::RENEW_AT,
        };
        let jitter_at = identity.renew_jitter.map(at);
        let jitter = match &jitter_at {
            Some(a) => {
                let p = parse_percent(&a.value).map_err(|m| self.err(a, m))?;
                if !(0.0..=0.49).contains(&p) {
                    return Err(self.err(
                        a,
                        format!(
                            "renew-jitter {:?} is out of range; allowed: 0% to 49%",
                            a.value
                        ),
                    ));
                }
                p
            }
            None => default::RENEW_JITTER,
        };
        if renew_at + jitter >= 1.0 || renew_at - jitter <= 0.0 {
            let message = format!(
                "renew-at {} with renew-jitter {} could renew at or beyond the ends of the \
                 lifetime; keep renew-at minus jitter above 0% and plus jitter below 100%",
                fmt_percent(renew_at),
                fmt_percent(jitter)
            );
            let pos = jitter_at
                .as_ref()
                .or(renew_at_at.as_ref())
                .map_or_else(|| name_at.with(()), |a| a.with(()));
            return Err(self.err(&pos, message));
        }
        let min_delay = if daemon.testing_short_lifetimes {
            default::MIN_DELAY_TESTING
        } else {
            default::MIN_DELAY
        };

        let mut keystores = Vec::with_capacity(identity.keystore.len());
        for o in identity.keystore {
            keystores.push(self.output(file, o, OutputKind::Keystore, &name)?);
        }
        let mut truststores = Vec::with_capacity(identity.truststore.len());
        for o in identity.truststore {
            truststores.push(self.output(file, o, OutputKind::Truststore, &name)?);
        }
        let reload = self.reload(
            file,
            identity.reload,
            identity.verify,
            identity.reload_retry_for,
            vars,
            host.broker_id.as_deref(),
        )?;
        if reload
            .actions
            .iter()
            .any(|a| matches!(a, ReloadAction::Kafka(k) if k.mode == KafkaReloadMode::Alternate))
        {
            // The sibling paths the stores alternate with are outputs too.
            for o in keystores.iter().chain(&truststores) {
                let alt = crate::settings::alternate_path(&o.path);
                let normalized = normalize(&alt);
                if let Some(c) = self.claimed.iter().find(|c| c.normalized == normalized) {
                    return Err(self.err(
                        &name_at,
                        format!(
                            "{} (the alternate path of {} for the kafka reload) is already \
                             written by {} (at {})",
                            alt.display(),
                            o.path.display(),
                            c.owner,
                            self.sources.describe(&c.at)
                        ),
                    ));
                }
                self.claimed.push(Claimed {
                    normalized,
                    at: name_at.with(()),
                    owner: format!("identity {name:?} (alternate path)"),
                });
            }
        }

        Ok(Identity {
            name,
            subject,
            sans,
            key_type,
            ekus,
            lifetime,
            renewal: RenewalSettings {
                at: renew_at,
                jitter,
                min_delay,
            },
            allow_dn_change: identity.allow_dn_change.unwrap_or(false),
            allow_san_change: identity.allow_san_change.unwrap_or(false),
            keystores,
            truststores,
            reload,
        })
    }

    fn output(
        &mut self,
        file: usize,
        o: OutputFile,
        kind: OutputKind,
        identity: &str,
    ) -> Result<Output, Error> {
        let at = |s: toml::Spanned<String>| At::new(file, s);
        let format_at = at(o.format);
        let format = match format_at.value.as_str() {
            "pkcs12" => StoreFormat::Pkcs12,
            "jks" => StoreFormat::Jks,
            "pem" => StoreFormat::Pem,
            other => {
                return Err(self.err(
                    &format_at,
                    format!(
                        "unknown {} format {other:?}; expected one of: pkcs12, jks, pem",
                        kind.as_str()
                    ),
                ));
            }
        };

        let path_at = at(o.path);
        self.non_empty(&path_at, "path")?;
        let path = resolve(self.sources.dir(file), &path_at.value);
        let normalized = normalize(&path);
        if let Some(c) = self.claimed.iter().find(|c| c.normalized == normalized) {
            return Err(self.err(
                &path_at,
                format!(
                    "{} is already written by {} (at {}); every output needs its own path",
                    path.display(),
                    c.owner,
                    self.sources.describe(&c.at)
                ),
            ));
        }
        self.claimed.push(Claimed {
            normalized,
            at: path_at.with(()),
            owner: format!("identity {identity:?} {}", kind.as_str()),
        });

        let password_file = o.password_file.map(at);
        let password_credential = o.password_credential.map(at);
        let password = match (format, &password_file, &password_credential) {
            (StoreFormat::Pem, Some(p), None) | (StoreFormat::Pem, None, Some(p)) => {
                return Err(self.err(
                    p,
                    "pem outputs take no password; remove password-file and password-credential",
                ));
            }
            (StoreFormat::Pem, None, None) => None,
            (_, None, None) => {
                return Err(self.err(
                    &format_at,
                    format!(
                        "{} {}s need a password; set password-file or password-credential",
                        format_at.value,
                        kind.as_str()
                    ),
                ));
            }
            _ => self.secret(
                password_file.as_ref(),
                password_credential.as_ref(),
                "password",
            )?,
        };
        let (password, password_source) = match password {
            Some(SecretRef { source, value }) => (value, Some(source)),
            None => (None, None),
        };

        let alias = match o.alias.map(at) {
            Some(a) if format == StoreFormat::Pem => {
                return Err(self.err(&a, "pem outputs have no aliases; remove alias"));
            }
            Some(a) => {
                if a.value.is_empty() || a.value.chars().any(char::is_control) {
                    return Err(
                        self.err(&a, "alias must be non-empty and free of control characters")
                    );
                }
                a.value
            }
            None => match kind {
                OutputKind::Keystore => identity.to_owned(),
                OutputKind::Truststore => default::TRUSTSTORE_ALIAS.to_owned(),
            },
        };

        let owner = match o.owner {
            Some(s) => Some(self.user(&At::new(file, s))?),
            None => None,
        };
        let group = match o.group {
            Some(s) => Some(self.group(&At::new(file, s))?),
            None => None,
        };
        let mode = match o.mode.map(at) {
            Some(m) => parse_mode(&m.value).map_err(|msg| self.err(&m, msg))?,
            None => default::MODE,
        };
        if format == StoreFormat::Pem && kind == OutputKind::Keystore && mode & 0o004 != 0 {
            self.warnings.push(format!(
                "{}: the pem keystore {} holds an unencrypted private key and mode {mode:04o} \
                 lets every user read it",
                self.sources.describe(&path_at),
                path.display()
            ));
        }

        Ok(Output {
            format,
            path,
            password,
            password_source,
            alias,
            owner,
            group,
            mode,
        })
    }

    /// Reads a password file: trailing newlines stripped, empty refused. Errors name the
    /// file, never its contents.
    fn read_password(&self, at: &At<String>, path: &Path) -> Result<Secret, Error> {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| {
            let (cfg, line, column) = self.sources.locate(at.file, at.span.start);
            Error::PasswordFile {
                path: cfg,
                line,
                column,
                file: path.to_owned(),
                source,
            }
        })?);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(self.err(
                at,
                format!("password file {} is not valid UTF-8", path.display()),
            ));
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Err(self.err(at, format!("password file {} is empty", path.display())));
        }
        Ok(Secret::new(text.to_owned()))
    }

    fn id_or_name(&self, at: &At<Scalar>, what: &str) -> Result<Result<u32, String>, Error> {
        match &at.value {
            Scalar::Int(n) => match u32::try_from(*n) {
                Ok(id) if id != u32::MAX => Ok(Ok(id)),
                _ => Err(self.err(at, format!("{what} id {n} is out of range"))),
            },
            Scalar::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<u32>() {
                    Ok(id) if id != u32::MAX => Ok(Ok(id)),
                    _ => Err(self.err(at, format!("{what} id {s} is out of range"))),
                }
            }
            Scalar::Str(s) if s.is_empty() => {
                Err(self.err(at, format!("{what} must not be empty")))
            }
            Scalar::Str(s) => Ok(Err(s.clone())),
        }
    }

    fn user(&self, at: &At<Scalar>) -> Result<u32, Error> {
        match self.id_or_name(at, "user")? {
            Ok(uid) => Ok(uid),
            Err(name) => match nix::unistd::User::from_name(&name) {
                Ok(Some(user)) => Ok(user.uid.as_raw()),
                Ok(None) => Err(self.err(at, format!("unknown user {name:?}"))),
                Err(e) => Err(self.err(at, format!("could not look up user {name:?}: {e}"))),
            },
        }
    }

    fn group(&self, at: &At<Scalar>) -> Result<u32, Error> {
        match self.id_or_name(at, "group")? {
            Ok(gid) => Ok(gid),
            Err(name) => match nix::unistd::Group::from_name(&name) {
                Ok(Some(group)) => Ok(group.gid.as_raw()),
                Ok(None) => Err(self.err(at, format!("unknown group {name:?}"))),
                Err(e) => Err(self.err(at, format!("could not look up group {name:?}: {e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents() {
        assert_eq!(parse_percent("67%").unwrap(), 0.67);
        assert_eq!(parse_percent(" 5 % ").unwrap(), 0.05);
        assert_eq!(parse_percent("66.5%").unwrap(), 0.665);
        for bad in [
            "67", "%", "-5%", "1e2%", ".5%", "5.%", "1.2.3%", "NaN%", "inf%",
        ] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(
            parse_mode("0666")
                .unwrap_err()
                .contains("writable by every user")
        );
        assert!(parse_mode("4755").unwrap_err().contains("setuid"));
        for bad in ["", "0x1a", "0800", "rw-r-----", "00640"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn paths() {
        let dir = Path::new("/etc/leafd");
        assert_eq!(resolve(dir, "/abs/x"), PathBuf::from("/abs/x"));
        assert_eq!(resolve(dir, "./x"), PathBuf::from("/etc/leafd/x"));
        assert_eq!(
            resolve(dir, "../../t/x"),
            PathBuf::from("/etc/leafd/../../t/x")
        );
        assert_eq!(
            normalize(Path::new("/etc/leafd/../../t/x")),
            PathBuf::from("/t/x")
        );
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn percent_display() {
        assert_eq!(fmt_percent(0.05), "5%");
        assert_eq!(fmt_percent(2.0 / 3.0), "66.67%");
    }
}
