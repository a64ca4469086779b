//! Metrics: the [`Status`] snapshot in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] is pure: every figure is derived from the snapshot at render time and `now`
//! is a parameter. [`exporter`] writes it to a textfile for node-exporter and serves it on
//! a loopback HTTP endpoint.
//!
//! DEVNOTE: the encoder is written here rather than taken from `prometheus-client`, the
//! official Rust client. That crate encodes only the OpenMetrics text format: it ends with
//! `# EOF`, names counter families without their `_total` suffix and gives info metrics the
//! type `info`. node-exporter's textfile collector parses the classic 0.0.4 format, in which
//! `info` is an unknown type that makes it reject the whole file, and Prometheus would see
//! the counters as untyped. Its registry also holds live atomics, while everything here is
//! derived from a snapshot. What is needed is small: HELP and TYPE lines, label value
//! escaping, and numbers Go's `ParseFloat` reads.

pub mod exporter;

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

pub use exporter::{Error, Exporter};

use crate::status::{IdentityCounters, ReloadState, Status};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `state` label values of `leafd_reload_state`, in the order they are written.
const RELOAD_STATES: [&str; 4] = ["pending", "verified", "failed", "none"];

/// Renders `status` in the Prometheus text exposition format. `now` is the moment the
/// `*_expiry_seconds` gauges count from.
pub fn render(status: &Status, now: SystemTime) -> String {
    let mut out = String::with_capacity(4096);
    let ids = &status.identities;

    let mut f = Family::new(
        "leafd_certificate_expiry_seconds",
        Kind::Gauge,
        "Seconds until the identity's leaf certificate expires (negative once expired).",
    );
    for i in ids {
        if let Some(t) = i.not_after {
            f.sample(&[("identity", &i.name)], Float(seconds_between(now, t)));
        }
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_certificate_not_after_timestamp_seconds",
        Kind::Gauge,
        "notAfter of the identity's leaf certificate, seconds since the epoch.",
    );
    for i in ids {
        if let Some(t) = i.not_after {
            f.sample(&[("identity", &i.name)], Float(timestamp(t)));
        }
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_certificate_next_renewal_timestamp_seconds",
        Kind::Gauge,
        "When the identity's leaf is planned to be renewed, seconds since the epoch.",
    );
    for i in ids {
        if let Some(t) = i.next_renewal {
            f.sample(&[("identity", &i.name)], Float(timestamp(t)));
        }
    }
    f.write(&mut out);

    let counters: [(&str, &str, CounterOf); 4] = [
        (
            "leafd_renewals_total",
            "Rotations of the identity completed since leafd started.",
            |c| c.renewals,
        ),
        (
            "leafd_renewal_failures_total",
            "Rotation attempts of the identity that failed since leafd started.",
            |c| c.renewal_failures,
        ),
        (
            "leafd_reload_verifications_total",
            "Broker reloads of the identity verified since leafd started.",
            |c| c.reloads_verified,
        ),
        (
            "leafd_reload_failures_total",
            "Broker reloads of the identity that raised the alarm since leafd started.",
            |c| c.reloads_failed,
        ),
    ];
    for (name, help, get) in counters {
        let mut f = Family::new(name, Kind::Counter, help);
        for i in ids {
            f.sample(&[("identity", &i.name)], get(&i.counters));
        }
        f.write(&mut out);
    }

    let mut f = Family::new(
        "leafd_reload_state",
        Kind::Gauge,
        "State of the broker reload after the identity's last rotation: 1 for the current \
         state, none without reload actions.",
    );
    for i in ids {
        let current = match i.reload.as_ref().map(|r| r.state) {
            Some(ReloadState::Pending) => "pending",
            Some(ReloadState::Verified) => "verified",
            Some(ReloadState::Failed) => "failed",
            None => "none",
        };
        for state in RELOAD_STATES {
            f.sample(
                &[("identity", &i.name), ("state", state)],
                u64::from(state == current),
            );
        }
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_identity_failing",
        Kind::Gauge,
        "1 if the identity's last rotation attempt failed.",
    );
    for i in ids {
        f.sample(&[("identity", &i.name)], u64::from(i.last_error.is_some()));
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_host_key_info",
        Kind::Gauge,
        "The host key as read back from its backend; always 1.",
    );
    if let Some(k) = &status.host_key {
        f.sample(
            &[
                ("backend", &k.backend),
                ("algorithm", k.algorithm.as_str()),
                (
                    "non_exportable",
                    if k.non_exportable { "true" } else { "false" },
                ),
            ],
            1u64,
        );
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_host_cert_expiry_seconds",
        Kind::Gauge,
        "Seconds until the host issuing certificate expires (negative once expired).",
    );
    if let Some(h) = &status.host_cert {
        f.sample(&[], Float(seconds_between(now, h.not_after)));
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_host_cert_not_after_timestamp_seconds",
        Kind::Gauge,
        "notAfter of the host issuing certificate, seconds since the epoch.",
    );
    if let Some(h) = &status.host_cert {
        f.sample(&[], Float(timestamp(h.not_after)));
    }
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_host_cert_failing",
        Kind::Gauge,
        "1 if the host issuing certificate's last renewal failed or there is none.",
    );
    let failing = status
        .host_cert
        .as_ref()
        .is_none_or(|h| h.last_error.is_some());
    f.sample(&[], u64::from(failing));
    f.write(&mut out);

    let ca = &status.ca;
    let mut f = Family::new(
        "leafd_ca_requests_total",
        Kind::Counter,
        "Host issuing certificate requests to the CA since leafd started.",
    );
    f.sample(&[], ca.requests);
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_ca_request_failures_total",
        Kind::Counter,
        "CA requests that failed since leafd started.",
    );
    f.sample(&[], ca.failures);
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_ca_request_duration_seconds",
        Kind::Summary,
        "Duration of CA requests since leafd started.",
    );
    f.sample_named("_sum", &[], Float(ca.seconds_sum));
    f.sample_named("_count", &[], ca.requests);
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_ca_request_last_duration_seconds",
        Kind::Gauge,
        "Duration of the last CA request.",
    );
    f.sample(&[], Float(ca.last_seconds));
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_build_info",
        Kind::Gauge,
        "The running leafd's version; always 1.",
    );
    f.sample(&[("version", &status.version)], 1u64);
    f.write(&mut out);

    let mut f = Family::new(
        "leafd_status_updated_timestamp_seconds",
        Kind::Gauge,
        "When leafd last changed the status these figures come from, seconds since the epoch.",
    );
    f.sample(&[], Float(timestamp(status.updated)));
    f.write(&mut out);

    out
}

