//! Talking to leafd over D-Bus (`org.leafd.leafd1`), with bus failures turned into
//! [`Error`]s that carry the right exit code.

use std::time::Duration;

use zbus::DBusError as _;

use super::Error;
use crate::dbus::{ManagerProxy, connect_manager};
use crate::status::Status;

/// How long a read-only call may take before leafd counts as unresponsive.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The hint printed when leafd cannot be reached.
pub const UNREACHABLE_HINT: &str = "is leafd running? check with 'systemctl status leafd'";

/// A connection to leafd's Manager object.
pub struct Client {
    manager: ManagerProxy<'static>,
}

/// Maps a bus or method error to a leafctl [`Error`].
pub fn classify(e: zbus::Error) -> Error {
    let (name, message) = match &e {
        zbus::Error::MethodError(name, message, _) => (
            name.as_str().to_owned(),
            message.clone().unwrap_or_default(),
        ),
        zbus::Error::FDO(fdo) => (
            fdo.name().as_str().to_owned(),
            fdo.description().unwrap_or_default().to_owned(),
        ),
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
            return Error::Unavailable {
                detail: e.to_string(),
            };
        }
        _ => {
            return Error::Protocol {
                detail: e.to_string(),
            };
        }
    };
    match name.as_str() {
        "org.leafd.leafd1.Error.NotFound" => Error::NotFound(message),
        "org.leafd.leafd1.Error.InvalidArgument" => Error::InvalidArgument(message),
        "org.leafd.leafd1.Error.AccessDenied" | "org.freedesktop.DBus.Error.AccessDenied" => {
            Error::AccessDenied(message)
        }
        "org.leafd.leafd1.Error.Failed" => Error::Failed(message),
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner"
        | "org.freedesktop.DBus.Error.NoReply"
        | "org.freedesktop.DBus.Error.Disconnected"
        | "org.freedesktop.DBus.Error.Timeout"
        | "org.freedesktop.DBus.Error.TimedOut"
        | "org.freedesktop.DBus.Error.NoServer"
        | "org.freedesktop.DBus.Error.UnknownObject"
        | "org.freedesktop.DBus.Error.UnknownInterface"
        | "org.freedesktop.DBus.Error.UnknownMethod" => Error::Unavailable {
            detail: if message.is_empty() {
                name
            } else {
                format!("{name}: {message}")
            },
        },
        _ => Error::Protocol {
            detail: format!("{name}: {message}"),
        },
    }
}

impl Client {
    /// Connects to the system bus, or to the bus at `address`.
    pub async fn connect(address: Option<&str>) -> Result<Self, Error> {
        let bus = address.map_or_else(|| "the system bus".to_owned(), |a| format!("bus {a}"));
        let manager = tokio::time::timeout(READ_TIMEOUT, connect_manager(address))
            .await
            .map_err(|_| Error::Unavailable {
                detail: format!("{bus} did not answer"),
            })?
            .map_err(|e| match classify(e) {
                // Any failure to connect means leafd cannot be reached.
                Error::Unavailable { detail } | Error::Protocol { detail } => Error::Unavailable {
                    detail: format!("could not connect to {bus}: {detail}"),
                },
                other => other,
            })?;
        Ok(Self { manager })
    }

    /// `Manager.GetStatus`, parsed.
    pub async fn status(&self) -> Result<Status, Error> {
        let json = tokio::time::timeout(READ_TIMEOUT, self.manager.get_status())
            .await
            .map_err(|_| Error::Unavailable {
                detail: "leafd did not answer GetStatus within 30 s".to_owned(),
            })?
            .map_err(classify)?;
        serde_json::from_str(&json).map_err(|e| Error::Protocol {
            detail: format!("leafd sent a status leafctl cannot read: {e}"),
        })
    }

    /// `Manager.Renew(name)`: returns once the new leaf is written.
    pub async fn renew(&self, name: &str) -> Result<(), Error> {
        self.manager.renew(name).await.map_err(classify)
    }
}
