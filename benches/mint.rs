//! Mint one leaf (fresh key + signature by the host key) and write its PKCS#12 keystore and
//! truststore atomically with fsync: the hot path of every rotation.

#![allow(
    clippy::expect_used,
    reason = "benchmark set-up: a failure must abort the run"
)]

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use leafd::config::{IssuerSettings, LoadEnv};
use leafd::issuer::HostCertRequest;
use leafd::issuer::local::LocalCa;
use leafd::keys::soft::SoftBackend;
use leafd::keys::{KeyAlgorithm, KeyBackend, KeySpec};
use leafd::keystore;
use leafd::renew::engine::required_names;
use leafd::renew::mint::{encode_outputs, mint_leaf};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join("store.pass"), "changeit\n").expect("password file");
    let config = format!(
        r#"
[daemon]
state-directory = "{state}"

[host]
hostname = "bench"

[[identity]]
name = "broker"
subject = "CN=localhost,OU=kafka,O=leafd bench"
sans = ["localhost", "127.0.0.1"]

[[identity.keystore]]
format = "pkcs12"
path = "{tls}/broker.p12"
password-file = "{pass}"

[[identity.truststore]]
format = "pkcs12"
path = "{tls}/trust.p12"
password-file = "{pass}"
"#,
        state = root.join("state").display(),
        tls = root.join("tls").display(),
        pass = root.join("store.pass").display(),
    );
    std::fs::create_dir_all(root.join("tls")).expect("tls dir");
    let path = root.join("leafd.toml");
    std::fs::write(&path, config).expect("config");
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "bench".into(),
    };
    let settings = leafd::config::load(&path, &env).expect("config loads");
    let identity = settings.identities[0].clone();

    let now = SystemTime::now();
    let IssuerSettings::Local(ca_settings) = &settings.issuer;
    let ca = LocalCa::open_or_create(&root.join("state/ca"), ca_settings, now).expect("local CA");
    let mut backend = SoftBackend::open(&root.join("state/keys")).expect("soft backend");
    let host_key = backend
        .generate(&KeySpec {
            label: "host".into(),
            algorithm: KeyAlgorithm::EcdsaP256,
        })
        .expect("host key");
    let req = HostCertRequest {
        spki_der: backend.public_key(&host_key).expect("spki"),
        algorithm: KeyAlgorithm::EcdsaP256,
        names: required_names(&settings),
        subjects: leafd::renew::engine::required_subjects(&settings),
        hostname: "bench".into(),
    };
    let issued = ca.issue(&req, now).expect("host cert");
    let host_cert = issued.chain[0].clone();

    let mut group = c.benchmark_group("rotation");
    group.bench_function("mint_leaf_p256", |b| {
        b.iter(|| {
            mint_leaf(
                &mut backend,
                &host_key,
                &host_cert,
                &identity,
                SystemTime::now(),
            )
            .expect("mint")
        })
    });
    group.bench_function("mint_and_write_pkcs12", |b| {
        b.iter(|| {
            let minted = mint_leaf(
                &mut backend,
                &host_key,
                &host_cert,
                &identity,
                SystemTime::now(),
            )
            .expect("mint");
            for e in
                encode_outputs(&identity, &minted, &issued.chain, &issued.roots).expect("encode")
            {
                keystore::write_output(e.output, &e.bytes).expect("write");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
