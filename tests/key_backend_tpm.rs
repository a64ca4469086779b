//! The TPM key backend against swtpm: the backend contract, restarts of the TPM and of the
//! process, bad inputs (absent, busy, corrupt or foreign key files), and a host key in the
//! TPM signing leaves that the JDK accepts for mutual TLS.

#![cfg(feature = "tpm")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::java::{self, Store};
use common::keys::{Expect, contract, verify};
use common::swtpm::{Golden, SwtpmSession};
use leafd::keys::tpm::{PROBE_TIMEOUT, TpmBackend, TpmConfig};
use leafd::keys::{Error, KeyAlgorithm, KeyBackend, KeyRef, KeySpec};

fn config(tpm: &SwtpmSession, key_dir: &Path) -> TpmConfig {
    TpmConfig {
        tcti: tpm.tcti(),
        key_dir: key_dir.to_owned(),
        parent: None,
    }
}

fn spec(label: &str, algorithm: KeyAlgorithm) -> KeySpec {
    KeySpec {
        label: label.into(),
        algorithm,
    }
}

/// The transient objects loaded in the TPM, as `tpm2_getcap handles-transient` lists them.
/// The TPM must be free (no backend connected).
fn transient_handles(tpm: &SwtpmSession) -> String {
    let out = Command::new("tpm2_getcap")
        .arg("handles-transient")
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect(common::swtpm::SWTPM_MISSING);
    assert!(
        out.status.success(),
        "tpm2_getcap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn tpm2(tpm: &SwtpmSession, dir: &Path, args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect(common::swtpm::SWTPM_MISSING);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[test]
fn tpm_backend_meets_the_contract() {
    let tpm = SwtpmSession::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&tpm, &dir.path().join("keys"));
    let algorithms = {
        // One client at a time: this backend is dropped before the contract opens its own.
        let mut b = TpmBackend::open(&cfg).unwrap();
        b.supported_algorithms().unwrap()
    };
    assert!(
        algorithms.contains(&KeyAlgorithm::EcdsaP256),
        "{algorithms:?}"
    );
    // swtpm implements NIST P-384 (its EK is a P-384 key), so the contract covers both.
    assert!(
        algorithms.contains(&KeyAlgorithm::EcdsaP384),
        "{algorithms:?}"
    );
    let open_cfg = cfg.clone();
    let started = Instant::now();
    contract(
        Arc::new(move || -> Box<dyn KeyBackend> { Box::new(TpmBackend::open(&open_cfg).unwrap()) }),
        &Expect {
            algorithms: algorithms.clone(),
            non_exportable: true,
        },
    );
    eprintln!("contract ({algorithms:?}) took {:?}", started.elapsed());

    // RSA is refused up front.
    let mut b = TpmBackend::open(&cfg).unwrap();
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::Rsa3072] {
        assert!(matches!(b.generate(&spec("rsa", alg)), Err(Error::Unsupported(a)) if a == alg));
    }
    assert!(!dir.path().join("keys/rsa.tpm").exists());

    // info reads the attributes back and names the TPM, the TCTI and the file.
    let key = b.generate(&spec("facts", KeyAlgorithm::EcdsaP256)).unwrap();
    let info = b.info(&key).unwrap();
    assert_eq!(info.backend, "tpm");
    assert!(info.non_exportable);
    let fact = |name: &str| {
        info.facts
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no fact {name}: {:?}", info.facts))
    };
    assert_eq!(fact("manufacturer"), "IBM");
    assert!(!fact("firmware").is_empty());
    assert_eq!(fact("tcti"), tpm.tcti());
    assert_eq!(
        fact("file"),
        dir.path().join("keys/facts.tpm").display().to_string()
    );
    let attrs = fact("attributes");
    for a in [
        "fixedTPM",
        "fixedParent",
        "sensitiveDataOrigin",
        "userWithAuth",
        "sign",
    ] {
        assert!(attrs.split('|').any(|x| x == a), "{a} missing from {attrs}");
    }
    for a in ["decrypt", "restricted"] {
        assert!(!attrs.split('|').any(|x| x == a), "{a} set in {attrs}");
    }
    drop(b);

    // Every operation flushed what it loaded: no transient object is left in the TPM.
    assert_eq!(transient_handles(&tpm), "");
}

