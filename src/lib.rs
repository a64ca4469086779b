//! leafd: keeps the TLS identities of bare-metal Kafka hosts fresh.
//!
//! The library holds all logic; the binaries in `src/bin` are thin wrappers.
//! See `ARCHITECTURE.md` for the module map and the invariants.

pub mod atomic;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dbus;
pub mod der;
pub mod error;
pub mod issuer;
pub mod kafka;
pub mod keys;
pub mod keystore;
pub mod metrics;
pub mod reload;
pub mod renew;
pub mod secret;
pub mod settings;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod template;
pub mod vocab;
pub mod x509;
