//! Broker reload latency: from a new keystore on disk to the new serial served, through
//! leafd's reload path (kafka IncrementalAlterConfigs pre-flight + real request, then
//! leafd's TLS check of the served serial), side by side:
//!
//! - against a real Apache Kafka 4.x broker (KRaft, the admin connection over SASL_SSL with
//!   SCRAM-SHA-512), which reloads its SSL listener;
//! - against the in-test admin server, which makes a JDK TLS server reload the store as
//!   Kafka's DefaultSslEngineFactory does (leafd's own overhead without the broker's).
//!
//!   cargo bench --bench reload            (needs a JDK and Maven: tests/run installs them)

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmark: set-up failures abort, and latency is wall-clock time"
)]

#[path = "../tests/common/java.rs"]
#[allow(dead_code, reason = "the benchmark uses only part of the test fixture")]
mod java;
#[path = "../tests/common/kafka_broker.rs"]
#[allow(dead_code, reason = "the benchmark uses only part of the test fixture")]
mod kafka_broker;
#[path = "../tests/common/real_kafka.rs"]
#[allow(dead_code, reason = "the benchmark uses only part of the test fixture")]
mod real_kafka;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use java::{JavaTlsServer, Store};
use kafka_broker::{FakeBroker, Hook};
use leafd::config::LoadEnv;
use leafd::reload::run::{Job, run};

const RUNS: usize = 20;
const KEYSTORE_CONFIG: &str = "listener.name.ssl.ssl.keystore.location";

/// Writes a self-signed PEM keystore with a fresh serial, fsync'd; returns the serial (hex).
fn write_keystore(path: &Path, n: u64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "broker-1");
    let serial = (0x1000_0000_0000_0000u64 + n).to_be_bytes();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let spec = leafd::keystore::FileSpec {
        mode: 0o600,
        owner: None,
        group: None,
    };
    leafd::keystore::write_atomic(
        path,
        format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes(),
        &spec,
    )
    .unwrap();
    (
        serial.iter().map(|b| format!("{b:02x}")).collect(),
        cert.pem(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("reload: bench");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let real = real_broker(&runtime);
    let fake = in_test_server(&runtime);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p95 = |t: &[Duration]| t[(t.len() * 95).div_ceil(100) - 1];
    println!();
    println!(
        "| keystore written -> pre-flight + alter -> new serial served | median    | p95       | min       | max       |"
    );
    println!(
        "|-------------------------------------------------------------|-----------|-----------|-----------|-----------|"
    );
    for (what, t) in [
        (
            "real Apache Kafka 4.1.1 broker (KRaft), SASL_SSL admin      ",
            &real,
        ),
        (
            "in-test admin server + JDK TLS server                       ",
            &fake,
        ),
    ] {
        println!(
            "| {what}| {:>6.1} ms | {:>6.1} ms | {:>6.1} ms | {:>6.1} ms |",
            ms(t[t.len() / 2]),
            ms(p95(t)),
            ms(t[0]),
            ms(t[t.len() - 1])
        );
    }
    println!("\n({RUNS} rotations each, alternating A/B paths; PEM keystore, P-256 leaf)");
}

/// Runs `RUNS` reloads of `identity`'s keystore between `a` and `b`; returns the sorted
/// times from keystore written to new serial served.
fn measure(
    runtime: &tokio::runtime::Runtime,
    identity: &leafd::config::Identity,
    a: &Path,
    b: &Path,
    roots: &[Vec<u8>],
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(RUNS);
    for n in 1..=RUNS as u64 {
        let path = if n % 2 == 1 { b } else { a };
        let (serial, _) = write_keystore(path, n);
        let started = Instant::now();
        let job = Job {
            identity: identity.clone(),
            serial,
            not_after: SystemTime::now() + Duration::from_secs(3600),
            keystores: vec![path.to_path_buf()],
            truststores: vec![],
            roots: roots.to_vec(),
            client_pems: vec![],
        };
        let outcome = runtime.block_on(run(&job, None, &|_| {}));
        let took = started.elapsed();
        assert!(outcome.ok, "reload {n} failed: {}", outcome.detail);
        times.push(took);
    }
    times.sort();
    times
}

fn load_identity(config: &Path, text: &str) -> leafd::config::Identity {
    std::fs::write(config, text).unwrap();
    let settings = leafd::config::load(
        config,
        &LoadEnv {
            credentials_directory: None,
            hostname: "bench".into(),
        },
    )
    .unwrap();
    settings.identities[0].clone()
}

/// A real broker whose SSL listener serves the rotating keystore; leafd reaches its
/// SASL_SSL listener (fixed stores) as `admin`.
fn real_broker(runtime: &tokio::runtime::Runtime) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("broker.pem");
    let b = dir.path().join("broker.alt.pem");
    let trust = dir.path().join("trust.pem");
    let (_, pem_a) = write_keystore(&a, 0);
    std::fs::write(&trust, &pem_a).unwrap();
    // The admin listener's own fixed certificate, trusted by itself (inter-broker) and leafd.
    let admin_ks = dir.path().join("admin.pem");
    let (_, admin_pem) = write_keystore(&admin_ks, 9_999);
    let admin_ts = dir.path().join("admin-trust.pem");
    std::fs::write(&admin_ts, &admin_pem).unwrap();
    let password = dir.path().join("admin.pass");
    std::fs::write(&password, "bench-admin-secret").unwrap();
    let kafka = real_kafka::KafkaConfig::new(Store::pem(&a), Store::pem(&trust))
        .sasl_ssl_stores(Store::pem(&admin_ks), Store::pem(&admin_ts))
        .admin_password("bench-admin-secret")
        .start();
    let identity = load_identity(
        &dir.path().join("leafd.toml"),
        &format!(
            "[daemon]\nstate-directory = \"{state}\"\n[[identity]]\nname = \"broker\"\nsans = [\"localhost\"]\n\
             [[identity.keystore]]\nformat = \"pem\"\npath = \"{a}\"\n\
             [[identity.reload]]\ntype = \"kafka\"\nbootstrap = \"{bootstrap}\"\nbroker-id = {id}\nlistener = \"SSL\"\n\
             security = \"sasl-ssl\"\nserver-name = \"localhost\"\nca-file = \"{ca}\"\n\
             sasl-mechanism = \"scram-sha-512\"\nsasl-username = \"admin\"\nsasl-password-file = \"{pass}\"\n\
             [identity.verify]\naddresses = [\"{ssl}\"]\nserver-name = \"localhost\"\ntimeout = \"30s\"\n",
            state = dir.path().join("state").display(),
            a = a.display(),
            bootstrap = kafka.sasl_ssl_addr(),
            id = kafka.node_id(),
            ca = admin_ts.display(),
            pass = password.display(),
            ssl = kafka.ssl_addr(),
        ),
    );
    measure(runtime, &identity, &a, &b, &[])
}

