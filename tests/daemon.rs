//! End-to-end tests of the `leafd` binary: real keystores checked by the JDK the way Kafka
//! loads them, crash safety under SIGKILL, and bad inputs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{PASSWORD, Setup, bytes, run_bin};
use common::java::{self, Batch, Store};
use nix::sys::signal::Signal;
use rand::Rng;

fn stores(id: &str, with_outputs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (kind, format) in with_outputs {
        let ext = match *format {
            "pkcs12" => "p12",
            other => other,
        };
        let file = if *kind == "keystore" {
            format!("{id}.{ext}")
        } else {
            format!("{id}-trust.{ext}")
        };
        s.push_str(&format!(
            "\n[[identity.{kind}]]\nformat = \"{format}\"\npath = \"@DIR@/tls/{file}\"\n"
        ));
        if *format != "pem" {
            s.push_str("password-file = \"@DIR@/store.pass\"\n");
        }
    }
    s
}

const ALL_FORMATS: &[(&str, &str)] = &[
    ("keystore", "pkcs12"),
    ("keystore", "jks"),
    ("keystore", "pem"),
    ("truststore", "pkcs12"),
    ("truststore", "jks"),
    ("truststore", "pem"),
];

fn header(lifetime_testing: bool) -> String {
    format!(
        "[daemon]\nstate-directory = \"@DIR@/state\"\ntesting-short-lifetimes = {lifetime_testing}\n\n[host]\nhostname = \"broker1\"\n"
    )
}

fn two_identities(lifetime: &str) -> String {
    format!(
        "{}\n[[identity]]\nname = \"broker\"\nsubject = \"CN=localhost,OU=kafka,O=leafd test\"\nsans = [\"localhost\", \"127.0.0.1\"]\nlifetime = \"{lifetime}\"\n{}\n[[identity]]\nname = \"client\"\nsubject = \"CN=app-orders,OU=apps,O=leafd test\"\nsans = [\"app-orders.leafd.test\"]\nlifetime = \"{lifetime}\"\n{}",
        header(true),
        stores("broker", ALL_FORMATS),
        stores("client", ALL_FORMATS),
    )
}

fn store(setup: &Setup, file: &str) -> Store {
    let path = setup.path(&format!("tls/{file}"));
    match file.rsplit('.').next().unwrap() {
        "p12" => Store::pkcs12(path, PASSWORD),
        "jks" => Store::jks(path, PASSWORD),
        _ => Store::pem(path),
    }
}

