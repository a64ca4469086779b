//! Daemon wiring: config, key thread, issuer, engine loop, signals, sd_notify.
//!
//! One current-thread runtime. The engine loop runs as a task; the main task waits for
//! signals: SIGHUP re-reads the config (a bad one is rejected and the old one keeps
//! running), SIGTERM/SIGINT cancel the engine, which finishes the rotation in hand.

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

use crate::config::{self, IssuerSettings, LoadEnv, Settings};
use crate::issuer::IssuerKind;
use crate::issuer::local::LocalCa;
use crate::keys::worker::KeyService;
use crate::renew::engine::{Engine, Event, chain};
use crate::telemetry::{self, LogControl};

/// How long SIGTERM waits for the rotation in hand.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Exit code for configuration errors (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for other failures (sysexits EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;

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
            return ExitCode::from(EXIT_CONFIG);
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
            return ExitCode::from(EXIT_SOFTWARE);
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
/// (69), which systemd retries after `RestartSec`.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        match cause.downcast_ref::<crate::keys::Error>() {
            Some(crate::keys::Error::Auth { .. }) => return EXIT_CONFIG,
            Some(crate::keys::Error::Unavailable { .. }) => return 69,
            _ => {}
        }
    }
    EXIT_SOFTWARE
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
    let (keys, _key_thread) =
        KeyService::spawn(move || crate::keys::open_backend(&key_settings, &dir))
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

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (settings_tx, settings_rx) = watch::channel(settings);
    tracker.spawn(engine_loop(engine, settings_rx, token.clone()));
    tracker.close();

    let mut hup = signal(SignalKind::hangup()).context("could not install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("could not install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("could not install SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading]);
                match config::load(config_path, env) {
                    Ok(new) => {
                        if new.key != settings_tx.borrow().key || new.issuer != settings_tx.borrow().issuer {
                            warn!("changes to [key] and [issuer] take effect after a restart");
                        }
                        if let Err(e) = log.set_level(&new.daemon.log_level) {
                            warn!("ignoring log-level: {e}");
                        }
                        info!(message_id = telemetry::MSG_CONFIG_RELOADED, identities = new.identities.len(), "configuration reloaded");
                        let _ = settings_tx.send(Arc::new(new));
                    }
                    Err(e) => error!(
                        message_id = telemetry::MSG_CONFIG_REJECTED,
                        "new configuration rejected, keeping the running one: {}", chain(&e)
                    ),
                }
                notify(&[NotifyState::Ready]);
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

async fn engine_loop(
    mut engine: Engine,
    mut settings: watch::Receiver<Arc<Settings>>,
    token: CancellationToken,
) {
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut ready = false;
    loop {
        let events = engine.tick(SystemTime::now()).await;
        events.iter().for_each(log_event);
        let now = SystemTime::now();
        let status = engine.status_line(now);
        if !ready || !events.is_empty() {
            let dir = engine.settings().daemon.state_directory.clone();
            if let Err(e) = crate::state::status::write(&dir, &engine.status(now)) {
                warn!("could not write the status snapshot: {}", chain(&e));
            }
        }
        if !ready {
            notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            info!("ready: {status}");
            ready = true;
        } else if !events.is_empty() {
            notify(&[NotifyState::Status(&status)]);
        }
        let sleep = engine
            .next_wakeup(now)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(sleep) => {}
            changed = settings.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = settings.borrow_and_update().clone();
                engine.apply_settings(new);
            }
            _ = ping.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }
}