/// The in-test admin server with a JDK TLS server that reloads as Kafka does.
fn in_test_server(runtime: &tokio::runtime::Runtime) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("broker.pem");
    let b = dir.path().join("broker.alt.pem");
    let trust = dir.path().join("trust.pem");
    let (_, pem_a) = write_keystore(&a, 0);
    std::fs::write(&trust, pem_a).unwrap();
    let java = Arc::new(Mutex::new(JavaTlsServer::start(
        &Store::pem(&a),
        &Store::pem(&trust),
    )));
    let java_addr = java.lock().unwrap().addr();
    let broker = runtime.block_on(FakeBroker::start(1));
    let hook: Hook = {
        let (java, trust) = (Arc::clone(&java), trust.clone());
        Arc::new(move |configs: &[(String, Option<String>)]| {
            let ks = configs
                .iter()
                .find(|(n, _)| n == KEYSTORE_CONFIG)
                .and_then(|(_, v)| v.clone())
                .ok_or("no keystore location")?;
            java.lock()
                .unwrap()
                .reload(&Store::pem(ks), &Store::pem(&trust))
                .map(drop)
        })
    };
    broker.set_hook(Some(hook));

    let identity = load_identity(
        &dir.path().join("leafd.toml"),
        &format!(
            "[daemon]\nstate-directory = \"{state}\"\n[[identity]]\nname = \"broker\"\nsans = [\"localhost\"]\n\
             [[identity.keystore]]\nformat = \"pem\"\npath = \"{a}\"\n\
             [[identity.reload]]\ntype = \"kafka\"\nbootstrap = \"{bootstrap}\"\nbroker-id = 1\nlistener = \"SSL\"\n\
             [identity.verify]\naddresses = [\"{java_addr}\"]\nserver-name = \"localhost\"\ntimeout = \"10s\"\n",
            state = dir.path().join("state").display(),
            a = a.display(),
            bootstrap = broker.addr(),
        ),
    );
    measure(runtime, &identity, &a, &b, &[])
}