fn keytool_list(path: &Path, kind: &str) -> String {
    let out = Command::new("keytool")
        .args(["-list", "-v", "-keystore"])
        .arg(path)
        .args(["-storetype", kind, "-storepass", PASSWORD])
        .output()
        .expect(java::JDK_MISSING);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keytool -list {}: {text}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn stores_load_in_java_and_identities_handshake() {
    let mut setup = Setup::new(&two_identities("10m"));
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1 && s.rotations("client") >= 1
    });

    let mut batch = Batch::new();
    for id in ["broker", "client"] {
        for ext in ["p12", "jks", "pem"] {
            let ks = store(&setup, &format!("{id}.{ext}"));
            let line = batch
                .load_keystore(&ks)
                .unwrap_or_else(|e| panic!("{id}.{ext}: {e}"));
            assert!(line.contains("key-entries=1 chain-length=2"), "{line}");
            let ts = store(&setup, &format!("{id}-trust.{ext}"));
            let line = batch
                .load_truststore(&ts)
                .unwrap_or_else(|e| panic!("{id}-trust.{ext}: {e}"));
            assert!(line.contains("trusted=1"), "{line}");
        }
    }
    // keytool reads every PKCS#12 and JKS store.
    for id in ["broker", "client"] {
        let ks = keytool_list(&setup.path(&format!("tls/{id}.p12")), "PKCS12");
        assert!(
            ks.contains("PrivateKeyEntry") && ks.contains("Certificate chain length: 2"),
            "{ks}"
        );
        let ks = keytool_list(&setup.path(&format!("tls/{id}.jks")), "JKS");
        assert!(ks.contains("PrivateKeyEntry"), "{ks}");
        let ts = keytool_list(&setup.path(&format!("tls/{id}-trust.p12")), "PKCS12");
        assert!(ts.contains("trustedCertEntry"), "{ts}");
        let ts = keytool_list(&setup.path(&format!("tls/{id}-trust.jks")), "JKS");
        assert!(ts.contains("trustedCertEntry"), "{ts}");
    }
    // Mutual TLS between the two identities, chain validated up to the local root through the
    // name-constrained host issuing certificate, with every store format.
    for ext in ["p12", "jks", "pem"] {
        for host in ["127.0.0.1", "localhost"] {
            let line = batch
                .handshake(
                    &store(&setup, &format!("broker.{ext}")),
                    &store(&setup, &format!("broker-trust.{ext}")),
                    &store(&setup, &format!("client.{ext}")),
                    &store(&setup, &format!("client-trust.{ext}")),
                    host,
                )
                .unwrap_or_else(|e| panic!("handshake with {ext} stores to {host}: {e}"));
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

    // Files are written with the default mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(setup.path("tls/broker.p12"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart keeps the valid leaves instead of re-minting them.
    let serial = setup.identity_state("broker")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = bytes(&setup.path("tls/broker.p12"));
    assert_eq!(setup.stop(), 0, "clean exit on SIGTERM");
    setup.start();
    setup.wait_for("ready after restart", Duration::from_secs(30), |s| {
        s.log().contains("ready")
    });
    assert_eq!(
        setup.identity_state("broker")["serial"].as_str().unwrap(),
        serial
    );
    assert_eq!(bytes(&setup.path("tls/broker.p12")), before);
    assert_eq!(setup.rotations("broker"), 1);
    assert_eq!(setup.stop(), 0);
}

#[test]
fn leaf_outside_name_constraints_is_rejected_by_java_and_openssl() {
    let mut setup = Setup::new(&two_identities("10m"));
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1
    });
    assert_eq!(setup.stop(), 0);

    let state = setup.state().unwrap();
    let host_chain = state["host"]["chain_pem"].as_str().unwrap().to_owned();
    let roots = state["host"]["roots_pem"].as_str().unwrap().to_owned();
    fs::write(setup.path("roots.pem"), &roots).unwrap();
    fs::write(setup.path("host.pem"), &host_chain).unwrap();

    // The daemon's own leaf validates.
    let pem = fs::read_to_string(setup.path("tls/broker.pem")).unwrap();
    let certs: Vec<_> = pem::parse_many(&pem)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .collect();
    fs::write(setup.path("good-chain.pem"), pem::encode_many(&certs)).unwrap();
    fs::write(setup.path("good-leaf.pem"), pem::encode(&certs[0])).unwrap();
    java::pkix(&setup.path("good-chain.pem"), &setup.path("roots.pem"))
        .expect("daemon leaf validates");
    openssl_verify(&setup, "good-leaf.pem").expect("daemon leaf verifies with openssl");

    // A leaf for a name the host was never allowed, signed by the real host key.
    for (name, san) in [
        ("dns", leafd::config::San::Dns("evil.example".into())),
        ("ip", leafd::config::San::Ip("10.9.9.9".parse().unwrap())),
    ] {
        let subject = vec![(
            leafd::config::DnAttribute::CommonName,
            "evil.example".to_owned(),
        )];
        let (_, leaf, _) = common::keys::rogue_leaf(&setup.path("state"), subject, vec![san]);
        let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf));
        fs::write(setup.path(&format!("evil-{name}.pem")), &leaf_pem).unwrap();
        fs::write(
            setup.path(&format!("evil-{name}-chain.pem")),
            format!("{leaf_pem}{host_chain}"),
        )
        .unwrap();
        let err = java::pkix(
            &setup.path(&format!("evil-{name}-chain.pem")),
            &setup.path("roots.pem"),
        )
        .expect_err("Java PKIX must reject a name outside the constraints");
        assert!(
            err.contains("INVALID_NAME") || err.to_lowercase().contains("name"),
            "{err}"
        );
        let err = openssl_verify(&setup, &format!("evil-{name}.pem"))
            .expect_err("openssl must reject it too");
        assert!(err.contains("permitted subtree violation"), "{err}");
    }
}

