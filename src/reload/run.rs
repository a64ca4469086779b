//! Runs an identity's reload actions after its stores were written, then checks what the
//! broker serves.
//!
//! Actions run one after another. A retryable failure (broker unreachable, a served serial
//! not yet the new one) is retried with backoff until the identity's `reload-retry-for`
//! budget is spent; anything else fails at once. The caller turns the [`Outcome`] into the
//! identity's reload status and, on failure, the alarm.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

use super::kafka::{KafkaAdmin, ReloadMode, Security, StoreKind};
use super::sasl::{Sasl, SaslMechanism};
use crate::settings::{
    Identity, KafkaReload, KafkaReloadMode, KafkaSasl, KafkaSecurity, KafkaTls, ReloadAction, San,
    SignalTarget,
};

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the served certificate is polled while verifying.
const VERIFY_POLL: Duration = Duration::from_millis(250);
/// At most this much of a hook's stderr goes into an error message.
const STDERR_EXCERPT: usize = 300;

/// One rotation to make the broker pick up.
#[derive(Debug, Clone)]
pub struct Job {
    /// The identity, as configured when its stores were written.
    pub identity: Identity,
    /// The new leaf's serial (hex).
    pub serial: String,
    /// The new leaf's notAfter.
    pub not_after: SystemTime,
    /// The keystore files just written (the alternate paths when alternating).
    pub keystores: Vec<PathBuf>,
    /// The truststore files just written.
    pub truststores: Vec<PathBuf>,
    /// leafd's trusted roots (DER), for TLS to an admin listener without `ca-file`.
    pub roots: Vec<Vec<u8>>,
    /// The `pem` keystore of each `client-identity` the kafka actions name.
    pub client_pems: Vec<(String, PathBuf)>,
}

/// How the actions and the check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every action succeeded and every listener serves the new serial.
    pub ok: bool,
    /// What was verified, or what failed.
    pub detail: String,
    /// Every kafka action's broker accepted the new store locations: the broker now uses
    /// the paths in the [`Job`].
    pub kafka_accepted: bool,
}

