//! Config loading: the shipped files under etc/, bad inputs with their exact positions,
//! drop-ins, relative paths and warnings.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not the helpers here.
#![allow(clippy::unwrap_used)]

use std::error::Error as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leafd::config::{
    self, BackendKind, DnAttribute, Eku, Error, IssuerSettings, LoadEnv, MetricsSettings, San,
    Settings, StoreFormat,
};
use leafd::keys::KeyAlgorithm;

const SECRETS: [&str; 2] = ["fixture-secret-do-not-print", "fixture-secret-credential"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/config")
}

fn env() -> LoadEnv {
    LoadEnv {
        credentials_directory: Some(fixtures().join("credentials")),
        hostname: "kafka-1".into(),
    }
}

/// The error's display and every source in its chain.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

fn load_err(path: &Path, env: &LoadEnv) -> Error {
    match config::load(path, env) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e,
    }
}

/// Asserts `err` displays as `PATH:LINE:COLUMN: ...message...`.
fn assert_at(err: &Error, path: &Path, line: usize, column: usize, message: &str) {
    let shown = err.to_string();
    let prefix = format!("{}:{line}:{column}: ", path.display());
    assert!(
        shown.starts_with(&prefix) && shown.contains(message),
        "expected {prefix}...{message}...\n     got {shown}"
    );
    assert_eq!(err.position(), Some((line, column)));
    assert_eq!(err.path(), path);
    assert_eq!(err.exit_code(), 78);
}

// ---------------------------------------------------------------------------------------
// Shipped files.

/// A credentials directory holding `broker-pass`, as the unit's LoadCredential= would.
fn credentials() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("broker-pass"), "reference-password\n");
    dir
}

#[test]
fn every_file_under_etc_parses() {
    let creds = credentials();
    let env = LoadEnv {
        credentials_directory: Some(creds.path().to_owned()),
        hostname: "kafka-1".into(),
    };
    let mut loaded = 0;
    for entry in fs::read_dir(repo().join("etc/leafd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = config::load(&path, &env) {
                panic!("{} does not load: {}", path.display(), chain(&e));
            }
            loaded += 1;
        }
    }
    // Loading leafd.toml also reads leafd.d/, which holds a README that is no drop-in.
    assert_eq!(loaded, 2, "leafd.toml and quickstart.toml");
}

/// The shipped leafd.toml with the example identity installed as the drop-in
/// `leafd.d/50-broker.toml`, as the example's header tells operators to do.
fn reference_with_example_identity(dir: &Path) -> (PathBuf, PathBuf) {
    let main = dir.join("leafd.toml");
    let drop_in = dir.join("leafd.d/50-broker.toml");
    let read = |p: &str| fs::read_to_string(repo().join(p)).unwrap();
    write(&main, &read("etc/leafd/leafd.toml"));
    write(&drop_in, &read("etc/leafd/examples/broker.toml"));
    (main, drop_in)
}

#[test]
fn shipped_config_starts_without_identities_or_credentials() {
    let path = repo().join("etc/leafd/leafd.toml");
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "kafka-1".into(),
    };
    let s = config::load(&path, &env).unwrap();
    assert_eq!(s.key.backend, BackendKind::Soft);
    assert!(s.identities.is_empty());
}

#[test]
fn reference_config_has_the_documented_defaults() {
    let creds = credentials();
    let env = LoadEnv {
        credentials_directory: Some(creds.path().to_owned()),
        hostname: "kafka-1".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (path, drop_in) = reference_with_example_identity(dir.path());
    let (s, warnings) = config::load_with_warnings(&path, &env).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.sources, [path, drop_in]);
    assert_eq!(s.daemon.state_directory, Path::new("/var/lib/leafd"));
    assert_eq!(s.daemon.log_level, "info");
    assert!(!s.daemon.testing_short_lifetimes);
    assert_eq!(s.host.hostname, "kafka-1");
    assert_eq!(s.host.fqdn, "kafka-1");
    assert_eq!(s.host.broker_id, None);
    assert!(s.host.facts.is_empty());
    assert_eq!(s.key.backend, BackendKind::Soft);
    assert_eq!(s.key.algorithm, KeyAlgorithm::EcdsaP256);
    let IssuerSettings::Local(ca) = &s.issuer;
    assert_eq!(ca.host_cert_validity, Duration::from_secs(7 * 86400));
    assert_eq!(ca.root_validity, Duration::from_secs(3650 * 86400));
    assert_eq!(ca.root_common_name, "leafd local CA kafka-1");
    // No metrics unless asked for.
    assert_eq!(s.metrics, MetricsSettings::default());

    assert_eq!(s.identities.len(), 1);
    let b = &s.identities[0];
    assert_eq!(b.name, "broker");
    assert_eq!(
        b.subject,
        [
            (DnAttribute::Organization, "Example".to_owned()),
            (DnAttribute::OrganizationalUnit, "kafka".to_owned()),
            (DnAttribute::CommonName, "kafka-1".to_owned()),
        ]
    );
    // {fqdn} and {hostname} are both kafka-1: deduplicated.
    assert_eq!(b.sans, [San::Dns("kafka-1".into())]);
    assert_eq!(b.key_type, KeyAlgorithm::EcdsaP256);
    assert_eq!(b.ekus, [Eku::ServerAuth, Eku::ClientAuth]);
    assert_eq!(b.lifetime, Duration::from_secs(3600));
    assert_eq!(b.renewal.at, 2.0 / 3.0);
    assert_eq!(b.renewal.jitter, 0.05);
    assert_eq!(b.renewal.min_delay, Duration::from_secs(30));
    assert!(!b.allow_dn_change && !b.allow_san_change);
    let ks = &b.keystores[0];
    assert_eq!(ks.format, StoreFormat::Pkcs12);
    assert_eq!(ks.path, Path::new("/var/lib/kafka/tls/broker.p12"));
    assert_eq!(ks.password.as_ref().unwrap().expose(), "reference-password");
    assert_eq!(ks.alias, "broker");
    assert_eq!((ks.owner, ks.group, ks.mode), (None, None, 0o600));
    let ts = &b.truststores[0];
    assert_eq!(ts.alias, "leafd-ca");
    assert_eq!(ts.path, Path::new("/var/lib/kafka/tls/truststore.p12"));
}

