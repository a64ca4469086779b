//! Reload bookkeeping: which reload job a rotation needs, its progress and outcome, and
//! which of the alternating paths the broker is on.

use std::time::SystemTime;

use super::{Engine, alternates};
use crate::error::chain;
use crate::issuer::Issuer;
use crate::reload::run::{Job, Outcome};
use crate::settings::StoreFormat;
use crate::status::{ReloadState, ReloadStatus};

impl<I: Issuer> Engine<I> {
    /// Identities whose broker was not told about the current stores: alternating ones whose
    /// last write went to the path the broker is not on (a crash or failure between write
    /// and reload).
    pub fn unreloaded_at_start(&self) -> Vec<String> {
        self.settings
            .identities
            .iter()
            .filter(|i| alternates(i))
            .filter(|i| {
                self.state.identities.get(&i.name).is_some_and(|s| {
                    !s.in_progress && s.broker_alternate != Some(s.written_alternate)
                })
            })
            .map(|i| i.name.clone())
            .collect()
    }

    /// The reload job for `name`'s current leaf, if it has reload actions or a check.
    pub fn reload_job(&self, name: &str) -> Option<Job> {
        let identity = self.settings.identities.iter().find(|i| i.name == name)?;
        if identity.reload.actions.is_empty() && identity.reload.verify.is_none() {
            return None;
        }
        let s = self.state.identities.get(name)?;
        let outputs = self.active_outputs(identity);
        let (keystores, truststores) = outputs.split_at(identity.keystores.len());
        let client_pems = self
            .settings
            .identities
            .iter()
            .filter_map(|i| {
                let pem = self
                    .active_outputs(i)
                    .into_iter()
                    .take(i.keystores.len())
                    .find(|o| o.format == StoreFormat::Pem)?;
                Some((i.name.clone(), pem.path))
            })
            .collect();
        Some(Job {
            identity: identity.clone(),
            serial: s.serial.clone(),
            not_after: s.not_after,
            keystores: keystores.iter().map(|o| o.path.clone()).collect(),
            truststores: truststores.iter().map(|o| o.path.clone()).collect(),
            roots: self
                .host
                .as_ref()
                .map(|h| h.roots.clone())
                .unwrap_or_default(),
            client_pems,
        })
    }

    /// Records reload progress for `name`'s leaf `serial` (ignored if a newer leaf exists).
    pub fn reload_progress(&mut self, name: &str, serial: &str, detail: &str, now: SystemTime) {
        if self.state.identities.get(name).map(|s| s.serial.as_str()) != Some(serial) {
            return;
        }
        self.reloads.insert(
            name.to_owned(),
            ReloadStatus {
                state: ReloadState::Pending,
                serial: serial.to_owned(),
                at: now,
                detail: detail.to_owned(),
            },
        );
    }

    /// Records how the reload of `name`'s leaf `serial` ended; remembers which paths the
    /// broker now uses. Returns false if a newer leaf made this outcome moot.
    pub fn reload_finished(
        &mut self,
        name: &str,
        serial: &str,
        outcome: &Outcome,
        now: SystemTime,
    ) -> bool {
        let Some(s) = self.state.identities.get_mut(name) else {
            return false;
        };
        if s.serial != serial {
            return false;
        }
        if outcome.kafka_accepted && s.broker_alternate != Some(s.written_alternate) {
            s.broker_alternate = Some(s.written_alternate);
            if let Err(e) = self.store.save(&self.state) {
                tracing::warn!("could not save state: {}", chain(&e));
            }
        }
        let counters = self.counters.entry(name.to_owned()).or_default();
        if outcome.ok {
            counters.reloads_verified += 1;
        } else {
            counters.reloads_failed += 1;
        }
        self.reloads.insert(
            name.to_owned(),
            ReloadStatus {
                state: if outcome.ok {
                    ReloadState::Verified
                } else {
                    ReloadState::Failed
                },
                serial: serial.to_owned(),
                at: now,
                detail: outcome.detail.clone(),
            },
        );
        true
    }
}
