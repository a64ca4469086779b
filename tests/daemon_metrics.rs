//! The `leafd` binary's metrics: the node-exporter textfile and the loopback `GET /metrics`
//! endpoint of a running daemon, parsed as the text exposition format and checked figure by
//! figure against `leafctl status --json` over a private system bus; the endpoint's 404, 405,
//! size and time limits; the textfile's mode and atomic replacement; a bind failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    missing_docs,
    reason = "test code drives real processes: failures panic, deadlines are wall-clock"
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon::Setup;
use common::dbus::PrivateBus;
use leafd::state::status::{ReloadState, Status};

/// Two identities rotating every few seconds: `broker`'s reload hook succeeds, `client`'s
/// fails, so every counter moves.
const CONFIG: &str = r#"[daemon]
state-directory = "@DIR@/state"
testing-short-lifetimes = true

[metrics]
textfile = "@DIR@/prom/leafd.prom"
listen = "127.0.0.1:@PORT@"

[[identity]]
name = "broker"
subject = "CN=broker1,O=Example"
sans = ["localhost"]
lifetime = "6s"
[[identity.keystore]]
format = "pem"
path = "@DIR@/tls/broker.pem"
[[identity.reload]]
type = "exec"
command = ["/bin/true"]

[[identity]]
name = "client"
sans = ["client.example.net"]
lifetime = "6s"
[[identity.keystore]]
format = "pkcs12"
path = "@DIR@/tls/client.p12"
password-file = "@DIR@/store.pass"
[[identity.reload]]
type = "exec"
command = ["/bin/false"]
"#;

/// Every family leafd writes once it has a host key, a host certificate and leaves.
const FAMILIES: [&str; 19] = [
    "leafd_certificate_expiry_seconds",
    "leafd_certificate_not_after_timestamp_seconds",
    "leafd_certificate_next_renewal_timestamp_seconds",
    "leafd_renewals_total",
    "leafd_renewal_failures_total",
    "leafd_reload_verifications_total",
    "leafd_reload_failures_total",
    "leafd_reload_state",
    "leafd_identity_failing",
    "leafd_host_key_info",
    "leafd_host_cert_expiry_seconds",
    "leafd_host_cert_not_after_timestamp_seconds",
    "leafd_host_cert_failing",
    "leafd_ca_requests_total",
    "leafd_ca_request_failures_total",
    "leafd_ca_request_duration_seconds",
    "leafd_ca_request_last_duration_seconds",
    "leafd_build_info",
    "leafd_status_updated_timestamp_seconds",
];

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// The text exposition format, parsed strictly.

/// Samples by name and sorted labels, and each family's type.
#[derive(Debug)]
struct Exposition {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    types: HashMap<String, String>,
    text: String,
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
    }
}

/// `{k="v",...}` with `\\`, `\"` and `\n` escapes; returns the labels and the rest.
fn parse_labels(s: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (key, r) = rest.split_once("=\"").unwrap();
        assert!(
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "label name {key:?}"
        );
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break i,
                '\\' => match chars.next().unwrap().1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other}"),
                },
                '\n' => panic!("raw line feed in a label value"),
                c => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "incomplete exposition:\n{text}");
    let mut samples = BTreeMap::new();
    let mut types = HashMap::new();
    let mut help_for = String::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            help_for = name.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(name, help_for, "TYPE without HELP: {line}");
            assert!(
                ["counter", "gauge", "summary"].contains(&kind),
                "type {kind}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
            family = name.to_owned();
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let end = line.find(['{', ' ']).unwrap();
            let name = &line[..end];
            let belongs = name == family
                || (types.get(&family).is_some_and(|t| t == "summary")
                    && (name == format!("{family}_sum") || name == format!("{family}_count")));
            assert!(belongs, "{name} outside its family ({family})");
            let (mut labels, rest) = if line[end..].starts_with('{') {
                parse_labels(&line[end..])
            } else {
                (Vec::new(), &line[end..])
            };
            let value = rest.strip_prefix(' ').unwrap();
            assert!(!value.contains(' '), "a timestamp or junk: {line}");
            labels.sort();
            let key = (name.to_owned(), labels);
            assert!(
                samples.insert(key, parse_value(value)).is_none(),
                "duplicate {line}"
            );
        }
    }
    Exposition {
        samples,
        types,
        text: text.to_owned(),
    }
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_owned(), labels.clone()))
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    fn id(&self, name: &str, identity: &str) -> f64 {
        self.get(name, &[("identity", identity)])
    }

    fn updated(&self) -> f64 {
        self.get("leafd_status_updated_timestamp_seconds", &[])
    }
}

fn close(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, want {want} (±{tolerance})"
    );
}

