//! A minimal in-test Kafka admin server: answers ApiVersions, IncrementalAlterConfigs and
//! DescribeConfigs with Kafka's semantics, decoding and encoding real frames with
//! `kafka-protocol`, optionally behind TLS (rustls, with or without required client
//! certificates) and SASL.
//!
//! - Per-broker only: a resource that is not BROKER (4) named with this broker's id is
//!   refused with INVALID_REQUEST (42), as a KRaft broker does.
//! - Every IncrementalAlterConfigs and DescribeConfigs is recorded.
//! - [`FakeBroker::reject_next`] makes the next real (non-validateOnly) request fail with
//!   INVALID_CONFIG (40) and a message.
//! - A successful real request calls the success hook with the SET configs; a hook error is
//!   returned as INVALID_CONFIG, like a store that fails to load. Otherwise the values become
//!   the broker's current (dynamic) configs, which DescribeConfigs returns.
//! - SASL: the server side of SaslHandshake and SaslAuthenticate as Kafka's
//!   `SaslServerAuthenticator` runs it. PLAIN is checked here; SCRAM-SHA-256/512 are served
//!   by the `rsasl` crate's SCRAM server (stored key and server key derived from a salt and
//!   an iteration count, client proof verified, server signature sent), so the client is
//!   checked against an implementation that shares no code with it. Until authentication
//!   succeeds only ApiVersions and SASL requests are answered; anything else, a refused
//!   mechanism or failed credentials close the connection, as Kafka does. [`Tamper`] makes
//!   the server misbehave on purpose.
//!
//! Stops on drop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixture: a broken fixture must panic"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, StrBytes, decode_request_header_from_buffer,
};
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
use rsasl::prelude::{Mechname, SASLConfig, SASLServer, Session, SessionError};
use rsasl::property::AuthId;
use rsasl::validate::NoValidation;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Called with `(name, value)` of each config of a successful real request.
pub type Hook = Arc<dyn Fn(&[(String, Option<String>)]) -> Result<(), String> + Send + Sync>;

/// Kafka's message for failed PLAIN credentials (`PlainSaslServer`).
pub const PLAIN_FAILED: &str = "Authentication failed: Invalid username or password";
/// DescribeConfigs `config_source` values.
const STATIC_BROKER_CONFIG: i8 = 4;
const DYNAMIC_BROKER_CONFIG: i8 = 2;

/// One decoded IncrementalAlterConfigs resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub api_version: i16,
    pub client_id: Option<String>,
    pub validate_only: bool,
    pub resource_type: i8,
    pub resource_name: String,
    /// `(name, operation, value)`.
    pub configs: Vec<(String, i8, Option<String>)>,
}

/// One decoded DescribeConfigs resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedDescribe {
    pub api_version: i16,
    pub resource_type: i8,
    pub resource_name: String,
    pub keys: Option<Vec<String>>,
}

/// One SASL request: SaslHandshake carries the mechanism name, SaslAuthenticate the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslRecord {
    pub api: ApiKey,
    pub api_version: i16,
    pub payload: Vec<u8>,
}

/// Ways for the SASL server to misbehave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Behave like Kafka.
    None,
    /// Send a server-final message whose signature does not verify (a server that does not
    /// hold the credential, e.g. an impostor).
    ServerSignature,
    /// Send a server-first nonce that does not start with the client's nonce.
    ServerNonce,
    /// End the SCRAM exchange with `e=<value>` in place of the signature.
    ServerError(String),
    /// Answer the SaslHandshake with ILLEGAL_SASL_STATE (34).
    IllegalState,
    /// Quote the whole PLAIN token, password included, in the failure message.
    EchoPlainToken,
}

/// SASL settings of the listener.
#[derive(Clone, Debug)]
pub struct SaslServer {
    /// The listener's `sasl.enabled.mechanisms`.
    pub enabled: Vec<String>,
    /// `(user, password)`; SCRAM credentials are derived for every SCRAM mechanism enabled.
    pub users: Vec<(String, String)>,
    /// SCRAM iteration count of the stored credentials.
    pub iterations: u32,
    /// Highest SaslAuthenticate version advertised.
    pub max_authenticate_version: i16,
    /// Session lifetime sent in successful SaslAuthenticate v1+ responses.
    pub session_lifetime_ms: i64,
    pub tamper: Tamper,
}

