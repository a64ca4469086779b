//! A minimal Kafka admin client: just enough to read and alter a broker's store locations.
//!
//! `kafka-protocol` is a codec only; this module adds the 4-byte big-endian length framing,
//! correlation ids, ApiVersions (key 18) negotiation, the socket (plain TCP or TLS) and SASL
//! authentication. With SASL, a connection runs the sequence of Kafka's
//! `SaslClientAuthenticator`: ApiVersions v0, SaslHandshake v1 naming the mechanism, then the
//! mechanism's tokens in SaslAuthenticate requests (the highest version both sides speak,
//! v0-v2); only then are admin requests sent. The mechanisms themselves are in
//! [`super::sasl`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::{Zeroize, Zeroizing};

use super::Error;
use super::sasl::{ScramClient, ScramError, plain_token, random_nonce};
use super::{Sasl, SaslMechanism};
use crate::secret::Secret;

/// ConfigResource type BROKER.
const RESOURCE_BROKER: i8 = 4;
/// AlterConfigOp SET.
const OP_SET: i8 = 0;
/// CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// ILLEGAL_SASL_STATE.
const ILLEGAL_SASL_STATE: i16 = 34;
/// SASL_AUTHENTICATION_FAILED.
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// IncrementalAlterConfigs versions this client speaks (v1 is flexible).
const IAC_MIN: i16 = 0;
const IAC_MAX: i16 = 1;
/// DescribeConfigs versions this client speaks (v4 is flexible; v0 left Kafka in 4.0).
const DESCRIBE_CONFIGS_MIN: i16 = 1;
const DESCRIBE_CONFIGS_MAX: i16 = 4;
/// SaslHandshake v1: the tokens follow in SaslAuthenticate requests (v0 sent them raw).
const SASL_HANDSHAKE_VERSION: i16 = 1;
/// SaslAuthenticate versions this client speaks (v1 adds the session lifetime, v2 is flexible).
const SASL_AUTHENTICATE_MIN: i16 = 0;
const SASL_AUTHENTICATE_MAX: i16 = 2;
/// ApiVersions v0: every broker answers it, and its response header is always v0.
const API_VERSIONS_VERSION: i16 = 0;
/// Responses larger than this are refused (ours are a few hundred bytes).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Default limit for connecting and for each request/response exchange.
pub const DEFAULT_TIMEOUT: Duration = crate::settings::defaults::KAFKA_TIMEOUT;

/// How to reach the admin listener: Kafka's `security.protocol` and what it needs. `Debug`
/// shows SASL passwords redacted.
#[derive(Clone, Debug)]
pub enum Security {
    /// `PLAINTEXT`.
    Plaintext,
    /// `SSL`: TLS with the given client config (which carries leafd's client certificate, if
    /// the listener requires one); `server_name` is sent as SNI and checked by the config's
    /// verifier.
    Ssl {
        /// The rustls client configuration.
        config: Arc<rustls::ClientConfig>,
        /// The broker's name as its certificate states it.
        server_name: ServerName<'static>,
    },
    /// `SASL_PLAINTEXT`: SASL authentication on a plain TCP connection. The PLAIN mechanism
    /// sends the password in clear, so keep this to a loopback listener or use SCRAM.
    SaslPlaintext {
        /// The mechanism and credentials.
        sasl: Sasl,
    },
    /// `SASL_SSL`: TLS as for [`Security::Ssl`], then SASL authentication inside it.
    SaslSsl {
        /// The rustls client configuration.
        config: Arc<rustls::ClientConfig>,
        /// The broker's name as its certificate states it.
        server_name: ServerName<'static>,
        /// The mechanism and credentials.
        sasl: Sasl,
    },
}