#[test]
fn reference_config_needs_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = reference_with_example_identity(dir.path());
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "kafka-1".into(),
    };
    let err = load_err(&path, &env);
    assert!(
        err.to_string()
            .contains("password-credential \"broker-pass\" needs $CREDENTIALS_DIRECTORY"),
        "{err}"
    );
}

#[test]
fn quickstart_resolves_paths_against_its_directory() {
    let path = repo().join("etc/leafd/quickstart.toml");
    let s = config::load(&path, &env()).unwrap();
    let etc = repo().join("etc/leafd");
    assert_eq!(
        s.daemon.state_directory,
        etc.join("../../target/quickstart/state")
    );
    assert!(s.daemon.state_directory.is_absolute());
    let names: Vec<_> = s.identities.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["broker", "client"]);

    let broker = &s.identities[0];
    assert_eq!(
        broker.subject,
        [
            (DnAttribute::Organization, "leafd quickstart".to_owned()),
            (DnAttribute::OrganizationalUnit, "kafka".to_owned()),
            (DnAttribute::CommonName, "localhost".to_owned()),
        ]
    );
    assert_eq!(
        broker.sans,
        [
            San::Dns("localhost".into()),
            San::Ip("127.0.0.1".parse().unwrap())
        ]
    );
    assert_eq!(broker.lifetime, Duration::from_secs(600));
    let tls = etc.join("../../target/quickstart/tls");
    assert_eq!(broker.keystores[0].path, tls.join("broker.p12"));
    assert_eq!(broker.keystores[0].format, StoreFormat::Pkcs12);
    assert_eq!(broker.truststores[0].format, StoreFormat::Pkcs12);
    assert_eq!(
        broker.keystores[0].password.as_ref().unwrap().expose(),
        "changeit"
    );

    let client = &s.identities[1];
    assert!(client.sans.is_empty());
    assert_eq!(client.ekus, [Eku::ClientAuth]);
    let formats: Vec<_> = client
        .keystores
        .iter()
        .chain(&client.truststores)
        .map(|o| o.format)
        .collect();
    assert_eq!(
        formats,
        [
            StoreFormat::Jks,
            StoreFormat::Pem,
            StoreFormat::Jks,
            StoreFormat::Pem
        ]
    );
    assert!(client.keystores[1].password.is_none());
    assert_eq!(client.keystores[0].alias, "client");
}

// ---------------------------------------------------------------------------------------
// Bad inputs: each fixture in tests/fixtures/config/bad starts with
// `# error: LINE:COLUMN: message`, the position and (part of) the message it must fail
// with.