/// Kafka authenticates an mTLS client by its subject DN, so the host issuing certificate
/// permits exactly the configured subjects (directoryName constraints): a leaf the host key
/// signs for any other subject, even with a permitted name, fails Java PKIX and OpenSSL. A
/// client identity without SANs (its CN looks like a DNS name, which Java then checks
/// against the DNS constraints) validates everywhere.
#[test]
fn host_certificate_permits_only_the_configured_subjects() {
    let config = format!(
        "{}\n[[identity]]\nname = \"broker\"\nsubject = \"CN=localhost,OU=kafka,O=leafd test\"\nsans = [\"localhost\", \"127.0.0.1\"]\nlifetime = \"10m\"\n{}\n[[identity]]\nname = \"client\"\nsubject = \"CN=quickstart-client,OU=clients,O=leafd test\"\neku = [\"client-auth\"]\nlifetime = \"10m\"\n{}",
        header(true),
        stores("broker", &[("keystore", "pem"), ("truststore", "pem")]),
        stores("client", &[("keystore", "pem"), ("truststore", "pem")]),
    );
    let mut setup = Setup::new(&config);
    setup.start();
    setup.wait_for("first rotations", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1 && s.rotations("client") >= 1
    });
    assert_eq!(setup.stop(), 0);
    let state = setup.state().unwrap();
    let host_chain = state["host"]["chain_pem"].as_str().unwrap().to_owned();
    fs::write(
        setup.path("roots.pem"),
        state["host"]["roots_pem"].as_str().unwrap(),
    )
    .unwrap();
    fs::write(setup.path("host.pem"), &host_chain).unwrap();

    // Both of the daemon's own leaves validate, the client's without any SAN.
    for id in ["broker", "client"] {
        let pem = fs::read_to_string(setup.path(&format!("tls/{id}.pem"))).unwrap();
        let certs: Vec<_> = pem::parse_many(&pem)
            .unwrap()
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .collect();
        fs::write(
            setup.path(&format!("{id}-chain.pem")),
            pem::encode_many(&certs),
        )
        .unwrap();
        fs::write(
            setup.path(&format!("{id}-leaf.pem")),
            pem::encode(&certs[0]),
        )
        .unwrap();
        java::pkix(
            &setup.path(&format!("{id}-chain.pem")),
            &setup.path("roots.pem"),
        )
        .unwrap_or_else(|e| panic!("{id} leaf fails Java PKIX: {e}"));
        openssl_verify(&setup, &format!("{id}-leaf.pem"))
            .unwrap_or_else(|e| panic!("{id} leaf fails openssl verify: {e}"));
    }

    // Leaves the real host key signs for subjects it was not given: the super user's DN
    // with the broker's permitted names, and another client's DN without SANs.
    use leafd::config::DnAttribute::{CommonName, Organization, OrganizationalUnit};
    // Subjects in DER order: O, OU, CN.
    let dn = |ou: &str, cn: &str| {
        vec![
            (Organization, "leafd test".to_owned()),
            (OrganizationalUnit, ou.to_owned()),
            (CommonName, cn.to_owned()),
        ]
    };
    let cases = [
        (
            "superuser",
            dn("kafka", "admin"),
            vec![leafd::config::San::Dns("localhost".into())],
        ),
        ("other-client", dn("admins", "quickstart-client"), vec![]),
    ];
    for (name, subject, sans) in cases {
        let (_, leaf, _) = common::keys::rogue_leaf(&setup.path("state"), subject, sans);
        let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf));
        fs::write(setup.path(&format!("{name}.pem")), &leaf_pem).unwrap();
        fs::write(
            setup.path(&format!("{name}-chain.pem")),
            format!("{leaf_pem}{host_chain}"),
        )
        .unwrap();
        let err = java::pkix(
            &setup.path(&format!("{name}-chain.pem")),
            &setup.path("roots.pem"),
        )
        .expect_err("Java PKIX must reject a subject outside the constraints");
        assert!(err.contains("name constraints"), "{name}: {err}");
        let err =
            openssl_verify(&setup, &format!("{name}.pem")).expect_err("openssl must reject it too");
        assert!(err.contains("permitted subtree violation"), "{name}: {err}");
    }
}