impl Security {
    /// Kafka's name for this protocol, as in `security.protocol`, e.g. `SASL_SSL`.
    pub fn protocol_name(&self) -> &'static str {
        match self {
            Security::Plaintext => "PLAINTEXT",
            Security::Ssl { .. } => "SSL",
            Security::SaslPlaintext { .. } => "SASL_PLAINTEXT",
            Security::SaslSsl { .. } => "SASL_SSL",
        }
    }

    fn tls(&self) -> Option<(&Arc<rustls::ClientConfig>, &ServerName<'static>)> {
        match self {
            Security::Plaintext | Security::SaslPlaintext { .. } => None,
            Security::Ssl {
                config,
                server_name,
            }
            | Security::SaslSsl {
                config,
                server_name,
                ..
            } => Some((config, server_name)),
        }
    }

    fn sasl(&self) -> Option<&Sasl> {
        match self {
            Security::Plaintext | Security::Ssl { .. } => None,
            Security::SaslPlaintext { sasl } | Security::SaslSsl { sasl, .. } => Some(sasl),
        }
    }
}

/// Which store a location change refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `ssl.keystore.location`.
    Keystore,
    /// `ssl.truststore.location`.
    Truststore,
}

impl StoreKind {
    /// The config name, without the listener prefix.
    pub fn config_suffix(self) -> &'static str {
        match self {
            StoreKind::Keystore => "ssl.keystore.location",
            StoreKind::Truststore => "ssl.truststore.location",
        }
    }

    /// The full per-listener config name: `listener.name.<listener lower-cased>.ssl.*.location`.
    pub fn config_name(self, listener: &str) -> String {
        format!(
            "listener.name.{}.{}",
            listener.to_lowercase(),
            self.config_suffix()
        )
    }
}

/// How the broker is made to reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadMode {
    /// The location alternates between two paths (see [`next_path`]). The value changes, so
    /// a KRaft broker validates the new store synchronously and refuses a bad one in the
    /// response. Recommended.
    AlternatePaths,
    /// The location stays the same and the broker reloads because the file's mtime changed.
    /// For ZooKeeper-era brokers. A KRaft broker answers success before loading the file, so
    /// only served-certificate verification can tell whether it worked.
    SamePath,
}

/// A listener's current store locations, as the broker reports them in DescribeConfigs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreLocations {
    /// The keystore location the listener uses, `None` when the broker has none.
    pub keystore: Option<String>,
    /// The truststore location the listener uses, `None` when the broker has none.
    pub truststore: Option<String>,
}

/// One API the broker supports, from its ApiVersions response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedApi {
    /// The API key.
    pub key: i16,
    /// Lowest supported version.
    pub min: i16,
    /// Highest supported version.
    pub max: i16,
}

/// The path to write the next store to when alternating between `a` and `b`: `b` when the
/// broker currently points at `a`, otherwise `a`. Never overwrite the file the broker's
/// current override names.
pub fn next_path<'p>(current: &Path, a: &'p Path, b: &'p Path) -> &'p Path {
    if current == a { b } else { a }
}

/// An admin client for one broker. Each operation opens its own connection and, with a SASL
/// [`Security`], authenticates it before sending anything else. `Debug` shows the password
/// redacted.
#[derive(Clone, Debug)]
pub struct KafkaAdmin {
    bootstrap: SocketAddr,
    security: Security,
    client_id: String,
    timeout: Duration,
}

