//! Human and JSON views of the daemon's status. Pure: `now` is a parameter.
//!
//! Times are RFC 3339 (UTC, seconds) followed by a relative form, `(in 3d 4h)` or
//! `(2m 5s ago)`. Nothing here can print a secret: the status never holds one.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::kafka::dn::{self, Jdk};
use crate::status::{IdentityStatus, ReloadState, Status};

/// `3d 4h`, `5m 2s`, `12s`: the two largest non-zero units of `d`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let parts: Vec<String> = units
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `in 3d 4h`, `2m 5s ago`, or `now`.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) if d.as_secs() == 0 => "now".to_owned(),
        Ok(d) => format!("in {}", duration(d)),
        Err(e) if e.duration().as_secs() == 0 => "now".to_owned(),
        Err(e) => format!("{} ago", duration(e.duration())),
    }
}

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2030-01-01T00:00:00Z (in 3d 4h)`.
pub fn when(t: SystemTime, now: SystemTime) -> String {
    format!("{} ({})", rfc3339(t), relative(t, now))
}

fn when_opt(t: Option<SystemTime>, now: SystemTime) -> String {
    t.map_or_else(|| "-".to_owned(), |t| when(t, now))
}

/// How an identity is doing, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// The leaf in the stores has expired.
    Expired,
    /// The last renewal attempt failed (retrying).
    RenewalFailing,
    /// The broker did not pick up the current leaf.
    ReloadFailed,
    /// Waiting for the broker to serve the current leaf.
    ReloadPending,
    /// No leaf issued yet.
    NotIssued,
    /// Current, and reloaded if reloads are configured.
    Ok,
}

impl Health {
    /// The word shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Expired => "expired",
            Health::RenewalFailing => "renewal-failing",
            Health::ReloadFailed => "reload-failed",
            Health::ReloadPending => "reload-pending",
            Health::NotIssued => "not-issued",
            Health::Ok => "ok",
        }
    }
}

/// The identity's [`Health`] at `now`.
pub fn health(i: &IdentityStatus, now: SystemTime) -> Health {
    if i.serial.is_some() && i.not_after.is_some_and(|t| t <= now) {
        return Health::Expired;
    }
    if i.last_error.is_some() {
        return Health::RenewalFailing;
    }
    if i.serial.is_none() {
        return Health::NotIssued;
    }
    match &i.reload {
        Some(r) if r.state == ReloadState::Failed => Health::ReloadFailed,
        Some(r) if r.state == ReloadState::Pending => Health::ReloadPending,
        _ => Health::Ok,
    }
}

fn reload_word(i: &IdentityStatus) -> String {
    match &i.reload {
        None => "-".to_owned(),
        Some(r) => {
            let state = match r.state {
                ReloadState::Pending => "pending",
                ReloadState::Verified => "verified",
                ReloadState::Failed => "failed",
            };
            if i.serial.as_deref() == Some(r.serial.as_str()) {
                state.to_owned()
            } else {
                format!("{state} (serial {})", r.serial)
            }
        }
    }
}

/// A left-aligned text table; columns are as wide as their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, two spaces between columns, no trailing blanks.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Everything that needs an operator's attention, one line each.
pub fn alarms(s: &Status, now: SystemTime) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(h) = &s.host_cert {
        if h.not_after <= now {
            out.push(format!(
                "host issuing certificate expired {}",
                when(h.not_after, now)
            ));
        }
        if let Some(e) = &h.last_error {
            out.push(format!("host issuing certificate: renewal failing: {e}"));
        }
    }
    for i in &s.identities {
        if health(i, now) == Health::Expired {
            out.push(format!(
                "{}: certificate expired {}",
                i.name,
                when_opt(i.not_after, now)
            ));
        }
        if let Some(e) = &i.last_error {
            out.push(format!("{}: renewal failing: {e}", i.name));
        }
        if let Some(r) = &i.reload {
            if r.state == ReloadState::Failed {
                out.push(format!(
                    "{}: reload failed for serial {} at {}: {}",
                    i.name,
                    r.serial,
                    when(r.at, now),
                    r.detail
                ));
            }
        }
    }
    out
}

/// `leafctl status`.
pub fn status(s: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leafd {} (pid {}), status as of {}",
        s.version,
        s.pid,
        when(s.updated, now)
    );
    let _ = writeln!(out, "  {}", s.summary);
    out.push('\n');
    match &s.host_key {
        Some(k) => {
            let _ = writeln!(
                out,
                "host key:   {} {}, {}",
                k.backend,
                k.algorithm,
                if k.non_exportable {
                    "non-exportable"
                } else {
                    "exportable (software key)"
                }
            );
            for (name, value) in &k.facts {
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
        None => out.push_str("host key:   not loaded yet\n"),
    }
    match &s.host_cert {
        Some(h) => {
            let _ = writeln!(out, "host cert:  serial {}", h.serial);
            let _ = writeln!(out, "  not after:    {}", when(h.not_after, now));
            let _ = writeln!(out, "  next renewal: {}", when(h.next_renewal, now));
        }
        None => out.push_str("host cert:  none yet\n"),
    }
    out.push('\n');
    let mut table = Table::new(&[
        "IDENTITY",
        "STATE",
        "SERIAL",
        "NOT AFTER",
        "NEXT RENEWAL",
        "RELOAD",
    ]);
    for i in &s.identities {
        table.row(vec![
            i.name.clone(),
            health(i, now).as_str().to_owned(),
            i.serial.clone().unwrap_or_else(|| "-".to_owned()),
            when_opt(i.not_after, now),
            when_opt(i.next_renewal, now),
            reload_word(i),
        ]);
    }
    out.push_str(&table.render());
    let alarms = alarms(s, now);
    if !alarms.is_empty() {
        out.push_str("\nalarms:\n");
        for a in alarms {
            let _ = writeln!(out, "  {a}");
        }
    }
    out
}

/// `leafctl list`.
pub fn list(s: &Status, now: SystemTime) -> String {
    let mut table = Table::new(&["IDENTITY", "SERIAL", "NOT AFTER", "NEXT RENEWAL", "STATE"]);
    for i in &s.identities {
        table.row(vec![
            i.name.clone(),
            i.serial.clone().unwrap_or_else(|| "-".to_owned()),
            when_opt(i.not_after, now),
            when_opt(i.next_renewal, now),
            health(i, now).as_str().to_owned(),
        ]);
    }
    table.render()
}

/// One row of `leafctl list --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListEntry {
    /// Identity name.
    pub name: String,
    /// Serial (hex) of the current leaf.
    pub serial: Option<String>,
    /// notAfter, RFC 3339.
    pub not_after: Option<String>,
    /// Planned renewal, RFC 3339.
    pub next_renewal: Option<String>,
    /// [`Health::as_str`].
    pub state: Health,
    /// Reload state of the last rotation (`pending`, `verified`, `failed`), if configured.
    pub reload: Option<ReloadState>,
}

