//! Broker reload actions and served-certificate verification.
//!
//! After leafd writes a new Kafka keystore it must make the broker load it and then check
//! that the broker really serves the new leaf:
//!
//! - [`kafka`]: a minimal Kafka admin client (4-byte length framing, correlation ids,
//!   ApiVersions negotiation; `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` and `SASL_SSL` with the
//!   [`sasl`] mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512) that reads a listener's
//!   current store locations with `DescribeConfigs` and sends a per-broker
//!   `IncrementalAlterConfigs` setting
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
pub mod pki;
pub mod run;
pub mod sasl;
pub mod systemd;
pub mod verify;

use std::net::SocketAddr;

pub use kafka::{
    KafkaAdmin, ReloadMode, Security, StoreKind, StoreLocations, SupportedApi, next_path,
};
pub use sasl::{Sasl, SaslMechanism};
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
    /// The principal lacks `ALTER_CONFIGS` (or, to read, `DESCRIBE_CONFIGS`) on `CLUSTER`
    /// (CLUSTER_AUTHORIZATION_FAILED, 31).
    #[error("not authorized to {operation}: {message}")]
    NotAuthorized {
        /// What was refused, e.g. `alter broker configs`.
        operation: &'static str,
        /// The broker's error message, or the error name when it sent none.
        message: String,
    },
    /// The broker could not describe its configs, e.g. INVALID_REQUEST (42) for another
    /// broker's id.
    #[error("broker could not describe its configs: {name} ({code}): {message}")]
    DescribeFailed {
        /// The Kafka error code.
        code: i16,
        /// The Kafka error name.
        name: String,
        /// The broker's error message (empty when it sent none).
        message: String,
    },
    /// The listener is a KRaft controller listener (`controller.listener.names`), whose stores
    /// Kafka cannot reload at run time (KAFKA-20583).
    #[error(
        "listener {listener} is a KRaft controller listener (controller.listener.names), whose \
         stores Kafka cannot reload at run time; use a systemd restart action for it and a \
         lifetime that fits the restarts"
    )]
    ControllerListener {
        /// The listener the action names.
        listener: String,
    },
    /// The broker does not enable the configured SASL mechanism (UNSUPPORTED_SASL_MECHANISM,
    /// 33).
    #[error(
        "broker does not enable sasl mechanism {mechanism}; enabled mechanisms: [{}]",
        .enabled.join(", ")
    )]
    SaslMechanismUnsupported {
        /// The mechanism leafd asked for.
        mechanism: &'static str,
        /// The broker's `sasl.enabled.mechanisms` for this listener.
        enabled: Vec<String>,
    },
    /// The broker received a SASL request it did not expect (ILLEGAL_SASL_STATE, 34).
    #[error("broker reports an illegal sasl state during {during}: {message}")]
    SaslIllegalState {
        /// The request that was refused.
        during: &'static str,
        /// The broker's error message, or a description.
        message: String,
    },
    /// The broker refused the credentials (SASL_AUTHENTICATION_FAILED, 58, or a SCRAM
    /// `e=` error). Never carries the password.
    #[error("sasl {mechanism} authentication as {username:?} failed: {message}")]
    AuthenticationFailed {
        /// The mechanism.
        mechanism: &'static str,
        /// The user name.
        username: String,
        /// The broker's error message.
        message: String,
    },
    /// A SCRAM message from the broker failed the client's checks: its nonce does not extend
    /// ours, it asks for too few (or too many) iterations, it is malformed, or its server
    /// signature does not verify (the peer does not hold the credential: not the broker).
    #[error("{mechanism} exchange with the broker failed verification: {reason}")]
    ScramVerification {
        /// The mechanism.
        mechanism: &'static str,
        /// What failed.
        reason: String,
    },
    /// Another error code in SaslHandshake or SaslAuthenticate.
    #[error("{during} failed with {name} ({code}): {message}")]
    Sasl {
        /// The request.
        during: &'static str,
        /// The Kafka error code.
        code: i16,
        /// The Kafka error name.
        name: String,
        /// The broker's error message (empty when it sent none).
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
    /// the change asynchronously) are retryable; a refused store, missing permissions, refused
    /// credentials, a SCRAM exchange that fails verification or a protocol mismatch are not.
    pub fn is_retryable(&self) -> bool {
        use kafka_protocol::error::ParseResponseErrorCode;
        match self {
            Self::Unreachable { .. }
            | Self::Connection { .. }
            | Self::Timeout { .. }
            | Self::Handshake { .. }
            | Self::Mismatch { .. } => true,
            Self::Rejected { code, .. }
            | Self::DescribeFailed { code, .. }
            | Self::Sasl { code, .. } => code.err().is_some_and(|e| e.is_retriable()),
            Self::ServerName(_)
            | Self::Protocol(_)
            | Self::Unsupported { .. }
            | Self::NotAuthorized { .. }
            | Self::SaslMechanismUnsupported { .. }
            | Self::ControllerListener { .. }
            | Self::SaslIllegalState { .. }
            | Self::AuthenticationFailed { .. }
            | Self::ScramVerification { .. }
            | Self::Certificate(_) => false,
        }
    }
}