impl KafkaAdmin {
    /// A client for the broker listening at `bootstrap`. It must be the broker whose
    /// configs are altered: brokers refuse per-broker changes for another broker id.
    pub fn new(bootstrap: SocketAddr, security: Security, client_id: impl Into<String>) -> Self {
        Self {
            bootstrap,
            security,
            client_id: client_id.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the limit for connecting and for each request/response exchange.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The broker address.
    pub fn bootstrap(&self) -> SocketAddr {
        self.bootstrap
    }

    /// The APIs and versions the broker supports (after authenticating, with SASL).
    pub async fn api_versions(&self) -> Result<Vec<SupportedApi>, Error> {
        let mut conn = self.connect().await?;
        conn.api_versions().await.map(<[SupportedApi]>::to_vec)
    }

    /// The keystore and truststore locations listener `listener` of broker `broker_id`
    /// currently uses, read with one DescribeConfigs for BROKER `broker_id`. At start-up this
    /// tells which of the A/B paths (see [`next_path`]) the broker is on.
    ///
    /// Each location is `listener.name.<listener>.ssl.{keystore,truststore}.location`, or,
    /// when the listener has no such override, the broker-wide `ssl.*.location` it falls
    /// back to, as Kafka's listener config does. Needs `DESCRIBE_CONFIGS` on `CLUSTER`.
    pub async fn current_store_locations(
        &self,
        broker_id: i32,
        listener: &str,
    ) -> Result<StoreLocations, Error> {
        let mut conn = self.connect().await?;
        let version = conn.negotiate_describe().await?;
        conn.describe_store_locations(version, broker_id, listener)
            .await
    }

    /// Sends one IncrementalAlterConfigs for BROKER `broker_id` that SETs each change's
    /// `listener.name.<listener>.ssl.{keystore,truststore}.location`.
    pub async fn alter_store_locations(
        &self,
        broker_id: i32,
        listener: &str,
        changes: &[(StoreKind, PathBuf)],
        validate_only: bool,
    ) -> Result<(), Error> {
        let mut conn = self.connect().await?;
        let version = conn.negotiate_iac().await?;
        conn.alter(version, broker_id, listener, changes, validate_only)
            .await
    }

    /// Reloads the broker's stores: a `validateOnly` pre-flight, then the real request, on
    /// one connection. With [`ReloadMode::AlternatePaths`] the pre-flight loads and checks
    /// the new store on the broker; with [`ReloadMode::SamePath`] it only checks
    /// authorization and routing (an unchanged value is not validated).
    pub async fn reload(
        &self,
        broker_id: i32,
        listener: &str,
        changes: &[(StoreKind, PathBuf)],
        mode: ReloadMode,
    ) -> Result<(), Error> {
        let mut conn = self.connect().await?;
        // A KRaft controller listener's stores cannot be reloaded at run time: the broker
        // would accept the change and keep serving the old certificate.
        if let Some(controllers) = conn.controller_listeners(broker_id).await?
            && controllers.contains(&listener.to_ascii_lowercase())
        {
            return Err(Error::ControllerListener {
                listener: listener.to_owned(),
            });
        }
        let version = conn.negotiate_iac().await?;
        conn.alter(version, broker_id, listener, changes, true)
            .await?;
        tracing::debug!(
            broker_id,
            listener,
            ?mode,
            "kafka reload pre-flight accepted"
        );
        conn.alter(version, broker_id, listener, changes, false)
            .await?;
        tracing::info!(
            broker_id,
            listener,
            ?mode,
            "kafka broker accepted new store locations"
        );
        Ok(())
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let addr = self.bootstrap;
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(Error::Unreachable { addr, source }),
            Err(_) => {
                return Err(Error::Unreachable {
                    addr,
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                });
            }
        };
        // Nagle would delay our small requests; failing to disable it is harmless.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match self.security.tls() {
            None => Box::new(tcp),
            Some((config, server_name)) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let handshake = connector.connect(server_name.clone(), tcp);
                match tokio::time::timeout(self.timeout, handshake).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(source)) => return Err(Error::Handshake { addr, source }),
                    Err(_) => {
                        return Err(Error::Timeout {
                            addr,
                            during: "the tls handshake",
                            timeout: self.timeout,
                        });
                    }
                }
            }
        };
        let mut conn = Conn {
            stream,
            addr,
            client_id: StrBytes::from_string(self.client_id.clone()),
            timeout: self.timeout,
            next_correlation: 1,
            apis: None,
        };
        if let Some(sasl) = self.security.sasl() {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }
}

