//! The `org.leafd.leafd1` objects, their proxies, and the [`Control`] trait behind them.
//!
//! - `/org/leafd/leafd1`, interface `org.leafd.leafd1.Manager`: methods `ListIdentities`,
//!   `GetStatus` (the [`Status`] as JSON), `Renew(s)`, `ReloadConfig`; properties
//!   `Version`, `Backend`, `HostKeyNonExportable`; signals `CertificateRotated`,
//!   `ReloadFailed`, `TrustBundleChanged`.
//! - `/org/leafd/leafd1/identity/<escaped name>`, interface `org.leafd.leafd1.Identity`:
//!   properties `Name`, `Serial`, `NotBefore`, `NotAfter`, `NextRenewal`, `Issuer`,
//!   `Keystores`, `LastError`.
//!
//! Properties are read from [`Control::status`] at call time, so they are never stale.

#![allow(
    missing_docs,
    reason = "zbus's interface and proxy macros generate items without docs"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;

use super::authz::Policy;
use super::error::ApiError;
use crate::status::{IdentityStatus, Status};

/// The well-known bus name.
pub const BUS_NAME: &str = "org.leafd.leafd1";
/// The Manager object's path.
pub const MANAGER_PATH: &str = "/org/leafd/leafd1";
/// The parent of the identity objects' paths.
pub const IDENTITY_PATH_PREFIX: &str = "/org/leafd/leafd1/identity";
/// The Manager interface.
pub const MANAGER_INTERFACE: &str = "org.leafd.leafd1.Manager";
/// The Identity interface.
pub const IDENTITY_INTERFACE: &str = "org.leafd.leafd1.Identity";

/// A boxed future returned by [`Control`]'s actions.
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why [`Control::renew`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No identity has this name.
    #[error("no identity named {0:?}")]
    NotFound(String),
    /// The renewal failed; the text is logged, never sent to the caller.
    #[error("renewal failed: {0}")]
    Failed(String),
}

/// What the D-Bus service needs from the daemon.
pub trait Control: Send + Sync + 'static {
    /// The current status snapshot (cheap: read a `watch` receiver).
    fn status(&self) -> Status;
    /// Renews `identity` now; resolves when the renewal has finished or failed.
    fn renew<'a>(&'a self, identity: &'a str) -> ControlFuture<'a, Result<(), ControlError>>;
    /// Re-reads the configuration; the error text is shown to the caller, so it must not
    /// hold secrets (config errors never do).
    fn reload_config(&self) -> ControlFuture<'_, Result<(), String>>;
}

/// The object path of an identity: its name escaped like `sd_bus_path_encode` (ASCII
/// letters and digits kept, every other byte as `_xx`, the empty name as `_`).
pub fn identity_path(name: &str) -> zbus::Result<OwnedObjectPath> {
    let mut path = String::with_capacity(IDENTITY_PATH_PREFIX.len() + 1 + name.len() * 3);
    path.push_str(IDENTITY_PATH_PREFIX);
    path.push('/');
    if name.is_empty() {
        path.push('_');
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    Ok(OwnedObjectPath::try_from(path)?)
}

/// Rejects names no identity can have.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::InvalidArgument(
            "identity name is empty".to_owned(),
        ));
    }
    if !crate::vocab::is_valid_identity_name(name) {
        let shown: String = name.chars().take(64).collect();
        return Err(ApiError::InvalidArgument(format!(
            "invalid identity name {shown:?}"
        )));
    }
    Ok(())
}

