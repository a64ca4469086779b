//! Persistent state: a versioned JSON file in the state directory, written atomically.
//!
//! A state file that cannot be read is moved aside and rebuilt: it never stops the daemon
//! from serving, because the keystores on disk are complete on their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub mod status;

use crate::atomic::{FileSpec, write_atomic};
use crate::vocab::San;

/// The schema version this build writes.
pub const VERSION: u32 = 1;

/// Everything leafd remembers across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Schema version.
    pub version: u32,
    /// The current host issuing certificate.
    pub host: Option<HostCertState>,
    /// Per identity, by name.
    pub identities: BTreeMap<String, IdentityState>,
}

/// The host issuing certificate and the roots that go with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCertState {
    /// Chain, host certificate first (PEM).
    pub chain_pem: String,
    /// Trusted roots (PEM).
    pub roots_pem: String,
    /// Serial (hex).
    pub serial: String,
    /// notAfter.
    #[serde(with = "crate::status::rfc3339")]
    pub not_after: SystemTime,
    /// Planned renewal.
    #[serde(with = "crate::status::rfc3339")]
    pub next_renewal: SystemTime,
}

/// One identity's current leaf and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityState {
    /// Serial of the leaf in the keystores (hex).
    pub serial: String,
    /// notBefore.
    #[serde(with = "crate::status::rfc3339")]
    pub not_before: SystemTime,
    /// notAfter.
    #[serde(with = "crate::status::rfc3339")]
    pub not_after: SystemTime,
    /// Planned renewal.
    #[serde(with = "crate::status::rfc3339")]
    pub next_renewal: SystemTime,
    /// Subject as Kafka prints it.
    pub subject: String,
    /// SANs (`dns` names and IP literals).
    pub sans: Vec<String>,
    /// Digest of the identity's config when the leaf was written.
    pub config_digest: String,
    /// Rotations completed since the state was created.
    pub rotations: u64,
    /// Set while outputs are being replaced; a crash leaves it set, so the next start renews.
    pub in_progress: bool,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
    /// The stores were written to their alternate paths (`<stem>.alt.<ext>`), for a kafka
    /// reload in `alternate` mode.
    #[serde(default)]
    pub written_alternate: bool,
    /// Which path the broker was last told to use: `Some(true)` the alternate paths,
    /// `Some(false)` the configured ones, `None` never told (its static config).
    #[serde(default)]
    pub broker_alternate: Option<bool>,
}

/// Renders SANs for the state file.
pub fn sans_to_strings(sans: &[San]) -> Vec<String> {
    sans.iter()
        .map(|s| match s {
            San::Dns(d) => d.clone(),
            San::Ip(ip) => ip.to_string(),
        })
        .collect()
}

/// Parses SANs from the state file.
pub fn sans_from_strings(sans: &[String]) -> Vec<San> {
    sans.iter()
        .map(|s| {
            s.parse()
                .map(San::Ip)
                .unwrap_or_else(|_| San::Dns(s.clone()))
        })
        .collect()
}

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the state file failed.
    #[error("could not save state to {path}")]
    Save {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// A good state file.
    Found(State),
    /// No state file yet.
    Fresh,
    /// The file was unreadable or corrupt and has been moved to `moved_to`.
    Corrupt {
        /// Where the bad file now is.
        moved_to: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
}

/// The state file.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// State lives in `<dir>/state.json`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a corrupt file is moved aside (`state.json.corrupt-<unix time>`).
    pub fn load(&self, now: SystemTime) -> Loaded {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
            Err(e) => return self.move_aside(now, format!("unreadable: {e}")),
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(s) if s.version == VERSION => Loaded::Found(s),
            Ok(s) => self.move_aside(now, format!("unsupported version {}", s.version)),
            Err(e) => self.move_aside(now, format!("not valid state: {e}")),
        }
    }

    fn move_aside(&self, now: SystemTime, reason: String) -> Loaded {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let moved_to = self.path.with_extension(format!("json.corrupt-{secs}"));
        if let Err(e) = std::fs::rename(&self.path, &moved_to) {
            return Loaded::Corrupt {
                moved_to: self.path.clone(),
                reason: format!("{reason}; could not move it aside: {e}"),
            };
        }
        Loaded::Corrupt { moved_to, reason }
    }

    /// Writes the state atomically (0600).
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Save {
            path: self.path.display().to_string(),
            source: e,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(e.into()))?;
        write_atomic(
            &self.path,
            &bytes,
            &FileSpec {
                mode: 0o600,
                owner: None,
                group: None,
            },
        )
        .map_err(|e| err(e.into()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> State {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut s = State {
            version: VERSION,
            ..Default::default()
        };
        s.identities.insert(
            "broker".into(),
            IdentityState {
                serial: "01ab".into(),
                not_before: t,
                not_after: t + Duration::from_secs(3600),
                next_renewal: t + Duration::from_secs(2400),
                subject: "CN=a".into(),
                sans: vec!["a.example".into(), "127.0.0.1".into()],
                config_digest: "d".into(),
                rotations: 3,
                in_progress: false,
                last_error: None,
                failures: 0,
                written_alternate: false,
                broker_alternate: None,
            },
        );
        s
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        assert!(matches!(store.load(SystemTime::now()), Loaded::Fresh));
        store.save(&sample()).unwrap();
        match store.load(SystemTime::now()) {
            Loaded::Found(s) => assert_eq!(s, sample()),
            other => panic!("{other:?}"),
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), b"{ not json").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        match store.load(now) {
            Loaded::Corrupt { moved_to, .. } => {
                assert_eq!(moved_to, dir.path().join("state.json.corrupt-42"));
                assert!(moved_to.exists());
                assert!(!store.path().exists());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn future_version_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut s = sample();
        s.version = 99;
        std::fs::write(store.path(), serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(matches!(
            store.load(SystemTime::now()),
            Loaded::Corrupt { .. }
        ));
    }

    #[test]
    fn sans_round_trip() {
        let sans = vec![
            San::Dns("a.example".into()),
            San::Ip("127.0.0.1".parse().unwrap()),
        ];
        assert_eq!(sans_from_strings(&sans_to_strings(&sans)), sans);
    }
}
