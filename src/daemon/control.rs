//! The daemon's side of the D-Bus API: [`DaemonControl`] implements
//! [`crate::dbus::Control`] by reading the status `watch` the engine loop publishes and by
//! sending requests to the engine loop (renew) and the main task (config reload).

use tokio::sync::{mpsc, oneshot, watch};

use crate::dbus::{Control, ControlError, ControlFuture};
use crate::status::Status;

/// A request for the engine loop.
#[derive(Debug)]
pub enum EngineCommand {
    /// Renew one identity now; the reply comes when its stores are written or it failed.
    Renew {
        /// The identity.
        name: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// A configuration reload request for the main task.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// The [`Control`] the D-Bus service calls.
pub struct DaemonControl {
    /// The latest status.
    pub status: watch::Receiver<Status>,
    /// To the engine loop.
    pub engine: mpsc::Sender<EngineCommand>,
    /// To the main task.
    pub reload: mpsc::Sender<ReloadRequest>,
}

impl Control for DaemonControl {
    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    fn renew<'a>(&'a self, identity: &'a str) -> ControlFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let stopping = || ControlError::Failed("leafd is stopping".to_owned());
            self.engine
                .send(EngineCommand::Renew {
                    name: identity.to_owned(),
                    reply,
                })
                .await
                .map_err(|_| stopping())?;
            rx.await.map_err(|_| stopping())?
        })
    }

    fn reload_config(&self) -> ControlFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.reload
                .send(reply)
                .await
                .map_err(|_| "leafd is stopping".to_owned())?;
            rx.await.map_err(|_| "leafd is stopping".to_owned())?
        })
    }
}
