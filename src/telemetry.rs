//! Logging: journald when running under systemd (`JOURNAL_STREAM`), human stderr otherwise.
//! Rotation events carry stable `MESSAGE_ID`s (see docs/message-ids.md).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// A leaf was rotated and every store written.
pub const MSG_ROTATED: &str = "205c799f9917419bbd95abb43f2c6a84";
/// A rotation failed; the previous stores stay in place.
pub const MSG_ROTATION_FAILED: &str = "95e06c40d83649b9b8e5cbd77ccced40";
/// A host issuing certificate was issued.
pub const MSG_HOST_CERT_ISSUED: &str = "403ad7aba0244fc1942f33165b8add53";
/// The host issuing certificate could not be renewed.
pub const MSG_HOST_CERT_FAILED: &str = "1da69f3b629e43dd83288df11ab3f67c";
/// The configuration was reloaded.
pub const MSG_CONFIG_RELOADED: &str = "52cbcf5b7eb54de88460a5864e29200e";
/// A new configuration was rejected; the old one keeps running.
pub const MSG_CONFIG_REJECTED: &str = "e1c1805e5f374c0f8d930e45b2d6e650";

/// The broker took a rotation: every reload action succeeded and every listener serves the
/// new serial.
pub const MSG_RELOAD_VERIFIED: &str = "ed1dd1f838a54db29b7da4f0c35f70e4";
/// Alarm: a reload action failed or a listener never served the new serial.
pub const MSG_RELOAD_FAILED: &str = "01b537e9332448c88164b08f8ceb75c7";
/// A reload action failed in a way worth retrying (broker unreachable, old serial served).
pub const MSG_RELOAD_RETRY: &str = "a72a0162bb9a4b8b86277bc0c84e3afe";
/// The D-Bus API could not be offered on the system bus; leafd runs on without it.
pub const MSG_DBUS_UNAVAILABLE: &str = "9040f0d75e5f4adc94b4bc5db22fae4d";

/// Changes the log filter after start-up (once the config is read).
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Applies a filter directive such as `info` or `leafd=debug`; `RUST_LOG` wins if set.
    pub fn set_level(&self, directive: &str) -> Result<(), String> {
        let filter = match std::env::var("RUST_LOG") {
            Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
            _ => EnvFilter::try_new(directive),
        }
        .map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. Call first thing in `main`.
pub fn init(default_level: &str) -> LogControl {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| {
            l.with_field_prefix(None)
                .with_syslog_identifier("leafd".into())
        });
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald.map(|l| l.boxed()))
        .with(fmt)
        .try_init();
    LogControl { handle }
}
