//! The renewal engine: keeps the host issuing certificate and every identity's leaf fresh.
//!
//! It is driven by the daemon loop (`tick`, then sleep until `next_wakeup`). All decisions
//! about *when* come from [`super::policy`]; this file does the I/O.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{
    Identity, KafkaReloadMode, Output, ReloadAction, RenewalSettings, San, Settings, StoreFormat,
};
use crate::issuer::{HostCertRequest, Issuer, IssuerKind};
use crate::keys::worker::KeyService;
use crate::keys::{KeyAlgorithm, KeyInfo, KeyRef, KeySpec};
use crate::keystore;
use crate::reload::run::{Job, Outcome};
use crate::renew::mint::{self, Minted};
use crate::renew::policy::{next_renewal, retry_delay};
use crate::state::status::{
    CaStats, HostCertStatus, IdentityCounters, IdentityStatus, ReloadState, ReloadStatus, Status,
};
use crate::state::{self, HostCertState, IdentityState, Loaded, State, StateStore};
use crate::x509::{self, CertSummary};

/// The label of the host key in the key backend.
pub const HOST_KEY_LABEL: &str = "host";

/// Engine errors. Messages are safe to show operators: no secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key backend failed.
    #[error("key backend failed")]
    Keys(#[from] crate::keys::Error),
    /// The issuer failed.
    #[error("issuer failed")]
    Issuer(#[from] crate::issuer::Error),
    /// Minting or encoding failed.
    #[error(transparent)]
    Mint(#[from] mint::Error),
    /// A certificate could not be read.
    #[error(transparent)]
    X509(#[from] x509::Error),
    /// Writing a store failed (the error names the file).
    #[error(transparent)]
    Write(keystore::Error),
    /// Saving state failed.
    #[error(transparent)]
    State(#[from] state::Error),
    /// The change would make Kafka reject the new keystore.
    #[error("{0}")]
    Unsafe(String),
    /// No host issuing certificate is available yet.
    #[error("no host issuing certificate yet")]
    NoHostCert,
}

/// The full error chain on one line, for logs, STATUS and the state file.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// What a tick did, for logging and signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new host issuing certificate.
    HostCertIssued {
        /// Serial (hex).
        serial: String,
        /// notAfter.
        not_after: SystemTime,
    },
    /// A leaf was rotated and every store written.
    Rotated {
        /// Identity.
        identity: String,
        /// New serial.
        serial: String,
        /// notAfter.
        not_after: SystemTime,
    },
    /// A rotation or the host certificate failed; old stores stay in place.
    Failed {
        /// Identity, or `None` for the host certificate.
        identity: Option<String>,
        /// The error chain.
        error: String,
        /// When the next attempt is.
        retry_at: SystemTime,
    },
}

struct HostCert {
    chain: Vec<Vec<u8>>,
    roots: Vec<Vec<u8>>,
    summary: CertSummary,
}

/// The engine.
pub struct Engine {
    settings: Arc<Settings>,
    keys: KeyService,
    issuer: IssuerKind,
    store: StateStore,
    state: State,
    host_key: KeyRef,
    host_key_info: Option<KeyInfo>,
    host: Option<HostCert>,
    host_failures: u32,
    retry_at: HashMap<Option<String>, SystemTime>,
    /// Last error per identity (`None`: the host certificate), also for identities that
    /// never succeeded and so have no state entry yet.
    errors: HashMap<Option<String>, String>,
    /// The reload after each identity's last rotation.
    reloads: HashMap<String, ReloadStatus>,
    /// Counters per identity since start.
    counters: HashMap<String, IdentityCounters>,
    /// CA request counters since start.
    ca_stats: CaStats,
}

/// Whether an identity's stores alternate between two paths for a kafka reload.
pub fn alternates(identity: &Identity) -> bool {
    identity
        .reload
        .actions
        .iter()
        .any(|a| matches!(a, ReloadAction::Kafka(k) if k.mode == KafkaReloadMode::Alternate))
}

/// The output as written to its alternate path or to its configured one.
fn placed(output: &Output, alternate: bool) -> Output {
    let mut o = output.clone();
    if alternate {
        o.path = keystore::alternate_path(&output.path);
    }
    o
}

/// What `Engine::start` found, for the log.
#[derive(Debug, Default)]
pub struct StartReport {
    /// The state file was corrupt: where it went and why.
    pub corrupt_state: Option<(String, String)>,
    /// A host key was generated.
    pub generated_host_key: bool,
    /// Temporary files left by an interrupted write, removed.
    pub stale_temps_removed: usize,
}

fn host_renewal(settings: &Settings) -> RenewalSettings {
    RenewalSettings {
        at: 2.0 / 3.0,
        jitter: 0.05,
        min_delay: if settings.daemon.testing_short_lifetimes {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        },
    }
}

fn retry_base(settings: &Settings) -> (Duration, Duration) {
    if settings.daemon.testing_short_lifetimes {
        (Duration::from_millis(500), Duration::from_secs(5))
    } else {
        (Duration::from_secs(30), Duration::from_secs(600))
    }
}

/// A stable digest of what an identity's leaf and stores depend on (passwords excluded: after
/// changing a store password, renew the identity).
pub fn config_digest(identity: &Identity) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{:?}|{:?}|{}|{:?}|{:?}",
        identity.subject, identity.sans, identity.key_type, identity.ekus, identity.lifetime
    );
    for (kind, outputs) in [("k", &identity.keystores), ("t", &identity.truststores)] {
        for o in outputs {
            let _ = write!(
                s,
                "|{kind}:{:?}:{}:{}:{:?}:{:?}:{:o}",
                o.format,
                o.path.display(),
                o.alias,
                o.owner,
                o.group,
                o.mode
            );
        }
    }
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// All names any identity needs: the host issuing certificate's constraints.
pub fn required_names(settings: &Settings) -> Vec<San> {
    let set: BTreeSet<San> = settings
        .identities
        .iter()
        .flat_map(|i| i.sans.iter().cloned())
        .collect();
    set.into_iter().collect()
}

fn pem_chain(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .map(|v| {
            v.into_iter()
                .filter(|p| p.tag() == "CERTIFICATE")
                .map(|p| p.into_contents())
                .collect()
        })
        .unwrap_or_default()
}

impl Engine {
    /// Loads state, opens (or creates) the host key and picks up a still-good host certificate.
    pub async fn start(
        settings: Arc<Settings>,
        keys: KeyService,
        issuer: IssuerKind,
        now: SystemTime,
    ) -> Result<(Self, StartReport), Error> {
        let mut report = StartReport::default();
        let store = StateStore::new(&settings.daemon.state_directory);
        let state = match store.load(now) {
            Loaded::Found(s) => s,
            Loaded::Fresh => State {
                version: state::VERSION,
                ..Default::default()
            },
            Loaded::Corrupt { moved_to, reason } => {
                report.corrupt_state = Some((moved_to.display().to_string(), reason));
                State {
                    version: state::VERSION,
                    ..Default::default()
                }
            }
        };
        let algorithm = settings.key.algorithm;
        let (host_key, generated) = keys
            .with_backend(move |b| -> Result<(KeyRef, bool), crate::keys::Error> {
                match b.open(HOST_KEY_LABEL)? {
                    Some(k) => Ok((k, false)),
                    None => Ok((
                        b.generate(&KeySpec {
                            label: HOST_KEY_LABEL.into(),
                            algorithm,
                        })?,
                        true,
                    )),
                }
            })
            .await??;
        report.generated_host_key = generated;
        for i in &settings.identities {
            for o in i.keystores.iter().chain(&i.truststores) {
                let alternate = alternates(i).then(|| keystore::alternate_path(&o.path));
                for path in std::iter::once(o.path.clone()).chain(alternate) {
                    if let (Some(dir), Some(name)) =
                        (path.parent(), path.file_name().and_then(|n| n.to_str()))
                    {
                        report.stale_temps_removed += keystore::remove_stale_temps(dir, name);
                    }
                }
            }
        }
        let (host_spki, host_key_info) = {
            let k = host_key.clone();
            keys.with_backend(move |b| -> Result<_, crate::keys::Error> {
                Ok((b.public_key(&k)?, b.info(&k).ok()))
            })
            .await??
        };
        let host = state.host.as_ref().and_then(|h| {
            let chain = pem_chain(&h.chain_pem);
            let roots = pem_chain(&h.roots_pem);
            let summary = x509::summarize(chain.first()?, "host issuing certificate").ok()?;
            (summary.spki == host_spki && !roots.is_empty()).then_some(HostCert {
                chain,
                roots,
                summary,
            })
        });
        let engine = Self {
            settings,
            keys,
            issuer,
            store,
            state,
            host_key,
            host_key_info,
            host,
            host_failures: 0,
            retry_at: HashMap::new(),
            errors: HashMap::new(),
            reloads: HashMap::new(),
            counters: HashMap::new(),
            ca_stats: CaStats::default(),
        };
        Ok((engine, report))
    }

    /// Replaces the settings (SIGHUP). Identities whose config changed are renewed on the next
    /// tick; removed identities are forgotten (their files are left in place).
    pub fn apply_settings(&mut self, settings: Arc<Settings>) {
        let names: BTreeSet<&str> = settings
            .identities
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        self.state
            .identities
            .retain(|k, _| names.contains(k.as_str()));
        self.retry_at.clear();
        self.errors.clear();
        self.reloads.retain(|k, _| names.contains(k.as_str()));
        self.settings = settings;
    }

    /// Current settings.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The key service.
    pub fn keys(&self) -> &KeyService {
        &self.keys
    }

    fn host_due(&self, now: SystemTime) -> bool {
        if self.settings.identities.is_empty() {
            // No identities: nothing to issue leaves for.
            return false;
        }
        let needed = required_names(&self.settings);
        let Some(h) = &self.host else { return true };
        if !needed
            .iter()
            .all(|n| x509::name_permitted(n, &h.summary.permitted))
        {
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

    fn identity_due(&self, identity: &Identity, now: SystemTime) -> bool {
        let blocked = self
            .retry_at
            .get(&Some(identity.name.clone()))
            .is_some_and(|t| now < *t);
        !blocked && self.identity_needs(identity, now)
    }

    fn identity_needs(&self, identity: &Identity, now: SystemTime) -> bool {
        let Some(s) = self.state.identities.get(&identity.name) else {
            return true;
        };
        s.in_progress
            || s.config_digest != config_digest(identity)
            || now >= s.next_renewal
            || now >= s.not_after
            || self
                .active_outputs(identity)
                .iter()
                .any(|o| !o.path.exists())
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

    /// Does whatever is due at `now`: the host certificate first, then every due identity.
    pub async fn tick(&mut self, now: SystemTime) -> Vec<Event> {
        let mut events = Vec::new();
        let host_blocked = self.retry_at.get(&None).is_some_and(|t| now < *t);
        if !host_blocked && self.host_due(now) {
            match self.renew_host_cert(now).await {
                Ok(ev) => {
                    self.host_failures = 0;
                    self.retry_at.remove(&None);
                    self.errors.remove(&None);
                    events.push(ev);
                }
                Err(e) => {
                    self.host_failures += 1;
                    let retry_at = now + self.retry_delay(self.host_failures);
                    self.retry_at.insert(None, retry_at);
                    self.errors.insert(None, chain(&e));
                    events.push(Event::Failed {
                        identity: None,
                        error: chain(&e),
                        retry_at,
                    });
                }
            }
        }
        let settings = self.settings.clone();
        for identity in &settings.identities {
            if !self.identity_due(identity, now) {
                continue;
            }
            events.push(self.rotate_recorded(identity, now).await);
        }
        events
    }

    /// Renews `name` now, whatever its schedule (`leafctl renew`). Returns `None` if no
    /// identity has that name; otherwise the events, the last of which is the rotation or
    /// its failure.
    pub async fn renew_now(&mut self, name: &str, now: SystemTime) -> Option<Vec<Event>> {
        let settings = self.settings.clone();
        let identity = settings.identities.iter().find(|i| i.name == name)?;
        let mut events = Vec::new();
        if self.host_due(now) {
            match self.renew_host_cert(now).await {
                Ok(ev) => {
                    self.host_failures = 0;
                    self.retry_at.remove(&None);
                    self.errors.remove(&None);
                    events.push(ev);
                }
                Err(e) => {
                    // The leaf may still be mintable under the current host certificate.
                    self.errors.insert(None, chain(&e));
                }
            }
        }
        events.push(self.rotate_recorded(identity, now).await);
        Some(events)
    }

    /// Rotates one identity and records the outcome (retry schedule, errors, state).
    async fn rotate_recorded(&mut self, identity: &Identity, now: SystemTime) -> Event {
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

    fn retry_delay(&self, failures: u32) -> Duration {
        let (base, max) = retry_base(&self.settings);
        retry_delay(failures, base, max, rand::random::<f64>())
    }

    async fn renew_host_cert(&mut self, now: SystemTime) -> Result<Event, Error> {
        let names = required_names(&self.settings);
        let spki = {
            let k = self.host_key.clone();
            self.keys.with_backend(move |b| b.public_key(&k)).await??
        };
        let req = HostCertRequest {
            spki_der: spki,
            algorithm: self.settings.key.algorithm,
            names,
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

    /// Kafka refuses a keystore whose DN changes or whose SANs shrink, unless configured to
    /// allow it: check before minting.
    fn check_stable(&self, identity: &Identity) -> Result<(), Error> {
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

    async fn rotate(&mut self, identity: &Identity, now: SystemTime) -> Result<Event, Error> {
        self.check_stable(identity)?;
        let host = self.host.as_ref().ok_or(Error::NoHostCert)?;
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

    /// When something is next due (a renewal or a retry), at the latest in an hour.
    pub fn next_wakeup(&self, now: SystemTime) -> SystemTime {
        let gate = |key: Option<String>, due: SystemTime| match self.retry_at.get(&key) {
            Some(r) => due.max(*r),
            None => due,
        };
        let idle = now + Duration::from_secs(3600);
        let host_due = match &self.state.host {
            _ if self.host_due(now) => now,
            Some(h) => h.next_renewal,
            None => idle,
        };
        let mut t = idle.min(gate(None, host_due));
        for i in &self.settings.identities {
            let due = match self.state.identities.get(&i.name) {
                _ if self.identity_needs(i, now) => now,
                Some(s) => s.next_renewal,
                None => now,
            };
            t = t.min(gate(Some(i.name.clone()), due));
        }
        t.max(now)
    }

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

    /// The host key algorithm (for status).
    pub fn host_key_algorithm(&self) -> KeyAlgorithm {
        self.host_key.algorithm
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