/// Every `tests/fixtures/config/bad/*.toml`, sorted.
fn bad_fixtures() -> Vec<PathBuf> {
    let dir = fixtures().join("bad");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn bad_fixtures_fail_with_position_and_message() {
    let paths = bad_fixtures();
    assert!(paths.len() >= 40, "fixtures missing");
    let mut failures = Vec::new();
    for path in &paths {
        let text = fs::read_to_string(path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{} has no `# error:` header", path.display()));
        let (pos, message) = expect.split_once(": ").unwrap();
        let prefix = format!("{}:{pos}: ", path.display());
        let err = match config::load(path, &env()) {
            Ok(_) => {
                failures.push(format!("{}: loaded", path.display()));
                continue;
            }
            Err(e) => e,
        };
        let shown = err.to_string();
        if !(shown.starts_with(&prefix) && shown.contains(message)) {
            failures.push(format!(
                "expected {prefix}...{message}...\n     got {shown}"
            ));
        }
        assert_eq!(err.exit_code(), 78);
        let all = format!("{} {err:?}", chain(&err));
        for secret in SECRETS {
            assert!(
                !all.contains(secret),
                "{}: leaks a password",
                path.display()
            );
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn parse_and_validation_errors_have_their_variants() {
    let bad = fixtures().join("bad");
    assert!(matches!(
        load_err(&bad.join("unknown-key.toml"), &env()),
        Error::Parse { .. }
    ));
    assert!(matches!(
        load_err(&bad.join("backend-unknown.toml"), &env()),
        Error::Invalid { .. }
    ));
    let err = load_err(&bad.join("password-missing.toml"), &env());
    let Error::PasswordFile { file, source, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(file, &bad.join("../no-such.pass"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such.pass"), "{err}");
}

#[test]
fn credential_without_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &path,
        r#"[[identity]]
name = "broker"
sans = ["kafka-1.example.net"]
[[identity.keystore]]
format = "pkcs12"
path = "broker.p12"
password-credential = "broker-pass"
"#,
    );
    let env = LoadEnv {
        credentials_directory: None,
        hostname: "kafka-1".into(),
    };
    let err = load_err(&path, &env);
    assert_at(
        &err,
        &path,
        7,
        23,
        "password-credential \"broker-pass\" needs $CREDENTIALS_DIRECTORY, which is not set",
    );
}

#[test]
fn credentials_are_read_with_newlines_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &path,
        r#"[[identity]]
name = "broker"
sans = ["kafka-1.example.net"]
[[identity.keystore]]
format = "jks"
path = "broker.jks"
password-credential = "broker-pass"
"#,
    );
    let s = config::load(&path, &env()).unwrap();
    let password = s.identities[0].keystores[0].password.as_ref().unwrap();
    assert_eq!(password.expose(), "fixture-secret-credential");
    assert!(!format!("{s:?}").contains("fixture-secret"));
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    let err = load_err(&path, &env());
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: could not read config file", path.display())
    );
    assert_eq!(err.exit_code(), 78);
}

#[test]
fn empty_kernel_hostname_needs_host_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, "");
    let env = LoadEnv {
        credentials_directory: None,
        hostname: String::new(),
    };
    let err = load_err(&path, &env);
    assert!(matches!(err, Error::NoHostname { .. }), "{err:?}");
    write(&path, "[host]\nhostname = \"kafka-9\"\n");
    let s = config::load(&path, &env).unwrap();
    assert_eq!(s.host.fqdn, "kafka-9");
}

// ---------------------------------------------------------------------------------------
// Templates and names.

#[test]
fn templates_expand_host_facts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &path,
        r#"[host]
fqdn = "Kafka-1.Example.NET"
broker-id = 7
cluster = "prod"
region = "eu-west"
zone = "eu-west-1a"
[host.facts]
rack = "r12"
port = 9093

[[identity]]
name = "broker"
subject = 'CN={hostname},OU={cluster}\, {region},O=Example\, Inc.,C=DE'
sans = ["{fqdn}", "b{broker_id}.{cluster}.{zone}.example.net", "dns:{rack}.example.net",
        "ip:10.0.0.7", "::1", "kafka-1.example.net", "*.{cluster}.example.net", "x{{y}}z.example.net"]
"#,
    );
    let err = load_err(&path, &env());
    // `{{`/`}}` produce literal braces, which are not valid in a DNS name.
    assert_at(
        &err,
        &path,
        15,
        82,
        "invalid SAN: DNS name \"x{y}z.example.net\" contains '{'; labels use a-z, 0-9 and \
         '-' (expanded from \"x{{y}}z.example.net\")",
    );

    let text = fs::read_to_string(&path).unwrap();
    write(&path, &text.replace(", \"x{{y}}z.example.net\"", ""));
    let s = config::load(&path, &env()).unwrap();
    let b = &s.identities[0];
    assert_eq!(
        b.subject,
        [
            (DnAttribute::Country, "DE".to_owned()),
            (DnAttribute::Organization, "Example, Inc.".to_owned()),
            (DnAttribute::OrganizationalUnit, "prod, eu-west".to_owned()),
            (DnAttribute::CommonName, "kafka-1".to_owned()),
        ]
    );
    assert_eq!(
        b.sans,
        [
            San::Dns("kafka-1.example.net".into()),
            San::Dns("b7.prod.eu-west-1a.example.net".into()),
            San::Dns("r12.example.net".into()),
            San::Ip("10.0.0.7".parse().unwrap()),
            San::Ip("::1".parse().unwrap()),
            San::Dns("*.prod.example.net".into()),
        ]
    );
    assert_eq!(s.host.facts["port"], "9093");
    assert_eq!(s.host.broker_id.as_deref(), Some("7"));
}

#[test]
fn a_fact_with_a_comma_cannot_change_the_dn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &path,
        r#"[host.facts]
team = "a,O=evil"
[[identity]]
name = "client"
subject = "CN={team}"
"#,
    );
    let s = config::load(&path, &env()).unwrap();
    assert_eq!(
        s.identities[0].subject,
        [(DnAttribute::CommonName, "a,O=evil".to_owned())]
    );
}

// ---------------------------------------------------------------------------------------
// Drop-ins.

const MAIN: &str = r#"[daemon]
state-directory = "state"
log-level = "info"

[host]
cluster = "prod"
[host.facts]
rack = "r1"
row = "a"

[issuer]
host-cert-validity = "2d"

