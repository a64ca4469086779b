//! A minimal in-test Kafka admin server: answers ApiVersions and IncrementalAlterConfigs
//! with Kafka's semantics, decoding and encoding real frames with `kafka-protocol`.
//!
//! - Per-broker only: a resource that is not BROKER (4) named with this broker's id is
//!   refused with INVALID_REQUEST (42), as a KRaft broker does.
//! - Every IncrementalAlterConfigs is recorded.
//! - [`FakeBroker::reject_next`] makes the next real (non-validateOnly) request fail with
//!   INVALID_CONFIG (40) and a message.
//! - A successful real request calls the success hook with the SET configs; a hook error is
//!   returned as INVALID_CONFIG, like a store that fails to load.
//!
//! Stops on drop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixture: a broken fixture must panic"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, StrBytes, decode_request_header_from_buffer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Called with `(name, value)` of each config of a successful real request.
pub type Hook = Arc<dyn Fn(&[(String, Option<String>)]) -> Result<(), String> + Send + Sync>;

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

struct Shared {
    broker_id: i32,
    max_iac_version: Mutex<i16>,
    requests: Mutex<Vec<Recorded>>,
    reject_next: Mutex<Option<String>>,
    hook: Mutex<Option<Hook>>,
}

pub struct FakeBroker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeBroker {
    /// Listens on 127.0.0.1:0 as broker `broker_id`.
    pub async fn start(broker_id: i32) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            broker_id,
            max_iac_version: Mutex::new(1),
            requests: Mutex::new(Vec::new()),
            reject_next: Mutex::new(None),
            hook: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
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

    /// Advertise IncrementalAlterConfigs versions 0..=`max`.
    pub fn set_max_iac_version(&self, max: i16) {
        *self.shared.max_iac_version.lock().unwrap() = max;
    }

    /// Every IncrementalAlterConfigs resource received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
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
        connections.spawn(serve(stream, Arc::clone(&shared)));
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(len) = stream.read_u32().await else {
            return;
        };
        let mut frame = vec![0; len as usize];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        let response = handle(Bytes::from(frame), &shared).await;
        let mut out = BytesMut::with_capacity(response.len() + 4);
        out.put_u32(u32::try_from(response.len()).unwrap());
        out.put_slice(&response);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn handle(mut frame: Bytes, shared: &Arc<Shared>) -> BytesMut {
    let header = decode_request_header_from_buffer(&mut frame).expect("a valid request header");
    let version = header.request_api_version;
    let key = ApiKey::try_from(header.request_api_key).expect("a known API key");
    let mut out = BytesMut::new();
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    match key {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut frame, version).expect("an ApiVersions request");
            let max_iac = *shared.max_iac_version.lock().unwrap();
            let response = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_min_version(0)
                    .with_max_version(3),
                ApiVersion::default()
                    .with_api_key(ApiKey::IncrementalAlterConfigs as i16)
                    .with_min_version(0)
                    .with_max_version(max_iac),
            ]);
            response_header
                .encode(&mut out, ApiVersionsResponse::header_version(version))
                .unwrap();
            response.encode(&mut out, version).unwrap();
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
            response_header
                .encode(
                    &mut out,
                    IncrementalAlterConfigsResponse::header_version(version),
                )
                .unwrap();
            IncrementalAlterConfigsResponse::default()
                .with_responses(results)
                .encode(&mut out, version)
                .unwrap();
        }
        other => panic!("fake broker got an unexpected {other:?} request"),
    }
    assert!(
        !frame.has_remaining(),
        "trailing bytes after the request body"
    );
    out
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
    if let Some(hook) = hook {
        let configs: Vec<(String, Option<String>)> = r
            .configs
            .iter()
            .map(|(n, _, v)| (n.clone(), v.clone()))
            .collect();
        let outcome = tokio::task::spawn_blocking(move || hook(&configs))
            .await
            .unwrap();
        if let Err(message) = outcome {
            return (40, Some(message));
        }
    }
    (0, None)
}