/// A per-resource error code of a config response: 0 is success,
/// CLUSTER_AUTHORIZATION_FAILED is [`Error::NotAuthorized`] for `operation`, anything else
/// goes through `other(code, name, message)`.
fn resource_result(
    code: i16,
    message: Option<&StrBytes>,
    operation: &'static str,
    other: fn(i16, String, String) -> Error,
) -> Result<(), Error> {
    let message = message.map(|m| m.as_str().to_owned()).unwrap_or_default();
    match code {
        0 => Ok(()),
        CLUSTER_AUTHORIZATION_FAILED => Err(Error::NotAuthorized {
            operation,
            message: if message.is_empty() {
                error_name(code)
            } else {
                message
            },
        }),
        code => Err(other(code, error_name(code), message)),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    addr: SocketAddr,
    client_id: StrBytes,
    timeout: Duration,
    next_correlation: i32,
    /// The broker's ApiVersions answer, once asked.
    apis: Option<Vec<SupportedApi>>,
}

impl Conn {
    /// The broker's APIs, asked once per connection.
    async fn api_versions(&mut self) -> Result<&[SupportedApi], Error> {
        if self.apis.is_none() {
            let apis = self.fetch_api_versions().await?;
            self.apis = Some(apis);
        }
        Ok(self.apis.as_deref().unwrap_or_default())
    }

    async fn fetch_api_versions(&mut self) -> Result<Vec<SupportedApi>, Error> {
        let request = ApiVersionsRequest::default();
        let response: ApiVersionsResponse = self
            .exchange(
                ApiKey::ApiVersions,
                API_VERSIONS_VERSION,
                &request,
                "ApiVersions",
            )
            .await?;
        if response.error_code != 0 {
            return Err(Error::Protocol(format!(
                "ApiVersions failed with {} ({})",
                error_name(response.error_code),
                response.error_code
            )));
        }
        Ok(response
            .api_keys
            .iter()
            .map(|k| SupportedApi {
                key: k.api_key,
                min: k.min_version,
                max: k.max_version,
            })
            .collect())
    }

    /// The highest IncrementalAlterConfigs version both sides speak.
    async fn negotiate_describe(&mut self) -> Result<i16, Error> {
        self.negotiate(
            ApiKey::DescribeConfigs,
            "DescribeConfigs",
            DESCRIBE_CONFIGS_MIN,
            DESCRIBE_CONFIGS_MAX,
        )
        .await
    }

    async fn negotiate_iac(&mut self) -> Result<i16, Error> {
        self.negotiate(
            ApiKey::IncrementalAlterConfigs,
            "IncrementalAlterConfigs",
            IAC_MIN,
            IAC_MAX,
        )
        .await
    }

    /// The highest version of `key` within `min..=max` that the broker also speaks.
    async fn negotiate(
        &mut self,
        key: ApiKey,
        api: &'static str,
        min: i16,
        max: i16,
    ) -> Result<i16, Error> {
        let apis = self.api_versions().await?;
        highest_common(apis, key, min, max).ok_or(Error::Unsupported { api, min, max })
    }

    /// Authenticates the connection as Kafka's `SaslClientAuthenticator` does: ApiVersions,
    /// SaslHandshake, then the mechanism's SaslAuthenticate round trips.
    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), Error> {
        let mechanism = sasl.mechanism.name();
        let handshake_version = self
            .negotiate(
                ApiKey::SaslHandshake,
                "SaslHandshake",
                SASL_HANDSHAKE_VERSION,
                SASL_HANDSHAKE_VERSION,
            )
            .await?;
        let version = self
            .negotiate(
                ApiKey::SaslAuthenticate,
                "SaslAuthenticate",
                SASL_AUTHENTICATE_MIN,
                SASL_AUTHENTICATE_MAX,
            )
            .await?;
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let response: SaslHandshakeResponse = self
            .exchange(
                ApiKey::SaslHandshake,
                handshake_version,
                &request,
                "SaslHandshake",
            )
            .await?;
        let enabled: Vec<String> = response
            .mechanisms
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect();
        match response.error_code {
            0 => {}
            UNSUPPORTED_SASL_MECHANISM => {
                return Err(Error::SaslMechanismUnsupported { mechanism, enabled });
            }
            ILLEGAL_SASL_STATE => {
                return Err(Error::SaslIllegalState {
                    during: "SaslHandshake",
                    message: format!(
                        "unexpected handshake for {mechanism}; enabled mechanisms: {}",
                        enabled.join(", ")
                    ),
                });
            }
            code => {
                return Err(Error::Sasl {
                    during: "SaslHandshake",
                    code,
                    name: error_name(code),
                    message: format!(
                        "client mechanism {mechanism}, enabled mechanisms: {}",
                        enabled.join(", ")
                    ),
                });
            }
        }

        match sasl.mechanism {
            SaslMechanism::Plain => {
                let token = plain_token(&sasl.username, &sasl.password);
                self.sasl_authenticate(version, sasl, &token).await?;
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let nonce = random_nonce().map_err(|_| {
                    Error::Protocol("the system random generator failed".to_owned())
                })?;
                let client =
                    ScramClient::new(sasl.mechanism, &sasl.username, nonce).ok_or_else(|| {
                        Error::Protocol(format!("{mechanism} is not a SCRAM mechanism"))
                    })?;
                self.scram(version, sasl, client).await?;
            }
        }
        tracing::debug!(
            broker = %self.addr,
            mechanism,
            username = %sasl.username,
            "sasl authentication succeeded"
        );
        Ok(())
    }

    /// The SCRAM round trips: client-first, client-final with the proof, then the server
    /// signature is checked.
    async fn scram(&mut self, version: i16, sasl: &Sasl, client: ScramClient) -> Result<(), Error> {
        let mechanism = sasl.mechanism;
        let fail = |e: ScramError| scram_error(e, sasl);
        let server_first = self
            .sasl_authenticate(version, sasl, &client.client_first())
            .await?;
        let first = client.server_first(&server_first).map_err(fail)?;
        // PBKDF2 with thousands of iterations: keep it off the runtime's thread.
        let password = sasl.password.clone();
        let (client_final, check) =
            tokio::task::spawn_blocking(move || client.client_final(&first, &password))
                .await
                .map_err(|_| {
                    Error::Protocol(format!("the {mechanism} key derivation task failed"))
                })?;
        let server_final = self.sasl_authenticate(version, sasl, &client_final).await?;
        check.verify(&server_final).map_err(fail)
    }

    /// One SaslAuthenticate round trip: sends `token`, returns the server's token.
    async fn sasl_authenticate(
        &mut self,
        version: i16,
        sasl: &Sasl,
        token: &[u8],
    ) -> Result<Bytes, Error> {
        let request =
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
        let response: Result<SaslAuthenticateResponse, Error> = self
            .exchange(
                ApiKey::SaslAuthenticate,
                version,
                &request,
                "SaslAuthenticate",
            )
            .await;
        // The PLAIN token holds the password: wipe our copy (the buffer is not shared).
        if let Ok(mut bytes) = request.auth_bytes.try_into_mut() {
            bytes.as_mut().zeroize();
        }
        let response = response?;
        let code = response.error_code;
        if code == 0 {
            if response.session_lifetime_ms > 0 {
                tracing::debug!(
                    broker = %self.addr,
                    session_lifetime_ms = response.session_lifetime_ms,
                    "broker limits the sasl session lifetime"
                );
            }
            return Ok(response.auth_bytes);
        }
        let message = response
            .error_message
            .as_ref()
            .map(|m| scrub(m.as_str(), &sasl.password))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| error_name(code));
        Err(match code {
            SASL_AUTHENTICATION_FAILED => Error::AuthenticationFailed {
                mechanism: sasl.mechanism.name(),
                username: sasl.username.clone(),
                message,
            },
            ILLEGAL_SASL_STATE => Error::SaslIllegalState {
                during: "SaslAuthenticate",
                message,
            },
            UNSUPPORTED_SASL_MECHANISM => Error::SaslMechanismUnsupported {
                mechanism: sasl.mechanism.name(),
                enabled: Vec::new(),
            },
            code => Error::Sasl {
                during: "SaslAuthenticate",
                code,
                name: error_name(code),
                message,
            },
        })
    }

    async fn describe_store_locations(
        &mut self,
        version: i16,
        broker_id: i32,
        listener: &str,
    ) -> Result<StoreLocations, Error> {
        let keystore = StoreKind::Keystore.config_name(listener);
        let truststore = StoreKind::Truststore.config_name(listener);
        let names = [
            keystore.as_str(),
            truststore.as_str(),
            StoreKind::Keystore.config_suffix(),
            StoreKind::Truststore.config_suffix(),
        ];
        let configs = self.describe(version, broker_id, &names).await?;
        let value = |name: &str| {
            configs
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
        };
        Ok(StoreLocations {
            keystore: value(&keystore).or_else(|| value(names[2])),
            truststore: value(&truststore).or_else(|| value(names[3])),
        })
    }

    /// The broker's `controller.listener.names`, lower-cased; `None` when the broker does not
    /// say (the principal may not describe configs, or the broker refuses the resource: the
    /// pre-flight then reports its own error, and the served-certificate check remains).
    async fn controller_listeners(&mut self, broker_id: i32) -> Result<Option<Vec<String>>, Error> {
        let version = self.negotiate_describe().await?;
        let configs = match self
            .describe(version, broker_id, &["controller.listener.names"])
            .await
        {
            Ok(configs) => configs,
            Err(Error::NotAuthorized { .. } | Error::DescribeFailed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            configs
                .into_iter()
                .filter_map(|(_, v)| v)
                .flat_map(|v| {
                    v.split(',')
                        .map(|l| l.trim().to_ascii_lowercase())
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect(),
        ))
    }

    /// One DescribeConfigs for BROKER `broker_id` and the config `names`: each name found
    /// with its value (`None` for a sensitive or unset one).
    async fn describe(
        &mut self,
        version: i16,
        broker_id: i32,
        names: &[&str],
    ) -> Result<Vec<(String, Option<String>)>, Error> {
        let resource_name = broker_id.to_string();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(StrBytes::from_string(resource_name.clone()))
                .with_configuration_keys(Some(
                    names
                        .iter()
                        .map(|n| StrBytes::from_string((*n).to_owned()))
                        .collect(),
                )),
        ]);
        let response: DescribeConfigsResponse = self
            .exchange(
                ApiKey::DescribeConfigs,
                version,
                &request,
                "DescribeConfigs",
            )
            .await?;
        let Some(result) = response.results.iter().find(|r| {
            r.resource_type == RESOURCE_BROKER && r.resource_name.as_str() == resource_name
        }) else {
            return Err(Error::Protocol(format!(
                "DescribeConfigs response has no result for broker {resource_name}"
            )));
        };
        resource_result(
            result.error_code,
            result.error_message.as_ref(),
            "describe broker configs",
            |code, name, message| Error::DescribeFailed {
                code,
                name,
                message,
            },
        )?;
        Ok(result
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_owned(),
                    c.value.as_ref().map(|v| v.as_str().to_owned()),
                )
            })
            .collect())
    }

    async fn alter(
        &mut self,
        version: i16,
        broker_id: i32,
        listener: &str,
        changes: &[(StoreKind, PathBuf)],
        validate_only: bool,
    ) -> Result<(), Error> {
        let mut configs = Vec::with_capacity(changes.len());
        for (kind, path) in changes {
            let value = path.to_str().ok_or_else(|| {
                Error::Protocol(format!("store path {} is not UTF-8", path.display()))
            })?;
            configs.push(
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(kind.config_name(listener)))
                    .with_config_operation(OP_SET)
                    .with_value(Some(StrBytes::from_string(value.to_owned()))),
            );
        }
        let resource_name = broker_id.to_string();
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_BROKER)
                    .with_resource_name(StrBytes::from_string(resource_name.clone()))
                    .with_configs(configs),
            ])
            .with_validate_only(validate_only);
        let response: IncrementalAlterConfigsResponse = self
            .exchange(
                ApiKey::IncrementalAlterConfigs,
                version,
                &request,
                "IncrementalAlterConfigs",
            )
            .await?;
        let Some(result) = response.responses.iter().find(|r| {
            r.resource_type == RESOURCE_BROKER && r.resource_name.as_str() == resource_name
        }) else {
            return Err(Error::Protocol(format!(
                "IncrementalAlterConfigs response has no result for broker {resource_name}"
            )));
        };
        resource_result(
            result.error_code,
            result.error_message.as_ref(),
            "alter broker configs",
            |code, name, message| Error::Rejected {
                code,
                name,
                message,
            },
        )
    }

    /// Sends one framed request and reads its response, within the timeout.
    async fn exchange<Req, Resp>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        during: &'static str,
    ) -> Result<Resp, Error>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, &self.client_id, request)?;
        let timeout = self.timeout;
        let addr = self.addr;
        let mut body = match tokio::time::timeout(timeout, self.round_trip(&frame, during)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Timeout {
                    addr,
                    during,
                    timeout,
                });
            }
        };
        let header = ResponseHeader::decode(&mut body, Resp::header_version(version))
            .map_err(|e| Error::Protocol(format!("{during} response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(Error::Protocol(format!(
                "{during} response has correlation id {}, expected {correlation_id}",
                header.correlation_id
            )));
        }
        let response = Resp::decode(&mut body, version)
            .map_err(|e| Error::Protocol(format!("{during} v{version} response: {e}")))?;
        Ok(response)
    }

    async fn round_trip(&mut self, frame: &[u8], during: &'static str) -> Result<Bytes, Error> {
        let addr = self.addr;
        let io = |source| Error::Connection {
            addr,
            during,
            source,
        };
        self.stream.write_all(frame).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;
        let len = self.stream.read_u32().await.map_err(io)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE {
            return Err(Error::Protocol(format!(
                "{during} response of {len} bytes exceeds {MAX_RESPONSE}"
            )));
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        Ok(Bytes::from(body))
    }
}