[[identity]]
name = "broker"
sans = ["b.{cluster}.example.net"]
lifetime = "2h"

[[identity]]
name = "client"
subject = "CN=client"
"#;

#[test]
fn dropins_override_field_by_field_and_replace_identities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, MAIN);
    let d = dir.path().join("leafd.d");
    write(
        &d.join("20-late.toml"),
        r#"[daemon]
log-level = "debug"
[host.facts]
rack = "r2"
"#,
    );
    write(
        &d.join("10-early.toml"),
        r#"[daemon]
log-level = "warn"
state-directory = "dropin-state"
[host]
region = "eu"

[[identity]]
name = "broker"
subject = "CN=replaced"

[[identity]]
name = "extra"
sans = ["extra.{region}.example.net"]
[[identity.keystore]]
format = "pem"
path = "tls/extra.pem"
"#,
    );
    // Not drop-ins: wrong extension, dotfile, editor leftovers.
    write(&d.join("README"), "not toml at all [");
    write(&d.join(".hidden.toml"), "not toml at all [");
    write(&d.join("30-x.toml~"), "not toml at all [");

    let s = config::load(&path, &env()).unwrap();
    assert_eq!(
        s.sources,
        [
            path.clone(),
            d.join("10-early.toml"),
            d.join("20-late.toml")
        ]
    );
    // Later file wins per field; untouched fields stay.
    assert_eq!(s.daemon.log_level, "debug");
    // Relative paths resolve against the directory of the file they are written in.
    assert_eq!(s.daemon.state_directory, d.join("dropin-state"));
    assert_eq!(s.host.cluster.as_deref(), Some("prod"));
    assert_eq!(s.host.region.as_deref(), Some("eu"));
    assert_eq!(s.host.facts["rack"], "r2");
    assert_eq!(s.host.facts["row"], "a");
    let IssuerSettings::Local(ca) = &s.issuer;
    assert_eq!(ca.host_cert_validity, Duration::from_secs(2 * 86400));

    // `broker` replaced whole and in place (its sans and lifetime are gone), `extra`
    // appended.
    let names: Vec<_> = s.identities.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["broker", "client", "extra"]);
    let broker = &s.identities[0];
    assert!(broker.sans.is_empty());
    assert_eq!(
        broker.subject,
        [(DnAttribute::CommonName, "replaced".to_owned())]
    );
    assert_eq!(broker.lifetime, Duration::from_secs(3600));
    assert_eq!(
        s.identities[2].sans,
        [San::Dns("extra.eu.example.net".into())]
    );
    assert_eq!(s.identities[2].keystores[0].path, d.join("tls/extra.pem"));
}

#[test]
fn metrics_textfile_and_loopback_listen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &path,
        "[metrics]\ntextfile = \"node-exporter/leafd.prom\"\nlisten = \"127.0.0.1:9477\"\n",
    );
    let (s, warnings) = config::load_with_warnings(&path, &env()).unwrap();
    assert_eq!(
        s.metrics,
        MetricsSettings {
            // Relative to the file's directory, like every path.
            textfile: Some(dir.path().join("node-exporter/leafd.prom")),
            listen: Some("127.0.0.1:9477".parse().unwrap()),
        }
    );
    assert!(
        warnings.iter().all(|w| !w.contains("textfile")),
        "{warnings:?}"
    );

    // Every loopback address is accepted, IPv6 too; a drop-in overrides key by key.
    let d = dir.path().join("leafd.d");
    write(
        &d.join("10-metrics.toml"),
        "[metrics]\nlisten = \"[::1]:19477\"\n",
    );
    let s = config::load(&path, &env()).unwrap();
    assert_eq!(s.metrics.listen, Some("[::1]:19477".parse().unwrap()));
    assert_eq!(
        s.metrics.textfile,
        Some(dir.path().join("node-exporter/leafd.prom"))
    );
    write(
        &d.join("10-metrics.toml"),
        "[metrics]\nlisten = \"127.0.0.53:9477\"\n",
    );
    let s = config::load(&path, &env()).unwrap();
    assert_eq!(s.metrics.listen, Some("127.0.0.53:9477".parse().unwrap()));

    // A textfile node-exporter would not read is allowed, with a warning at its position.
    write(&path, "[metrics]\ntextfile = \"/run/leafd/metrics.txt\"\n");
    fs::remove_file(d.join("10-metrics.toml")).unwrap();
    let (s, warnings) = config::load_with_warnings(&path, &env()).unwrap();
    assert_eq!(
        s.metrics.textfile.as_deref(),
        Some(Path::new("/run/leafd/metrics.txt"))
    );
    assert_eq!(s.metrics.listen, None);
    let prefix = format!("{}:2:12: ", path.display());
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&prefix) && w.contains("does not end in .prom")),
        "{warnings:?}"
    );

    // A bad listen address in a drop-in is reported there.
    write(
        &d.join("20-bad.toml"),
        "\n[metrics]\nlisten = \"10.0.0.5:9477\"\n",
    );
    let err = load_err(&path, &env());
    assert_at(
        &err,
        &d.join("20-bad.toml"),
        3,
        10,
        "listen address 10.0.0.5:9477 is not a loopback address",
    );
}

