//! Broker reload latency: from a new keystore on disk to the new serial served, through
//! leafd's reload path (kafka IncrementalAlterConfigs pre-flight + real request to an in-test
//! admin server, which makes a JDK TLS server reload the store as Kafka's
//! DefaultSslEngineFactory does, then leafd's TLS check of the served serial).
//!
//!   cargo bench --bench reload            (needs a JDK: tests/run installs it)

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
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("broker.pem");
    let b = dir.path().join("broker.alt.pem");
    let trust = dir.path().join("trust.pem");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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

    let config = dir.path().join("leafd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate-directory = \"{state}\"\n[[identity]]\nname = \"broker\"\nsans = [\"localhost\"]\n\
             [[identity.keystore]]\nformat = \"pem\"\npath = \"{a}\"\n\
             [[identity.reload]]\ntype = \"kafka\"\nbootstrap = \"{bootstrap}\"\nbroker-id = 1\nlistener = \"SSL\"\n\
             [identity.verify]\naddresses = [\"{java_addr}\"]\nserver-name = \"localhost\"\ntimeout = \"10s\"\n",
            state = dir.path().join("state").display(),
            a = a.display(),
            bootstrap = broker.addr(),
        ),
    )
    .unwrap();
    let settings = leafd::config::load(
        &config,
        &LoadEnv {
            credentials_directory: None,
            hostname: "bench".into(),
        },
    )
    .unwrap();
    let identity = settings.identities[0].clone();

    let mut times = Vec::with_capacity(RUNS);
    for n in 1..=RUNS as u64 {
        let path = if n % 2 == 1 { &b } else { &a };
        let (serial, _) = write_keystore(path, n);
        let started = Instant::now();
        let job = Job {
            identity: identity.clone(),
            serial,
            not_after: SystemTime::now() + Duration::from_secs(3600),
            keystores: vec![path.clone()],
            truststores: vec![],
            roots: vec![],
            client_pems: vec![],
        };
        let outcome = runtime.block_on(run(&job, None, &|_| {}));
        let took = started.elapsed();
        assert!(outcome.ok, "reload {n} failed: {}", outcome.detail);
        times.push(took);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!();
    println!(
        "| reload path (JDK TLS server, in-test Kafka admin server)          | median    | min       | max       |"
    );
    println!(
        "|-------------------------------------------------------------------|-----------|-----------|-----------|"
    );
    println!(
        "| keystore written -> kafka pre-flight + alter -> new serial served | {:>6.1} ms | {:>6.1} ms | {:>6.1} ms |",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
    println!("\n({RUNS} rotations, alternating A/B paths; PEM keystore, P-256 leaf)");
}