/// Reads one of an identity's counters.
type CounterOf = fn(&IdentityCounters) -> u64;

/// Metric types of the 0.0.4 format that leafd uses.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
        }
    }
}

/// One metric family: its samples are collected, then written together after its HELP and
/// TYPE lines. A family without samples is left out.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: String::new(),
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.sample_named("", labels, value);
    }

    /// A sample whose name is the family's plus `suffix` (`_sum`, `_count`).
    fn sample_named(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        let s = &mut self.samples;
        s.push_str(self.name);
        s.push_str(suffix);
        if !labels.is_empty() {
            s.push('{');
            for (n, (key, value)) in labels.iter().enumerate() {
                if n > 0 {
                    s.push(',');
                }
                s.push_str(key);
                s.push_str("=\"");
                escape_label_value(s, value);
                s.push('"');
            }
            s.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(s, " {value}");
    }

    fn write(self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        escape_help(out, self.help);
        out.push_str("\n# TYPE ");
        out.push_str(self.name);
        out.push(' ');
        out.push_str(self.kind.as_str());
        out.push('\n');
        out.push_str(&self.samples);
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and line feed.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the format writes it: Go's `ParseFloat` syntax, `+Inf`, `-Inf`, `NaN`.
/// Rust's shortest round-trip form (`1.5`, `1700000000`) parses back to the same value.
struct Float(f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v}")
        }
    }
}

