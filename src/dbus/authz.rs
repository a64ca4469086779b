//! Caller checks for the methods that change state (`Renew`, `ReloadConfig`).
//!
//! The bus policy already limits who may send these calls; the daemon checks again so a
//! mistaken or missing policy file does not open them up. A caller is allowed if its uid
//! (from `org.freedesktop.DBus.GetConnectionUnixUser`) is 0, or if the admin group
//! (`leafd-admin`) is among the groups the bus saw on its connection
//! (`GetConnectionCredentials`' `UnixGroupIDs`) or among the user's groups in the group
//! database (`getgrouplist`). Everyone else gets `AccessDenied`.

use std::ffi::CString;

use nix::unistd::{Gid, Uid, User, getgrouplist};
use zbus::message::Header;
use zbus::names::BusName;

use super::error::ApiError;

/// Why a caller could not be identified; logged, never sent to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The message carries no sender.
    #[error("method call has no sender")]
    NoSender,
    /// The bus could not tell who the sender is.
    #[error("could not ask the bus for the caller's credentials")]
    Credentials {
        /// The bus error.
        #[source]
        source: zbus::fdo::Error,
    },
    /// The bus connection failed.
    #[error("could not talk to the bus")]
    Bus {
        /// The bus error.
        #[source]
        source: zbus::Error,
    },
}

/// Who may change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The admin group (`leafd-admin`), if it exists on this host.
    pub admin_gid: Option<u32>,
}

impl Policy {
    /// Checks the sender of `header`: `Ok` for root and admin-group members,
    /// `AccessDenied` for everyone else (including callers the bus cannot identify).
    pub async fn check_admin(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        method: &str,
    ) -> Result<(), ApiError> {
        match self.is_admin(connection, header).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(denied(method)),
            Err(e) => {
                tracing::warn!(error = %e, method, "could not identify the D-Bus caller");
                Err(denied(method))
            }
        }
    }

    /// The caller's uid if it may change state, `None` if not.
    async fn is_admin(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
    ) -> Result<Option<u32>, Error> {
        let sender = header.sender().ok_or(Error::NoSender)?;
        let name = BusName::from(sender.to_owned());
        let dbus = zbus::fdo::DBusProxy::new(connection)
            .await
            .map_err(|source| Error::Bus { source })?;
        let uid = dbus
            .get_connection_unix_user(name.clone())
            .await
            .map_err(|source| Error::Credentials { source })?;
        if uid == 0 {
            return Ok(Some(uid));
        }
        let Some(admin) = self.admin_gid else {
            tracing::info!(
                uid,
                "D-Bus caller is not root and no admin group is configured"
            );
            return Ok(None);
        };
        // The groups the caller's process had when it connected (SO_PEERGROUPS).
        match dbus.get_connection_credentials(name).await {
            Ok(creds) => {
                if creds
                    .unix_group_ids()
                    .is_some_and(|gids| gids.contains(&admin))
                {
                    return Ok(Some(uid));
                }
            }
            Err(e) => tracing::debug!(error = %e, uid, "bus gave no connection credentials"),
        }
        if user_in_group(uid, admin) {
            return Ok(Some(uid));
        }
        tracing::info!(
            uid,
            admin_gid = admin,
            "D-Bus caller is not in the admin group"
        );
        Ok(None)
    }
}

/// Whether the group database puts `uid` in `gid` (primary or supplementary).
fn user_in_group(uid: u32, gid: u32) -> bool {
    let user = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user,
        Ok(None) => return false,
        Err(e) => {
            tracing::debug!(error = %e, uid, "could not look up the caller's user");
            return false;
        }
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return false;
    };
    match getgrouplist(&name, user.gid) {
        Ok(groups) => groups.contains(&Gid::from_raw(gid)),
        Err(e) => {
            tracing::debug!(error = %e, uid, "could not list the caller's groups");
            false
        }
    }
}

fn denied(method: &str) -> ApiError {
    ApiError::AccessDenied(format!(
        "{method} needs root or membership in the leafd-admin group"
    ))
}
