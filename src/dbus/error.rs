//! Errors sent to D-Bus callers.
//!
//! Callers only ever see [`ApiError`]. Internal failures are logged with their full
//! chain and reach the caller as [`INTERNAL_ERROR`], so no paths, PINs or backend
//! details leak over the bus.

use std::fmt::Display;

/// The message sent for every internal failure.
pub const INTERNAL_ERROR: &str = "internal error; see journalctl -u leafd";

/// An error returned over D-Bus, named `org.leafd.leafd1.Error.<Variant>`.
#[derive(Debug, Clone, PartialEq, Eq, zbus::DBusError)]
#[zbus(prefix = "org.leafd.leafd1.Error")]
pub enum ApiError {
    /// An argument is malformed (for example an empty or invalid identity name).
    InvalidArgument(String),
    /// The named object does not exist (for example an unknown identity).
    NotFound(String),
    /// The caller may not call this method.
    AccessDenied(String),
    /// The operation failed; internal failures carry only [`INTERNAL_ERROR`].
    Failed(String),
}

impl ApiError {
    /// Logs `error` with its source chain and returns `Failed` with [`INTERNAL_ERROR`].
    pub fn internal(context: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "{context}");
        Self::Failed(INTERNAL_ERROR.to_owned())
    }

    /// Like [`ApiError::internal`] for errors that are only [`Display`].
    pub fn internal_display(context: &str, error: &dyn Display) -> Self {
        tracing::error!(error = %error, "{context}");
        Self::Failed(INTERNAL_ERROR.to_owned())
    }
}
