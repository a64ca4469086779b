//! Host key backends side by side: sign latency and rate, and leaf mint + atomic PKCS#12
//! keystore/truststore write, per backend, printed as one table.
//!
//!   cargo bench --bench backends            (all features: soft, PKCS#11 (SoftHSM2), TPM (swtpm))
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when its module is initialized, so the benchmark sets up a
//! private token and re-executes itself with that variable set.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmark: set-up failures abort, and latency is wall-clock time"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use leafd::config::{IssuerSettings, LoadEnv, Settings};
use leafd::issuer::HostCertRequest;
use leafd::issuer::local::LocalCa;
use leafd::keys::{KeyAlgorithm, KeyBackend, KeySpec};
use leafd::keystore;
use leafd::renew::engine::required_names;
use leafd::renew::mint::{encode_outputs, mint_leaf};

#[cfg(feature = "tpm")]
#[path = "../tests/common/swtpm.rs"]
#[allow(dead_code, reason = "the benchmark uses only part of the test fixture")]
mod swtpm;

const SIGNS: usize = 200;
const MINTS: usize = 50;
const HSM_PIN: &str = "1234";
const HSM_LABEL: &str = "leafd-bench";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn settings(root: &Path) -> Settings {
    std::fs::write(root.join("store.pass"), "changeit\n").unwrap();
    let config = format!(
        "[daemon]\nstate-directory = \"{state}\"\n[host]\nhostname = \"bench\"\n\
         [[identity]]\nname = \"broker\"\nsubject = \"CN=localhost,OU=kafka,O=leafd bench\"\n\
         sans = [\"localhost\", \"127.0.0.1\"]\n\
         [[identity.keystore]]\nformat = \"pkcs12\"\npath = \"{tls}/broker.p12\"\npassword-file = \"{pass}\"\n\
         [[identity.truststore]]\nformat = \"pkcs12\"\npath = \"{tls}/trust.p12\"\npassword-file = \"{pass}\"\n",
        state = root.join("state").display(),
        tls = root.join("tls").display(),
        pass = root.join("store.pass").display(),
    );
    std::fs::create_dir_all(root.join("tls")).unwrap();
    let path = root.join("leafd.toml");
    std::fs::write(&path, config).unwrap();
    leafd::config::load(
        &path,
        &LoadEnv {
            credentials_directory: None,
            hostname: "bench".into(),
        },
    )
    .unwrap()
}

struct Row {
    backend: String,
    sign: Duration,
    mint_write: Duration,
}

fn measure(name: &str, backend: &mut dyn KeyBackend, root: &Path) -> Row {
    let settings = settings(root);
    let identity = settings.identities[0].clone();
    let now = SystemTime::now();
    let IssuerSettings::Local(ca_settings) = &settings.issuer;
    let ca = LocalCa::open_or_create(&root.join("state/ca"), ca_settings, now).unwrap();
    let label = format!("bench-{}", std::process::id());
    let host_key = backend
        .generate(&KeySpec {
            label,
            algorithm: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let req = HostCertRequest {
        spki_der: backend.public_key(&host_key).unwrap(),
        algorithm: KeyAlgorithm::EcdsaP256,
        names: required_names(&settings),
        subjects: leafd::renew::engine::required_subjects(&settings),
        hostname: "bench".into(),
    };
    let issued = ca.issue(&req, now).unwrap();

    let mut signs = Vec::with_capacity(SIGNS);
    for i in 0..SIGNS {
        let msg = format!("message {i}");
        let t = Instant::now();
        backend.sign(&host_key, msg.as_bytes()).unwrap();
        signs.push(t.elapsed());
    }
    let mut mints = Vec::with_capacity(MINTS);
    for _ in 0..MINTS {
        let t = Instant::now();
        let minted = mint_leaf(
            backend,
            &host_key,
            &issued.chain[0],
            &identity,
            SystemTime::now(),
        )
        .unwrap();
        for e in encode_outputs(&identity, &minted, &issued.chain, &issued.roots).unwrap() {
            keystore::write_output(e.output, &e.bytes).unwrap();
        }
        mints.push(t.elapsed());
    }
    backend.destroy(&host_key).unwrap();
    Row {
        backend: name.into(),
        sign: median(signs),
        mint_write: median(mints),
    }
}

#[cfg(feature = "pkcs11")]
fn softhsm_module() -> PathBuf {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("SoftHSM2 missing: run 'apt-get install -y --no-install-recommends softhsm2 opensc'");
}

/// Creates a private SoftHSM2 token and re-runs this benchmark with `SOFTHSM2_CONF` set.
#[cfg(feature = "pkcs11")]
fn reexec_with_softhsm() -> ! {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    let ok = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            HSM_LABEL,
            "--so-pin",
            "12345678",
            "--pin",
            HSM_PIN,
        ])
        .output()
        .expect(
            "SoftHSM2 missing: run 'apt-get install -y --no-install-recommends softhsm2 opensc'",
        )
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(1));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs benchmarks as tests
    // without it: then one quick pass is enough.
    #[cfg(feature = "pkcs11")]
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        reexec_with_softhsm();
    }
    let mut rows = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let mut b = leafd::keys::soft::SoftBackend::open(&dir.path().join("keys")).unwrap();
        rows.push(measure("soft (file)", &mut b, dir.path()));
    }
    #[cfg(feature = "pkcs11")]
    {
        use leafd::keys::pkcs11::{Pkcs11Backend, Pkcs11Config, TokenSelector};
        let dir = tempfile::tempdir().unwrap();
        let mut b = Pkcs11Backend::open(&Pkcs11Config {
            module: softhsm_module(),
            token: TokenSelector::Label(HSM_LABEL.into()),
            pin: leafd::secret::Secret::new(HSM_PIN.into()),
        })
        .unwrap();
        rows.push(measure("pkcs11 (SoftHSM2)", &mut b, dir.path()));
    }
    #[cfg(feature = "tpm")]
    {
        use leafd::keys::tpm::{TpmBackend, TpmConfig};
        let tpm = swtpm::SwtpmSession::new();
        let dir = tempfile::tempdir().unwrap();
        let mut config = TpmConfig::new(dir.path().join("tpm"));
        config.tcti = tpm.tcti();
        let mut b = TpmBackend::open(&config).unwrap();
        rows.push(measure("tpm (swtpm)", &mut b, dir.path()));
    }
    println!();
    println!(
        "| backend              | sign median | signs/s | mint + write PKCS#12 ks+ts median |"
    );
    println!(
        "|----------------------|-------------|---------|-----------------------------------|"
    );
    for r in &rows {
        println!(
            "| {:<20} | {:>8.3} ms | {:>7.0} | {:>30.3} ms |",
            r.backend,
            r.sign.as_secs_f64() * 1e3,
            1.0 / r.sign.as_secs_f64(),
            r.mint_write.as_secs_f64() * 1e3
        );
    }
    println!(
        "\n({SIGNS} signatures and {MINTS} mints per backend; P-256 host key; target: swtpm mint + write < 30 ms)"
    );
}