/// A request frame: 4-byte big-endian length, then header and body. The buffer is sized
/// up front so it never reallocates, and is wiped on drop: a PLAIN token carries a password.
fn encode_request<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    request: &Req,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = Req::header_version(version);
    let encoding =
        |e: anyhow::Error| Error::Protocol(format!("encoding the {key:?} v{version} request: {e}"));
    let size = header.compute_size(header_version).map_err(encoding)?
        + request.compute_size(version).map_err(encoding)?;
    let len = u32::try_from(size).map_err(|_| Error::Protocol("request too large".to_owned()))?;
    let mut frame = Zeroizing::new(Vec::with_capacity(size + 4));
    frame.put_u32(len);
    header
        .encode(&mut *frame, header_version)
        .map_err(encoding)?;
    request.encode(&mut *frame, version).map_err(encoding)?;
    if frame.len() != size + 4 {
        return Err(Error::Protocol(format!(
            "encoding the {key:?} v{version} request: {} bytes, computed {size}",
            frame.len() - 4
        )));
    }
    Ok(frame)
}

/// `message` with every occurrence of the password replaced, in case a broker echoes it.
fn scrub(message: &str, password: &Secret) -> String {
    let password = password.expose();
    if password.is_empty() {
        message.to_owned()
    } else {
        message.replace(password, "<redacted>")
    }
}