fn unix_seconds(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// `/org/leafd/leafd1`.
struct ManagerObject {
    control: Arc<dyn Control>,
    policy: Policy,
}

#[zbus::interface(name = "org.leafd.leafd1.Manager")]
impl ManagerObject {
    /// The identities' names, in config order.
    async fn list_identities(&self) -> Vec<String> {
        self.control
            .status()
            .identities
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    /// The status snapshot as JSON (what `leafctl status` shows).
    async fn get_status(&self) -> Result<String, ApiError> {
        serde_json::to_string(&self.control.status())
            .map_err(|e| ApiError::internal("could not serialise the status", &e))
    }

    /// Renews one identity now. Root or the admin group only.
    async fn renew(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), ApiError> {
        self.policy
            .check_admin(connection, &header, "Renew")
            .await?;
        check_name(name)?;
        if !self
            .control
            .status()
            .identities
            .iter()
            .any(|i| i.name == name)
        {
            return Err(ApiError::NotFound(format!("no identity named {name:?}")));
        }
        match self.control.renew(name).await {
            Ok(()) => Ok(()),
            Err(ControlError::NotFound(_)) => {
                Err(ApiError::NotFound(format!("no identity named {name:?}")))
            }
            Err(e) => Err(ApiError::internal(
                "renewal requested over D-Bus failed",
                &e,
            )),
        }
    }

    /// Re-reads the configuration. Root or the admin group only.
    async fn reload_config(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), ApiError> {
        self.policy
            .check_admin(connection, &header, "ReloadConfig")
            .await?;
        self.control.reload_config().await.map_err(|e| {
            tracing::warn!(error = %e, "configuration reload requested over D-Bus failed");
            ApiError::Failed(format!("configuration reload failed: {e}"))
        })
    }

    /// leafd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        self.control.status().version
    }

    /// The host key's backend (`soft`, `tpm`, `pkcs11`), "" before the key is loaded.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn backend(&self) -> String {
        self.control
            .status()
            .host_key
            .map(|k| k.backend)
            .unwrap_or_default()
    }

    /// Whether the host key's backend refuses to export it.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn host_key_non_exportable(&self) -> bool {
        self.control
            .status()
            .host_key
            .is_some_and(|k| k.non_exportable)
    }

    /// A new leaf is in an identity's keystores.
    #[zbus(signal)]
    async fn certificate_rotated(
        emitter: &SignalEmitter<'_>,
        identity: &str,
        serial: &str,
        not_after_unix: u64,
    ) -> zbus::Result<()>;

    /// A broker did not pick up an identity's new keystores.
    #[zbus(signal)]
    async fn reload_failed(
        emitter: &SignalEmitter<'_>,
        identity: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// The trust bundle changed.
    #[zbus(signal)]
    async fn trust_bundle_changed(emitter: &SignalEmitter<'_>, version: u64) -> zbus::Result<()>;
}

/// `/org/leafd/leafd1/identity/<escaped name>`.
struct IdentityObject {
    name: String,
    control: Arc<dyn Control>,
}

impl IdentityObject {
    fn current(&self) -> Option<IdentityStatus> {
        self.control
            .status()
            .identities
            .into_iter()
            .find(|i| i.name == self.name)
    }
}

#[zbus::interface(name = "org.leafd.leafd1.Identity")]
impl IdentityObject {
    /// The identity's name.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn name(&self) -> String {
        self.name.clone()
    }

    /// Serial (hex) of the leaf in the keystores, "" if none yet.
    #[zbus(property)]
    async fn serial(&self) -> String {
        self.current().and_then(|i| i.serial).unwrap_or_default()
    }

    /// notBefore of the leaf, unix seconds; 0 if none.
    #[zbus(property)]
    async fn not_before(&self) -> u64 {
        unix_seconds(self.current().and_then(|i| i.not_before))
    }

    /// notAfter of the leaf, unix seconds; 0 if none.
    #[zbus(property)]
    async fn not_after(&self) -> u64 {
        unix_seconds(self.current().and_then(|i| i.not_after))
    }

    /// Planned renewal, unix seconds; 0 if none.
    #[zbus(property)]
    async fn next_renewal(&self) -> u64 {
        unix_seconds(self.current().and_then(|i| i.next_renewal))
    }

    /// The issuer of the leaf (RFC 2253); "" if none.
    #[zbus(property)]
    async fn issuer(&self) -> String {
        self.current().and_then(|i| i.issuer).unwrap_or_default()
    }

    /// The keystore files written for this identity.
    #[zbus(property)]
    async fn keystores(&self) -> Vec<String> {
        self.current()
            .map(|i| i.outputs.iter().map(|p| p.display().to_string()).collect())
            .unwrap_or_default()
    }

    /// The last error, "" if the last attempt succeeded.
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.current()
            .and_then(|i| i.last_error)
            .unwrap_or_default()
    }
}

