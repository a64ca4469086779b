//! The systemd reload actions over D-Bus: `ReloadUnit` / `RestartUnit` (waiting for the job
//! to finish) and `KillUnit` to signal a unit's main process.
//!
//! leafd runs unprivileged, so systemd asks polkit whether the `leafd` user may manage the
//! unit (`org.freedesktop.systemd1.manage-units`); the README shows the polkit rule.

#![allow(
    missing_docs,
    reason = "zbus's proxy macro generates items without docs"
)]

use std::time::Duration;

use futures_util::StreamExt as _;
use zbus::zvariant::OwnedObjectPath;

/// Errors from systemd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No system bus, or systemd refused the call (the message is systemd's, e.g. access
    /// denied by polkit or a unit that does not exist).
    #[error("systemd call {call} for {unit} failed")]
    Call {
        /// The method.
        call: &'static str,
        /// The unit.
        unit: String,
        /// Cause.
        #[source]
        source: zbus::Error,
    },
    /// The job finished with a result other than `done`.
    #[error("systemd job for {unit} finished with result {result:?}")]
    Job {
        /// The unit.
        unit: String,
        /// systemd's job result (`failed`, `timeout`, `canceled`, `dependency`, ...).
        result: String,
    },
    /// The job did not finish in time.
    #[error("systemd job for {unit} did not finish within {timeout:?}")]
    Timeout {
        /// The unit.
        unit: String,
        /// The limit.
        timeout: Duration,
    },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait SystemdManager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// `ReloadUnit` (or `RestartUnit`) with mode `replace`, then waits for the job's
/// `JobRemoved` and checks its result.
pub async fn reload_unit(
    bus: &zbus::Connection,
    unit: &str,
    restart: bool,
    timeout: Duration,
) -> Result<(), Error> {
    let call = if restart { "RestartUnit" } else { "ReloadUnit" };
    let err = |source| Error::Call {
        call,
        unit: unit.to_owned(),
        source,
    };
    let manager = SystemdManagerProxy::new(bus).await.map_err(err)?;
    // Listen before starting the job: a quick job may finish before the reply arrives.
    let mut removed = manager.receive_job_removed().await.map_err(err)?;
    manager.subscribe().await.map_err(err)?;
    let job = if restart {
        manager.restart_unit(unit, "replace").await
    } else {
        manager.reload_unit(unit, "replace").await
    }
    .map_err(err)?;
    let wait = async {
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job == job {
                return Some(args.result);
            }
        }
        None
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Some(result)) if result == "done" => Ok(()),
        Ok(Some(result)) => Err(Error::Job {
            unit: unit.to_owned(),
            result,
        }),
        Ok(None) => Err(err(zbus::Error::Failure(
            "the bus connection closed before the job finished".to_owned(),
        ))),
        Err(_) => Err(Error::Timeout {
            unit: unit.to_owned(),
            timeout,
        }),
    }
}

/// `KillUnit(unit, "main", signal)`: systemd sends `signal` to the unit's main process.
pub async fn kill_main(bus: &zbus::Connection, unit: &str, signal: i32) -> Result<(), Error> {
    let err = |source| Error::Call {
        call: "KillUnit",
        unit: unit.to_owned(),
        source,
    };
    let manager = SystemdManagerProxy::new(bus).await.map_err(err)?;
    manager.kill_unit(unit, "main", signal).await.map_err(err)
}