/// Maps a failed SCRAM step to the public error.
fn scram_error(e: ScramError, sasl: &Sasl) -> Error {
    match e {
        ScramError::ServerError(value) => Error::AuthenticationFailed {
            mechanism: sasl.mechanism.name(),
            username: sasl.username.clone(),
            message: format!(
                "the broker ended the exchange with error {:?}",
                scrub(&value, &sasl.password)
            ),
        },
        ScramError::Verification(reason) => Error::ScramVerification {
            mechanism: sasl.mechanism.name(),
            reason,
        },
    }
}

/// The highest version of `key` within `min..=max` that `apis` also lists.
fn highest_common(apis: &[SupportedApi], key: ApiKey, min: i16, max: i16) -> Option<i16> {
    let key = key as i16;
    apis.iter().find(|a| a.key == key).and_then(|a| {
        let high = a.max.min(max);
        (high >= a.min.max(min)).then_some(high)
    })
}

/// Kafka's name for an error code, e.g. `INVALID_CONFIG` for 40.
pub fn error_name(code: i16) -> String {
    match code {
        31 => "CLUSTER_AUTHORIZATION_FAILED".to_owned(),
        40 => "INVALID_CONFIG".to_owned(),
        42 => "INVALID_REQUEST".to_owned(),
        44 => "POLICY_VIOLATION".to_owned(),
        _ => match code.err() {
            Some(e) => screaming_snake(&format!("{e:?}")),
            None => format!("UNKNOWN_ERROR_CODE_{code}"),
        },
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_path_alternates() {
        let (a, b) = (Path::new("/s/a.p12"), Path::new("/s/b.p12"));
        assert_eq!(next_path(a, a, b), b);
        assert_eq!(next_path(b, a, b), a);
        assert_eq!(next_path(Path::new("/etc/kafka/orig.p12"), a, b), a);
    }

    #[test]
    fn config_names_lower_case_the_listener() {
        assert_eq!(
            StoreKind::Keystore.config_name("SSL"),
            "listener.name.ssl.ssl.keystore.location"
        );
        assert_eq!(
            StoreKind::Truststore.config_name("External"),
            "listener.name.external.ssl.truststore.location"
        );
        assert_eq!(error_name(40), "INVALID_CONFIG");
        assert_eq!(error_name(7), "REQUEST_TIMED_OUT");
        assert_eq!(error_name(58), "SASL_AUTHENTICATION_FAILED");
        assert_eq!(error_name(33), "UNSUPPORTED_SASL_MECHANISM");
    }

    #[test]
    fn version_negotiation_picks_the_highest_common_version() {
        let apis = [SupportedApi {
            key: ApiKey::SaslAuthenticate as i16,
            min: 0,
            max: 1,
        }];
        assert_eq!(
            highest_common(&apis, ApiKey::SaslAuthenticate, 0, 2),
            Some(1)
        );
        assert_eq!(highest_common(&apis, ApiKey::SaslAuthenticate, 2, 2), None);
        assert_eq!(highest_common(&apis, ApiKey::SaslHandshake, 1, 1), None);
    }

    #[test]
    fn passwords_are_scrubbed_and_redacted() {
        let password = Secret::new("hunter2".to_owned());
        assert_eq!(
            scrub("bad hunter2 token", &password),
            "bad <redacted> token"
        );
        assert_eq!(scrub("x", &Secret::new(String::new())), "x");
        let sasl = Sasl::new(SaslMechanism::Plain, "admin", password.clone());
        let err = scram_error(ScramError::ServerError("hunter2".to_owned()), &sasl);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let security = Security::SaslPlaintext { sasl };
        assert_eq!(security.protocol_name(), "SASL_PLAINTEXT");
        assert!(!format!("{security:?}").contains("hunter2"));
    }
}