/// Seconds since the epoch (negative before it).
fn timestamp(t: SystemTime) -> f64 {
    seconds_between(UNIX_EPOCH, t)
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::{CaStats, HostCertStatus, IdentityStatus, ReloadStatus};
    use crate::vocab::{KeyAlgorithm, KeyInfo};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn identity(name: &str) -> IdentityStatus {
        IdentityStatus {
            name: name.into(),
            serial: None,
            subject: None,
            issuer: None,
            sans: Vec::new(),
            not_before: None,
            not_after: None,
            next_renewal: None,
            rotations: 0,
            last_error: None,
            outputs: Vec::new(),
            reload: None,
            counters: IdentityCounters::default(),
        }
    }

    /// A snapshot with two identities, a host key and certificate, and CA figures.
    pub(crate) fn status() -> Status {
        let broker = IdentityStatus {
            serial: Some("01ab".into()),
            not_before: Some(at(1_700_000_000)),
            not_after: Some(at(1_700_003_600)),
            next_renewal: Some(at(1_700_002_400)),
            rotations: 3,
            reload: Some(ReloadStatus {
                state: ReloadState::Verified,
                serial: "01ab".into(),
                at: at(1_700_000_010),
                detail: "served".into(),
            }),
            counters: IdentityCounters {
                renewals: 3,
                renewal_failures: 1,
                reloads_verified: 2,
                reloads_failed: 1,
            },
            ..identity("broker")
        };
        let client = IdentityStatus {
            last_error: Some("ca unreachable".into()),
            counters: IdentityCounters {
                renewals: 0,
                renewal_failures: 4,
                reloads_verified: 0,
                reloads_failed: 0,
            },
            ..identity("client")
        };
        Status {
            version: "1.2.3".into(),
            pid: 42,
            updated: UNIX_EPOCH + Duration::from_millis(1_700_001_000_250),
            summary: "1 ok, 1 failing".into(),
            host_key: Some(KeyInfo {
                backend: "tpm".into(),
                algorithm: KeyAlgorithm::EcdsaP256,
                non_exportable: true,
                facts: vec![("device".into(), "/dev/tpmrm0".into())],
            }),
            host_cert: Some(HostCertStatus {
                serial: "77".into(),
                not_after: at(1_700_604_800),
                next_renewal: at(1_700_400_000),
                last_error: None,
            }),
            identities: vec![broker, client],
            ca: CaStats {
                requests: 2,
                failures: 1,
                last_seconds: 0.25,
                seconds_sum: 0.75,
            },
        }
    }

    const EXPECTED: &str = r#"# HELP leafd_certificate_expiry_seconds Seconds until the identity's leaf certificate expires (negative once expired).
# TYPE leafd_certificate_expiry_seconds gauge
leafd_certificate_expiry_seconds{identity="broker"} 2600
# HELP leafd_certificate_not_after_timestamp_seconds notAfter of the identity's leaf certificate, seconds since the epoch.
# TYPE leafd_certificate_not_after_timestamp_seconds gauge
leafd_certificate_not_after_timestamp_seconds{identity="broker"} 1700003600
# HELP leafd_certificate_next_renewal_timestamp_seconds When the identity's leaf is planned to be renewed, seconds since the epoch.
# TYPE leafd_certificate_next_renewal_timestamp_seconds gauge
leafd_certificate_next_renewal_timestamp_seconds{identity="broker"} 1700002400
# HELP leafd_renewals_total Rotations of the identity completed since leafd started.
# TYPE leafd_renewals_total counter
leafd_renewals_total{identity="broker"} 3
leafd_renewals_total{identity="client"} 0
# HELP leafd_renewal_failures_total Rotation attempts of the identity that failed since leafd started.
# TYPE leafd_renewal_failures_total counter
leafd_renewal_failures_total{identity="broker"} 1
leafd_renewal_failures_total{identity="client"} 4
# HELP leafd_reload_verifications_total Broker reloads of the identity verified since leafd started.
# TYPE leafd_reload_verifications_total counter
leafd_reload_verifications_total{identity="broker"} 2
leafd_reload_verifications_total{identity="client"} 0
# HELP leafd_reload_failures_total Broker reloads of the identity that raised the alarm since leafd started.
# TYPE leafd_reload_failures_total counter
leafd_reload_failures_total{identity="broker"} 1
leafd_reload_failures_total{identity="client"} 0
# HELP leafd_reload_state State of the broker reload after the identity's last rotation: 1 for the current state, none without reload actions.
# TYPE leafd_reload_state gauge
leafd_reload_state{identity="broker",state="pending"} 0
leafd_reload_state{identity="broker",state="verified"} 1
leafd_reload_state{identity="broker",state="failed"} 0
leafd_reload_state{identity="broker",state="none"} 0
leafd_reload_state{identity="client",state="pending"} 0
leafd_reload_state{identity="client",state="verified"} 0
leafd_reload_state{identity="client",state="failed"} 0
leafd_reload_state{identity="client",state="none"} 1
# HELP leafd_identity_failing 1 if the identity's last rotation attempt failed.
# TYPE leafd_identity_failing gauge
leafd_identity_failing{identity="broker"} 0
leafd_identity_failing{identity="client"} 1
# HELP leafd_host_key_info The host key as read back from its backend; always 1.
# TYPE leafd_host_key_info gauge
leafd_host_key_info{backend="tpm",algorithm="p256",non_exportable="true"} 1
# HELP leafd_host_cert_expiry_seconds Seconds until the host issuing certificate expires (negative once expired).
# TYPE leafd_host_cert_expiry_seconds gauge
leafd_host_cert_expiry_seconds 603800
# HELP leafd_host_cert_not_after_timestamp_seconds notAfter of the host issuing certificate, seconds since the epoch.
# TYPE leafd_host_cert_not_after_timestamp_seconds gauge
leafd_host_cert_not_after_timestamp_seconds 1700604800
# HELP leafd_host_cert_failing 1 if the host issuing certificate's last renewal failed or there is none.
# TYPE leafd_host_cert_failing gauge
leafd_host_cert_failing 0
# HELP leafd_ca_requests_total Host issuing certificate requests to the CA since leafd started.
# TYPE leafd_ca_requests_total counter
leafd_ca_requests_total 2
# HELP leafd_ca_request_failures_total CA requests that failed since leafd started.
# TYPE leafd_ca_request_failures_total counter
leafd_ca_request_failures_total 1
# HELP leafd_ca_request_duration_seconds Duration of CA requests since leafd started.
# TYPE leafd_ca_request_duration_seconds summary
leafd_ca_request_duration_seconds_sum 0.75
leafd_ca_request_duration_seconds_count 2
# HELP leafd_ca_request_last_duration_seconds Duration of the last CA request.
# TYPE leafd_ca_request_last_duration_seconds gauge
leafd_ca_request_last_duration_seconds 0.25
# HELP leafd_build_info The running leafd's version; always 1.
# TYPE leafd_build_info gauge
leafd_build_info{version="1.2.3"} 1
# HELP leafd_status_updated_timestamp_seconds When leafd last changed the status these figures come from, seconds since the epoch.
# TYPE leafd_status_updated_timestamp_seconds gauge
leafd_status_updated_timestamp_seconds 1700001000.25
"#;

    #[test]
    fn renders_every_metric_from_the_snapshot() {
        let text = render(&status(), at(1_700_001_000));
        assert_eq!(text, EXPECTED, "\n{text}");
    }

    #[test]
    fn expiry_counts_from_now_and_goes_negative() {
        let text = render(&status(), at(1_700_003_610));
        assert!(
            text.contains("leafd_certificate_expiry_seconds{identity=\"broker\"} -10\n"),
            "{text}"
        );
        let now = UNIX_EPOCH + Duration::from_millis(1_700_003_599_500);
        let text = render(&status(), now);
        assert!(
            text.contains("leafd_certificate_expiry_seconds{identity=\"broker\"} 0.5\n"),
            "{text}"
        );
    }

    #[test]
    fn families_without_samples_are_left_out() {
        let mut st = status();
        st.identities.clear();
        st.host_key = None;
        st.host_cert = None;
        let text = render(&st, at(1_700_001_000));
        for absent in [
            "leafd_certificate_expiry_seconds",
            "leafd_renewals_total",
            "leafd_reload_state",
            "leafd_host_key_info",
            "leafd_host_cert_expiry_seconds",
            "leafd_host_cert_not_after_timestamp_seconds",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        // No host issuing certificate counts as failing.
        assert!(text.contains("\nleafd_host_cert_failing 1\n"), "{text}");
        assert!(text.contains("\nleafd_ca_requests_total 2\n"), "{text}");
    }

    #[test]
    fn host_cert_failing_follows_its_last_error() {
        let mut st = status();
        if let Some(h) = st.host_cert.as_mut() {
            h.last_error = Some("ca down".into());
        }
        let text = render(&st, at(1_700_001_000));
        assert!(text.contains("\nleafd_host_cert_failing 1\n"), "{text}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut st = status();
        st.identities = vec![identity("a\"b\\c\nd")];
        st.version = "v\"1\\\n".into();
        let text = render(&st, at(1_700_001_000));
        assert!(
            text.contains(r#"leafd_renewals_total{identity="a\"b\\c\nd"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leafd_build_info{version="v\"1\\\n"} 1"#),
            "{text}"
        );
        // Every line is a comment or a sample: no raw line feed leaked out of a label.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP leafd_")
                    || line.starts_with("# TYPE leafd_")
                    || line.starts_with("leafd_"),
                "{line:?}"
            );
        }

        let mut help = String::new();
        escape_help(&mut help, "a\\b\nc\"d");
        assert_eq!(help, r#"a\\b\nc"d"#);
    }

    #[test]
    fn floats_use_the_format_spelling() {
        assert_eq!(Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Float(0.1).to_string(), "0.1");
        assert_eq!(Float(-2.0).to_string(), "-2");
        assert_eq!(Float(1e300).to_string().parse::<f64>().unwrap(), 1e300);
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = render(&status(), at(1_700_001_000));
        let mut family = "";
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap();
                assert!(seen.insert(family), "{family} twice");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next().unwrap(), family);
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|b| *b == family)
                    .unwrap_or(name);
                assert_eq!(base, family, "{line}");
            }
        }
    }
}
