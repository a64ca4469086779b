//! The renewal engine: keeps the host issuing certificate and every identity's leaf fresh.
//!
//! It is driven by the daemon loop (`tick`, then sleep until `next_wakeup`). All decisions
//! about *when* come from [`super::policy`]; the engine does the I/O. It is generic over
//! the [`Issuer`], so its unit tests run it against a fake one.
//!
//! - `mod.rs`: the engine, its start, the tick and the wake-up plan;
//! - `host`: the host issuing certificate;
//! - `rotate`: leaf rotation;
//! - `reloads`: reload bookkeeping;
//! - `status`: the STATUS= line and the status snapshot.

mod host;
mod reloads;
mod rotate;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::issuer::{Issuer, IssuerKind};
use crate::keys::worker::KeyService;
use crate::keys::{KeyRef, KeySpec};
use crate::keystore;
use crate::renew::mint::{self};
use crate::renew::policy::retry_delay;
use crate::settings::{
    Identity, KafkaReloadMode, Output, ReloadAction, RenewalSettings, San, Settings,
};
use crate::state::{self, Loaded, State, StateStore};
use crate::status::{CaStats, IdentityCounters, ReloadStatus};
use crate::vocab::{KeyAlgorithm, KeyInfo, Subject};
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
    /// The host issuing certificate has expired and could not be renewed: no leaf is minted
    /// under it (a leaf never outlives its issuer).
    #[error(
        "the host issuing certificate expired at {}; no leaf can be issued until the issuer renews it",
        humantime::format_rfc3339_seconds(*not_after)
    )]
    HostCertExpired {
        /// The host certificate's notAfter.
        not_after: SystemTime,
    },
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

/// The engine, generic over who certifies the host key (the daemon uses [`IssuerKind`];
/// tests use a fake).
pub struct Engine<I = IssuerKind> {
    settings: Arc<Settings>,
    keys: KeyService,
    issuer: I,
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
        o.path = crate::settings::alternate_path(&output.path);
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
    use crate::settings::defaults;
    RenewalSettings {
        at: defaults::RENEW_AT,
        jitter: defaults::RENEW_JITTER,
        min_delay: if settings.daemon.testing_short_lifetimes {
            defaults::MIN_DELAY_TESTING
        } else {
            defaults::MIN_DELAY
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

/// All names any identity needs: its SANs, and for an identity without a DNS SAN the CN
/// Java PKIX and OpenSSL check as a DNS name ([`x509::cn_name_constraint`]; config
/// validation refuses CNs no constraint can express). The host issuing certificate's
/// dNSName and iPAddress constraints.
pub fn required_names(settings: &Settings) -> Vec<San> {
    let set: BTreeSet<San> = settings
        .identities
        .iter()
        .flat_map(|i| {
            let cn = x509::cn_name_constraint(&i.subject, &i.sans).ok().flatten();
            i.sans.iter().cloned().chain(cn)
        })
        .collect();
    set.into_iter().collect()
}

/// Every identity's subject: the host issuing certificate's directoryName constraints, so
/// the host can mint no other principal.
pub fn required_subjects(settings: &Settings) -> Vec<Subject> {
    let crate::settings::IssuerSettings::Local(local) = &settings.issuer;
    if !local.constrain_subjects {
        return Vec::new();
    }
    // An empty subject is no constraint (it would permit every subject); validators do not
    // check an empty subject against directoryName constraints either.
    let set: BTreeSet<&Subject> = settings
        .identities
        .iter()
        .map(|i| &i.subject)
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().cloned().collect()
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

impl<I: Issuer> Engine<I> {
    /// Loads state, opens (or creates) the host key and picks up a still-good host certificate.
    pub async fn start(
        settings: Arc<Settings>,
        keys: KeyService,
        issuer: I,
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
                let alternate = alternates(i).then(|| crate::settings::alternate_path(&o.path));
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

    /// Does whatever is due at `now`: the host certificate first, then every due identity.
    pub async fn tick(&mut self, now: SystemTime) -> Vec<Event> {
        let mut events = Vec::new();
        let host_blocked = self.retry_at.get(&None).is_some_and(|t| now < *t);
        if !host_blocked && self.host_due(now) {
            events.extend(self.renew_host_recorded(now, true).await);
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
            // On failure the leaf may still be mintable under the current host certificate,
            // and the scheduled retries keep their plan.
            events.extend(self.renew_host_recorded(now, false).await);
        }
        events.push(self.rotate_recorded(identity, now).await);
        Some(events)
    }

    fn retry_delay(&self, failures: u32) -> Duration {
        let (base, max) = retry_base(&self.settings);
        retry_delay(failures, base, max, rand::random::<f64>())
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
            let due = self.identity_due_at(i, now);
            t = t.min(gate(Some(i.name.clone()), due));
        }
        t.max(now)
    }

    /// The host key algorithm (for status).
    pub fn host_key_algorithm(&self) -> KeyAlgorithm {
        self.host_key.algorithm
    }
}
