//! `[[identity.reload]]` and `[identity.verify]`: broker reload actions and the
//! served-certificate check.

use std::net::SocketAddr;

use nix::sys::signal::Signal;
use std::time::Duration;

use super::{Validator, resolve};
use crate::config::Error;
use crate::config::file::{ReloadFile, Scalar, VerifyFile};
use crate::config::source::At;
use crate::settings::*;
use crate::template::{self, Vars};

use crate::settings::defaults::{
    EXEC_TIMEOUT, KAFKA_TIMEOUT, RELOAD_RETRY_FOR as RETRY_FOR, VERIFY_TIMEOUT,
};

/// Signals a reload action may send: the ones daemons use for "reload" or "rotate logs".
const SIGNALS: &[(&str, Signal)] = &[
    ("HUP", Signal::SIGHUP),
    ("USR1", Signal::SIGUSR1),
    ("USR2", Signal::SIGUSR2),
    ("TERM", Signal::SIGTERM),
    ("INT", Signal::SIGINT),
];

/// Keys each action type takes (besides `type`).
fn allowed(kind: &str) -> &'static [&'static str] {
    match kind {
        "kafka" => &[
            "bootstrap",
            "broker-id",
            "listener",
            "mode",
            "security",
            "server-name",
            "client-identity",
            "ca-file",
            "sasl-mechanism",
            "sasl-username",
            "sasl-password-file",
            "sasl-password-credential",
            "timeout",
        ],
        "systemd" => &["unit", "action"],
        "signal" => &["unit", "pid-file", "signal"],
        "exec" => &["command", "timeout"],
        _ => &[],
    }
}

/// The keys set in `r`, with their position, for the "does not take" check.
fn present(r: &ReloadFile, file: usize) -> Vec<(&'static str, At<()>)> {
    let mut out = Vec::new();
    macro_rules! key {
        ($field:ident, $name:literal) => {
            if let Some(v) = &r.$field {
                out.push(($name, At::new(file, v.clone()).with(())));
            }
        };
    }
    key!(bootstrap, "bootstrap");
    key!(broker_id, "broker-id");
    key!(listener, "listener");
    key!(mode, "mode");
    key!(security, "security");
    key!(server_name, "server-name");
    key!(client_identity, "client-identity");
    key!(ca_file, "ca-file");
    key!(sasl_mechanism, "sasl-mechanism");
    key!(sasl_username, "sasl-username");
    key!(sasl_password_file, "sasl-password-file");
    key!(sasl_password_credential, "sasl-password-credential");
    key!(unit, "unit");
    key!(action, "action");
    key!(pid_file, "pid-file");
    key!(signal, "signal");
    key!(command, "command");
    key!(timeout, "timeout");
    out
}

/// A `client-identity` reference, checked once every identity is known.
pub(super) struct ClientIdentityRef {
    pub at: At<String>,
}