#[test]
fn errors_point_at_the_file_the_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, MAIN);
    let d = dir.path().join("leafd.d");

    // A bad value in a drop-in.
    let dropin = d.join("50-bad.toml");
    write(&dropin, "[key]\n\nalgorithm = \"p521\"\n");
    let err = load_err(&path, &env());
    assert_at(&err, &dropin, 3, 13, "unknown host key algorithm \"p521\"");

    // An unknown key in a drop-in.
    write(
        &dropin,
        "[issuer]\nroot-validity = \"20y\"\nroot-valdity = \"1y\"\n",
    );
    let err = load_err(&path, &env());
    assert_at(&err, &dropin, 3, 1, "unknown field `root-valdity`");

    // A drop-in shrinks host-cert-validity below a lifetime set in the main file: the
    // error points at the lifetime in the main file.
    write(&dropin, "[issuer]\nhost-cert-validity = \"1h\"\n");
    let err = load_err(&path, &env());
    assert_at(
        &err,
        &path,
        17,
        12,
        "lifetime 2h of identity \"broker\" must be shorter than the issuer's \
         host-cert-validity 1h",
    );

    // A drop-in removes nothing: an identity in the main file uses a variable no file
    // sets; the error is in the main file.
    write(
        &dropin,
        "[[identity]]\nname = \"broker\"\nsans = [\"{zone}.example.net\"]\n",
    );
    let err = load_err(&path, &env());
    assert_at(
        &err,
        &dropin,
        3,
        10,
        "template variable {zone} is not set; set zone in [host]",
    );

    // Duplicate names within one drop-in are errors; across files they replace.
    write(
        &dropin,
        "[[identity]]\nname = \"client\"\nsubject = \"CN=a\"\n[[identity]]\nname = \"client\"\nsubject = \"CN=b\"\n",
    );
    let err = load_err(&path, &env());
    assert_at(
        &err,
        &dropin,
        5,
        8,
        &format!(
            "duplicate identity name \"client\" (first defined at {}:2:8)",
            dropin.display()
        ),
    );

    // Two outputs with the same path in different files.
    write(
        &path,
        &format!("{MAIN}[[identity.keystore]]\nformat = \"pem\"\npath = \"leafd.d/x.pem\"\n"),
    );
    write(
        &dropin,
        "[[identity]]\nname = \"other\"\nsubject = \"CN=o\"\n[[identity.truststore]]\nformat = \"pem\"\npath = \"x.pem\"\n",
    );
    let err = load_err(&path, &env());
    assert_at(
        &err,
        &dropin,
        6,
        8,
        &format!(
            "is already written by identity \"client\" keystore (at {}:24:8)",
            path.display()
        ),
    );
}

