//! The renewal engine: keeps the host issuing certificate and every identity's leaf fresh.
//!
//! It is driven by the daemon loop (`tick`, then sleep until `next_wakeup`). All decisions
//! about *when* come from [`super::policy`]; this file does the I/O.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Identity, RenewalSettings, San, Settings};
use crate::issuer::{HostCertRequest, Issuer, IssuerKind};
use crate::keys::worker::KeyService;
use crate::keys::{KeyAlgorithm, KeyInfo, KeyRef, KeySpec};
use crate::keystore;
use crate::renew::mint::{self, Minted};
use crate::renew::policy::{next_renewal, retry_delay};
use crate::state::status::{HostCertStatus, IdentityStatus, Status};
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
        for o in settings
            .identities
            .iter()
            .flat_map(|i| i.keystores.iter().chain(&i.truststores))
        {
            if let (Some(dir), Some(name)) =
                (o.path.parent(), o.path.file_name().and_then(|n| n.to_str()))
            {
                report.stale_temps_removed += keystore::remove_stale_temps(dir, name);
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
        let needed = required_names(&self.settings);
        if needed.is_empty() {
            // No identities: nothing to certify names for.
            return false;
        }
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
            || identity
                .keystores
                .iter()
                .chain(&identity.truststores)
                .any(|o| !o.path.exists())
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
            match self.rotate(identity, now).await {
                Ok(ev) => {
                    self.retry_at.remove(&Some(identity.name.clone()));
                    self.errors.remove(&Some(identity.name.clone()));
                    events.push(ev);
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
                    events.push(Event::Failed {
                        identity: Some(identity.name.clone()),
                        error,
                        retry_at,
                    });
                }
            }
        }
        events
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
        let issued = self.issuer.issue_host_cert(&req, now).await?;
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
        for e in &encoded {
            keystore::write_output(e.output, &e.bytes).map_err(Error::Write)?;
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
        if failing.is_empty() {
            format!("{total} identities ok; next renewal {next}{host}")
        } else {
            format!(
                "{} of {total} identities failing ({}); next attempt {next}{host}",
                failing.len(),
                failing.join(", ")
            )
        }
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
                    issuer: None,
                    sans: s.map(|s| s.sans.clone()).unwrap_or_default(),
                    not_before: s.map(|s| s.not_before),
                    not_after: s.map(|s| s.not_after),
                    next_renewal: s.map(|s| s.next_renewal),
                    rotations: s.map(|s| s.rotations).unwrap_or(0),
                    last_error: self.errors.get(&Some(i.name.clone())).cloned(),
                    outputs: i
                        .keystores
                        .iter()
                        .chain(&i.truststores)
                        .map(|o| o.path.clone())
                        .collect(),
                    reload: None,
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
        }
    }
}
