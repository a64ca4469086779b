//! Validated settings: the domain types the daemon runs on. Pure data (layer 0): built by
//! `config::load` from the merged files, everything here is already checked and expanded
//! (templates resolved, passwords read; `config::load_sources_only` records only where they
//! come from), so the daemon never sees a raw config value.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;
pub use crate::template::HostFacts;
pub use crate::vocab::{DnAttribute, Eku, KeyAlgorithm, San, StoreFormat, is_valid_identity_name};

/// Defaults, in one place: config validation fills them in, and the parts that run
/// without a config (the TPM backend's own default, the host certificate's renewal) use
/// the same values.
pub mod defaults {
    use std::time::Duration;

    /// `[daemon] state-directory`.
    pub const STATE_DIRECTORY: &str = "/var/lib/leafd";
    /// `[daemon] log-level`.
    pub const LOG_LEVEL: &str = "info";
    /// `[key.tpm] tcti`.
    pub const TPM_TCTI: &str = "device:/dev/tpmrm0";
    /// `[issuer] host-cert-validity`.
    pub const HOST_CERT_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
    /// `[issuer] root-validity`.
    pub const ROOT_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
    /// `lifetime` of a leaf.
    pub const LIFETIME: Duration = Duration::from_secs(3600);
    /// `renew-at`: the share of the lifetime after which to renew (leaves and the host
    /// certificate).
    pub const RENEW_AT: f64 = 2.0 / 3.0;
    /// `renew-jitter`: a share of the lifetime.
    pub const RENEW_JITTER: f64 = 0.05;
    /// Store file `mode`.
    pub const MODE: u32 = 0o600;
    /// Truststore entry `alias`.
    pub const TRUSTSTORE_ALIAS: &str = "leafd-ca";
    /// The shortest leaf `lifetime`.
    pub const MIN_LIFETIME: Duration = Duration::from_secs(300);
    /// The shortest leaf `lifetime` with `testing-short-lifetimes`.
    pub const MIN_LIFETIME_TESTING: Duration = Duration::from_secs(1);
    /// Never renew sooner than this after issuance.
    pub const MIN_DELAY: Duration = Duration::from_secs(30);
    /// [`MIN_DELAY`] with `testing-short-lifetimes`.
    pub const MIN_DELAY_TESTING: Duration = Duration::from_secs(1);
    /// A `kafka` reload's connect and request `timeout`.
    pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
    /// An `exec` reload's `timeout`.
    pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
    /// `[identity.verify] timeout`.
    pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);
    /// `reload-retry-for`.
    pub const RELOAD_RETRY_FOR: Duration = Duration::from_secs(600);
}

/// The sibling a store alternates with under a kafka reload in `alternate` mode:
/// `broker.p12` → `broker.alt.p12`, `broker` → `broker.alt`.
pub fn alternate_path(path: &std::path::Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.alt.{}", ext.to_string_lossy()),
        None => format!("{stem}.alt"),
    };
    path.with_file_name(name)
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The files that were read, main file first, then drop-ins in name order.
    pub sources: Vec<PathBuf>,
    /// Daemon-wide settings.
    pub daemon: DaemonSettings,
    /// Host facts used by templates.
    pub host: HostFacts,
    /// The host key.
    pub key: KeySettings,
    /// Who certifies the host key.
    pub issuer: IssuerSettings,
    /// Where metrics are exported.
    pub metrics: MetricsSettings,
    /// Certificate targets, in config order; names are unique.
    pub identities: Vec<Identity>,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Where the state file, the soft keys and the local CA live (0700).
    pub state_directory: PathBuf,
    /// A `tracing` filter directive such as `info` or `leafd=debug`.
    pub log_level: String,
    /// Allows leaf lifetimes below five minutes (down to one second). For tests only.
    pub testing_short_lifetimes: bool,
}

/// `[metrics]`: where the Prometheus text exposition of the status goes. Both are off by
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A file for node-exporter's textfile collector, rewritten atomically (mode 0644)
    /// after every status change.
    pub textfile: Option<PathBuf>,
    /// A loopback address to serve `GET /metrics` on (the endpoint is unauthenticated).
    pub listen: Option<std::net::SocketAddr>,
}

/// The host key backend and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    /// Which backend holds the host key.
    pub backend: BackendKind,
    /// Host key algorithm.
    pub algorithm: KeyAlgorithm,
}

/// Key backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// Software keys in the state directory (0600). Development and quickstart.
    Soft,
    /// A TPM 2.0 (feature `tpm`).
    Tpm(TpmSettings),
    /// A PKCS#11 token (feature `pkcs11`).
    Pkcs11(Pkcs11Settings),
}

