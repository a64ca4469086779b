//! The D-Bus API: `org.leafd.leafd1` on the system bus.
//!
//! [`api::serve`] exports the Manager object at [`api::MANAGER_PATH`] and one Identity
//! object per identity under [`api::IDENTITY_PATH_PREFIX`], then requests the well-known
//! name [`api::BUS_NAME`]. The daemon supplies the data and the actions through the
//! narrow [`api::Control`] trait. Reads are open to everyone; `Renew` and `ReloadConfig`
//! re-check the caller ([`authz`]) on top of the bus policy in
//! `packaging/dbus/org.leafd.leafd1.conf`. Errors sent to callers are [`error::ApiError`].
//!
//! [`api::connect_manager`] is the client side that `leafctl` uses.

pub mod api;
pub mod authz;
pub mod error;

pub use api::{
    BUS_NAME, Control, ControlError, ControlFuture, IDENTITY_PATH_PREFIX, IdentityProxy,
    MANAGER_PATH, ManagerProxy, Service, connect_manager, identity_path, serve,
};
pub use error::ApiError;
