//! The host issuing certificate: when it is due and how it is renewed.

use std::time::SystemTime;

use super::{Engine, Error, Event, HostCert, host_renewal, required_names, required_subjects};
use crate::error::chain;
use crate::issuer::{HostCertRequest, Issuer};
use crate::renew::policy::next_renewal;
use crate::state::HostCertState;
use crate::x509;

impl<I: Issuer> Engine<I> {
    /// Renews the host certificate and records the outcome: the error for STATUS, and with
    /// `schedule_retry` the next attempt with backoff. Returns the event to report.
    pub(super) async fn renew_host_recorded(
        &mut self,
        now: SystemTime,
        schedule_retry: bool,
    ) -> Option<Event> {
        match self.renew_host_cert(now).await {
            Ok(ev) => {
                self.host_failures = 0;
                self.retry_at.remove(&None);
                self.errors.remove(&None);
                Some(ev)
            }
            Err(e) => {
                self.errors.insert(None, chain(&e));
                if !schedule_retry {
                    return None;
                }
                self.host_failures += 1;
                let retry_at = now + self.retry_delay(self.host_failures);
                self.retry_at.insert(None, retry_at);
                Some(Event::Failed {
                    identity: None,
                    error: chain(&e),
                    retry_at,
                })
            }
        }
    }

    pub(super) fn host_due(&self, now: SystemTime) -> bool {
        if self.settings.identities.is_empty() {
            // No identities: nothing to issue leaves for.
            return false;
        }
        let Some(h) = &self.host else { return true };
        let names_ok = required_names(&self.settings)
            .iter()
            .all(|n| x509::name_permitted(n, &h.summary.permitted));
        let required = required_subjects(&self.settings);
        // Subject constraints switched off: a certificate that still carries them is
        // replaced, since that is what the operator turned them off for.
        let subjects_ok = (!required.is_empty() || h.summary.permitted_subjects.is_empty())
            && required
                .iter()
                .all(|s| x509::subject_permitted(s, &h.summary.permitted_subjects));
        if !names_ok || !subjects_ok {
            return true;
        }
        let planned = self
            .state
            .host
            .as_ref()
            .map(|s| s.next_renewal)
            .unwrap_or(now);
        now >= planned || now >= h.summary.not_after
    }

    pub(super) async fn renew_host_cert(&mut self, now: SystemTime) -> Result<Event, Error> {
        let names = required_names(&self.settings);
        let spki = {
            let k = self.host_key.clone();
            self.keys.with_backend(move |b| b.public_key(&k)).await??
        };
        let req = HostCertRequest {
            spki_der: spki,
            algorithm: self.settings.key.algorithm,
            names,
            subjects: required_subjects(&self.settings),
            hostname: self.settings.host.hostname.clone(),
        };
        let started = tokio::time::Instant::now();
        let issued = self.issuer.issue_host_cert(&req, now).await;
        let took = started.elapsed().as_secs_f64();
        self.ca_stats.requests += 1;
        self.ca_stats.last_seconds = took;
        self.ca_stats.seconds_sum += took;
        if issued.is_err() {
            self.ca_stats.failures += 1;
        }
        let issued = issued?;
        let first = issued.chain.first().ok_or(Error::NoHostCert)?;
        let summary = x509::summarize(first, "host issuing certificate")?;
        let planned = next_renewal(
            summary.not_before,
            summary.not_after,
            now,
            &host_renewal(&self.settings),
            rand::random::<f64>() * 2.0 - 1.0,
        );
        self.state.host = Some(HostCertState {
            chain_pem: x509::to_pem(&issued.chain),
            roots_pem: x509::to_pem(&issued.roots),
            serial: summary.serial.clone(),
            not_after: summary.not_after,
            next_renewal: planned,
        });
        self.store.save(&self.state)?;
        let ev = Event::HostCertIssued {
            serial: summary.serial.clone(),
            not_after: summary.not_after,
        };
        self.host = Some(HostCert {
            chain: issued.chain,
            roots: issued.roots,
            summary,
        });
        Ok(ev)
    }
}