/// The running service: the bus connection that owns [`BUS_NAME`].
#[derive(Clone)]
pub struct Service {
    connection: zbus::Connection,
    control: Arc<dyn Control>,
    exported: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Exports the Manager object and one object per identity in `control.status()` on the
/// connection `conn_builder` builds, then requests [`BUS_NAME`] (so no caller sees the
/// name before the objects exist). `admin_gid` is the `leafd-admin` group, if any.
pub async fn serve(
    conn_builder: zbus::connection::Builder<'_>,
    control: Arc<dyn Control>,
    admin_gid: Option<u32>,
) -> zbus::Result<Service> {
    let status = control.status();
    let connection = conn_builder
        .serve_at(
            MANAGER_PATH,
            ManagerObject {
                control: Arc::clone(&control),
                policy: Policy { admin_gid },
            },
        )?
        .build()
        .await?;
    let mut exported = BTreeSet::new();
    for identity in &status.identities {
        if !exported.insert(identity.name.clone()) {
            continue;
        }
        connection
            .object_server()
            .at(
                identity_path(&identity.name)?,
                IdentityObject {
                    name: identity.name.clone(),
                    control: Arc::clone(&control),
                },
            )
            .await?;
    }
    // Only now, with every object in place, take the well-known name.
    connection.request_name(BUS_NAME).await?;
    Ok(Service {
        connection,
        control,
        exported: Arc::new(Mutex::new(exported)),
    })
}

impl Service {
    /// The bus connection.
    pub fn connection(&self) -> &zbus::Connection {
        &self.connection
    }

    /// Adds objects for new identities in `status`, removes those of identities that are
    /// gone, and emits `PropertiesChanged` for the ones that stay.
    pub async fn refresh_identities(&self, status: &Status) -> zbus::Result<()> {
        let server = self.connection.object_server();
        let mut exported = self.exported.lock().await;
        let wanted: BTreeSet<String> = status.identities.iter().map(|i| i.name.clone()).collect();
        let gone: Vec<String> = exported.difference(&wanted).cloned().collect();
        for name in gone {
            server
                .remove::<IdentityObject, _>(identity_path(&name)?)
                .await?;
            exported.remove(&name);
        }
        for name in &wanted {
            let path = identity_path(name)?;
            if exported.contains(name) {
                let iface = server.interface::<_, IdentityObject>(&path).await?;
                let emitter = iface.signal_emitter();
                let identity = iface.get().await;
                identity.serial_changed(emitter).await?;
                identity.not_before_changed(emitter).await?;
                identity.not_after_changed(emitter).await?;
                identity.next_renewal_changed(emitter).await?;
                identity.issuer_changed(emitter).await?;
                identity.keystores_changed(emitter).await?;
                identity.last_error_changed(emitter).await?;
            } else {
                server
                    .at(
                        path,
                        IdentityObject {
                            name: name.clone(),
                            control: Arc::clone(&self.control),
                        },
                    )
                    .await?;
                exported.insert(name.clone());
            }
        }
        Ok(())
    }

    /// Emits `CertificateRotated`.
    pub async fn emit_rotated(
        &self,
        identity: &str,
        serial: &str,
        not_after: SystemTime,
    ) -> zbus::Result<()> {
        let emitter = SignalEmitter::new(&self.connection, MANAGER_PATH)?;
        ManagerObject::certificate_rotated(
            &emitter,
            identity,
            serial,
            unix_seconds(Some(not_after)),
        )
        .await
    }