/// `leafctl list --json`.
pub fn list_entries(s: &Status, now: SystemTime) -> Vec<ListEntry> {
    let millis = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    s.identities
        .iter()
        .map(|i| ListEntry {
            name: i.name.clone(),
            serial: i.serial.clone(),
            not_after: i.not_after.map(millis),
            next_renewal: i.next_renewal.map(millis),
            state: health(i, now),
            reload: i.reload.as_ref().map(|r| r.state),
        })
        .collect()
}

/// The Kafka principal (default rules) for a subject from the status, if it parses.
pub fn default_principal(subject: &str) -> Option<String> {
    dn::parse(subject)
        .ok()
        .map(|rdns| format!("User:{}", dn::render(&rdns, Jdk::Jdk17)))
}

/// `leafctl show NAME`.
pub fn show(i: &IdentityStatus, now: SystemTime) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("{name}:")
        };
        let _ = writeln!(out, "{label:<15} {value}");
    };
    field("identity", i.name.clone());
    field("state", health(i, now).as_str().to_owned());
    field("subject", i.subject.clone().unwrap_or_else(|| "-".into()));
    if let Some(p) = i.subject.as_deref().and_then(default_principal) {
        field(
            "principal",
            format!("{p} (with ssl.principal.mapping.rules=DEFAULT)"),
        );
    }
    field("issuer", i.issuer.clone().unwrap_or_else(|| "-".into()));
    field(
        "SANs",
        if i.sans.is_empty() {
            "-".into()
        } else {
            i.sans.join(", ")
        },
    );
    field("serial", i.serial.clone().unwrap_or_else(|| "-".into()));
    field("not before", when_opt(i.not_before, now));
    field("not after", when_opt(i.not_after, now));
    field("next renewal", when_opt(i.next_renewal, now));
    field("rotations", i.rotations.to_string());
    field(
        "last error",
        i.last_error.clone().unwrap_or_else(|| "-".into()),
    );
    match &i.reload {
        None => field("reload", "not configured".into()),
        Some(r) => field(
            "reload",
            format!(
                "{} for serial {}, {}: {}",
                match r.state {
                    ReloadState::Pending => "pending",
                    ReloadState::Verified => "verified",
                    ReloadState::Failed => "FAILED",
                },
                r.serial,
                when(r.at, now),
                r.detail
            ),
        ),
    }
    let mut outputs = i.outputs.iter();
    match outputs.next() {
        None => field("outputs", "-".into()),
        Some(first) => {
            field("outputs", first.display().to_string());
            for o in outputs {
                field("", o.display().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::status::ReloadStatus;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn identity(name: &str) -> IdentityStatus {
        IdentityStatus {
            name: name.into(),
            serial: Some("0a1b".into()),
            subject: Some("CN=b1,O=Example".into()),
            issuer: Some("CN=host".into()),
            sans: vec!["b1.example.com".into()],
            not_before: Some(at(1_000)),
            not_after: Some(at(100_000)),
            next_renewal: Some(at(50_000)),
            rotations: 2,
            last_error: None,
            outputs: vec![PathBuf::from("/a.p12"), PathBuf::from("/b.p12")],
            reload: None,
            counters: Default::default(),
        }
    }

    #[test]
    fn relative_times() {
        let now = at(1_000_000);
        assert_eq!(relative(at(1_000_000), now), "now");
        assert_eq!(
            relative(at(1_000_000 + 3 * 86_400 + 4 * 3600 + 59), now),
            "in 3d 4h"
        );
        assert_eq!(relative(at(1_000_000 + 3 * 86_400 + 59), now), "in 3d");
        assert_eq!(relative(at(1_000_000 - 125), now), "2m 5s ago");
        assert_eq!(relative(at(1_000_000 + 7), now), "in 7s");
        assert_eq!(
            when(at(1_000_000 + 3600), now),
            "1970-01-12T14:46:40Z (in 1h)"
        );
    }

    #[test]
    fn health_order() {
        let now = at(10_000);
        let mut i = identity("a");
        assert_eq!(health(&i, now), Health::Ok);
        i.reload = Some(ReloadStatus {
            state: ReloadState::Pending,
            serial: "0a1b".into(),
            at: at(9_000),
            detail: String::new(),
        });
        assert_eq!(health(&i, now), Health::ReloadPending);
        i.reload.as_mut().unwrap().state = ReloadState::Failed;
        assert_eq!(health(&i, now), Health::ReloadFailed);
        i.last_error = Some("CA down".into());
        assert_eq!(health(&i, now), Health::RenewalFailing);
        assert_eq!(health(&i, at(200_000)), Health::Expired);
        let mut fresh = identity("b");
        fresh.serial = None;
        assert_eq!(health(&fresh, now), Health::NotIssued);
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["é".into(), "22".into()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\né    22\n");
    }

    #[test]
    fn show_lists_everything_and_the_principal() {
        let mut i = identity("broker");
        i.reload = Some(ReloadStatus {
            state: ReloadState::Failed,
            serial: "0a1b".into(),
            at: at(2_000),
            detail: "listener SSL still serves 09".into(),
        });
        let text = show(&i, at(3_000));
        assert!(text.contains("identity:       broker\n"), "{text}");
        assert!(text.contains("state:          reload-failed\n"), "{text}");
        assert!(
            text.contains("principal:      User:CN=b1,O=Example"),
            "{text}"
        );
        assert!(text.contains("FAILED for serial 0a1b"), "{text}");
        assert!(
            text.contains("outputs:        /a.p12\n                /b.p12\n"),
            "{text}"
        );
    }

    #[test]
    fn alarms_name_failures() {
        let now = at(10_000);
        let mut a = identity("a");
        a.last_error = Some("CA unreachable".into());
        let mut b = identity("b");
        b.not_after = Some(at(5_000));
        let s = Status {
            version: "t".into(),
            pid: 1,
            updated: now,
            summary: String::new(),
            host_key: None,
            host_cert: None,
            identities: vec![a, b],
            ca: Default::default(),
        };
        let alarms = alarms(&s, now);
        assert_eq!(alarms.len(), 2, "{alarms:?}");
        assert!(alarms[0].contains("a: renewal failing: CA unreachable"));
        assert!(alarms[1].contains("b: certificate expired"));
        let text = status(&s, now);
        assert!(text.contains("alarms:"), "{text}");
        assert!(text.contains("renewal-failing"), "{text}");
    }
}