impl BackendKind {
    /// The config spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Tpm(_) => "tpm",
            Self::Pkcs11(_) => "pkcs11",
        }
    }
}

/// `[key.tpm]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSettings {
    /// TCTI: `device:/dev/tpmrm0` (default), `tabrmd:...`, or `swtpm:host=..,port=..`.
    pub tcti: String,
    /// An existing persistent storage key to create the host key under (e.g. 0x81000001);
    /// `None` creates the standard ECC storage primary key each time.
    pub parent: Option<u32>,
}

/// `[key.pkcs11]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token.
    pub token: Pkcs11Token,
    /// User PIN.
    pub pin: Secret,
}

/// How to find the PKCS#11 token (never by slot id: slots move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkcs11Token {
    /// CKA_LABEL of the token.
    Label(String),
    /// Serial number of the token.
    Serial(String),
}

/// Issuers of the host issuing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerSettings {
    /// The embedded local CA: a root in the state directory.
    Local(LocalCaSettings),
}

/// Embedded local CA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCaSettings {
    /// Validity of the host issuing certificate (default 7 days).
    pub host_cert_validity: Duration,
    /// Validity of the local root (default 10 years).
    pub root_validity: Duration,
    /// Common name of the local root.
    pub root_common_name: String,
    /// Whether host issuing certificates permit only the configured subjects
    /// (directoryName constraints; default on). Off only for fleets whose TLS peers use
    /// rustls-webpki, which rejects every certificate below such a constraint: then a host
    /// key can mint any subject.
    pub constrain_subjects: bool,
}

/// One certificate target.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Unique name (`[a-z0-9][a-z0-9._-]{0,62}`).
    pub name: String,
    /// Subject DN, expanded, in DER order (most general first). The config writes it the
    /// way Kafka prints the principal (RFC 2253, CN first): `CN=b1,OU=kafka,O=Example` is
    /// stored as `[(O, Example), (OU, kafka), (CN, b1)]`. One attribute per RDN.
    pub subject: Vec<(DnAttribute, String)>,
    /// Subject alternative names, expanded, deduplicated, in config order.
    pub sans: Vec<San>,
    /// Leaf key algorithm.
    pub key_type: KeyAlgorithm,
    /// Extended key usages.
    pub ekus: Vec<Eku>,
    /// Leaf lifetime.
    pub lifetime: Duration,
    /// When to renew.
    pub renewal: RenewalSettings,
    /// Allow the subject DN to change across rotations (Kafka `ssl.allow.dn.changes`).
    pub allow_dn_change: bool,
    /// Allow SANs to be removed across rotations (Kafka `ssl.allow.san.changes`).
    pub allow_san_change: bool,
    /// Keystores (key + chain).
    pub keystores: Vec<Output>,
    /// Truststores (trusted roots).
    pub truststores: Vec<Output>,
    /// Broker reload after the stores are written.
    pub reload: ReloadSettings,
}

impl Identity {
    /// The leaf profile's inputs for this identity.
    pub fn leaf_spec(&self) -> crate::x509::LeafSpec<'_> {
        crate::x509::LeafSpec {
            subject: &self.subject,
            sans: &self.sans,
            ekus: &self.ekus,
            key_type: self.key_type,
            lifetime: self.lifetime,
            not_after_limit: None,
        }
    }
}

/// Renewal policy parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalSettings {
    /// Share of the lifetime after which to renew, in (0, 1). Default 2/3.
    pub at: f64,
    /// Jitter as a share of the lifetime, in [0, 0.5). Default 0.05.
    pub jitter: f64,
    /// Never schedule sooner than this after issuance.
    pub min_delay: Duration,
}

/// One output file.
#[derive(Debug, Clone)]
pub struct Output {
    /// File format.
    pub format: StoreFormat,
    /// Absolute path (relative config values are joined to their file's directory; `..`
    /// components are kept for the kernel to resolve).
    pub path: PathBuf,
    /// Store password (required for PKCS#12 and JKS, refused for PEM). Always `None` in
    /// settings from [`crate::config::load_sources_only`], which reads no secret: there
    /// only [`Output::password_source`] tells a store that has one.
    pub password: Option<Secret>,
    /// Where the password comes from: `Some` exactly for the outputs that take one
    /// (PKCS#12 and JKS), whether or not the password was read.
    pub password_source: Option<PasswordSource>,
    /// Entry alias (default: the identity name for keystores, `leafd-ca` for truststores;
    /// a truststore writer that stores several roots derives one alias per root from it).
    pub alias: String,
    /// Owner uid to chown to, if set.
    pub owner: Option<u32>,
    /// Group gid to chown to, if set.
    pub group: Option<u32>,
    /// File mode (default 0600).
    pub mode: u32,
}

