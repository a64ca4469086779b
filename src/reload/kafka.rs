//! A minimal Kafka admin client: just enough to alter a broker's store locations.
//!
//! `kafka-protocol` is a codec only; this module adds the 4-byte big-endian length framing,
//! correlation ids, ApiVersions (key 18) negotiation and the socket (plain TCP or TLS).
//! SASL is not implemented yet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Error;

/// ConfigResource type BROKER.
const RESOURCE_BROKER: i8 = 4;
/// AlterConfigOp SET.
const OP_SET: i8 = 0;
/// CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// IncrementalAlterConfigs versions this client speaks (v1 is flexible).
const IAC_MIN: i16 = 0;
const IAC_MAX: i16 = 1;
/// ApiVersions v0: every broker answers it, and its response header is always v0.
const API_VERSIONS_VERSION: i16 = 0;
/// Responses larger than this are refused (ours are a few hundred bytes).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Default limit for connecting and for each request/response exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the admin listener.
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

/// An admin client for one broker.
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

    /// The APIs and versions the broker supports.
    pub async fn api_versions(&self) -> Result<Vec<SupportedApi>, Error> {
        let mut conn = self.connect().await?;
        conn.api_versions().await
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
        let stream: Box<dyn Stream> = match &self.security {
            Security::Plaintext => Box::new(tcp),
            Security::Ssl {
                config,
                server_name,
            } => {
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
        Ok(Conn {
            stream,
            addr,
            client_id: StrBytes::from_string(self.client_id.clone()),
            timeout: self.timeout,
            next_correlation: 1,
        })
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
}

impl Conn {
    async fn api_versions(&mut self) -> Result<Vec<SupportedApi>, Error> {
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
    async fn negotiate_iac(&mut self) -> Result<i16, Error> {
        let apis = self.api_versions().await?;
        let key = ApiKey::IncrementalAlterConfigs as i16;
        apis.iter()
            .find(|a| a.key == key)
            .and_then(|a| {
                let high = a.max.min(IAC_MAX);
                (high >= a.min.max(IAC_MIN)).then_some(high)
            })
            .ok_or(Error::Unsupported {
                api: "IncrementalAlterConfigs",
                min: IAC_MIN,
                max: IAC_MAX,
            })
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
        let message = result
            .error_message
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        match result.error_code {
            0 => Ok(()),
            CLUSTER_AUTHORIZATION_FAILED => Err(Error::NotAuthorized {
                message: if message.is_empty() {
                    error_name(CLUSTER_AUTHORIZATION_FAILED)
                } else {
                    message
                },
            }),
            code => Err(Error::Rejected {
                code,
                name: error_name(code),
                message,
            }),
        }
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

/// A request frame: 4-byte big-endian length, then header and body.
fn encode_request<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    request: &Req,
) -> Result<BytesMut, Error> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let mut frame = BytesMut::with_capacity(256);
    frame.put_u32(0);
    header
        .encode(&mut frame, Req::header_version(version))
        .map_err(|e| Error::Protocol(format!("encoding the request header: {e}")))?;
    request
        .encode(&mut frame, version)
        .map_err(|e| Error::Protocol(format!("encoding the {key:?} v{version} request: {e}")))?;
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| Error::Protocol("request too large".to_owned()))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
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
    }
}