#[test]
fn tpm_key_survives_tpm_and_process_restarts() {
    let mut tpm = SwtpmSession::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&tpm, dir.path());
    let mut b = TpmBackend::open(&cfg).unwrap();
    let mut keys = Vec::new();
    for (label, alg) in [
        ("host", KeyAlgorithm::EcdsaP256),
        ("host384", KeyAlgorithm::EcdsaP384),
    ] {
        let key = b.generate(&spec(label, alg)).unwrap();
        let spki = b.public_key(&key).unwrap();
        keys.push((key, spki));
    }

    // Sign latency, for the record (every signature: create the SRK, load, sign, flush 2).
    for (key, spki) in &keys {
        let n = 20;
        let started = Instant::now();
        for i in 0..n {
            let msg = format!("latency {i}");
            let sig = b.sign(key, msg.as_bytes()).unwrap();
            assert!(verify(key.algorithm, spki, msg.as_bytes(), &sig));
        }
        let each = started.elapsed() / n;
        eprintln!("{}: sign took {each:?} on average over {n}", key.algorithm);
        assert!(
            each < Duration::from_secs(1),
            "signing is far too slow: {each:?}"
        );
    }

    // The TPM reboots under a connected backend: the next operation reconnects once.
    tpm.restart();
    for (key, spki) in &keys {
        let sig = b.sign(key, b"after a TPM restart").unwrap();
        assert!(verify(key.algorithm, spki, b"after a TPM restart", &sig));
    }

    // The TPM is down: a clear, retryable error, no hang.
    tpm.stop();
    let started = Instant::now();
    let err = b.sign(&keys[0].0, b"tpm down").unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    tpm.start();
    let sig = b.sign(&keys[0].0, b"tpm back").unwrap();
    assert!(verify(
        KeyAlgorithm::EcdsaP256,
        &keys[0].1,
        b"tpm back",
        &sig
    ));

    // The process restarts: a new backend finds the keys again, after another TPM reboot.
    drop(b);
    tpm.restart();
    let mut b = TpmBackend::open(&cfg).unwrap();
    for (key, spki) in &keys {
        let again = b
            .open(&key.label)
            .unwrap()
            .expect("key found after restart");
        assert_eq!(&again, key);
        assert_eq!(&b.public_key(&again).unwrap(), spki);
        let sig = b.sign(&again, b"after a process restart").unwrap();
        assert!(verify(
            key.algorithm,
            spki,
            b"after a process restart",
            &sig
        ));
    }

    // The key file is private and in a private directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("host.tpm")), 0o600);
    assert_eq!(mode(dir.path()), 0o700);
    let text = fs::read_to_string(dir.path().join("host.tpm")).unwrap();
    assert!(
        text.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"),
        "{text}"
    );
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn tpm_absent_is_unavailable_after_one_fast_attempt() {
    let dir = tempfile::tempdir().unwrap();
    // A closed port.
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = TpmBackend::open(&TpmConfig {
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        key_dir: dir.path().join("keys"),
        parent: None,
    })
    .err()
    .expect("no TPM there");
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    let text = error_chain(&err);
    assert!(text.contains(&format!("port={port}")), "{text}");
    assert!(text.contains("cannot connect"), "{text}");

    // Something that accepts and hangs up: exactly one connection, then Unavailable.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = Arc::new(AtomicBool::new(false));
    let counter = std::thread::spawn({
        let done = done.clone();
        move || {
            listener.set_nonblocking(true).unwrap();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        n += 1;
                        drop(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            n
        }
    });
    let started = Instant::now();
    let err = TpmBackend::open(&TpmConfig {
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        key_dir: dir.path().join("keys"),
        parent: None,
    })
    .err()
    .expect("not a TPM");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    // Give a retry storm the chance to show itself.
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::SeqCst);
    assert_eq!(counter.join().unwrap(), 1, "one attempt, no retries");

    // No TPM device.
    let err = TpmBackend::open(&TpmConfig {
        tcti: "device:/nonexistent/tpmrm0".into(),
        key_dir: dir.path().join("keys"),
        parent: None,
    })
    .err()
    .expect("no such device");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("/nonexistent/tpmrm0"),
        "{}",
        error_chain(&err)
    );

    // A TCTI that does not parse is a configuration error, not retried.
    let err = TpmBackend::open(&TpmConfig {
        tcti: "carrier-pigeon:/dev/tpm0".into(),
        key_dir: dir.path().join("keys"),
        parent: None,
    })
    .err()
    .expect("bad TCTI");
    assert!(
        matches!(
            err,
            Error::Device {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Holds swtpm's only client connection, as `tpm2-abrmd` or a hung client would.
fn hold_connection(tpm: &SwtpmSession) -> TcpStream {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, tpm.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // TPM2_GetRandom(2): once it is answered, swtpm is serving this connection.
    s.write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 2])
        .unwrap();
    let mut reply = [0u8; 14];
    s.read_exact(&mut reply).unwrap();
    s
}

fn assert_busy(err: &Error, elapsed: Duration) {
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(elapsed >= PROBE_TIMEOUT, "{elapsed:?}");
    assert!(
        elapsed < PROBE_TIMEOUT + Duration::from_secs(1),
        "{elapsed:?}"
    );
    let text = error_chain(err);
    assert!(text.contains("another client holds it"), "{text}");
}

#[test]
fn tpm_busy_is_reported_within_the_probe_timeout() {
    let tpm = SwtpmSession::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&tpm, dir.path());
    let mut first = TpmBackend::open(&cfg).unwrap();
    let key = first
        .generate(&spec("host", KeyAlgorithm::EcdsaP256))
        .unwrap();
    // The swtpm TCTI connects per command, so two backends can take turns.
    let mut second = TpmBackend::open(&cfg).unwrap();
    second.sign(&key, b"taking turns").unwrap();
    drop(second);

    let holder = hold_connection(&tpm);
    // Opening a backend, and an operation on an open one, fail after the probe timeout
    // instead of waiting for the TPM forever.
    let started = Instant::now();
    let err = TpmBackend::open(&cfg).err().expect("the TPM is busy");
    assert_busy(&err, started.elapsed());
    let started = Instant::now();
    let err = first.sign(&key, b"busy").unwrap_err();
    assert_busy(&err, started.elapsed());

    // Once the other client lets go, the same backend works again.
    drop(holder);
    let spki = first.public_key(&key).unwrap();
    let sig = first.sign(&key, b"free again").unwrap();
    assert!(verify(KeyAlgorithm::EcdsaP256, &spki, b"free again", &sig));
}

