//! Status projection: the STATUS= line and the `Status` snapshot, from the engine's state.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::Engine;
use crate::issuer::Issuer;
use crate::status::{HostCertStatus, IdentityStatus, ReloadState, Status};

impl<I: Issuer> Engine<I> {
    /// One line for systemd's STATUS=.
    pub fn status_line(&self, now: SystemTime) -> String {
        let total = self.settings.identities.len();
        let failing: Vec<&str> = self
            .settings
            .identities
            .iter()
            .filter(|i| self.errors.contains_key(&Some(i.name.clone())))
            .map(|i| i.name.as_str())
            .collect();
        let next = self.next_wakeup(now);
        let next = humantime::format_rfc3339_seconds(next);
        let host = match (&self.host, self.errors.get(&None)) {
            (None, _) => "; no host issuing certificate",
            (Some(h), _) if now >= h.summary.not_after => {
                "; ALARM host issuing certificate expired, no leaf can be issued"
            }
            (Some(_), Some(_)) => "; host issuing certificate renewal failing",
            _ => "",
        };
        let reload_of = |state: ReloadState| -> Vec<&str> {
            self.settings
                .identities
                .iter()
                .filter(|i| self.reloads.get(&i.name).is_some_and(|r| r.state == state))
                .map(|i| i.name.as_str())
                .collect()
        };
        let mut reload = String::new();
        let alarms = reload_of(ReloadState::Failed);
        if !alarms.is_empty() {
            let _ = write!(
                reload,
                "; ALARM broker reload failed ({})",
                alarms.join(", ")
            );
        }
        let pending = reload_of(ReloadState::Pending);
        if !pending.is_empty() {
            let _ = write!(reload, "; reload pending ({})", pending.join(", "));
        }
        if failing.is_empty() {
            format!("{total} identities ok; next renewal {next}{host}{reload}")
        } else {
            format!(
                "{} of {total} identities failing ({}); next attempt {next}{host}{reload}",
                failing.len(),
                failing.join(", ")
            )
        }
    }

    /// A digest of the trusted roots the truststores carry (`None` before the first host
    /// certificate): it changes when the trust bundle changes.
    pub fn trust_digest(&self) -> Option<String> {
        let h = self.host.as_ref()?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for r in &h.roots {
            ctx.update(&(r.len() as u64).to_be_bytes());
            ctx.update(r);
        }
        Some(
            ctx.finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// A snapshot for `leafctl status`.
    pub fn status(&self, now: SystemTime) -> Status {
        let host_cert = self.state.host.as_ref().map(|h| HostCertStatus {
            serial: h.serial.clone(),
            not_after: h.not_after,
            next_renewal: h.next_renewal,
            last_error: self.errors.get(&None).cloned(),
        });
        let identities = self
            .settings
            .identities
            .iter()
            .map(|i| {
                let s = self.state.identities.get(&i.name);
                IdentityStatus {
                    name: i.name.clone(),
                    serial: s.map(|s| s.serial.clone()),
                    subject: s.map(|s| s.subject.clone()),
                    issuer: s.and(self.host.as_ref()).map(|h| h.summary.subject.clone()),
                    sans: s.map(|s| s.sans.clone()).unwrap_or_default(),
                    not_before: s.map(|s| s.not_before),
                    not_after: s.map(|s| s.not_after),
                    next_renewal: s.map(|s| s.next_renewal),
                    rotations: s.map(|s| s.rotations).unwrap_or(0),
                    last_error: self.errors.get(&Some(i.name.clone())).cloned(),
                    outputs: self.active_outputs(i).into_iter().map(|o| o.path).collect(),
                    reload: self.reloads.get(&i.name).cloned(),
                    counters: self.counters.get(&i.name).cloned().unwrap_or_default(),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            updated: now,
            summary: self.status_line(now),
            host_key: self.host_key_info.clone(),
            host_cert,
            identities,
            ca: self.ca_stats.clone(),
        }
    }
}