impl SaslServer {
    pub fn new(enabled: &[&str], user: &str, password: &str) -> SaslServer {
        SaslServer {
            enabled: enabled.iter().map(|m| (*m).to_owned()).collect(),
            users: vec![(user.to_owned(), password.to_owned())],
            iterations: 4096,
            max_authenticate_version: 2,
            session_lifetime_ms: 0,
            tamper: Tamper::None,
        }
    }
}

/// How clients reach the fake broker.
#[derive(Clone, Default)]
pub struct Listener {
    /// TLS (`SSL` / `SASL_SSL`) with this server config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// SASL (`SASL_PLAINTEXT` / `SASL_SSL`).
    pub sasl: Option<SaslServer>,
}

struct ScramCredential {
    mechanism: String,
    user: String,
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

/// StoredKey and ServerKey for `password`, derived with rsasl's helpers and RustCrypto.
fn scram_credential(
    mechanism: &str,
    user: &str,
    password: &str,
    iterations: u32,
) -> ScramCredential {
    let salt: [u8; 16] = rand::random();
    let (stored_key, server_key) = match mechanism {
        "SCRAM-SHA-256" => {
            let mut salted = Default::default();
            hash_password::<Sha256>(password.as_bytes(), iterations, &salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha256>(salted.as_slice());
            (Sha256::digest(client_key).to_vec(), server_key.to_vec())
        }
        "SCRAM-SHA-512" => {
            let mut salted = Default::default();
            hash_password::<Sha512>(password.as_bytes(), iterations, &salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha512>(salted.as_slice());
            (Sha512::digest(client_key).to_vec(), server_key.to_vec())
        }
        other => panic!("no SCRAM hash for {other}"),
    };
    ScramCredential {
        mechanism: mechanism.to_owned(),
        user: user.to_owned(),
        iterations,
        salt: salt.to_vec(),
        stored_key,
        server_key,
    }
}

/// Answers rsasl's request for the stored credential of the user in the client-first message.
struct CredentialLookup {
    mechanism: String,
    credentials: Arc<Vec<ScramCredential>>,
}

/// The user name from an RFC 5802 `saslname`, as Kafka's `ScramFormatter.username` reads it.
fn unescape_saslname(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

impl SessionCallback for CredentialLookup {
    fn callback(
        &self,
        _session_data: &SessionData,
        context: &Context,
        request: &mut Request,
    ) -> Result<(), SessionError> {
        let Some(authid) = context.get_ref::<AuthId>() else {
            return Ok(());
        };
        let user = unescape_saslname(authid);
        if let Some(c) = self
            .credentials
            .iter()
            .find(|c| c.mechanism == self.mechanism && c.user == user)
        {
            request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                c.iterations,
                &c.salt,
                &c.stored_key,
                &c.server_key,
            ))?;
        }
        Ok(())
    }
}

struct Shared {
    broker_id: i32,
    listener: Listener,
    scram: Arc<Vec<ScramCredential>>,
    max_iac_version: Mutex<i16>,
    requests: Mutex<Vec<Recorded>>,
    describes: Mutex<Vec<RecordedDescribe>>,
    sasl: Mutex<Vec<SaslRecord>>,
    /// Requests other than ApiVersions and SASL that arrived before authentication.
    unauthenticated: Mutex<Vec<ApiKey>>,
    /// Per TLS connection: whether the client presented a certificate.
    client_certs: Mutex<Vec<bool>>,
    tls_failures: Mutex<usize>,
    configs: Mutex<BTreeMap<String, (String, i8)>>,
    reject_next: Mutex<Option<String>>,
    describe_error: Mutex<Option<(i16, String)>>,
    hook: Mutex<Option<Hook>>,
}

pub struct FakeBroker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeBroker {
    /// Listens on 127.0.0.1:0 as broker `broker_id`, `PLAINTEXT`.
    pub async fn start(broker_id: i32) -> FakeBroker {
        FakeBroker::start_with(broker_id, Listener::default()).await
    }

    /// Listens on 127.0.0.1:0 as broker `broker_id` with the given security.
    pub async fn start_with(broker_id: i32, listener: Listener) -> FakeBroker {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut scram = Vec::new();
        if let Some(sasl) = &listener.sasl {
            for mechanism in sasl.enabled.iter().filter(|m| m.starts_with("SCRAM-")) {
                for (user, password) in &sasl.users {
                    scram.push(scram_credential(mechanism, user, password, sasl.iterations));
                }
            }
        }
        let shared = Arc::new(Shared {
            broker_id,
            listener,
            scram: Arc::new(scram),
            max_iac_version: Mutex::new(1),
            requests: Mutex::new(Vec::new()),
            describes: Mutex::new(Vec::new()),
            sasl: Mutex::new(Vec::new()),
            unauthenticated: Mutex::new(Vec::new()),
            client_certs: Mutex::new(Vec::new()),
            tls_failures: Mutex::new(0),
            configs: Mutex::new(BTreeMap::new()),
            reject_next: Mutex::new(None),
            describe_error: Mutex::new(None),
            hook: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(tcp, Arc::clone(&shared)));
        FakeBroker { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or with `None` removes) the success hook.
    pub fn set_hook(&self, hook: Option<Hook>) {
        *self.shared.hook.lock().unwrap() = hook;
    }

    /// The next real request fails with INVALID_CONFIG and `message`.
    pub fn reject_next(&self, message: &str) {
        *self.shared.reject_next.lock().unwrap() = Some(message.to_owned());
    }

    /// The next DescribeConfigs result carries `code` and `message`.
    pub fn fail_next_describe(&self, code: i16, message: &str) {
        *self.shared.describe_error.lock().unwrap() = Some((code, message.to_owned()));
    }

    /// Sets a config as if it were in server.properties.
    pub fn set_static_config(&self, name: &str, value: &str) {
        self.shared
            .configs
            .lock()
            .unwrap()
            .insert(name.to_owned(), (value.to_owned(), STATIC_BROKER_CONFIG));
    }

    /// Advertise IncrementalAlterConfigs versions 0..=`max`.
    pub fn set_max_iac_version(&self, max: i16) {
        *self.shared.max_iac_version.lock().unwrap() = max;
    }

    /// Every IncrementalAlterConfigs resource received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Every DescribeConfigs resource received so far.
    pub fn describes(&self) -> Vec<RecordedDescribe> {
        self.shared.describes.lock().unwrap().clone()
    }

    /// Every SASL request received so far.
    pub fn sasl_requests(&self) -> Vec<SaslRecord> {
        self.shared.sasl.lock().unwrap().clone()
    }

    /// Admin requests that arrived before authentication (and were refused).
    pub fn unauthenticated_requests(&self) -> Vec<ApiKey> {
        self.shared.unauthenticated.lock().unwrap().clone()
    }

    /// Per accepted TLS connection: whether the client presented a certificate.
    pub fn client_certs(&self) -> Vec<bool> {
        self.shared.client_certs.lock().unwrap().clone()
    }

    /// TLS handshakes that failed.
    pub fn tls_failures(&self) -> usize {
        *self.shared.tls_failures.lock().unwrap()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        connections.spawn(connection(stream, Arc::clone(&shared)));
    }
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    match shared.listener.tls.clone() {
        None => serve(tcp, shared).await,
        Some(config) => {
            let accepted = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await;
            match accepted {
                Ok(tls) => {
                    let has_cert = tls.get_ref().1.peer_certificates().is_some();
                    shared.client_certs.lock().unwrap().push(has_cert);
                    serve(tls, shared).await;
                }
                Err(_) => *shared.tls_failures.lock().unwrap() += 1,
            }
        }
    }
}

/// Where a connection is in Kafka's SASL server state machine.
enum Auth {
    /// Not a SASL listener, or authenticated.
    Done,
    /// Waiting for SaslHandshake.
    Handshake,
    /// SaslHandshake accepted this mechanism; waiting for the first token.
    FirstToken(String),
    /// A SCRAM exchange is waiting for the client-final message.
    ScramFinal(String, Box<Session<NoValidation>>),
}

/// What to send back, and whether to close the connection afterwards.
struct Reply {
    body: BytesMut,
    close: bool,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    let mut auth = if shared.listener.sasl.is_some() {
        Auth::Handshake
    } else {
        Auth::Done
    };
    loop {
        let Ok(len) = stream.read_u32().await else {
            return;
        };
        let mut frame = vec![0; len as usize];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        let Some(reply) = handle(Bytes::from(frame), &shared, &mut auth).await else {
            return;
        };
        let mut out = BytesMut::with_capacity(reply.body.len() + 4);
        out.put_u32(u32::try_from(reply.body.len()).unwrap());
        out.put_slice(&reply.body);
        if stream.write_all(&out).await.is_err() || reply.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn respond<R: Encodable + HeaderVersion>(header: &RequestHeader, response: &R) -> BytesMut {
    let version = header.request_api_version;
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out, R::header_version(version))
        .unwrap();
    response.encode(&mut out, version).unwrap();
    out
}

async fn handle(mut frame: Bytes, shared: &Arc<Shared>, auth: &mut Auth) -> Option<Reply> {
    let header = decode_request_header_from_buffer(&mut frame).expect("a valid request header");
    let version = header.request_api_version;
    let key = ApiKey::try_from(header.request_api_key).expect("a known API key");
    let reply = match key {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut frame, version).expect("an ApiVersions request");
            Reply {
                body: respond(&header, &api_versions(shared)),
                close: false,
            }
        }
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
            sasl(key, &header, &mut frame, shared, auth)?
        }
        other if !matches!(auth, Auth::Done) => {
            // Kafka closes a connection that sends anything else before authenticating.
            shared.unauthenticated.lock().unwrap().push(other);
            return None;
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = IncrementalAlterConfigsRequest::decode(&mut frame, version)
                .expect("an IncrementalAlterConfigs request");
            let mut results = Vec::new();
            for resource in &request.resources {
                let recorded = Recorded {
                    api_version: version,
                    client_id: header.client_id.as_ref().map(|c| c.as_str().to_owned()),
                    validate_only: request.validate_only,
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name.as_str().to_owned(),
                    configs: resource
                        .configs
                        .iter()
                        .map(|c| {
                            (
                                c.name.as_str().to_owned(),
                                c.config_operation,
                                c.value.as_ref().map(|v| v.as_str().to_owned()),
                            )
                        })
                        .collect(),
                };
                shared.requests.lock().unwrap().push(recorded.clone());
                let (code, message) = alter(shared, &recorded).await;
                results.push(
                    AlterConfigsResourceResponse::default()
                        .with_error_code(code)
                        .with_error_message(message.map(StrBytes::from_string))
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone()),
                );
            }
            Reply {
                body: respond(
                    &header,
                    &IncrementalAlterConfigsResponse::default().with_responses(results),
                ),
                close: false,
            }
        }
        ApiKey::DescribeConfigs => {
            let request = DescribeConfigsRequest::decode(&mut frame, version)
                .expect("a DescribeConfigs request");
            let results = request
                .resources
                .iter()
                .map(|resource| {
                    let recorded = RecordedDescribe {
                        api_version: version,
                        resource_type: resource.resource_type,
                        resource_name: resource.resource_name.as_str().to_owned(),
                        keys: resource
                            .configuration_keys
                            .as_ref()
                            .map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect()),
                    };
                    shared.describes.lock().unwrap().push(recorded.clone());
                    describe(shared, &recorded, version)
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                })
                .collect();
            Reply {
                body: respond(
                    &header,
                    &DescribeConfigsResponse::default().with_results(results),
                ),
                close: false,
            }
        }
        other => panic!("fake broker got an unexpected {other:?} request"),
    };
    assert!(
        !frame.has_remaining(),
        "trailing bytes after the request body"
    );
    Some(reply)
}