#[test]
fn unreadable_dropin_directory_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, "");
    // A file where the directory should be.
    write(&dir.path().join("leafd.d"), "");
    let err = load_err(&path, &env());
    assert!(matches!(err, Error::ReadDir { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 78);
}

#[test]
fn relative_config_path_resolves_to_absolute_outputs() {
    // Tests run in the package root, so this path is relative to it.
    let rel = Path::new("tests/fixtures/config/relative.toml");
    let s = config::load(rel, &env()).unwrap();
    // Sources and errors show the path as given; values come out absolute.
    assert_eq!(s.sources, [rel]);
    let o = &s.identities[0].keystores[0];
    assert!(o.path.is_absolute());
    // `.` components are dropped; `..` is kept for the kernel to resolve (symlinks).
    assert_eq!(o.path, fixtures().join("out/../out/broker.p12"));
    assert_eq!(o.password.as_ref().unwrap().expose(), SECRETS[0]);
    assert_eq!(o.alias, "kafka-broker");
    assert_eq!((o.owner, o.group, o.mode), (Some(0), Some(0), 0o640));
    let t = &s.identities[0].truststores[0];
    assert_eq!(t.path, Path::new("/tmp/leafd-test/abs/ca.pem"));
    assert_eq!(s.daemon.state_directory, fixtures().join("state"));

    let bad = Path::new("tests/fixtures/config/bad/mode-syntax.toml");
    let err = load_err(bad, &env());
    assert!(
        err.to_string()
            .starts_with("tests/fixtures/config/bad/mode-syntax.toml:9:8: ")
    );
}

#[test]
fn short_lifetimes_for_tests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    let identity = "[[identity]]\nname = \"x\"\nsans = [\"x.example.net\"]\nlifetime = \"2s\"\n";
    write(&path, identity);
    let err = load_err(&path, &env());
    assert_at(&err, &path, 4, 12, "lifetime 2s is below the minimum of 5m");
    write(
        &path,
        &format!("[daemon]\ntesting-short-lifetimes = true\n{identity}"),
    );
    let s: Settings = config::load(&path, &env()).unwrap();
    assert_eq!(s.identities[0].lifetime, Duration::from_secs(2));
    assert_eq!(s.identities[0].renewal.min_delay, Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// Warnings.

#[test]
fn warnings_for_writable_files_and_no_identities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, "");
    let (s, warnings) = config::load_with_warnings(&path, &env()).unwrap();
    assert!(s.identities.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no [[identity]] is configured"));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
    let w = config::file_warnings(&path);
    assert_eq!(
        w,
        [format!(
            "{} is writable by group (mode 0664); make it writable by its owner only",
            path.display()
        )]
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(config::file_warnings(&path)[0].contains("writable by group and others"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o602)).unwrap();
    assert!(config::file_warnings(&path)[0].contains("writable by others (mode 0602)"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(config::file_warnings(&path).is_empty());

    // Password files are checked too, and a world-readable PEM keystore is flagged.
    let pass = dir.path().join("p.pass");
    write(&pass, "pw\n");
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o660)).unwrap();
    write(
        &path,
        r#"[[identity]]
name = "x"
sans = ["x.example.net"]
[[identity.keystore]]
format = "pkcs12"
path = "x.p12"
password-file = "p.pass"
[[identity.keystore]]
format = "pem"
path = "x.pem"
mode = "0644"
"#,
    );
    let (_, warnings) = config::load_with_warnings(&path, &env()).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("p.pass is writable by group"));
    assert!(warnings[1].contains("holds an unencrypted private key"));
}

// ---------------------------------------------------------------------------------------
// Hardware key backends.

#[test]
fn tpm_backend_settings() {
    use leafd::config::TpmSettings;
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("leafd.toml");
    write(
        &main,
        "[key]\nbackend = \"tpm\"\n\n[key.tpm]\nparent = \"0x81000001\"\n",
    );
    if cfg!(feature = "tpm") {
        let s = config::load(&main, &env()).unwrap();
        let expected = TpmSettings {
            tcti: "device:/dev/tpmrm0".into(),
            parent: Some(0x8100_0001),
        };
        assert_eq!(s.key.backend, BackendKind::Tpm(expected));
        write(
            &main,
            "[key]\nbackend = \"tpm\"\n\n[key.tpm]\nparent = \"0x01000001\"\n",
        );
        assert_at(
            &load_err(&main, &env()),
            &main,
            5,
            10,
            "parent must be a persistent handle",
        );
    } else {
        assert_at(
            &load_err(&main, &env()),
            &main,
            2,
            11,
            "built without TPM support",
        );
    }
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_backend_settings_with_drop_in_overrides() {
    use leafd::config::Pkcs11Token;
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("leafd.toml");
    // A drop-in picks the token by serial (replacing the label) and the PIN from a credential
    // (replacing the file).
    write(&dir.path().join("hsm.pin"), "1234\n");
    write(
        &main,
        "[key]\nbackend = \"pkcs11\"\n\n[key.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
         token-label = \"old\"\npin-file = \"hsm.pin\"\n",
    );
    let s = config::load(&main, &env()).unwrap();
    let BackendKind::Pkcs11(p) = &s.key.backend else {
        panic!("{:?}", s.key.backend)
    };
    assert_eq!(p.token, Pkcs11Token::Label("old".into()));
    assert_eq!(p.pin.expose(), "1234");
    write(
        &dir.path().join("leafd.d/10-hsm.toml"),
        "[key.pkcs11]\ntoken-serial = \"0123\"\npin-credential = \"broker-pass\"\n",
    );
    let s = config::load(&main, &env()).unwrap();
    let BackendKind::Pkcs11(p) = &s.key.backend else {
        panic!("{:?}", s.key.backend)
    };
    assert_eq!(p.token, Pkcs11Token::Serial("0123".into()));
    assert_eq!(p.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
    assert_ne!(p.pin.expose(), "1234");
    assert!(
        !format!("{s:?}").contains(p.pin.expose()),
        "the PIN leaks through Debug"
    );
}

#[test]
fn reload_actions_and_verify() {
    use leafd::config::{
        KafkaReloadMode, KafkaSecurity, ReloadAction, SaslMechanism, SignalTarget,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(
        &dir.path().join("scram.pass"),
        "fixture-secret-do-not-print\n",
    );
    write(
        &path,
        r#"[host]
broker-id = 7
[[identity]]
name = "admin"
sans = ["kafka-1.example.net"]
[[identity.keystore]]
format = "pem"
path = "admin.pem"
[[identity]]
name = "broker"
sans = ["kafka-1.example.net"]
reload-retry-for = "2m"
[[identity.keystore]]
format = "pem"
path = "broker.pem"
[[identity.reload]]
type = "kafka"
bootstrap = "127.0.0.1:9093"
listener = "INTERNAL"
security = "sasl-ssl"
server-name = "{fqdn}"
client-identity = "admin"
sasl-mechanism = "scram-sha-512"
sasl-username = "leafd-{hostname}"
sasl-password-file = "scram.pass"
[[identity.reload]]
type = "kafka"
bootstrap = "[::1]:9094"
broker-id = "{broker_id}"
listener = "EXTERNAL"
mode = "same-path"
[[identity.reload]]
type = "systemd"
unit = "kafka.service"
action = "restart"
[[identity.reload]]
type = "signal"
pid-file = "kafka.pid"
signal = "USR1"
[[identity.reload]]
type = "exec"
command = ["/usr/local/bin/notify", "--quiet"]
timeout = "5s"
[identity.verify]
addresses = ["127.0.0.1:9093", "127.0.0.1:9094", "127.0.0.1:9093"]
timeout = "30s"
"#,
    );
    let s = config::load(&path, &env()).unwrap();
    let broker = &s.identities[1];
    let r = &broker.reload;
    assert_eq!(r.retry_for, Duration::from_secs(120));
    assert_eq!(r.actions.len(), 5);
    let ReloadAction::Kafka(k) = &r.actions[0] else {
        panic!("{:?}", r.actions[0])
    };
    assert_eq!(k.bootstrap.to_string(), "127.0.0.1:9093");
    assert_eq!(k.broker_id, 7);
    assert_eq!(k.listener, "INTERNAL");
    assert_eq!(k.mode, KafkaReloadMode::Alternate);
    let KafkaSecurity::SaslSsl(tls, sasl) = &k.security else {
        panic!("{:?}", k.security)
    };
    assert_eq!(tls.server_name, "kafka-1");
    assert_eq!(tls.client_identity.as_deref(), Some("admin"));
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.username, "leafd-kafka-1");
    assert_eq!(sasl.password.expose(), "fixture-secret-do-not-print");
    assert!(!format!("{s:?}").contains("fixture-secret-do-not-print"));
    let ReloadAction::Kafka(k2) = &r.actions[1] else {
        panic!()
    };
    assert_eq!(k2.mode, KafkaReloadMode::SamePath);
    assert!(matches!(k2.security, KafkaSecurity::Plaintext));
    assert_eq!(k2.broker_id, 7);
    assert!(
        matches!(&r.actions[2], ReloadAction::Systemd { unit, restart: true } if unit == "kafka.service")
    );
    assert!(
        matches!(&r.actions[3], ReloadAction::Signal { target: SignalTarget::PidFile(p), signal } if *p == dir.path().join("kafka.pid") && *signal == 10)
    );
    assert!(
        matches!(&r.actions[4], ReloadAction::Exec { argv, timeout } if argv.len() == 2 && *timeout == Duration::from_secs(5))
    );
    let v = r.verify.as_ref().unwrap();
    assert_eq!(v.addresses.len(), 2, "duplicates dropped");
    assert_eq!(v.timeout, Duration::from_secs(30));
    assert!(s.identities[0].reload.actions.is_empty());
}

// ---------------------------------------------------------------------------------------
// Loading without secrets (`leafctl kafka-config`).

/// An identity with a password file, a PEM keystore, a credential and a SASL password
/// file, none of which exists.
const SECRET_SOURCES: &str = r#"[[identity]]
name = "broker"
sans = ["kafka-1.example.net"]
[[identity.keystore]]
format = "pkcs12"
path = "broker.p12"
password-file = "secrets/broker.pass"
[[identity.keystore]]
format = "pem"
path = "broker.pem"
[[identity.truststore]]
format = "jks"
path = "trust.jks"
password-credential = "trust-pass"
[[identity.reload]]
type = "kafka"
bootstrap = "127.0.0.1:9093"
broker-id = 1
listener = "SSL"
security = "sasl-plaintext"
sasl-mechanism = "plain"
sasl-username = "leafd"
sasl-password-file = "sasl.pass"
"#;

#[test]
fn sources_only_load_locates_passwords_and_reads_none() {
    use leafd::config::{KafkaSecurity, PasswordSource, ReloadAction};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leafd.toml");
    write(&path, SECRET_SOURCES);
    let no_credentials = LoadEnv {
        credentials_directory: None,
        hostname: "kafka-1".into(),
    };
    let loaded = config::load_sources_only(&path, &no_credentials).unwrap();
    assert!(loaded.warnings().is_empty(), "{:?}", loaded.warnings());
    let broker = &loaded.settings().identities[0];
    let keystore = &broker.keystores[0];
    assert!(keystore.password.is_none());
    assert_eq!(
        keystore.password_source,
        Some(PasswordSource::File(dir.path().join("secrets/broker.pass")))
    );
    let pem = &broker.keystores[1];
    assert!(pem.password.is_none() && pem.password_source.is_none());
    let truststore = &broker.truststores[0];
    assert!(truststore.password.is_none());
    assert_eq!(
        truststore.password_source,
        Some(PasswordSource::Credential("trust-pass".into()))
    );
    let ReloadAction::Kafka(k) = &broker.reload.actions[0] else {
        panic!("{:?}", broker.reload.actions)
    };
    let KafkaSecurity::SaslPlaintext(sasl) = &k.security else {
        panic!("{:?}", k.security)
    };
    assert_eq!(sasl.password.expose(), "", "an empty placeholder");

    // The daemon's load of the same config still fails on the missing password file.
    let err = load_err(&path, &no_credentials);
    let Error::PasswordFile { file, source, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(file, &dir.path().join("secrets/broker.pass"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_at(&err, &path, 7, 17, "could not read password file");
    // ... and on the missing credentials directory once the file is there.
    write(&dir.path().join("secrets/broker.pass"), "store-secret");
    let err = load_err(&path, &no_credentials);
    assert_at(&err, &path, 14, 23, "needs $CREDENTIALS_DIRECTORY");

    // With every secret present the daemon's load has both the values and the sources.
    let creds = tempfile::tempdir().unwrap();
    write(&creds.path().join("trust-pass"), "trust-secret\n");
    write(&dir.path().join("sasl.pass"), "sasl-secret");
    let env = LoadEnv {
        credentials_directory: Some(creds.path().to_owned()),
        hostname: "kafka-1".into(),
    };
    let s = config::load(&path, &env).unwrap();
    let broker = &s.identities[0];
    let keystore = &broker.keystores[0];
    assert_eq!(keystore.password.as_ref().unwrap().expose(), "store-secret");
    assert_eq!(
        keystore.password_source,
        Some(PasswordSource::File(dir.path().join("secrets/broker.pass")))
    );
    let truststore = &broker.truststores[0];
    assert_eq!(
        truststore.password.as_ref().unwrap().expose(),
        "trust-secret"
    );
    assert_eq!(
        truststore.password_source,
        Some(PasswordSource::Credential("trust-pass".into()))
    );
    let ReloadAction::Kafka(k) = &broker.reload.actions[0] else {
        panic!()
    };
    let KafkaSecurity::SaslPlaintext(sasl) = &k.security else {
        panic!()
    };
    assert_eq!(sasl.password.expose(), "sasl-secret");
}

#[test]
fn sources_only_load_follows_the_last_definition() {
    use leafd::config::PasswordSource;
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("leafd.toml");
    write(
        &main,
        "[[identity]]\nname = \"broker\"\nsans = [\"b1\"]\n[[identity.keystore]]\n\
         format = \"pkcs12\"\npath = \"a.p12\"\npassword-file = \"a.pass\"\n",
    );
    write(
        &dir.path().join("leafd.d/10.toml"),
        "[[identity]]\nname = \"broker\"\nsans = [\"b1\"]\n[[identity.keystore]]\n\
         format = \"jks\"\npath = \"b.jks\"\npassword-file = \"./sub/b.pass\"\n\
         [[identity.truststore]]\nformat = \"jks\"\npath = \"t.jks\"\n\
         password-credential = \"t\"\n\
         [[identity.truststore]]\nformat = \"pem\"\npath = \"t.pem\"\n",
    );
    let loaded = config::load_sources_only(&main, &env()).unwrap();
    let s = loaded.settings();
    assert_eq!(s.identities.len(), 1);
    let broker = &s.identities[0];
    let sources = |outputs: &[config::Output]| -> Vec<Option<PasswordSource>> {
        outputs.iter().map(|o| o.password_source.clone()).collect()
    };
    assert_eq!(
        sources(&broker.keystores),
        [Some(PasswordSource::File(
            dir.path().join("leafd.d/sub/b.pass")
        ))]
    );
    assert_eq!(
        sources(&broker.truststores),
        [Some(PasswordSource::Credential("t".into())), None]
    );
    assert!(
        broker
            .keystores
            .iter()
            .chain(&broker.truststores)
            .all(|o| o.password.is_none())
    );
}

#[test]
fn sources_only_load_fails_like_the_daemons_except_on_secrets() {
    let paths = bad_fixtures();
    let mut loaded_without_secrets = Vec::new();
    for path in &paths {
        let daemons = load_err(path, &env());
        let reading_secret = matches!(daemons, Error::PasswordFile { .. })
            || matches!(&daemons, Error::Invalid { message, .. }
                if message.contains("password file")
                    && (message.ends_with("is empty") || message.ends_with("is not valid UTF-8")));
        match config::load_sources_only(path, &env()) {
            Ok(_) if reading_secret => {
                loaded_without_secrets.push(path.file_name().unwrap().to_owned());
            }
            Ok(_) => panic!("{} loaded without secrets: {daemons}", path.display()),
            Err(e) => {
                assert!(!reading_secret, "{}: {e}", path.display());
                assert_eq!(e.to_string(), daemons.to_string(), "{}", path.display());
            }
        }
    }
    for name in [
        "password-missing.toml",
        "password-empty.toml",
        "credential-missing.toml",
    ] {
        assert!(
            loaded_without_secrets.iter().any(|n| n == name),
            "{name}: {loaded_without_secrets:?}"
        );
    }
}

#[cfg(feature = "pkcs11")]
#[test]
fn sources_only_load_reads_no_pkcs11_pin() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("leafd.toml");
    write(
        &main,
        "[key]\nbackend = \"pkcs11\"\n\n[key.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
         token-label = \"t\"\npin-file = \"no-such.pin\"\n",
    );
    let loaded = config::load_sources_only(&main, &env()).unwrap();
    let BackendKind::Pkcs11(p) = &loaded.settings().key.backend else {
        panic!("{:?}", loaded.settings().key.backend)
    };
    assert_eq!(p.pin.expose(), "", "an empty placeholder");
    let err = load_err(&main, &env());
    assert!(matches!(err, Error::PasswordFile { .. }), "{err:?}");
}