/// Where a store password comes from, as the config names it. Knowing it reads nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `password-file`: an absolute path, a relative value joined to its config file's
    /// directory like every other path (`..` kept).
    File(PathBuf),
    /// `password-credential`: the name of a systemd credential of `leafd.service`, a file
    /// in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

/// What to do after an identity's stores are written, and how to check the broker took them.
#[derive(Debug, Clone, Default)]
pub struct ReloadSettings {
    /// Actions, in config order. They run one after another; the first failure stops them.
    pub actions: Vec<ReloadAction>,
    /// The served-certificate check after the actions, if configured.
    pub verify: Option<VerifySettings>,
    /// How long retryable failures (broker unreachable, serial not served yet) are retried
    /// before the reload is declared failed and the alarm raised.
    pub retry_for: Duration,
}

/// One reload action.
#[derive(Debug, Clone)]
pub enum ReloadAction {
    /// IncrementalAlterConfigs to the broker's admin listener.
    Kafka(KafkaReload),
    /// `ReloadUnit` or `RestartUnit` of a systemd unit over D-Bus.
    Systemd {
        /// The unit, e.g. `kafka.service`.
        unit: String,
        /// `RestartUnit` instead of `ReloadUnit`.
        restart: bool,
    },
    /// A signal to a process.
    Signal {
        /// Which process.
        target: SignalTarget,
        /// The signal number.
        signal: i32,
    },
    /// A command (no shell), with the identity's details in its environment.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
}

impl ReloadAction {
    /// A short label for logs and alarms: `kafka 127.0.0.1:9093`, `systemd kafka.service`.
    pub fn label(&self) -> String {
        match self {
            Self::Kafka(k) => format!("kafka {}", k.bootstrap),
            Self::Systemd { unit, restart } => {
                format!(
                    "systemd {} {unit}",
                    if *restart { "restart" } else { "reload" }
                )
            }
            Self::Signal {
                target: SignalTarget::Unit(u),
                ..
            } => format!("signal {u}"),
            Self::Signal {
                target: SignalTarget::PidFile(p),
                ..
            } => format!("signal {}", p.display()),
            Self::Exec { argv, .. } => {
                format!("exec {}", argv.first().map(String::as_str).unwrap_or(""))
            }
        }
    }
}

/// The process a `signal` action is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalTarget {
    /// The `MainPID` of a systemd unit.
    Unit(String),
    /// The pid in a pid file.
    PidFile(PathBuf),
}

/// A `kafka` reload action.
#[derive(Debug, Clone)]
pub struct KafkaReload {
    /// The broker's admin listener (normally loopback).
    pub bootstrap: std::net::SocketAddr,
    /// The broker's own id.
    pub broker_id: i32,
    /// The listener whose stores change (`listener.name.<listener>.ssl.*`).
    pub listener: String,
    /// Alternate between two paths (validated synchronously by KRaft brokers) or keep one.
    pub mode: KafkaReloadMode,
    /// How to reach the admin listener.
    pub security: KafkaSecurity,
    /// Limit for connecting and each request.
    pub timeout: Duration,
}

/// How the broker's store location changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaReloadMode {
    /// The stores alternate between the configured path and a sibling `<stem>.alt.<ext>`.
    Alternate,
    /// The stores stay at the configured path (ZooKeeper-era brokers).
    SamePath,
}

/// Security of the admin connection.
#[derive(Debug, Clone)]
pub enum KafkaSecurity {
    /// `PLAINTEXT`.
    Plaintext,
    /// `SSL`.
    Ssl(KafkaTls),
    /// `SASL_PLAINTEXT`.
    SaslPlaintext(KafkaSasl),
    /// `SASL_SSL`.
    SaslSsl(KafkaTls, KafkaSasl),
}

/// TLS to the admin listener.
#[derive(Debug, Clone)]
pub struct KafkaTls {
    /// The broker's name as its certificate states it (SNI and verification).
    pub server_name: String,
    /// A leafd identity with a `pem` keystore whose leaf is presented as client certificate.
    pub client_identity: Option<String>,
    /// Roots to trust for the broker's certificate; leafd's own roots when unset.
    pub ca_file: Option<PathBuf>,
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct KafkaSasl {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (use over TLS or loopback only).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

/// The served-certificate check.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// Listener addresses to handshake with.
    pub addresses: Vec<std::net::SocketAddr>,
    /// SNI to send; the identity's first DNS name when unset.
    pub server_name: Option<String>,
    /// How long to wait for every address to serve the new serial.
    pub timeout: Duration,
}