fn api_versions(shared: &Shared) -> ApiVersionsResponse {
    let api = |key: ApiKey, min: i16, max: i16| {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(min)
            .with_max_version(max)
    };
    let max_iac = *shared.max_iac_version.lock().unwrap();
    let mut apis = vec![
        api(ApiKey::ApiVersions, 0, 3),
        api(ApiKey::IncrementalAlterConfigs, 0, max_iac),
        api(ApiKey::DescribeConfigs, 1, 4),
    ];
    if let Some(sasl) = &shared.listener.sasl {
        apis.push(api(ApiKey::SaslHandshake, 0, 1));
        apis.push(api(
            ApiKey::SaslAuthenticate,
            0,
            sasl.max_authenticate_version,
        ));
    }
    ApiVersionsResponse::default().with_api_keys(apis)
}

/// The server side of SaslHandshake and SaslAuthenticate. `None` closes the connection
/// without a reply.
fn sasl(
    key: ApiKey,
    header: &RequestHeader,
    frame: &mut Bytes,
    shared: &Shared,
    auth: &mut Auth,
) -> Option<Reply> {
    let version = header.request_api_version;
    let config = shared
        .listener
        .sasl
        .as_ref()
        .expect("SASL request on a listener without SASL");
    let enabled: Vec<StrBytes> = config
        .enabled
        .iter()
        .map(|m| StrBytes::from_string(m.clone()))
        .collect();
    if key == ApiKey::SaslHandshake {
        let request = SaslHandshakeRequest::decode(frame, version).expect("a SaslHandshake");
        let mechanism = request.mechanism.as_str().to_owned();
        shared.sasl.lock().unwrap().push(SaslRecord {
            api: key,
            api_version: version,
            payload: mechanism.clone().into_bytes(),
        });
        let (code, close) =
            if config.tamper == Tamper::IllegalState || !matches!(auth, Auth::Handshake) {
                (34, true)
            } else if config.enabled.contains(&mechanism) {
                *auth = Auth::FirstToken(mechanism);
                (0, false)
            } else {
                (33, true)
            };
        let response = SaslHandshakeResponse::default()
            .with_error_code(code)
            .with_mechanisms(enabled);
        return Some(Reply {
            body: respond(header, &response),
            close,
        });
    }

    let request = SaslAuthenticateRequest::decode(frame, version).expect("a SaslAuthenticate");
    let token = request.auth_bytes.to_vec();
    shared.sasl.lock().unwrap().push(SaslRecord {
        api: key,
        api_version: version,
        payload: token.clone(),
    });
    let state = std::mem::replace(auth, Auth::Handshake);
    let outcome: Result<Vec<u8>, (i16, String)> = match state {
        Auth::FirstToken(mechanism) if mechanism == "PLAIN" => {
            let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
            let ok = parts.len() == 3
                && (parts[0].is_empty() || parts[0] == parts[1])
                && config
                    .users
                    .iter()
                    .any(|(u, p)| u.as_bytes() == parts[1] && p.as_bytes() == parts[2]);
            if ok {
                *auth = Auth::Done;
                Ok(Vec::new())
            } else if config.tamper == Tamper::EchoPlainToken {
                let quoted = String::from_utf8_lossy(&token).replace('\0', " ");
                Err((58, format!("{PLAIN_FAILED}:{quoted}")))
            } else {
                Err((58, PLAIN_FAILED.to_owned()))
            }
        }
        Auth::FirstToken(mechanism) => {
            let config = SASLConfig::builder()
                .with_defaults()
                .with_callback(CredentialLookup {
                    mechanism: mechanism.clone(),
                    credentials: Arc::clone(&shared.scram),
                })
                .unwrap();
            let mut session = SASLServer::<NoValidation>::new(config)
                .start_suggested(Mechname::parse(mechanism.as_bytes()).unwrap())
                .unwrap();
            let mut out = Vec::new();
            match session.step(Some(&token), &mut out) {
                Ok(_) => {
                    *auth = Auth::ScramFinal(mechanism, Box::new(session));
                    Ok(tamper_server_first(out, &shared.listener))
                }
                Err(e) => Err((58, format!("SCRAM client-first: {e}"))),
            }
        }
        Auth::ScramFinal(mechanism, mut session) => {
            let mut out = Vec::new();
            match session.step(Some(&token), &mut out) {
                Ok(_) if out.starts_with(b"v=") => {
                    *auth = Auth::Done;
                    Ok(tamper_server_final(out, &shared.listener))
                }
                // rsasl answers a wrong proof with `e=`; Kafka fails the request instead.
                Ok(_) => Err((
                    58,
                    format!(
                        "Authentication failed during authentication due to invalid \
                         credentials with SASL mechanism {mechanism}"
                    ),
                )),
                Err(e) => Err((58, format!("SCRAM client-final: {e}"))),
            }
        }
        Auth::Handshake | Auth::Done => Err((
            34,
            "Unexpected SaslAuthenticate request with no handshake".to_owned(),
        )),
    };
    let (response, close) = match outcome {
        Ok(bytes) => {
            let mut response = SaslAuthenticateResponse::default().with_auth_bytes(bytes.into());
            if version >= 1 {
                response = response.with_session_lifetime_ms(config.session_lifetime_ms);
            }
            (response, false)
        }
        Err((code, message)) => (
            SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
            true,
        ),
    };
    Some(Reply {
        body: respond(header, &response),
        close,
    })
}