fn openssl_verify(setup: &Setup, leaf: &str) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(setup.path("roots.pem"))
        .arg("-untrusted")
        .arg(setup.path("host.pem"))
        .arg(setup.path(leaf))
        .output()
        .expect("openssl missing: apt-get install -y openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn kill9_at_random_moments_never_leaves_a_broken_store() {
    const IDENTITIES: usize = 8;
    let mut config = header(true);
    for i in 0..IDENTITIES {
        let formats: &[(&str, &str)] = if i == 0 {
            ALL_FORMATS
        } else {
            &[("keystore", "pkcs12"), ("truststore", "pkcs12")]
        };
        config.push_str(&format!(
            "\n[[identity]]\nname = \"id{i}\"\nsubject = \"CN=id{i}.leafd.test\"\nsans = [\"id{i}.leafd.test\"]\nlifetime = \"1s\"\n{}",
            stores(&format!("id{i}"), formats)
        ));
    }
    let mut setup = Setup::new(&config);
    let total = |s: &Setup| {
        (0..IDENTITIES)
            .map(|i| s.rotations(&format!("id{i}")))
            .sum::<u64>()
    };
    let mut all_stores = Vec::new();
    for i in 0..IDENTITIES {
        let exts: &[&str] = if i == 0 {
            &["p12", "jks", "pem"]
        } else {
            &["p12"]
        };
        for ext in exts {
            all_stores.push((true, store(&setup, &format!("id{i}.{ext}"))));
            all_stores.push((false, store(&setup, &format!("id{i}-trust.{ext}"))));
        }
    }

    setup.start();
    setup.wait_for(
        "every identity written once",
        Duration::from_secs(30),
        |s| (0..IDENTITIES).all(|i| s.rotations(&format!("id{i}")) >= 1),
    );
    let mut rng = rand::thread_rng();
    let mut batch = Batch::new();
    let mut kills = 0;
    let started = Instant::now();
    while total(&setup) < 200 || kills < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "too slow: {} rotations",
            total(&setup)
        );
        if setup.child.is_none() {
            setup.start();
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..600)));
        setup.kill9();
        kills += 1;
        for (is_keystore, s) in &all_stores {
            let r = if *is_keystore {
                batch.load_keystore(s)
            } else {
                batch.load_truststore(s)
            };
            r.unwrap_or_else(|e| {
                panic!(
                    "after kill {kills}: {} does not load: {e}",
                    s.path.display()
                )
            });
        }
    }
    assert!(kills >= 20, "only {kills} kills");
    // The restarted daemon carries on rotating and stops cleanly.
    let before = total(&setup);
    setup.start();
    setup.wait_for(
        "rotations after the last restart",
        Duration::from_secs(30),
        |s| total(s) >= before + IDENTITIES as u64,
    );
    assert_eq!(setup.stop(), 0);
    for (is_keystore, s) in &all_stores {
        let r = if *is_keystore {
            batch.load_keystore(s)
        } else {
            batch.load_truststore(s)
        };
        r.unwrap_or_else(|e| panic!("at the end: {} does not load: {e}", s.path.display()));
    }
    let leftovers: Vec<_> = fs::read_dir(setup.path("tls"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    eprintln!("{kills} kills across {} rotations", total(&setup));
}

#[test]
fn corrupt_state_is_moved_aside_and_rebuilt() {
    let mut setup = Setup::new(&two_identities("10m"));
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1
    });
    assert_eq!(setup.stop(), 0);
    fs::write(
        setup.path("state/state.json"),
        b"{\"version\": 1, \"identities\": [garbage",
    )
    .unwrap();
    setup.start();
    setup.wait_for("rebuilt state", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1 && s.rotations("client") >= 1
    });
    let log = setup.log();
    assert!(log.contains("state file was corrupt"), "{log}");
    let moved: Vec<_> = fs::read_dir(setup.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    java::load_keystore(&store(&setup, "broker.p12")).unwrap();
    assert_eq!(setup.stop(), 0);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let good = two_identities("2s");
    let mut setup = Setup::new(&good);
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1
    });

    setup.write_config(&format!(
        "{good}\n[[identity]]\nname = \"third\"\nbogus-key = 1\n"
    ));
    setup.signal(Signal::SIGHUP);
    setup.wait_for("rejection logged", Duration::from_secs(10), |s| {
        s.log().contains("new configuration rejected")
    });
    let log = setup.log();
    assert!(
        log.contains("leafd.toml:") && log.contains("bogus-key"),
        "{log}"
    );
    // Still running on the old config: it keeps rotating.
    let r = setup.rotations("broker");
    setup.wait_for("rotation on the old config", Duration::from_secs(15), |s| {
        s.rotations("broker") > r
    });
    java::load_keystore(&store(&setup, "broker.p12")).unwrap();

    // A good new config is picked up.
    setup.write_config(&format!(
        "{good}\n[[identity]]\nname = \"third\"\nsubject = \"CN=third.leafd.test\"\nsans = [\"third.leafd.test\"]\n{}",
        stores("third", &[("keystore", "pkcs12")])
    ));
    setup.signal(Signal::SIGHUP);
    setup.wait_for("new identity rotated", Duration::from_secs(15), |s| {
        s.rotations("third") >= 1
    });
    java::load_keystore(&store(&setup, "third.p12")).unwrap();
    assert_eq!(setup.stop(), 0);
}