/// Runs `job`'s actions and check. `bus` is the system bus (systemd actions); `progress`
/// hears about retries, for STATUS and the journal.
pub async fn run(
    job: &Job,
    bus: Option<&zbus::Connection>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Outcome {
    let settings = &job.identity.reload;
    let deadline = Instant::now() + settings.retry_for;
    let kafka_total = settings
        .actions
        .iter()
        .filter(|a| matches!(a, ReloadAction::Kafka(_)))
        .count();
    let mut kafka_done = 0;
    for action in &settings.actions {
        let label = action.label();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match run_action(job, action, bus).await {
                Ok(()) => {
                    if matches!(action, ReloadAction::Kafka(_)) {
                        kafka_done += 1;
                    }
                    break;
                }
                Err(e) if e.retryable && Instant::now() + backoff < deadline => {
                    progress(&format!("{label}: {}; retrying in {backoff:?}", e.message));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    return Outcome {
                        ok: false,
                        detail: format!("{label}: {}", e.message),
                        kafka_accepted: kafka_done == kafka_total,
                    };
                }
            }
        }
    }
    let kafka_accepted = kafka_done == kafka_total;
    let Some(verify) = &settings.verify else {
        return Outcome {
            ok: true,
            detail: format!(
                "{} action(s) done; no verify addresses",
                settings.actions.len()
            ),
            kafka_accepted,
        };
    };
    let sni = verify
        .server_name
        .clone()
        .or_else(|| {
            job.identity.sans.iter().find_map(|s| match s {
                San::Dns(d) => Some(d.clone()),
                San::Ip(_) => None,
            })
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let timeout = verify.timeout;
    for addr in &verify.addresses {
        if let Err(e) =
            super::verify::wait_for_serial(*addr, &sni, &job.serial, timeout, VERIFY_POLL).await
        {
            return Outcome {
                ok: false,
                detail: format!(
                    "verify {addr}: {} (after {})",
                    crate::error::chain(&e),
                    humantime::format_duration(timeout)
                ),
                kafka_accepted,
            };
        }
    }
    Outcome {
        ok: true,
        detail: format!(
            "serial {} served at {}",
            job.serial,
            verify
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        kafka_accepted,
    }
}

/// A failed action: a message safe for operators, and whether trying again may help.
struct ActionError {
    message: String,
    retryable: bool,
}

impl ActionError {
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

async fn run_action(
    job: &Job,
    action: &ReloadAction,
    bus: Option<&zbus::Connection>,
) -> Result<(), ActionError> {
    match action {
        ReloadAction::Kafka(k) => kafka(job, k).await,
        ReloadAction::Systemd { unit, restart } => {
            let bus = bus.ok_or_else(|| ActionError::fatal("no system bus connection"))?;
            super::systemd::reload_unit(bus, unit, *restart, Duration::from_secs(90))
                .await
                .map_err(|e| ActionError {
                    retryable: matches!(e, super::systemd::Error::Timeout { .. }),
                    message: crate::error::chain(&e),
                })
        }
        ReloadAction::Signal {
            target: SignalTarget::Unit(unit),
            signal,
        } => {
            let bus = bus.ok_or_else(|| ActionError::fatal("no system bus connection"))?;
            super::systemd::kill_main(bus, unit, *signal)
                .await
                .map_err(|e| ActionError::fatal(crate::error::chain(&e)))
        }
        ReloadAction::Signal {
            target: SignalTarget::PidFile(path),
            signal,
        } => signal_pid_file(path, *signal),
        ReloadAction::Exec { argv, timeout } => exec(job, argv, *timeout).await,
    }
}

fn signal_pid_file(path: &Path, signal: i32) -> Result<(), ActionError> {
    let text = std::fs::read_to_string(path).map_err(|e| ActionError {
        message: format!("could not read pid file {}: {e}", path.display()),
        // The service may be restarting and about to write it.
        retryable: e.kind() == std::io::ErrorKind::NotFound,
    })?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
        ActionError::fatal(format!(
            "pid file {} does not hold a process id",
            path.display()
        ))
    })?;
    let sig = nix::sys::signal::Signal::try_from(signal)
        .map_err(|e| ActionError::fatal(format!("signal {signal}: {e}")))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| ActionError {
        message: format!(
            "could not send {sig} to pid {pid} from {}: {e}",
            path.display()
        ),
        retryable: e == nix::errno::Errno::ESRCH,
    })
}

async fn exec(job: &Job, argv: &[String], timeout: Duration) -> Result<(), ActionError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ActionError::fatal("empty command"));
    };
    let join = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LEAFD_IDENTITY", &job.identity.name)
        .env("LEAFD_SERIAL", &job.serial)
        .env(
            "LEAFD_NOT_AFTER",
            humantime::format_rfc3339_seconds(job.not_after).to_string(),
        )
        .env("LEAFD_KEYSTORES", join(&job.keystores))
        .env("LEAFD_TRUSTSTORES", join(&job.truststores))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ActionError::fatal(format!("could not start {program}: {e}")))?;
    let mut stderr = child.stderr.take();
    let read_stderr = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Bounded: a chatty hook cannot grow leafd's memory.
            let _ = s.take(64 * 1024).read_to_end(&mut buf).await;
        }
        buf
    };
    let waited = tokio::time::timeout(timeout, async {
        let (status, err) = tokio::join!(child.wait(), read_stderr);
        (status, err)
    })
    .await;
    let (status, err) = match waited {
        Ok(v) => v,
        Err(_) => {
            let _ = child.kill().await;
            return Err(ActionError::fatal(format!(
                "{program} did not finish within {} and was killed",
                humantime::format_duration(timeout)
            )));
        }
    };
    let status = status.map_err(|e| ActionError::fatal(format!("waiting for {program}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let last = text.trim().lines().last().unwrap_or("");
    let excerpt: String = last.chars().take(STDERR_EXCERPT).collect();
    Err(ActionError::fatal(format!(
        "{program} failed with {status}{}",
        if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        }
    )))
}

async fn kafka(job: &Job, k: &KafkaReload) -> Result<(), ActionError> {
    let security = security(job, &k.security)?;
    let admin = KafkaAdmin::new(k.bootstrap, security, "leafd").with_timeout(k.timeout);
    let mut changes = Vec::new();
    if let Some(p) = job.keystores.first() {
        changes.push((StoreKind::Keystore, p.clone()));
    }
    if let Some(p) = job.truststores.first() {
        changes.push((StoreKind::Truststore, p.clone()));
    }
    if changes.is_empty() {
        return Err(ActionError::fatal("the identity writes no stores"));
    }
    let mode = match k.mode {
        KafkaReloadMode::Alternate => ReloadMode::AlternatePaths,
        KafkaReloadMode::SamePath => ReloadMode::SamePath,
    };
    admin
        .reload(k.broker_id, &k.listener, &changes, mode)
        .await
        .map_err(|e| ActionError {
            retryable: e.is_retryable(),
            message: crate::error::chain(&e),
        })
}

fn security(job: &Job, s: &KafkaSecurity) -> Result<Security, ActionError> {
    match s {
        KafkaSecurity::Plaintext => Ok(Security::Plaintext),
        KafkaSecurity::Ssl(tls) => {
            let (config, server_name) = tls_config(job, tls)?;
            Ok(Security::Ssl {
                config,
                server_name,
            })
        }
        KafkaSecurity::SaslPlaintext(sasl) => Ok(Security::SaslPlaintext {
            sasl: sasl_of(sasl),
        }),
        KafkaSecurity::SaslSsl(tls, sasl) => {
            let (config, server_name) = tls_config(job, tls)?;
            Ok(Security::SaslSsl {
                config,
                server_name,
                sasl: sasl_of(sasl),
            })
        }
    }
}

fn sasl_of(s: &KafkaSasl) -> Sasl {
    let mechanism = match s.mechanism {
        crate::settings::SaslMechanism::Plain => SaslMechanism::Plain,
        crate::settings::SaslMechanism::ScramSha256 => SaslMechanism::ScramSha256,
        crate::settings::SaslMechanism::ScramSha512 => SaslMechanism::ScramSha512,
    };
    Sasl::new(mechanism, s.username.clone(), s.password.clone())
}

/// The rustls client config for an admin connection: the broker's certificate checked
/// against `ca-file` or leafd's roots, and the client identity's leaf presented if set.
fn tls_config(
    job: &Job,
    tls: &KafkaTls,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), ActionError> {
    let roots: Vec<CertificateDer<'static>> = match &tls.ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                ActionError::fatal(format!("could not read ca-file {}: {e}", path.display()))
            })?,
        None => job
            .roots
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect(),
    };
    if roots.is_empty() {
        return Err(ActionError::fatal(
            "no roots to check the broker's certificate against".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ActionError::fatal(format!("tls client config: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(super::pki::Verifier::new(roots));
    let config = match &tls.client_identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let path = job
                .client_pems
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    ActionError::fatal(format!("client-identity {name:?} has no pem keystore yet"))
                })?;
            let read_err = |e: rustls::pki_types::pem::Error| ActionError {
                message: format!(
                    "could not read the client certificate of {name:?} from {}: {e}",
                    path.display()
                ),
                // The client identity may not have been written yet.
                retryable: true,
            };
            let chain = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(read_err)?;
            let key = PrivateKeyDer::from_pem_file(path).map_err(read_err)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ActionError::fatal(format!("client certificate of {name:?}: {e}")))?
        }
    };
    let server_name = ServerName::try_from(tls.server_name.clone())
        .map_err(|_| ActionError::fatal(format!("invalid server-name {:?}", tls.server_name)))?;
    Ok((Arc::new(config), server_name))
}