/// Checks every figure against the status. `expiry_from` is the range of instants the
/// `*_expiry_seconds` gauges may count from.
fn check(m: &Exposition, st: &Status, expiry_from: (f64, f64)) {
    let mut families: Vec<&str> = m.types.keys().map(String::as_str).collect();
    families.sort_unstable();
    let mut expected = FAMILIES.to_vec();
    expected.sort_unstable();
    assert_eq!(families, expected);
    for (name, kind) in &m.types {
        let want = if name.ends_with("_total") {
            "counter"
        } else if name == "leafd_ca_request_duration_seconds" {
            "summary"
        } else {
            "gauge"
        };
        assert_eq!(kind, want, "{name}");
    }
    // JSON times have milliseconds.
    const MS: f64 = 0.0015;
    let expiry = |what: &str, got: f64, not_after: SystemTime| {
        let (from, to) = expiry_from;
        let na = secs(not_after);
        assert!(
            got <= na - from + MS && got >= na - to - MS,
            "{what}: expiry {got} is not notAfter {na} minus a moment in [{from}, {to}]"
        );
    };

    let mut samples = 0;
    for i in &st.identities {
        let n = i.name.as_str();
        let not_after = i.not_after.unwrap();
        close(
            "not_after",
            m.id("leafd_certificate_not_after_timestamp_seconds", n),
            secs(not_after),
            MS,
        );
        expiry(n, m.id("leafd_certificate_expiry_seconds", n), not_after);
        close(
            "next_renewal",
            m.id("leafd_certificate_next_renewal_timestamp_seconds", n),
            secs(i.next_renewal.unwrap()),
            MS,
        );
        let c = &i.counters;
        assert_eq!(m.id("leafd_renewals_total", n), c.renewals as f64, "{n}");
        assert_eq!(
            m.id("leafd_renewal_failures_total", n),
            c.renewal_failures as f64,
            "{n}"
        );
        assert_eq!(
            m.id("leafd_reload_verifications_total", n),
            c.reloads_verified as f64,
            "{n}"
        );
        assert_eq!(
            m.id("leafd_reload_failures_total", n),
            c.reloads_failed as f64,
            "{n}"
        );
        let current = match i.reload.as_ref().map(|r| r.state) {
            Some(ReloadState::Pending) => "pending",
            Some(ReloadState::Verified) => "verified",
            Some(ReloadState::Failed) => "failed",
            None => "none",
        };
        for state in ["pending", "verified", "failed", "none"] {
            assert_eq!(
                m.get("leafd_reload_state", &[("identity", n), ("state", state)]),
                f64::from(u8::from(state == current)),
                "{n} {state}"
            );
        }
        assert_eq!(
            m.id("leafd_identity_failing", n),
            f64::from(u8::from(i.last_error.is_some())),
            "{n}"
        );
        samples += 12;
    }

    let key = st.host_key.as_ref().unwrap();
    assert_eq!(
        m.get(
            "leafd_host_key_info",
            &[
                ("backend", &key.backend),
                ("algorithm", key.algorithm.as_str()),
                ("non_exportable", &key.non_exportable.to_string()),
            ]
        ),
        1.0
    );
    let host = st.host_cert.as_ref().unwrap();
    expiry(
        "host cert",
        m.get("leafd_host_cert_expiry_seconds", &[]),
        host.not_after,
    );
    close(
        "host not_after",
        m.get("leafd_host_cert_not_after_timestamp_seconds", &[]),
        secs(host.not_after),
        MS,
    );
    assert_eq!(
        m.get("leafd_host_cert_failing", &[]),
        f64::from(u8::from(host.last_error.is_some()))
    );
    let ca = &st.ca;
    assert_eq!(m.get("leafd_ca_requests_total", &[]), ca.requests as f64);
    assert_eq!(
        m.get("leafd_ca_request_failures_total", &[]),
        ca.failures as f64
    );
    assert_eq!(
        m.get("leafd_ca_request_duration_seconds_count", &[]),
        ca.requests as f64
    );
    close(
        "ca sum",
        m.get("leafd_ca_request_duration_seconds_sum", &[]),
        ca.seconds_sum,
        1e-9,
    );
    close(
        "ca last",
        m.get("leafd_ca_request_last_duration_seconds", &[]),
        ca.last_seconds,
        1e-9,
    );
    assert_eq!(m.get("leafd_build_info", &[("version", &st.version)]), 1.0);
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
    close("updated", m.updated(), secs(st.updated), MS);
    samples += 11;
    assert_eq!(
        m.samples.len(),
        samples,
        "unexpected samples in\n{}",
        m.text
    );
}

// ---------------------------------------------------------------------------------------
// The daemon, leafctl and HTTP.