    /// Emits `ReloadFailed`; `reason` is shown to every listener, so keep secrets out.
    pub async fn emit_reload_failed(&self, identity: &str, reason: &str) -> zbus::Result<()> {
        let emitter = SignalEmitter::new(&self.connection, MANAGER_PATH)?;
        ManagerObject::reload_failed(&emitter, identity, reason).await
    }

    /// Emits `TrustBundleChanged`.
    pub async fn emit_trust_bundle_changed(&self, version: u64) -> zbus::Result<()> {
        let emitter = SignalEmitter::new(&self.connection, MANAGER_PATH)?;
        ManagerObject::trust_bundle_changed(&emitter, version).await
    }
}

/// Client side of `org.leafd.leafd1.Manager`.
#[zbus::proxy(
    interface = "org.leafd.leafd1.Manager",
    default_service = "org.leafd.leafd1",
    default_path = "/org/leafd/leafd1",
    gen_blocking = false
)]
pub trait Manager {
    /// The identities' names.
    fn list_identities(&self) -> zbus::Result<Vec<String>>;
    /// The status snapshot as JSON.
    fn get_status(&self) -> zbus::Result<String>;
    /// Renews one identity now.
    fn renew(&self, name: &str) -> zbus::Result<()>;
    /// Re-reads the configuration.
    fn reload_config(&self) -> zbus::Result<()>;
    /// leafd's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    /// The host key's backend.
    #[zbus(property)]
    fn backend(&self) -> zbus::Result<String>;
    /// Whether the host key cannot be exported.
    #[zbus(property)]
    fn host_key_non_exportable(&self) -> zbus::Result<bool>;
    /// A new leaf is in an identity's keystores.
    #[zbus(signal)]
    fn certificate_rotated(
        &self,
        identity: &str,
        serial: &str,
        not_after_unix: u64,
    ) -> zbus::Result<()>;
    /// A broker did not pick up an identity's new keystores.
    #[zbus(signal)]
    fn reload_failed(&self, identity: &str, reason: &str) -> zbus::Result<()>;
    /// The trust bundle changed.
    #[zbus(signal)]
    fn trust_bundle_changed(&self, version: u64) -> zbus::Result<()>;
}

/// Client side of `org.leafd.leafd1.Identity` (build it with `.path(identity_path(..)?)`).
#[zbus::proxy(
    interface = "org.leafd.leafd1.Identity",
    default_service = "org.leafd.leafd1",
    gen_blocking = false
)]
pub trait Identity {
    /// The identity's name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// Serial (hex) of the leaf, "" if none.
    #[zbus(property)]
    fn serial(&self) -> zbus::Result<String>;
    /// notBefore, unix seconds; 0 if unknown.
    #[zbus(property)]
    fn not_before(&self) -> zbus::Result<u64>;
    /// notAfter, unix seconds; 0 if none.
    #[zbus(property)]
    fn not_after(&self) -> zbus::Result<u64>;
    /// Planned renewal, unix seconds; 0 if none.
    #[zbus(property)]
    fn next_renewal(&self) -> zbus::Result<u64>;
    /// The leaf's issuer; "" if unknown.
    #[zbus(property)]
    fn issuer(&self) -> zbus::Result<String>;
    /// The keystore files.
    #[zbus(property)]
    fn keystores(&self) -> zbus::Result<Vec<String>>;
    /// The last error, "" if none.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}

/// Connects to leafd's Manager: on the system bus, or on the bus at `address`
/// (a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`).
pub async fn connect_manager(address: Option<&str>) -> zbus::Result<ManagerProxy<'static>> {
    let connection = match address {
        Some(address) => zbus::connection::Builder::address(address)?.build().await?,
        None => zbus::Connection::system().await?,
    };
    ManagerProxy::new(&connection).await
}