fn config_error(config: &str, expect: &[&str]) {
    let setup = Setup::new(config);
    let path = setup.config_path();
    let path = path.to_str().unwrap();
    for (bin, args) in [
        (env!("CARGO_BIN_EXE_leafd"), vec!["--config", path]),
        (
            env!("CARGO_BIN_EXE_leafctl"),
            vec!["validate", "--config", path],
        ),
    ] {
        let (code, out) = run_bin(bin, &args);
        assert_eq!(code, 78, "{bin} should exit 78 (EX_CONFIG); output:\n{out}");
        for e in expect {
            assert!(out.contains(e), "{bin}: expected {e:?} in:\n{out}");
        }
        assert!(
            !out.contains(PASSWORD),
            "a password leaked into the output:\n{out}"
        );
    }
}

#[test]
fn config_errors_exit_78_with_file_line_and_column() {
    let base = two_identities("10m");
    config_error(
        &format!("{base}\n[[identity]]\nname = \"x\"\nsans = [\"x\"]\nfrobnicate = true\n"),
        &["leafd.toml:", "frobnicate"],
    );
    config_error(
        &base.replace("lifetime = \"10m\"", "lifetime = 600"),
        &["leafd.toml:12:12", "invalid type"],
    );
    config_error(
        &base.replace("\"localhost\", \"127.0.0.1\"", "\"b{brokr_id}.leafd.test\""),
        &["leafd.toml:", "brokr_id"],
    );
    config_error(
        &base.replace("@DIR@/store.pass", "@DIR@/missing.pass"),
        &["leafd.toml:", "missing.pass"],
    );
    // A password file that exists but cannot be read as one (a directory).
    config_error(
        &base.replace("@DIR@/store.pass", "@DIR@/tls"),
        &["leafd.toml:"],
    );
    // leafctl validate accepts the good config.
    let setup = Setup::new(&base);
    let (code, out) = run_bin(
        env!("CARGO_BIN_EXE_leafctl"),
        &[
            "validate",
            "--config",
            setup.config_path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("broker") && out.contains("client"), "{out}");
}

#[test]
fn unwritable_output_directory_keeps_the_last_good_keystore() {
    use std::os::unix::fs::PermissionsExt;
    let mut setup = Setup::new(&two_identities("2s"));
    setup.start_unprivileged();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1
    });
    let tls = setup.path("tls");
    fs::set_permissions(&tls, fs::Permissions::from_mode(0o555)).unwrap();
    // Let an in-flight rotation finish, then take a snapshot.
    std::thread::sleep(Duration::from_millis(300));
    let before = bytes(&setup.path("tls/broker.p12"));
    setup.wait_for("a failed rotation", Duration::from_secs(20), |s| {
        s.identity_state("broker")["last_error"].as_str().is_some()
    });
    let error = setup.identity_state("broker")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(tls.to_str().unwrap()),
        "the error names the directory: {error}"
    );
    assert!(
        setup
            .log()
            .contains("rotation failed, previous keystores kept"),
        "{}",
        setup.log()
    );
    assert!(setup.running());
    assert_eq!(
        bytes(&setup.path("tls/broker.p12")),
        before,
        "the last good keystore stays in place"
    );
    java::load_keystore(&store(&setup, "broker.p12")).unwrap();

    // Once the directory is writable again the daemon recovers by itself.
    fs::set_permissions(&tls, fs::Permissions::from_mode(0o755)).unwrap();
    let r = setup.rotations("broker");
    setup.wait_for("recovery", Duration::from_secs(30), |s| {
        s.rotations("broker") > r && s.identity_state("broker")["last_error"].is_null()
    });
    java::load_keystore(&store(&setup, "broker.p12")).unwrap();
    assert_eq!(setup.stop(), 0);
}