fn leafctl_status(bus: &PrivateBus) -> Status {
    let out = Command::new(env!("CARGO_BIN_EXE_leafctl"))
        .args(["--bus-address", bus.address(), "status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "leafctl status --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads until the server closes. A server that closes with part of the request unread
/// (an oversized head) resets the connection after its response: that ends it too.
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return data,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
}

/// One HTTP/1.0 exchange; returns (status code, headers lower-cased, body).
fn http(addr: SocketAddr, request: &str) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let response = String::from_utf8(read_all(&mut stream)).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {response:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let code = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (code, headers, body.to_owned())
}

fn scrape(addr: SocketAddr) -> String {
    let (code, headers, body) = http(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    body
}

/// Reads metrics between two `leafctl status --json` calls until both calls agree and the
/// metrics come from that same status; returns them with the moments around the read.
fn consistent(
    bus: &PrivateBus,
    mut read: impl FnMut() -> String,
) -> (Status, Exposition, (f64, f64)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = leafctl_status(bus);
        let from = secs(SystemTime::now());
        let m = parse(&read());
        let to = secs(SystemTime::now());
        let after = leafctl_status(bus);
        if before == after && (m.updated() - secs(before.updated)).abs() < 0.0015 {
            return (before, m, (from, to));
        }
        assert!(
            Instant::now() < deadline,
            "the status never held still around a read"
        );
    }
}

#[test]
fn textfile_and_endpoint_match_leafctl_status() {
    let bus = PrivateBus::start();
    let port = free_port();
    let mut s = Setup::new(&CONFIG.replace("@PORT@", &port.to_string()));
    std::fs::create_dir(s.path("prom")).unwrap();
    s.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.address())]);
    let state = s.path("state");
    s.wait_for(
        "two rotations of each identity and both reload outcomes",
        Duration::from_secs(60),
        |_| {
            leafd::state::status::read(&state).is_ok_and(|st| {
                st.identities.iter().all(|i| i.counters.renewals >= 2)
                    && st.identities[0].counters.reloads_verified >= 1
                    && st.identities[1].counters.reloads_failed >= 1
            })
        },
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        s.log()
            .contains(&format!("metrics on http://{addr}/metrics")),
        "{}",
        s.log()
    );

    // The endpoint: expiry counts from the moment of the scrape.
    let (st, m, during) = consistent(&bus, || scrape(addr));
    check(&m, &st, during);
    assert!(st.identities.iter().all(|i| i.counters.renewals >= 2));
    assert!(st.ca.requests >= 1);
    assert_eq!(st.host_key.as_ref().unwrap().backend, "soft");

    // The textfile: written when the status changed, so expiry counts from then.
    let textfile = s.path("prom/leafd.prom");
    let (st, m, _) = consistent(&bus, || std::fs::read_to_string(&textfile).unwrap());
    let updated = secs(st.updated);
    check(&m, &st, (updated, updated));
    assert!(st.identities[1].counters.reloads_failed >= 1);

    // 0644 for node-exporter, replaced by rename: every read is a whole file and the inode
    // changes with every status change.
    let first = std::fs::metadata(&textfile).unwrap();
    assert_eq!(first.permissions().mode() & 0o7777, 0o644);
    let mut inodes = vec![first.ino()];
    let mut versions = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while versions.len() < 3 {
        assert!(Instant::now() < deadline, "the textfile was not rewritten");
        let m = parse(&std::fs::read_to_string(&textfile).unwrap());
        assert_eq!(m.types.len(), FAMILIES.len(), "a partial file:\n{}", m.text);
        versions.insert(m.updated().to_bits());
        let meta = std::fs::metadata(&textfile).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        if inodes.last() != Some(&meta.ino()) {
            inodes.push(meta.ino());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(inodes.len() >= 2, "{inodes:?}");
    // No temporary file stays behind (one may exist for a moment during a write).
    s.wait_for(
        "only leafd.prom in its directory",
        Duration::from_secs(10),
        |s| {
            let names: Vec<_> = std::fs::read_dir(s.path("prom"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names == ["leafd.prom"]
        },
    );

    // Other paths and methods.
    let (code, _, body) = http(addr, "GET /nope HTTP/1.0\r\n\r\n");
    assert_eq!((code, body.as_str()), (404, "not found\n"));
    let (code, _, _) = http(addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(code, 404);
    let (code, headers, _) = http(addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (code, _, _) = http(addr, "DELETE /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(code, 405);
    let (code, headers, body) = http(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(body, "");
    // A query string does not change the path.
    let (code, _, body) = http(addr, "GET /metrics?name[]=x HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200);
    parse(&body);

    // Limits: an oversized request head, and a client that never finishes its request.
    let (code, _, _) = http(
        addr,
        &format!(
            "GET /metrics HTTP/1.0\r\nX-Big: {}\r\n\r\n",
            "a".repeat(16_384)
        ),
    );
    assert_eq!(code, 431);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.0\r\n").unwrap();
    let started = Instant::now();
    let response = read_all(&mut slow);
    assert!(
        response.is_empty() || response.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    // The endpoint still serves after all that.
    parse(&scrape(addr));

    // SIGTERM stops the endpoint; the textfile stays for node-exporter.
    assert_eq!(s.stop(), 0, "{}", s.log());
    assert!(TcpStream::connect(addr).is_err());
    assert!(Path::new(&textfile).exists());
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut s = Setup::new(&CONFIG.replace("@PORT@", &port.to_string()));
    s.start();
    let code = s.stop_wait();
    let log = s.log();
    assert_eq!(code, 69, "{log}");
    assert!(
        log.contains(&format!(
            "could not listen on 127.0.0.1:{port} for metrics: Address already in use"
        )),
        "{log}"
    );
    drop(taken);
}