/// A way to damage the key file.
type Corruption<'a> = Box<dyn Fn() + 'a>;

/// Rewrites the PEM key file with one byte of the DER flipped at `offset_from_end`.
fn flip_der_byte(path: &Path, offset_from_end: usize) {
    let block = pem::parse(fs::read(path).unwrap()).unwrap();
    let mut der = block.contents().to_vec();
    let at = der.len() - offset_from_end;
    der[at] ^= 0x01;
    fs::write(path, pem::encode(&pem::Pem::new(block.tag(), der))).unwrap();
}

#[test]
fn corrupt_key_file_is_a_load_error_naming_the_file() {
    let tpm = SwtpmSession::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&tpm, dir.path());
    let path = dir.path().join("host.tpm");
    let original = {
        let mut b = TpmBackend::open(&cfg).unwrap();
        b.generate(&spec("host", KeyAlgorithm::EcdsaP256)).unwrap();
        fs::read(&path).unwrap()
    };

    let cases: Vec<(&str, Corruption<'_>)> = vec![
        (
            "not PEM",
            Box::new(|| fs::write(&path, "garbage\n").unwrap()),
        ),
        (
            "wrong PEM type",
            Box::new(|| {
                fs::write(
                    &path,
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                )
                .unwrap()
            }),
        ),
        (
            "truncated",
            Box::new(|| fs::write(&path, &original[..original.len() / 2]).unwrap()),
        ),
        // The last bytes are the parent-encrypted private area: the file still parses, but the
        // TPM's integrity check refuses it.
        (
            "private area tampered with",
            Box::new(|| {
                fs::write(&path, &original).unwrap();
                flip_der_byte(&path, 5);
            }),
        ),
    ];
    let key = KeyRef {
        label: "host".into(),
        algorithm: KeyAlgorithm::EcdsaP256,
    };
    for (what, corrupt) in &cases {
        corrupt();
        // A fresh backend, as after a restart: nothing cached.
        let mut b = TpmBackend::open(&cfg).unwrap();
        for err in [b.open("host").unwrap_err(), b.sign(&key, b"x").unwrap_err()] {
            assert!(matches!(err, Error::Load { .. }), "{what}: {err:?}");
            assert!(!err.is_retryable(), "{what}");
            let text = error_chain(&err);
            assert!(text.contains(&path.display().to_string()), "{what}: {text}");
            if *what == "private area tampered with" {
                assert!(text.contains("the TPM rejected the key file"), "{text}");
            }
        }
    }
    // Restored, the key works again.
    fs::write(&path, &original).unwrap();
    let mut b = TpmBackend::open(&cfg).unwrap();
    assert_eq!(b.open("host").unwrap(), Some(key.clone()));
    b.sign(&key, b"restored").unwrap();
}