#[test]
fn a_config_change_kafka_would_reject_is_refused_until_allowed() {
    let good = two_identities("10m");
    let mut setup = Setup::new(&good);
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1
    });
    let before = bytes(&setup.path("tls/broker.p12"));

    // Dropping a SAN: Kafka refuses a keystore whose SANs shrink.
    setup.write_config(&good.replacen(
        "sans = [\"localhost\", \"127.0.0.1\"]",
        "sans = [\"localhost\"]",
        1,
    ));
    setup.signal(Signal::SIGHUP);
    setup.wait_for("refusal", Duration::from_secs(15), |s| {
        s.identity_state("broker")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("would be removed"))
    });
    assert_eq!(
        bytes(&setup.path("tls/broker.p12")),
        before,
        "the old keystore stays"
    );
    assert_eq!(setup.rotations("broker"), 1);

    // Changing the subject is refused the same way.
    setup.write_config(&good.replacen("CN=localhost,OU=kafka", "CN=renamed,OU=kafka", 1));
    setup.signal(Signal::SIGHUP);
    setup.wait_for("refusal", Duration::from_secs(15), |s| {
        s.identity_state("broker")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("subject would change"))
    });
    assert_eq!(bytes(&setup.path("tls/broker.p12")), before);

    // Allowed explicitly (as with ssl.allow.dn.changes on the broker), it goes through.
    setup.write_config(&good.replacen(
        "subject = \"CN=localhost,OU=kafka,O=leafd test\"",
        "subject = \"CN=renamed,OU=kafka,O=leafd test\"\nallow-dn-change = true",
        1,
    ));
    setup.signal(Signal::SIGHUP);
    setup.wait_for("rotation", Duration::from_secs(15), |s| {
        s.rotations("broker") >= 2
    });
    let line = java::load_keystore(&store(&setup, "broker.p12")).unwrap();
    assert!(
        line.contains("subject=CN=renamed,OU=kafka,O=leafd test"),
        "{line}"
    );
    assert_eq!(setup.stop(), 0);
}

#[test]
fn speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let mut setup = Setup::new(&two_identities("10m"));
    let sock_path = setup.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    setup.start_with_env(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut seen = String::new();
    let recv_until = |what: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while !seen.contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what} from leafd; got:\n{seen}"
            );
            if let Ok(n) = sock.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    };
    recv_until("READY=1", &mut seen);
    assert!(
        setup.rotations("broker") >= 1 && setup.path("tls/broker.p12").exists(),
        "READY=1 only after the first keystores are written"
    );
    recv_until("STATUS=2 identities ok", &mut seen);
    recv_until("WATCHDOG=1", &mut seen);
    setup.signal(Signal::SIGHUP);
    recv_until("RELOADING=1", &mut seen);
    setup.signal(Signal::SIGTERM);
    recv_until("STOPPING=1", &mut seen);
    assert!(!seen.contains(PASSWORD));
    assert_eq!(setup.stop_wait(), 0);
}