impl Validator<'_> {
    pub(super) fn reload(
        &mut self,
        file: usize,
        actions: Vec<ReloadFile>,
        verify: Option<VerifyFile>,
        retry_for: Option<toml::Spanned<String>>,
        vars: &Vars,
        host_broker_id: Option<&str>,
    ) -> Result<ReloadSettings, Error> {
        let mut out = Vec::with_capacity(actions.len());
        for r in actions {
            out.push(self.action(file, r, vars, host_broker_id)?);
        }
        let verify = match verify {
            Some(v) => Some(self.verify(file, v, vars)?),
            None => None,
        };
        let retry_for = match retry_for.map(|s| At::new(file, s)) {
            Some(a) => self.positive_duration(&a, "reload-retry-for")?,
            None => RETRY_FOR,
        };
        Ok(ReloadSettings {
            actions: out,
            verify,
            retry_for,
        })
    }

    fn positive_duration(&self, at: &At<String>, key: &str) -> Result<Duration, Error> {
        let d = self.duration(at)?;
        if d.is_zero() {
            return Err(self.err(at, format!("{key} must be longer than 0s")));
        }
        Ok(d)
    }

    fn expanded(&self, at: &At<String>, key: &str, vars: &Vars) -> Result<String, Error> {
        self.non_empty(at, key)?;
        template::expand(&at.value, vars).map_err(|e| self.err_in(at, e.offset(), e.to_string()))
    }

    fn socket_addr(&self, at: &At<String>, key: &str, vars: &Vars) -> Result<SocketAddr, Error> {
        let value = self.expanded(at, key, vars)?;
        value.parse().map_err(|_| {
            self.err(
                at,
                format!(
                    "{key} {value:?} is not an IP address and port such as \"127.0.0.1:9093\" \
                     or \"[::1]:9093\" (leafd does not resolve names here)"
                ),
            )
        })
    }

    fn action(
        &mut self,
        file: usize,
        r: ReloadFile,
        vars: &Vars,
        host_broker_id: Option<&str>,
    ) -> Result<ReloadAction, Error> {
        let at = |s: toml::Spanned<String>| At::new(file, s);
        let kind = At::new(file, r.kind.clone());
        let keys = allowed(&kind.value);
        if keys.is_empty() {
            return Err(self.err(
                &kind,
                format!(
                    "unknown reload type {:?}; expected one of: kafka, systemd, signal, exec",
                    kind.value
                ),
            ));
        }
        if let Some((key, pos)) = present(&r, file)
            .into_iter()
            .find(|(k, _)| !keys.contains(k))
        {
            return Err(self.err(
                &pos,
                format!(
                    "a {} reload does not take {key}; it takes: {}",
                    kind.value,
                    keys.join(", ")
                ),
            ));
        }
        macro_rules! missing {
            ($key:expr) => {
                self.err(&kind, format!("a {} reload needs {}", kind.value, $key))
            };
        }
        match kind.value.as_str() {
            "kafka" => {
                let bootstrap = match r.bootstrap.map(at) {
                    Some(a) => self.socket_addr(&a, "bootstrap", vars)?,
                    None => return Err(missing!("bootstrap")),
                };
                let broker_id = match r.broker_id.map(|s| At::new(file, s)) {
                    Some(a) => self.broker_id(&a, vars)?,
                    None => match host_broker_id {
                        Some(id) => id
                            .trim()
                            .parse::<i32>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| {
                                self.err(
                                    &kind,
                                    format!(
                                        "host broker-id {id:?} is not a Kafka broker id; set \
                                         broker-id here"
                                    ),
                                )
                            })?,
                        None => {
                            return Err(self.err(
                                &kind,
                                "a kafka reload needs the broker id: set broker-id here or in [host]",
                            ));
                        }
                    },
                };
                let listener = match r.listener.map(at) {
                    Some(a) => {
                        let l = self.expanded(&a, "listener", vars)?;
                        if !l
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        {
                            return Err(self.err(
                                &a,
                                format!(
                                    "listener {l:?} is not a Kafka listener name (letters, \
                                     digits, '_' and '-')"
                                ),
                            ));
                        }
                        l
                    }
                    None => return Err(missing!("listener")),
                };
                let mode = match r.mode.map(at) {
                    None => KafkaReloadMode::Alternate,
                    Some(a) => match a.value.as_str() {
                        "alternate" => KafkaReloadMode::Alternate,
                        "same-path" => KafkaReloadMode::SamePath,
                        other => {
                            return Err(self.err(
                                &a,
                                format!(
                                    "unknown mode {other:?}; expected alternate (KRaft) or \
                                     same-path (ZooKeeper-era brokers)"
                                ),
                            ));
                        }
                    },
                };
                let timeout = match r.timeout.map(at) {
                    Some(a) => self.positive_duration(&a, "timeout")?,
                    None => KAFKA_TIMEOUT,
                };
                let security_at = r.security.map(at);
                let security = security_at
                    .as_ref()
                    .map_or("plaintext", |a| a.value.as_str());
                let (tls, sasl) = match security {
                    "plaintext" => (false, false),
                    "ssl" => (true, false),
                    "sasl-plaintext" => (false, true),
                    "sasl-ssl" => (true, true),
                    other => {
                        let pos = security_at
                            .as_ref()
                            .map_or_else(|| kind.with(()), |a| a.with(()));
                        return Err(self.err(
                            &pos,
                            format!(
                                "unknown security {other:?}; expected one of: plaintext, ssl, \
                                 sasl-plaintext, sasl-ssl"
                            ),
                        ));
                    }
                };
                let tls_keys = [
                    (&r.server_name, "server-name"),
                    (&r.client_identity, "client-identity"),
                    (&r.ca_file, "ca-file"),
                ];
                let sasl_keys = [
                    (&r.sasl_mechanism, "sasl-mechanism"),
                    (&r.sasl_username, "sasl-username"),
                    (&r.sasl_password_file, "sasl-password-file"),
                    (&r.sasl_password_credential, "sasl-password-credential"),
                ];
                for (v, key) in tls_keys
                    .iter()
                    .filter(|_| !tls)
                    .chain(sasl_keys.iter().filter(|_| !sasl))
                {
                    if let Some(v) = v {
                        return Err(self.err(
                            &At::new(file, (*v).clone()),
                            format!("{key} does not apply to security = {security:?}"),
                        ));
                    }
                }
                let tls = if tls {
                    let server_name = match r.server_name.map(at) {
                        Some(a) => self.server_name(&a, vars)?,
                        None => {
                            return Err(missing!(
                                "server-name (the name in the broker's certificate)"
                            ));
                        }
                    };
                    let client_identity = r.client_identity.map(at).map(|a| {
                        let name = a.value.clone();
                        self.client_refs.push(ClientIdentityRef { at: a });
                        name
                    });
                    let ca_file = match r.ca_file.map(at) {
                        Some(a) => {
                            self.non_empty(&a, "ca-file")?;
                            Some(resolve(self.sources.dir(a.file), &a.value))
                        }
                        None => None,
                    };
                    Some(KafkaTls {
                        server_name,
                        client_identity,
                        ca_file,
                    })
                } else {
                    None
                };
                let sasl = if sasl {
                    let mechanism = match r.sasl_mechanism.map(at) {
                        None => return Err(missing!("sasl-mechanism")),
                        Some(a) => match a.value.as_str() {
                            "plain" | "PLAIN" => SaslMechanism::Plain,
                            "scram-sha-256" | "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                            "scram-sha-512" | "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                            other => {
                                return Err(self.err(
                                    &a,
                                    format!(
                                        "unknown sasl-mechanism {other:?}; expected plain, \
                                         scram-sha-256 or scram-sha-512"
                                    ),
                                ));
                            }
                        },
                    };
                    let username = match r.sasl_username.map(at) {
                        Some(a) => self.expanded(&a, "sasl-username", vars)?,
                        None => return Err(missing!("sasl-username")),
                    };
                    let (pf, pc) = (
                        r.sasl_password_file.map(at),
                        r.sasl_password_credential.map(at),
                    );
                    // An empty placeholder when the load reads no secrets.
                    let password = self
                        .secret(pf.as_ref(), pc.as_ref(), "sasl-password")?
                        .ok_or_else(|| missing!("sasl-password-file or sasl-password-credential"))?
                        .value_or_placeholder();
                    Some(KafkaSasl {
                        mechanism,
                        username,
                        password,
                    })
                } else {
                    None
                };
                let security = match (tls, sasl) {
                    (None, None) => KafkaSecurity::Plaintext,
                    (Some(t), None) => KafkaSecurity::Ssl(t),
                    (None, Some(s)) => KafkaSecurity::SaslPlaintext(s),
                    (Some(t), Some(s)) => KafkaSecurity::SaslSsl(t, s),
                };
                Ok(ReloadAction::Kafka(KafkaReload {
                    bootstrap,
                    broker_id,
                    listener,
                    mode,
                    security,
                    timeout,
                }))
            }
            "systemd" => {
                let unit = match r.unit.map(at) {
                    Some(a) => self.unit_name(&a, vars)?,
                    None => return Err(missing!("unit")),
                };
                let restart = match r.action.map(at) {
                    None => false,
                    Some(a) => match a.value.as_str() {
                        "reload" => false,
                        "restart" => true,
                        other => {
                            return Err(self.err(
                                &a,
                                format!("unknown action {other:?}; expected reload or restart"),
                            ));
                        }
                    },
                };
                Ok(ReloadAction::Systemd { unit, restart })
            }
            "signal" => {
                let target = match (r.unit.map(at), r.pid_file.map(at)) {
                    (Some(_), Some(p)) => {
                        return Err(self.err(&p, "set either unit or pid-file, not both"));
                    }
                    (Some(u), None) => SignalTarget::Unit(self.unit_name(&u, vars)?),
                    (None, Some(p)) => {
                        self.non_empty(&p, "pid-file")?;
                        SignalTarget::PidFile(resolve(self.sources.dir(p.file), &p.value))
                    }
                    (None, None) => return Err(missing!("unit or pid-file")),
                };
                let signal = match r.signal.map(at) {
                    None => Signal::SIGHUP as i32,
                    Some(a) => {
                        let name = a.value.trim_start_matches("SIG");
                        SIGNALS
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, s)| *s as i32)
                            .ok_or_else(|| {
                                self.err(
                                    &a,
                                    format!(
                                        "unsupported signal {:?}; expected one of: HUP, USR1, \
                                         USR2, TERM, INT",
                                        a.value
                                    ),
                                )
                            })?
                    }
                };
                Ok(ReloadAction::Signal { target, signal })
            }
            "exec" => {
                let Some(cmd) = r.command else {
                    return Err(missing!("command (an array: program, then arguments)"));
                };
                let cmd_at = At::new(file, cmd.clone()).with(());
                let argv: Vec<String> = cmd
                    .into_inner()
                    .into_iter()
                    .map(|s| s.into_inner())
                    .collect();
                match argv.first() {
                    None => {
                        return Err(self.err(&cmd_at, "command must name a program"));
                    }
                    Some(p) if !p.starts_with('/') => {
                        return Err(self.err(
                            &cmd_at,
                            format!(
                                "command program {p:?} must be an absolute path (leafd does \
                                 not search PATH)"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(self.err(&cmd_at, "command arguments must not contain NUL"));
                }
                let timeout = match r.timeout.map(at) {
                    Some(a) => self.positive_duration(&a, "timeout")?,
                    None => EXEC_TIMEOUT,
                };
                Ok(ReloadAction::Exec { argv, timeout })
            }
            _ => Err(missing!("a known type")),
        }
    }

    fn broker_id(&self, at: &At<Scalar>, vars: &Vars) -> Result<i32, Error> {
        let text = match &at.value {
            Scalar::Int(n) => n.to_string(),
            Scalar::Str(s) => template::expand(s, vars).map_err(|e| self.err(at, e.to_string()))?,
        };
        text.trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                self.err(
                    at,
                    format!("broker-id {text:?} is not a Kafka broker id (0 or more)"),
                )
            })
    }

    /// A TLS server name (SNI and the name checked in the certificate).
    fn server_name(&self, at: &At<String>, vars: &Vars) -> Result<String, Error> {
        let n = self.expanded(at, "server-name", vars)?;
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(self.err(
                at,
                format!("server-name {n:?} is not a DNS name or IP address"),
            ));
        }
        Ok(n)
    }

    fn unit_name(&self, at: &At<String>, vars: &Vars) -> Result<String, Error> {
        let unit = self.expanded(at, "unit", vars)?;
        let ok = unit.len() <= 255
            && unit.contains('.')
            && unit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
        if !ok {
            return Err(self.err(
                at,
                format!("unit {unit:?} is not a systemd unit name such as \"kafka.service\""),
            ));
        }
        Ok(unit)
    }

    fn verify(&mut self, file: usize, v: VerifyFile, vars: &Vars) -> Result<VerifySettings, Error> {
        let list_at = At::new(file, v.addresses.clone()).with(());
        let mut addresses = Vec::new();
        for a in v.addresses.into_inner() {
            let a = At::new(file, a);
            let addr = self.socket_addr(&a, "verify address", vars)?;
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
        if addresses.is_empty() {
            return Err(self.err(&list_at, "verify addresses must name at least one listener"));
        }
        let server_name = match v.server_name.map(|s| At::new(file, s)) {
            Some(a) => Some(self.server_name(&a, vars)?),
            None => None,
        };
        let timeout = match v.timeout.map(|s| At::new(file, s)) {
            Some(a) => self.positive_duration(&a, "timeout")?,
            None => VERIFY_TIMEOUT,
        };
        Ok(VerifySettings {
            addresses,
            server_name,
            timeout,
        })
    }

    /// Every `client-identity` must name an identity with a `pem` keystore: its key and
    /// chain are read from there for the admin connection's client certificate.
    pub(super) fn check_client_identities(&self, identities: &[Identity]) -> Result<(), Error> {
        for r in &self.client_refs {
            match identities.iter().find(|i| i.name == r.at.value) {
                None => {
                    return Err(self.err(
                        &r.at,
                        format!("client-identity {:?} names no identity", r.at.value),
                    ));
                }
                Some(i) if !i.keystores.iter().any(|o| o.format == StoreFormat::Pem) => {
                    return Err(self.err(
                        &r.at,
                        format!(
                            "client-identity {:?} has no pem keystore; the admin client reads \
                             its key and chain from one",
                            r.at.value
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