#[test]
fn key_file_from_another_tpm_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let key: KeyRef = {
        let tpm_a = SwtpmSession::with_golden(Golden::A);
        let mut a = TpmBackend::open(&config(&tpm_a, &dir_a)).unwrap();
        a.generate(&spec("host", KeyAlgorithm::EcdsaP256)).unwrap()
    };
    let tpm_b = SwtpmSession::with_golden(Golden::B);
    let mut b = TpmBackend::open(&config(&tpm_b, &dir_b)).unwrap();
    fs::copy(dir_a.join("host.tpm"), dir_b.join("host.tpm")).unwrap();
    for err in [
        b.open("host").unwrap_err(),
        b.sign(&key, b"not here").unwrap_err(),
        b.public_key(&key).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Load { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let text = error_chain(&err);
        assert!(
            text.contains(&dir_b.join("host.tpm").display().to_string()),
            "{text}"
        );
        assert!(text.contains("another TPM"), "{text}");
        assert!(text.contains("integrity"), "{text}");
    }
    // The TPM is still fine for keys of its own.
    let own = b.generate(&spec("own", KeyAlgorithm::EcdsaP256)).unwrap();
    b.sign(&own, b"mine").unwrap();
}

#[test]
fn persistent_parent_is_checked_and_used() {
    let tpm = SwtpmSession::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let with_parent = TpmConfig {
        parent: Some(0x8100_0001),
        ..config(&tpm, &keys)
    };
    // No key at the handle yet: a configuration error, not retried.
    let err = TpmBackend::open(&with_parent).err().expect("no parent yet");
    assert!(
        matches!(
            err,
            Error::Device {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    // Not a persistent handle at all.
    let err = TpmBackend::open(&TpmConfig {
        parent: Some(0x8000_0001),
        ..with_parent.clone()
    })
    .err()
    .expect("transient handle");
    assert!(
        error_chain(&err).contains("not a persistent handle"),
        "{}",
        error_chain(&err)
    );

    // A key made under the transient SRK template.
    let transient_key = {
        let mut b = TpmBackend::open(&config(&tpm, &keys)).unwrap();
        b.generate(&spec("under-srk", KeyAlgorithm::EcdsaP256))
            .unwrap()
    };

    // Provision a persistent storage key the way an administrator would.
    tpm2(
        &tpm,
        dir.path(),
        &[
            "tpm2_createprimary",
            "-C",
            "o",
            "-G",
            "ecc256:null:aes128cfb",
            "-c",
            "srk.ctx",
        ],
    );
    tpm2(
        &tpm,
        dir.path(),
        &[
            "tpm2_evictcontrol",
            "-C",
            "o",
            "-c",
            "srk.ctx",
            "0x81000001",
        ],
    );
    tpm2(&tpm, dir.path(), &["tpm2_flushcontext", "-t"]);

    let mut b = TpmBackend::open(&with_parent).unwrap();
    let key = b
        .generate(&spec("under-persistent", KeyAlgorithm::EcdsaP256))
        .unwrap();
    let spki = b.public_key(&key).unwrap();
    let sig = b.sign(&key, b"persistent parent").unwrap();
    assert!(verify(
        KeyAlgorithm::EcdsaP256,
        &spki,
        b"persistent parent",
        &sig
    ));
    let info = b.info(&key).unwrap();
    assert!(
        info.facts.contains(&("parent".into(), "0x81000001".into())),
        "{:?}",
        info.facts
    );
    // A key made under another parent is refused with the reason.
    let err = b.open(&transient_key.label).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("created under parent 0x40000001"),
        "{}",
        error_chain(&err)
    );
    drop(b);
    assert_eq!(transient_handles(&tpm), "");
}

const PASSWORD: &str = "changeit";

fn leafd_config(root: &Path) -> PathBuf {
    let tls = root.join("tls");
    fs::create_dir_all(&tls).unwrap();
    fs::write(root.join("store.pass"), format!("{PASSWORD}\n")).unwrap();
    let store = |id: &str, kind: &str, file: &str| {
        format!(
            "\n[[identity.{kind}]]\nformat = \"pkcs12\"\npath = \"{}\"\npassword-file = \"{}\"\n",
            tls.join(format!("{id}{file}")).display(),
            root.join("store.pass").display()
        )
    };
    let text = format!(
        "[daemon]\nstate-directory = \"{state}\"\n\n[host]\nhostname = \"broker1\"\n\n\
         [[identity]]\nname = \"broker\"\nsubject = \"CN=localhost,OU=kafka,O=leafd test\"\n\
         sans = [\"localhost\", \"127.0.0.1\"]\n{bk}{bt}\n\
         [[identity]]\nname = \"client\"\nsubject = \"CN=app-orders,OU=apps,O=leafd test\"\n\
         sans = [\"app-orders.leafd.test\"]\n{ck}{ct}",
        state = root.join("state").display(),
        bk = store("broker", "keystore", ".p12"),
        bt = store("broker", "truststore", "-trust.p12"),
        ck = store("client", "keystore", ".p12"),
        ct = store("client", "truststore", "-trust.p12"),
    );
    let path = root.join("leafd.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn leaves_signed_by_a_tpm_host_key_pass_the_java_handshake() {
    use leafd::config::{IssuerSettings, LoadEnv};
    use leafd::issuer::HostCertRequest;
    use leafd::issuer::local::LocalCa;
    use leafd::renew::engine::required_names;
    use leafd::renew::mint::{encode_outputs, mint_leaf};

    let tpm = SwtpmSession::new();
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let env = LoadEnv {
            credentials_directory: None,
            hostname: "broker1".into(),
        };
        let settings = leafd::config::load(&leafd_config(root), &env).unwrap();
        let now = SystemTime::now();
        let IssuerSettings::Local(ca_settings) = &settings.issuer;
        let ca = LocalCa::open_or_create(&root.join("state/ca"), ca_settings, now).unwrap();

        let mut backend = TpmBackend::open(&config(&tpm, &root.join("state/keys"))).unwrap();
        let host_key = backend.generate(&spec("host", algorithm)).unwrap();
        let issued = ca
            .issue(
                &HostCertRequest {
                    spki_der: backend.public_key(&host_key).unwrap(),
                    algorithm,
                    names: required_names(&settings),
                    subjects: leafd::renew::engine::required_subjects(&settings),
                    hostname: "broker1".into(),
                },
                now,
            )
            .unwrap();
        for identity in &settings.identities {
            let minted =
                mint_leaf(&mut backend, &host_key, &issued.chain[0], identity, now).unwrap();
            for e in encode_outputs(identity, &minted, &issued.chain, &issued.roots).unwrap() {
                leafd::keystore::write_output(e.output, &e.bytes).unwrap();
            }
        }
        drop(backend);

        let store = |file: &str| Store::pkcs12(root.join("tls").join(file), PASSWORD);
        let line = java::handshake(
            &store("broker.p12"),
            &store("broker-trust.p12"),
            &store("client.p12"),
            &store("client-trust.p12"),
            "127.0.0.1",
        )
        .unwrap_or_else(|e| panic!("{algorithm} host key: {e}"));
        eprintln!("{algorithm} host key in the TPM: {line}");
        assert!(line.starts_with("OK TLSv1.3"), "{line}");
        assert!(
            line.contains("server-saw=CN=app-orders,OU=apps,O=leafd test"),
            "{line}"
        );
        assert!(
            line.contains("client-saw=CN=localhost,OU=kafka,O=leafd test"),
            "{line}"
        );
    }
}