/// The daemon with its host key in a SoftHSM2 token: keystores load and handshake in Java,
/// and the status snapshot shows the non-exportable attributes read back from the token.
#[cfg(feature = "pkcs11")]
#[test]
fn daemon_with_a_pkcs11_host_key() {
    let hsm = common::softhsm::SoftHsm::new();
    let mut setup = Setup::new(&two_identities("10m"));
    fs::write(setup.path("hsm.pin"), format!("{}\n", hsm.pin())).unwrap();
    let config = fs::read_to_string(setup.config_path()).unwrap();
    let key = format!(
        "[key]\nbackend = \"pkcs11\"\n\n[key.pkcs11]\nmodule = \"{}\"\ntoken-label = \"{}\"\npin-file = \"hsm.pin\"\n\n",
        hsm.module().display(),
        hsm.label()
    );
    fs::write(setup.config_path(), format!("{key}{config}")).unwrap();
    let conf = hsm.conf();
    setup.start_with_env(&[("SOFTHSM2_CONF", conf.to_str().unwrap())]);
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1 && s.rotations("client") >= 1
    });
    let line = java::handshake(
        &store(&setup, "broker.p12"),
        &store(&setup, "broker-trust.p12"),
        &store(&setup, "client.jks"),
        &store(&setup, "client-trust.pem"),
        "127.0.0.1",
    )
    .unwrap();
    assert!(line.contains("server-saw=CN=app-orders"), "{line}");
    // The status snapshot the daemon writes (leafctl status asks the daemon over D-Bus).
    let out = fs::read_to_string(setup.path("state/status.json")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["host_key"]["backend"], "pkcs11");
    assert_eq!(status["host_key"]["non_exportable"], true);
    let facts = status["host_key"]["facts"].to_string();
    assert!(
        facts.contains("extractable") && facts.contains(hsm.label()),
        "{facts}"
    );
    assert!(
        !out.contains(hsm.pin()),
        "the PIN leaked into the status snapshot"
    );
    assert_eq!(setup.stop(), 0);

    // A wrong PIN: exit 78 at once (no restart into a token lock-out), PIN not printed.
    fs::write(setup.path("hsm.pin"), "999999\n").unwrap();
    setup.start_with_env(&[("SOFTHSM2_CONF", conf.to_str().unwrap())]);
    assert_eq!(setup.stop_wait(), 78, "{}", setup.log());
    assert!(
        setup.log().contains("authentication failed"),
        "{}",
        setup.log()
    );
    assert!(!setup.log().contains("999999"));
}

/// The daemon with its host key in a TPM (swtpm): keystores load and handshake in Java, and
/// the status snapshot shows the attributes read back from the TPM.
#[cfg(feature = "tpm")]
#[test]
fn daemon_with_a_tpm_host_key() {
    let tpm = common::swtpm::SwtpmSession::new();
    let mut setup = Setup::new(&two_identities("10m"));
    let config = fs::read_to_string(setup.config_path()).unwrap();
    let key = format!(
        "[key]\nbackend = \"tpm\"\n\n[key.tpm]\ntcti = \"{}\"\n\n",
        tpm.tcti()
    );
    fs::write(setup.config_path(), format!("{key}{config}")).unwrap();
    setup.start();
    setup.wait_for("first rotation", Duration::from_secs(30), |s| {
        s.rotations("broker") >= 1 && s.rotations("client") >= 1
    });
    let line = java::handshake(
        &store(&setup, "broker.p12"),
        &store(&setup, "broker-trust.p12"),
        &store(&setup, "client.p12"),
        &store(&setup, "client-trust.p12"),
        "localhost",
    )
    .unwrap();
    assert!(line.contains("client-saw=CN=localhost"), "{line}");
    // The status snapshot the daemon writes (leafctl status asks the daemon over D-Bus).
    let out = fs::read_to_string(setup.path("state/status.json")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["host_key"]["backend"], "tpm");
    assert_eq!(status["host_key"]["non_exportable"], true);
    assert!(
        status["host_key"]["facts"]
            .to_string()
            .contains("manufacturer"),
        "{out}"
    );
    // The host key survives a daemon restart: same host certificate, leaves kept.
    let host_serial = setup.state().unwrap()["host"]["serial"].clone();
    assert_eq!(setup.stop(), 0);
    setup.start();
    setup.wait_for("ready", Duration::from_secs(30), |s| {
        s.log().contains("ready")
    });
    assert_eq!(setup.state().unwrap()["host"]["serial"], host_serial);
    assert_eq!(setup.rotations("broker"), 1);
    assert_eq!(setup.stop(), 0);
}

#[test]
fn without_identities_it_idles() {
    let mut setup = Setup::new(&header(true));
    setup.start();
    setup.wait_for("ready", Duration::from_secs(30), |s| {
        s.log().contains("ready")
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = setup.log();
    assert!(log.contains("no [[identity]] is configured"), "{log}");
    assert!(
        log.contains("next renewal") && !log.contains("host issuing certificate not renewed"),
        "{log}"
    );
    assert_eq!(setup.stop(), 0);
}
