//! Daemon wiring: config, key thread, issuer, engine loop, signals, sd_notify.
//!
//! One current-thread runtime. The engine loop runs as a task and owns the [`Engine`]; after
//! each rotation it starts the identity's reload actions as a task of their own, whose
//! progress and outcome come back over a channel. The main task waits for signals: SIGHUP
//! (or `ReloadConfig` over D-Bus) re-reads the config (a bad one is rejected and the old one
//! keeps running), SIGTERM/SIGINT cancel the engine, which finishes the rotation in hand.
//! The D-Bus API is served on the system bus before READY=1; without a bus leafd runs on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::config::{self, IssuerSettings, LoadEnv, Settings};
use crate::dbus::{self, Service};
use crate::error::chain;
use crate::issuer::IssuerKind;
use crate::issuer::local::LocalCa;
use crate::keys::worker::KeyService;
use crate::reload::run::{Job, Outcome};
use crate::renew::engine::{Engine, Event};

pub mod backend;
pub mod control;

use crate::telemetry::{self, LogControl};
use control::{DaemonControl, EngineCommand, ReloadRequest};

/// How long SIGTERM waits for the rotation in hand.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

use crate::error::exit;

/// leafd: the host certificate daemon.
#[derive(Debug, Parser)]
#[command(
    name = "leafd",
    version,
    about = "Keeps Kafka TLS keystores fresh with short-lived leaves"
)]
pub struct Args {
    /// Main config file; drop-ins are read from `<stem>.d/*.toml` beside it.
    #[arg(short, long, default_value = "/etc/leafd/leafd.toml")]
    pub config: PathBuf,
}

