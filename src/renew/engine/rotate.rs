//! Leaf rotation: when an identity is due, the checks before minting, and writing its
//! stores with the state around them.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::{Engine, Error, Event, alternates, config_digest, placed};
use crate::error::chain;
use crate::issuer::Issuer;
use crate::keystore;
use crate::renew::mint::{self, Minted};
use crate::renew::policy::next_renewal;
use crate::settings::{Identity, Output, San};
use crate::state::{self, IdentityState};
use crate::status::{ReloadState, ReloadStatus};
use crate::x509;

impl<I: Issuer> Engine<I> {
    pub(super) fn identity_due(&self, identity: &Identity, now: SystemTime) -> bool {
        let blocked = self
            .retry_at
            .get(&Some(identity.name.clone()))
            .is_some_and(|t| now < *t);
        !blocked && self.identity_needs(identity, now)
    }

    pub(super) fn identity_needs(&self, identity: &Identity, now: SystemTime) -> bool {
        now >= self.identity_due_at(identity, now)
    }

    /// When the identity's leaf is next due: at once for a new identity, an unfinished
    /// rotation, a config change or a missing store; else at its planned renewal. A leaf
    /// already cut at the host certificate's notAfter cannot get longer under that
    /// certificate, so renewing it early gains nothing: it is due when it expires, unless a
    /// newer host certificate comes first.
    pub(super) fn identity_due_at(&self, identity: &Identity, now: SystemTime) -> SystemTime {
        let Some(s) = self.state.identities.get(&identity.name) else {
            return now;
        };
        let changed = s.in_progress
            || s.config_digest != config_digest(identity)
            || self
                .active_outputs(identity)
                .iter()
                .any(|o| !o.path.exists());
        if changed {
            return now;
        }
        let cut_at_host = self
            .host
            .as_ref()
            .is_some_and(|h| s.not_after >= h.summary.not_after);
        if cut_at_host {
            s.not_after
        } else {
            s.next_renewal.min(s.not_after)
        }
    }

    /// The identity's outputs where its current stores are (the alternate paths when the
    /// last rotation wrote there).
    pub fn active_outputs(&self, identity: &Identity) -> Vec<Output> {
        let alternate = alternates(identity)
            && self
                .state
                .identities
                .get(&identity.name)
                .is_some_and(|s| s.written_alternate);
        identity
            .keystores
            .iter()
            .chain(&identity.truststores)
            .map(|o| placed(o, alternate))
            .collect()
    }

    /// Rotates one identity and records the outcome (retry schedule, errors, state).
    pub(super) async fn rotate_recorded(&mut self, identity: &Identity, now: SystemTime) -> Event {
        let result = self.rotate(identity, now).await;
        let counters = self.counters.entry(identity.name.clone()).or_default();
        match &result {
            Ok(_) => counters.renewals += 1,
            Err(_) => counters.renewal_failures += 1,
        }
        match result {
            Ok(ev) => {
                self.retry_at.remove(&Some(identity.name.clone()));
                self.errors.remove(&Some(identity.name.clone()));
                let reloads =
                    !identity.reload.actions.is_empty() || identity.reload.verify.is_some();
                if let Event::Rotated { serial, .. } = &ev
                    && reloads
                {
                    let serial = serial.clone();
                    self.reloads.insert(
                        identity.name.clone(),
                        ReloadStatus {
                            state: ReloadState::Pending,
                            serial,
                            at: now,
                            detail: "reload actions queued".to_owned(),
                        },
                    );
                }
                ev
            }
            Err(e) => {
                let error = chain(&e);
                let failures = self
                    .state
                    .identities
                    .get(&identity.name)
                    .map(|s| s.failures + 1)
                    .unwrap_or(1);
                let retry_at = now + self.retry_delay(failures);
                self.retry_at.insert(Some(identity.name.clone()), retry_at);
                self.errors
                    .insert(Some(identity.name.clone()), error.clone());
                if let Some(s) = self.state.identities.get_mut(&identity.name) {
                    s.failures = failures;
                    s.last_error = Some(error.clone());
                }
                let _ = self.store.save(&self.state);
                Event::Failed {
                    identity: Some(identity.name.clone()),
                    error,
                    retry_at,
                }
            }
        }
    }