fn tamper_server_first(message: Vec<u8>, listener: &Listener) -> Vec<u8> {
    let tamper = &listener.sasl.as_ref().unwrap().tamper;
    if *tamper != Tamper::ServerNonce {
        return message;
    }
    // Replace the whole nonce: it no longer starts with the client's.
    let text = String::from_utf8(message).unwrap();
    let rest = text.split_once(',').unwrap().1;
    format!("r=someoneelsesnonce0123456789,{rest}").into_bytes()
}

fn tamper_server_final(message: Vec<u8>, listener: &Listener) -> Vec<u8> {
    match &listener.sasl.as_ref().unwrap().tamper {
        Tamper::ServerSignature => {
            // Flip the first character of the base64 signature to another base64 character.
            let mut message = message;
            message[2] = if message[2] == b'A' { b'B' } else { b'A' };
            message
        }
        Tamper::ServerError(value) => format!("e={value}").into_bytes(),
        _ => message,
    }
}

async fn alter(shared: &Arc<Shared>, r: &Recorded) -> (i16, Option<String>) {
    if r.resource_type != 4 {
        return (
            42,
            Some(format!("Unexpected resource type {}", r.resource_type)),
        );
    }
    if r.resource_name != shared.broker_id.to_string() {
        return (
            42,
            Some(format!(
                "Unexpected broker id, expected {}, but received {}",
                shared.broker_id, r.resource_name
            )),
        );
    }
    if r.validate_only {
        return (0, None);
    }
    if let Some(message) = shared.reject_next.lock().unwrap().take() {
        return (40, Some(message));
    }
    let hook = shared.hook.lock().unwrap().clone();
    let configs: Vec<(String, Option<String>)> = r
        .configs
        .iter()
        .map(|(n, _, v)| (n.clone(), v.clone()))
        .collect();
    if let Some(hook) = hook {
        let configs = configs.clone();
        let outcome = tokio::task::spawn_blocking(move || hook(&configs))
            .await
            .unwrap();
        if let Err(message) = outcome {
            return (40, Some(message));
        }
    }
    let mut current = shared.configs.lock().unwrap();
    for (name, value) in configs {
        match value {
            Some(value) => current.insert(name, (value, DYNAMIC_BROKER_CONFIG)),
            None => current.remove(&name),
        };
    }
    (0, None)
}

fn describe(shared: &Shared, r: &RecordedDescribe, version: i16) -> DescribeConfigsResult {
    let fail = |code: i16, message: String| {
        DescribeConfigsResult::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if r.resource_type != 4 {
        return fail(42, format!("Unexpected resource type {}", r.resource_type));
    }
    if r.resource_name != shared.broker_id.to_string() {
        return fail(
            42,
            format!(
                "Unexpected broker id, expected {}, but received {}",
                shared.broker_id, r.resource_name
            ),
        );
    }
    if let Some((code, message)) = shared.describe_error.lock().unwrap().take() {
        return fail(code, message);
    }
    let current = shared.configs.lock().unwrap();
    let configs = current
        .iter()
        .filter(|(name, _)| r.keys.as_ref().is_none_or(|keys| keys.contains(name)))
        .map(|(name, (value, source))| {
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(name.clone()))
                .with_value(Some(StrBytes::from_string(value.clone())))
                .with_config_source(*source);
            if version >= 3 {
                // ConfigType STRING.
                entry = entry.with_config_type(2);
            }
            entry
        })
        .collect();
    DescribeConfigsResult::default().with_configs(configs)
}
