//! Broker reload actions and served-certificate verification.
//!
//! After leafd writes a new Kafka keystore it must make the broker load it and then check
//! that the broker really serves the new leaf:
//!
//! - [`kafka`]: a minimal Kafka admin client (4-byte length framing, correlation ids,
//!   ApiVersions negotiation) that sends a per-broker `IncrementalAlterConfigs` setting
//!   `listener.name.<listener>.ssl.{keystore,truststore}.location`. Use
//!   [`ReloadMode::AlternatePaths`] on KRaft brokers: a changed value is validated
//!   synchronously by the target broker, so a bad store is refused in the response instead
//!   of only in the broker log. [`ReloadMode::SamePath`] is for ZooKeeper-era brokers, which
//!   reload an unchanged path when the file's millisecond mtime changed.
//! - [`verify`]: a TLS handshake that captures the served end-entity certificate (without
//!   trusting it) and reads its serial, plus a poll loop waiting for the expected serial.
//!
//! Only new connections see a reloaded store; existing TLS connections keep the old
//! certificate, so verification always opens a fresh connection.

pub mod kafka;
pub mod run;
pub mod systemd;
pub mod verify;

use std::net::SocketAddr;

pub use kafka::{KafkaAdmin, ReloadMode, Security, StoreKind, SupportedApi, next_path};
pub use verify::{served_serial, wait_for_serial};

/// Errors from reloading a broker's stores or verifying what it serves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be opened (refused, unroutable or timed out).
    #[error("could not connect to {addr}")]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// The underlying failure (`TimedOut` when the connect timeout expired).
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while a request or response was in flight.
    #[error("connection to {addr} failed during {during}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// What was being done.
        during: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not answer in time.
    #[error("{addr} did not answer {during} within {timeout:?}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// What was being waited for.
        during: &'static str,
        /// The limit that expired.
        timeout: std::time::Duration,
    },
    /// The TLS handshake failed before the peer's certificate was seen.
    #[error("tls handshake with {addr} failed")]
    Handshake {
        /// The peer.
        addr: SocketAddr,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The name to send as SNI / to check is not a valid DNS name or IP address.
    #[error("invalid tls server name {0:?}")]
    ServerName(String),
    /// The peer sent something that is not a valid Kafka response.
    #[error("kafka protocol error: {0}")]
    Protocol(String),
    /// The broker supports none of the API versions this client speaks.
    #[error("broker does not support {api} versions {min}-{max}")]
    Unsupported {
        /// The API name.
        api: &'static str,
        /// Lowest version this client speaks.
        min: i16,
        /// Highest version this client speaks.
        max: i16,
    },
    /// The principal lacks `ALTER_CONFIGS` on `CLUSTER` (CLUSTER_AUTHORIZATION_FAILED, 31).
    #[error("not authorized to alter broker configs: {message}")]
    NotAuthorized {
        /// The broker's error message, or the error name when it sent none.
        message: String,
    },
    /// The broker refused the change, e.g. INVALID_CONFIG (40) for a store that does not
    /// load or fails the DN/SAN checks, INVALID_REQUEST (42), POLICY_VIOLATION (44).
    #[error("broker rejected the config change with {name} ({code}): {message}")]
    Rejected {
        /// The Kafka error code.
        code: i16,
        /// The Kafka error name, e.g. `INVALID_CONFIG`.
        name: String,
        /// The broker's error message (empty when it sent none).
        message: String,
    },
    /// The served certificate could not be parsed.
    #[error("could not parse the served certificate: {0}")]
    Certificate(String),
    /// The served certificate's serial is not the expected one.
    #[error("served certificate serial {served} does not match the expected {expected}")]
    Mismatch {
        /// The serial seen last.
        served: String,
        /// The serial waited for.
        expected: String,
    },
}

impl Error {
    /// Whether the same operation may succeed later without any change on leafd's side.
    ///
    /// Network failures, timeouts, retriable Kafka errors and a serial mismatch (KRaft applies
    /// the change asynchronously) are retryable; a refused store, missing permissions or a
    /// protocol mismatch are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Connection { .. }
            | Self::Timeout { .. }
            | Self::Handshake { .. }
            | Self::Mismatch { .. } => true,
            Self::Rejected { code, .. } => {
                use kafka_protocol::error::ParseResponseErrorCode;
                code.err().is_some_and(|e| e.is_retriable())
            }
            Self::ServerName(_)
            | Self::Protocol(_)
            | Self::Unsupported { .. }
            | Self::NotAuthorized { .. }
            | Self::Certificate(_) => false,
        }
    }
}