    /// Kafka refuses a keystore whose DN changes or whose SANs shrink, unless configured to
    /// allow it: check before minting.
    pub(super) fn check_stable(&self, identity: &Identity) -> Result<(), Error> {
        let Some(prev) = self.state.identities.get(&identity.name) else {
            return Ok(());
        };
        let subject = x509::subject_string(&identity.subject);
        if prev.subject != subject && !identity.allow_dn_change {
            return Err(Error::Unsafe(format!(
                "identity {}: subject would change from {:?} to {:?}; Kafka rejects a keystore whose DN changes \
                 (set allow-dn-change = true here and ssl.allow.dn.changes=true on the broker, or restore the subject)",
                identity.name, prev.subject, subject
            )));
        }
        let new: BTreeSet<San> = identity.sans.iter().cloned().collect();
        let removed: Vec<String> = state::sans_from_strings(&prev.sans)
            .into_iter()
            .filter(|s| !new.contains(s))
            .map(|s| state::sans_to_strings(&[s]).concat())
            .collect();
        if !removed.is_empty() && !identity.allow_san_change {
            return Err(Error::Unsafe(format!(
                "identity {}: SANs {:?} would be removed; Kafka rejects a keystore whose SANs shrink \
                 (set allow-san-change = true here and ssl.allow.san.changes=true on the broker, or keep the names)",
                identity.name, removed
            )));
        }
        Ok(())
    }

    pub(super) async fn rotate(
        &mut self,
        identity: &Identity,
        now: SystemTime,
    ) -> Result<Event, Error> {
        self.check_stable(identity)?;
        let host = self.host.as_ref().ok_or(Error::NoHostCert)?;
        if now >= host.summary.not_after {
            return Err(Error::HostCertExpired {
                not_after: host.summary.not_after,
            });
        }
        if let Some(n) = identity
            .sans
            .iter()
            .find(|n| !x509::name_permitted(n, &host.summary.permitted))
        {
            return Err(Error::Unsafe(format!(
                "identity {}: name {} is outside the host issuing certificate's constraints",
                identity.name,
                state::sans_to_strings(std::slice::from_ref(n)).concat()
            )));
        }
        if !identity.subject.is_empty()
            && !x509::subject_permitted(&identity.subject, &host.summary.permitted_subjects)
        {
            return Err(Error::Unsafe(format!(
                "identity {}: subject {} is outside the host issuing certificate's constraints",
                identity.name,
                x509::subject_string(&identity.subject)
            )));
        }
        let (chain, roots) = (host.chain.clone(), host.roots.clone());
        let host_cert = chain.first().cloned().ok_or(Error::NoHostCert)?;
        let minted: Minted = {
            let (key, id) = (self.host_key.clone(), identity.clone());
            self.keys
                .with_backend(move |b| mint::mint_leaf(b, &key, &host_cert, &id, now))
                .await??
        };
        let summary = x509::summarize(&minted.cert_der, "leaf")?;
        let encoded = mint::encode_outputs(identity, &minted, &chain, &roots)?;

        // Mark the rotation in progress first: a crash between the writes below leaves every
        // file complete, and this flag makes the next start finish the rotation.
        let prev_rotations = self
            .state
            .identities
            .get(&identity.name)
            .map(|s| s.rotations)
            .unwrap_or(0);
        if let Some(s) = self.state.identities.get_mut(&identity.name) {
            s.in_progress = true;
            self.store.save(&self.state)?;
        }
        // Alternating: write where the broker is not pointing; never overwrite the file its
        // current override names.
        let broker_alternate = self
            .state
            .identities
            .get(&identity.name)
            .and_then(|s| s.broker_alternate);
        let alternate = alternates(identity) && broker_alternate == Some(false);
        for e in &encoded {
            keystore::write_output(&placed(e.output, alternate), &e.bytes).map_err(Error::Write)?;
        }
        let planned = next_renewal(
            summary.not_before,
            summary.not_after,
            now,
            &identity.renewal,
            rand::random::<f64>() * 2.0 - 1.0,
        );
        self.state.identities.insert(
            identity.name.clone(),
            IdentityState {
                serial: summary.serial.clone(),
                not_before: summary.not_before,
                not_after: summary.not_after,
                next_renewal: planned,
                subject: x509::subject_string(&identity.subject),
                sans: state::sans_to_strings(&identity.sans),
                config_digest: config_digest(identity),
                rotations: prev_rotations + 1,
                in_progress: false,
                last_error: None,
                failures: 0,
                written_alternate: alternate,
                broker_alternate,
            },
        );
        self.store.save(&self.state)?;
        Ok(Event::Rotated {
            identity: identity.name.clone(),
            serial: summary.serial,
            not_after: summary.not_after,
        })
    }
}
