//! The daemon's status snapshot: what `leafctl status`, `Manager.GetStatus`, the metrics and
//! `status.json` show. Pure data; never holds secrets.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::vocab::KeyInfo;

/// The snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// leafd version.
    pub version: String,
    /// Daemon process id.
    pub pid: u32,
    /// When this snapshot was written.
    #[serde(with = "crate::status::rfc3339")]
    pub updated: SystemTime,
    /// The STATUS= line.
    pub summary: String,
    /// The host key as read back from its backend.
    pub host_key: Option<KeyInfo>,
    /// The host issuing certificate.
    pub host_cert: Option<HostCertStatus>,
    /// Per identity, in config order.
    pub identities: Vec<IdentityStatus>,
    /// Requests to the CA since the daemon started.
    #[serde(default)]
    pub ca: CaStats,
}

/// CA request counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaStats {
    /// Host issuing certificate requests.
    pub requests: u64,
    /// Of those, failed.
    pub failures: u64,
    /// Duration of the last request, seconds.
    pub last_seconds: f64,
    /// Sum of all request durations, seconds.
    pub seconds_sum: f64,
}

/// Per-identity counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityCounters {
    /// Rotations completed.
    pub renewals: u64,
    /// Rotation attempts that failed.
    pub renewal_failures: u64,
    /// Reloads whose served serial was verified (or whose actions all succeeded).
    pub reloads_verified: u64,
    /// Reloads that raised the alarm.
    pub reloads_failed: u64,
}

/// The host issuing certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostCertStatus {
    /// Serial (hex).
    pub serial: String,
    /// notAfter.
    #[serde(with = "crate::status::rfc3339")]
    pub not_after: SystemTime,
    /// Planned renewal.
    #[serde(with = "crate::status::rfc3339")]
    pub next_renewal: SystemTime,
    /// Last error, if renewing it fails.
    pub last_error: Option<String>,
}

/// One identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityStatus {
    /// Name.
    pub name: String,
    /// Serial of the leaf in the stores (hex), if any yet.
    pub serial: Option<String>,
    /// Subject of the leaf, RFC 2253 order (as Kafka derives the principal).
    #[serde(default)]
    pub subject: Option<String>,
    /// Issuer of the leaf (the host issuing certificate's subject), RFC 2253 order.
    #[serde(default)]
    pub issuer: Option<String>,
    /// SANs of the leaf (DNS names and IP literals).
    #[serde(default)]
    pub sans: Vec<String>,
    /// notBefore.
    #[serde(default, with = "crate::status::rfc3339::option")]
    pub not_before: Option<SystemTime>,
    /// notAfter.
    #[serde(with = "crate::status::rfc3339::option")]
    pub not_after: Option<SystemTime>,
    /// Planned renewal.
    #[serde(with = "crate::status::rfc3339::option")]
    pub next_renewal: Option<SystemTime>,
    /// Rotations so far.
    pub rotations: u64,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Output files.
    pub outputs: Vec<PathBuf>,
    /// The broker reload after the last rotation, if reload actions are configured.
    #[serde(default)]
    pub reload: Option<ReloadStatus>,
    /// Counters since the daemon started.
    #[serde(default)]
    pub counters: IdentityCounters,
}

/// Outcome of the reload actions and the served-certificate check after a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Where it stands.
    pub state: ReloadState,
    /// Serial the reload should make the broker serve (hex).
    pub serial: String,
    /// When the state last changed.
    #[serde(with = "crate::status::rfc3339")]
    pub at: SystemTime,
    /// Human-readable detail: what failed, or what was verified.
    pub detail: String,
}

/// Reload progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadState {
    /// Actions running or the served serial not yet seen; retrying.
    Pending,
    /// Every action succeeded and every listener serves the new serial.
    Verified,
    /// Alarm: an action failed for good or a listener never served the new serial.
    Failed,
}

pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}