/// Entry point of the `leafd` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let log = telemetry::init("info");
    let env = LoadEnv::from_process();
    let settings = match config::load(&args.config, &env) {
        Ok(s) => s,
        Err(e) => {
            error!("{}", chain(&e));
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Err(e) = log.set_level(&settings.daemon.log_level) {
        warn!("ignoring log-level: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("could not start the runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    match runtime.block_on(run(&args.config, &env, settings, &log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// sysexits code for a start-up failure. A rejected PIN is a configuration problem (78), so
/// systemd does not restart into a token lock-out; an unreachable device is EX_UNAVAILABLE
/// (69), which systemd retries after `RestartSec`. So is a metrics address that cannot be
/// bound (the config admits only well-formed loopback addresses, so it is in use).
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(crate::metrics::Error::Bind { .. }) = cause.downcast_ref() {
            return exit::UNAVAILABLE;
        }
        match cause.downcast_ref::<crate::keys::Error>() {
            Some(crate::keys::Error::Auth { .. }) => return exit::CONFIG,
            Some(crate::keys::Error::Unavailable { .. }) => return exit::UNAVAILABLE,
            _ => {}
        }
    }
    exit::SOFTWARE
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("sd_notify failed: {e}");
    }
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("could not set mode 0700 on {}", dir.display()))
}

/// The admin group's gid, if the group exists.
fn admin_gid() -> Option<u32> {
    nix::unistd::Group::from_name(ADMIN_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The group whose members may change things over D-Bus.
pub const ADMIN_GROUP: &str = "leafd-admin";

/// Offers the D-Bus API on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the default socket).
async fn serve_bus(control: DaemonControl) -> Option<Service> {
    let builder = match zbus::connection::Builder::system() {
        Ok(b) => b,
        Err(e) => {
            error!(
                message_id = telemetry::MSG_DBUS_UNAVAILABLE,
                "no system bus, D-Bus API off: {e}"
            );
            return None;
        }
    };
    match dbus::serve(builder, std::sync::Arc::new(control), admin_gid()).await {
        Ok(service) => {
            info!("D-Bus API on the system bus as {}", dbus::BUS_NAME);
            Some(service)
        }
        Err(e) => {
            error!(
                message_id = telemetry::MSG_DBUS_UNAVAILABLE,
                "could not offer {} on the system bus (is the bus policy installed?), D-Bus API off: {e}",
                dbus::BUS_NAME
            );
            None
        }
    }
}

/// Re-reads the config and hands it to the engine; a bad config is rejected and logged.
fn reload_config(
    config_path: &Path,
    env: &LoadEnv,
    settings_tx: &watch::Sender<Arc<Settings>>,
    log: &LogControl,
) -> Result<(), String> {
    notify(&[NotifyState::Reloading]);
    let outcome = match config::load(config_path, env) {
        Ok(new) => {
            if new.key != settings_tx.borrow().key || new.issuer != settings_tx.borrow().issuer {
                warn!("changes to [key] and [issuer] take effect after a restart");
            }
            if new.metrics != settings_tx.borrow().metrics {
                warn!("changes to [metrics] take effect after a restart");
            }
            if let Err(e) = log.set_level(&new.daemon.log_level) {
                warn!("ignoring log-level: {e}");
            }
            info!(
                message_id = telemetry::MSG_CONFIG_RELOADED,
                identities = new.identities.len(),
                "configuration reloaded"
            );
            let _ = settings_tx.send(Arc::new(new));
            Ok(())
        }
        Err(e) => {
            let message = chain(&e);
            error!(
                message_id = telemetry::MSG_CONFIG_REJECTED,
                "new configuration rejected, keeping the running one: {message}"
            );
            Err(message)
        }
    };
    notify(&[NotifyState::Ready]);
    outcome
}

/// Builds everything from `settings` and runs until SIGTERM/SIGINT.
pub async fn run(
    config_path: &Path,
    env: &LoadEnv,
    settings: Settings,
    log: &LogControl,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let state_dir = settings.daemon.state_directory.clone();
    ensure_private_dir(&state_dir)?;
    let now = SystemTime::now();

    let (key_settings, dir) = (settings.key.clone(), state_dir.clone());
    let (keys, key_thread) = KeyService::spawn(move || backend::open(&key_settings, &dir))
        .context("could not open the host key backend")?;
    let issuer = match &settings.issuer {
        IssuerSettings::Local(ca) => IssuerKind::Local(
            LocalCa::open_or_create(&state_dir.join("ca"), ca, now)
                .context("could not open the local CA")?,
        ),
    };
    let (engine, report) = Engine::start(settings.clone(), keys.clone(), issuer, now)
        .await
        .context("could not start the renewal engine")?;
    if let Some((moved_to, reason)) = &report.corrupt_state {
        error!(path = %moved_to, "state file was corrupt ({reason}); moved it aside and rebuilt state from scratch");
    }
    if report.stale_temps_removed > 0 {
        info!(
            count = report.stale_temps_removed,
            "removed temporary files left by an interrupted write"
        );
    }
    if report.generated_host_key {
        info!(backend = keys.backend_name(), "generated a new host key");
    }
    info!(
        config = %config_path.display(),
        identities = settings.identities.len(),
        backend = keys.backend_name(),
        "leafd {} starting",
        env!("CARGO_PKG_VERSION")
    );

    let (status_tx, status_rx) = watch::channel(engine.status(now));
    let (engine_tx, engine_rx) = mpsc::channel(16);
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let bus = serve_bus(DaemonControl {
        status: status_rx.clone(),
        engine: engine_tx,
        reload: reload_tx,
    })
    .await;

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics =
        crate::metrics::Exporter::start(&settings.metrics, status_rx, token.clone(), &tracker)
            .await?;
    let (settings_tx, settings_rx) = watch::channel(settings);
    tracker.spawn(
        EngineLoop {
            engine,
            settings: settings_rx,
            commands: engine_rx,
            status: status_tx,
            bus,
            token: token.clone(),
            tracker: tracker.clone(),
            reload_tasks: HashMap::new(),
            trust: (None, 0),
            metrics,
        }
        .run(),
    );
    tracker.close();

    let mut hup = signal(SignalKind::hangup()).context("could not install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("could not install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("could not install SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = reload_config(config_path, env, &settings_tx, log); }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(reload_config(config_path, env, &settings_tx, log));
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = token.cancelled() => break,
        }
    }
    notify(&[NotifyState::Stopping]);
    token.cancel();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("rotation still running after {DRAIN_GRACE:?}; exiting anyway");
        return Ok(());
    }
    // Let the key thread close its sessions before the process exits: a PKCS#11 module
    // tearing down its globals at exit while a session is being closed can crash.
    drop(keys);
    let joined = tokio::task::spawn_blocking(move || key_thread.join());
    if tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .is_err()
    {
        warn!("the key thread did not stop within 5 s; exiting anyway");
    }
    Ok(())
}

fn log_event(ev: &Event) {
    match ev {
        Event::HostCertIssued { serial, not_after } => info!(
            message_id = telemetry::MSG_HOST_CERT_ISSUED,
            serial = %serial,
            not_after = %humantime::format_rfc3339_seconds(*not_after),
            "host issuing certificate issued"
        ),
        Event::Rotated {
            identity,
            serial,
            not_after,
        } => info!(
            message_id = telemetry::MSG_ROTATED,
            cert = %identity,
            serial = %serial,
            not_after = %humantime::format_rfc3339_seconds(*not_after),
            "certificate rotated"
        ),
        Event::Failed {
            identity: Some(id),
            error,
            retry_at,
        } => warn!(
            message_id = telemetry::MSG_ROTATION_FAILED,
            cert = %id,
            retry_at = %humantime::format_rfc3339_seconds(*retry_at),
            "rotation failed, previous keystores kept: {error}"
        ),
        Event::Failed {
            identity: None,
            error,
            retry_at,
        } => error!(
            message_id = telemetry::MSG_HOST_CERT_FAILED,
            retry_at = %humantime::format_rfc3339_seconds(*retry_at),
            "host issuing certificate not renewed: {error}"
        ),
    }
}

/// What a reload task reports.
enum ReloadReport {
    Progress {
        name: String,
        serial: String,
        detail: String,
    },
    Done {
        name: String,
        serial: String,
        outcome: Outcome,
    },
}

struct EngineLoop {
    engine: Engine,
    settings: watch::Receiver<Arc<Settings>>,
    commands: mpsc::Receiver<EngineCommand>,
    status: watch::Sender<crate::status::Status>,
    bus: Option<Service>,
    token: CancellationToken,
    tracker: TaskTracker,
    /// The running reload per identity; a newer rotation cancels the older reload.
    reload_tasks: HashMap<String, CancellationToken>,
    /// The trust bundle's digest and version (`TrustBundleChanged` carries the version).
    trust: (Option<String>, u64),
    /// The metrics textfile (and endpoint, which reads the status watch).
    metrics: crate::metrics::Exporter,
}

impl EngineLoop {
    async fn run(mut self) {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let (report_tx, mut reports) = mpsc::unbounded_channel::<ReloadReport>();
        let mut ready = false;
        // A broker left on the other path by a crash between write and reload is told again.
        for name in self.engine.unreloaded_at_start() {
            self.start_reload(&name, &report_tx);
        }
        loop {
            let events = self.engine.tick(SystemTime::now()).await;
            self.handle(&events, &report_tx).await;
            if !ready {
                let now = SystemTime::now();
                self.publish(now).await;
                let status = self.engine.status_line(now);
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                info!("ready: {status}");
                ready = true;
            }
            let now = SystemTime::now();
            let sleep = self
                .engine
                .next_wakeup(now)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = self.token.cancelled() => break,
                _ = tokio::time::sleep(sleep) => {}
                changed = self.settings.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = self.settings.borrow_and_update().clone();
                    self.engine.apply_settings(new);
                    self.publish(SystemTime::now()).await;
                }
                Some(cmd) = self.commands.recv() => self.command(cmd, &report_tx).await,
                Some(report) = reports.recv() => self.reload_report(report).await,
                _ = ping.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            }
        }
        for token in self.reload_tasks.values() {
            token.cancel();
        }
    }

    async fn command(
        &mut self,
        cmd: EngineCommand,
        report_tx: &mpsc::UnboundedSender<ReloadReport>,
    ) {
        match cmd {
            EngineCommand::Renew { name, reply } => {
                info!(cert = %name, "renewal requested over D-Bus");
                let result = match self.engine.renew_now(&name, SystemTime::now()).await {
                    None => Err(dbus::ControlError::NotFound(name)),
                    Some(events) => {
                        let result = match events.last() {
                            Some(Event::Rotated { .. }) => Ok(()),
                            Some(Event::Failed { error, .. }) => {
                                Err(dbus::ControlError::Failed(error.clone()))
                            }
                            _ => Err(dbus::ControlError::Failed("no rotation".to_owned())),
                        };
                        self.handle(&events, report_tx).await;
                        result
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Logs the events, starts reloads, publishes the new status.
    async fn handle(&mut self, events: &[Event], report_tx: &mpsc::UnboundedSender<ReloadReport>) {
        if events.is_empty() {
            return;
        }
        events.iter().for_each(log_event);
        let digest = self.engine.trust_digest();
        if digest.is_some() && digest != self.trust.0 {
            let first = self.trust.0.is_none();
            self.trust = (digest, self.trust.1 + 1);
            if !first && let Some(bus) = &self.bus {
                if let Err(e) = bus.emit_trust_bundle_changed(self.trust.1).await {
                    warn!("could not emit TrustBundleChanged: {e}");
                }
            }
        }
        for ev in events {
            if let Event::Rotated {
                identity,
                serial,
                not_after,
            } = ev
            {
                if let Some(bus) = &self.bus
                    && let Err(e) = bus.emit_rotated(identity, serial, *not_after).await
                {
                    warn!("could not emit CertificateRotated: {e}");
                }
                self.start_reload(identity, report_tx);
            }
        }
        self.publish(SystemTime::now()).await;
    }

    fn start_reload(&mut self, name: &str, report_tx: &mpsc::UnboundedSender<ReloadReport>) {
        let Some(job) = self.engine.reload_job(name) else {
            return;
        };
        let token = self.token.child_token();
        if let Some(old) = self.reload_tasks.insert(name.to_owned(), token.clone()) {
            old.cancel();
        }
        let tx = report_tx.clone();
        let connection = self.bus.as_ref().map(|b| b.connection().clone());
        self.tracker.spawn(reload_task(job, connection, tx, token));
    }

    async fn reload_report(&mut self, report: ReloadReport) {
        let now = SystemTime::now();
        match report {
            ReloadReport::Progress {
                name,
                serial,
                detail,
            } => {
                warn!(message_id = telemetry::MSG_RELOAD_RETRY, cert = %name, serial = %serial, "broker reload: {detail}");
                self.engine.reload_progress(&name, &serial, &detail, now);
            }
            ReloadReport::Done {
                name,
                serial,
                outcome,
            } => {
                if !self.engine.reload_finished(&name, &serial, &outcome, now) {
                    return;
                }
                self.reload_tasks.remove(&name);
                if outcome.ok {
                    info!(message_id = telemetry::MSG_RELOAD_VERIFIED, cert = %name, serial = %serial, detail = %outcome.detail, "broker reload verified");
                } else {
                    error!(message_id = telemetry::MSG_RELOAD_FAILED, cert = %name, serial = %serial, detail = %outcome.detail, "ALARM: broker reload failed: {}", outcome.detail);
                    if let Some(bus) = &self.bus
                        && let Err(e) = bus.emit_reload_failed(&name, &outcome.detail).await
                    {
                        warn!("could not emit ReloadFailed: {e}");
                    }
                }
            }
        }
        self.publish(now).await;
    }

    /// Status to the D-Bus watch, status.json, the metrics textfile, STATUS= and the identity
    /// objects.
    async fn publish(&mut self, now: SystemTime) {
        let status = self.engine.status(now);
        let dir = self.engine.settings().daemon.state_directory.clone();
        if let Err(e) = crate::state::status::write(&dir, &status) {
            warn!("could not write the status snapshot: {}", chain(&e));
        }
        self.metrics.publish(&status, now);
        notify(&[NotifyState::Status(&status.summary)]);
        if let Some(bus) = &self.bus
            && let Err(e) = bus.refresh_identities(&status).await
        {
            warn!("could not update the D-Bus identity objects: {e}");
        }
        self.status.send_replace(status);
    }
}

async fn reload_task(
    job: Job,
    bus: Option<zbus::Connection>,
    tx: mpsc::UnboundedSender<ReloadReport>,
    token: CancellationToken,
) {
    let (name, serial) = (job.identity.name.clone(), job.serial.clone());
    let progress = |detail: &str| {
        let _ = tx.send(ReloadReport::Progress {
            name: name.clone(),
            serial: serial.clone(),
            detail: detail.to_owned(),
        });
    };
    let outcome = tokio::select! {
        outcome = crate::reload::run::run(&job, bus.as_ref(), &progress) => outcome,
        _ = token.cancelled() => return,
    };
    let _ = tx.send(ReloadReport::Done {
        name: name.clone(),
        serial: serial.clone(),
        outcome,
    });
}
