//! `leafctl`: the operator's CLI.
//!
//! `status`, `list`, `show`, `renew` and `principal NAME` ask the running daemon over
//! D-Bus (`org.leafd.leafd1`, see [`crate::dbus`]); `validate`, `kafka-config` and
//! `principal CERT` work from local files; `completions` and `man` print the CLI's own
//! documentation. Errors map to sysexits-style exit codes ([`Error::exit_code`]).

pub mod client;
pub mod kafka_config;
pub mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, LoadEnv};
use crate::error::chain;
use crate::kafka::dn::{self, Jdk};
use crate::kafka::principal::{self, Mapper};
use crate::status::{IdentityStatus, ReloadState, Status};
use client::{Client, UNREACHABLE_HINT};

pub use crate::error::exit;

const EXIT_STATUS: &str = "\
Exit status:
  0   success
  1   the operation failed: leafd could not renew, the broker did not reload
      (renew --wait), or no principal mapping rule applies (principal)
  64  usage error, unknown identity (NotFound) or malformed name (InvalidArgument)
  65  the certificate file holds no certificate
  66  an input file cannot be read
  69  leafd is not reachable on the bus (check 'systemctl status leafd')
  70  internal error or an unexpected answer from leafd
  73  man pages cannot be written
  75  renew --wait timed out
  77  permission denied: renew needs root or membership in the leafd-admin group
  78  the configuration is invalid";

/// leafctl: manage and check leafd.
#[derive(Debug, Parser)]
#[command(
    name = "leafctl",
    version,
    about = "Manage and check leafd, the certificate daemon for Kafka brokers",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// D-Bus address of the bus leafd is on, e.g. unix:path=/run/dbus/system_bus_socket
    /// (default: the system bus, or $DBUS_SYSTEM_BUS_ADDRESS).
    #[arg(long, global = true, value_name = "ADDR")]
    pub bus_address: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The default main config file.
const DEFAULT_CONFIG: &str = "/etc/leafd/leafd.toml";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's status.
    ///
    /// The host key (attributes read back from the device), the host issuing
    /// certificate, every identity with its state and reload state, and alarms.
    Status {
        /// Print the status as JSON (the daemon's GetStatus snapshot).
        #[arg(long)]
        json: bool,
    },
    /// List the identities: serial, notAfter, next renewal and state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one identity in detail.
    Show {
        /// The identity's name.
        name: String,
        /// Print the identity's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Renew an identity now.
    ///
    /// Returns once the new certificate is in the identity's stores. Needs root or
    /// membership in the leafd-admin group.
    Renew {
        /// The identity's name.
        name: String,
        /// Then wait until the broker serves the new certificate (reload verified) or the
        /// reload failed (exit 1). Returns at once if no reload is configured.
        #[arg(long)]
        wait: bool,
        /// Give up after this long (renewal and waiting), e.g. 90s, 5m.
        #[arg(long, value_name = "DUR", default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Check a configuration exactly as the daemon reads it; exit 78 if it is invalid.
    Validate {
        /// Main config file; drop-ins are read from `<stem>.d/*.toml` beside it.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the server.properties lines for an identity's broker listener.
    ///
    /// Store types and locations, passwords by reference (Kafka's
    /// DirectoryConfigProvider reading the password files leafd reads; never the
    /// passwords themselves), ssl.client.auth and ssl.principal.mapping.rules. Reads the
    /// configuration locally but no password, PIN or credential: any user who can read
    /// the config files can run it.
    KafkaConfig {
        /// The identity's name.
        name: String,
        /// Main config file; drop-ins are read from `<stem>.d/*.toml` beside it.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The broker listener (as named in listeners=, e.g. SSL).
        #[arg(long, value_name = "L")]
        listener: Option<String>,
    },
    /// Print the Kafka principal a broker derives from a certificate.
    ///
    /// The subject in RFC 2253 form exactly as Java's X500Principal.getName() prints it,
    /// then `User:` and the name ssl.principal.mapping.rules make of it (Kafka's
    /// SslPrincipalMapper semantics). The certificate is an identity's current one (asked
    /// from leafd) or a PEM or DER file.
    Principal {
        /// An identity name, or a certificate file (anything with a '/' or an existing file).
        #[arg(value_name = "NAME|CERT")]
        target: String,
        /// The broker's ssl.principal.mapping.rules (default: DEFAULT), as Kafka reads the
        /// value: a `\\` in server.properties is one backslash here.
        #[arg(long, value_name = "RULES")]
        rules: Option<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (leafctl.1 and one per subcommand) into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// What can go wrong; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// leafd is not on the bus, or the bus is not there.
    #[error("cannot reach leafd ({detail})")]
    Unavailable {
        /// What the bus said.
        detail: String,
    },
    /// `org.leafd.leafd1.Error.AccessDenied` (or the bus policy refused the call).
    #[error("permission denied: {0}")]
    AccessDenied(String),
    /// `org.leafd.leafd1.Error.NotFound`, or no such identity.
    #[error("{0}")]
    NotFound(String),
    /// `org.leafd.leafd1.Error.InvalidArgument`.
    #[error("{0}")]
    InvalidArgument(String),
    /// A usage error leafctl itself finds.
    #[error("{0}")]
    Usage(String),
    /// `org.leafd.leafd1.Error.Failed`: the daemon could not do it.
    #[error("leafd: {0}")]
    Failed(String),
    /// An answer leafctl does not understand.
    #[error("unexpected answer from leafd: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The configuration does not load.
    #[error("invalid configuration")]
    Config(#[source] config::Error),
    /// `kafka-config` cannot produce the settings.
    #[error(transparent)]
    KafkaConfig(#[from] kafka_config::Error),
    /// An input file cannot be read.
    #[error("could not read {path}")]
    ReadInput {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An input file is not a certificate.
    #[error("{path} holds no X.509 certificate: {reason}")]
    NotCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Mapping rules that do not parse, or a subject no rule applies to.
    #[error(transparent)]
    Principal(#[from] principal::Error),
    /// The identity has no certificate yet.
    #[error("identity {0:?} has no certificate yet")]
    NotIssued(String),
    /// `renew --wait`: the broker did not pick up the new certificate.
    #[error("reload of {name} (serial {serial}) failed: {detail}")]
    ReloadFailed {
        /// Identity.
        name: String,
        /// Serial the broker should serve.
        serial: String,
        /// The daemon's detail.
        detail: String,
    },
    /// `renew --wait` ran out of time.
    #[error("timed out after {waited} {what}")]
    Timeout {
        /// How long.
        waited: String,
        /// Waiting for what.
        what: String,
    },
    /// An output file cannot be written.
    #[error("could not write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime cannot start.
    #[error("could not start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unavailable { .. } => exit::UNAVAILABLE,
            Error::AccessDenied(_) => exit::NOPERM,
            Error::NotFound(_) | Error::InvalidArgument(_) | Error::Usage(_) => exit::USAGE,
            Error::Failed(_) | Error::NotIssued(_) | Error::ReloadFailed { .. } => exit::FAILED,
            Error::Protocol { .. } | Error::Runtime(_) => exit::SOFTWARE,
            Error::Config(_) => exit::CONFIG,
            Error::KafkaConfig(e) => match e {
                kafka_config::Error::Listener(_) => exit::USAGE,
                kafka_config::Error::NoKeystore(_) => exit::FAILED,
            },
            Error::ReadInput { .. } => exit::NOINPUT,
            Error::NotCertificate { .. } => exit::DATAERR,
            Error::Principal(
                principal::Error::NoMatchingRule { .. } | principal::Error::Apply { .. },
            ) => exit::FAILED,
            Error::Principal(_) => exit::USAGE,
            Error::Timeout { .. } => exit::TEMPFAIL,
            Error::Write { .. } => exit::CANTCREAT,
        }
    }

    /// What the operator can do about it, if there is a standard answer.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Unavailable { .. } => Some(UNREACHABLE_HINT),
            Error::AccessDenied(_) => {
                Some("run leafctl as root (e.g. with sudo) or as a member of the leafd-admin group")
            }
            Error::NotFound(_) => Some("'leafctl list' shows the identities"),
            Error::Failed(_) => Some("'journalctl -u leafd' has the details"),
            Error::Config(_) => Some("'leafctl validate' checks the configuration"),
            Error::Principal(principal::Error::NoMatchingRule { .. }) => {
                Some("the broker would refuse this client: end the rules with DEFAULT")
            }
            Error::Timeout { .. } => Some("'leafctl show NAME' shows where it stands"),
            _ => None,
        }
    }
}

/// Entry point of the `leafctl` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leafctl: error: {}", chain(&e));
            if let Some(hint) = e.hint() {
                eprintln!("leafctl: hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let bus = cli.bus_address;
    match cli.command {
        Command::Validate { config } => Ok(validate(&config)),
        Command::KafkaConfig {
            name,
            config,
            listener,
        } => kafka_config(&name, &config, listener),
        Command::Principal { target, rules } if is_file_target(&target) => {
            let rdns = read_certificate_subject(Path::new(&target))?;
            principal(&rdns, rules.as_deref())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "leafctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => man(&out),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            runtime.block_on(remote(bus.as_deref(), command))
        }
    }
}

/// The commands that ask the daemon.
async fn remote(bus: Option<&str>, command: Command) -> Result<ExitCode, Error> {
    let client = Client::connect(bus).await?;
    match command {
        Command::Status { json } => {
            let status = client.status().await?;
            if json {
                println!("{}", to_json(&status)?);
            } else {
                print!("{}", render::status(&status, SystemTime::now()));
            }
        }
        Command::List { json } => {
            let status = client.status().await?;
            let now = SystemTime::now();
            if json {
                println!("{}", to_json(&render::list_entries(&status, now))?);
            } else {
                print!("{}", render::list(&status, now));
            }
        }
        Command::Show { name, json } => {
            let status = client.status().await?;
            let identity = find(&status, &name)?;
            if json {
                println!("{}", to_json(identity)?);
            } else {
                print!("{}", render::show(identity, SystemTime::now()));
            }
        }
        Command::Renew {
            name,
            wait,
            timeout,
        } => return renew(&client, &name, wait, timeout).await,
        Command::Principal { target, rules } => {
            let status = client.status().await?;
            let identity = find(&status, &target)?;
            let subject = identity
                .subject
                .as_deref()
                .ok_or_else(|| Error::NotIssued(target.clone()))?;
            let rdns = dn::parse(subject).map_err(|e| Error::Protocol {
                detail: e.to_string(),
            })?;
            return principal(&rdns, rules.as_deref());
        }
        Command::Validate { .. }
        | Command::KafkaConfig { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => {
            return Err(Error::Protocol {
                detail: "a local command reached the D-Bus client".to_owned(),
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Protocol {
        detail: e.to_string(),
    })
}

fn find<'a>(status: &'a Status, name: &str) -> Result<&'a IdentityStatus, Error> {
    status
        .identities
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| Error::NotFound(format!("no identity named {name:?}")))
}

/// How often `renew --wait` asks for the reload state.
const POLL: Duration = Duration::from_millis(250);

async fn renew(
    client: &Client,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> Result<ExitCode, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = |what: &str| Error::Timeout {
        waited: humantime::format_duration(timeout).to_string(),
        what: what.to_owned(),
    };
    tokio::time::timeout_at(deadline, client.renew(name))
        .await
        .map_err(|_| timed_out(&format!("waiting for leafd to renew {name}")))??;
    let status = client.status().await?;
    let identity = find(&status, name)?;
    let mut serial = identity.serial.clone().ok_or_else(|| Error::Protocol {
        detail: format!("{name} has no serial after its renewal"),
    })?;
    let now = SystemTime::now();
    println!(
        "renewed {name}: serial {serial}, not after {}",
        identity
            .not_after
            .map_or_else(|| "-".to_owned(), |t| render::when(t, now))
    );
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut announced = false;
    loop {
        let status = client.status().await?;
        let identity = find(&status, name)?;
        if let Some(current) = &identity.serial {
            if *current != serial {
                println!("{name} rotated again meanwhile (serial {current}); waiting for that one");
                serial = current.clone();
            }
        }
        match &identity.reload {
            None => {
                println!("no reload configured for {name}: nothing to wait for");
                return Ok(ExitCode::SUCCESS);
            }
            Some(r) if r.serial == serial && r.state == ReloadState::Verified => {
                println!("reload verified: {}", r.detail);
                return Ok(ExitCode::SUCCESS);
            }
            Some(r) if r.serial == serial && r.state == ReloadState::Failed => {
                return Err(Error::ReloadFailed {
                    name: name.to_owned(),
                    serial,
                    detail: r.detail.clone(),
                });
            }
            Some(_) => {}
        }
        if !announced {
            eprintln!("waiting for the broker to serve serial {serial} ...");
            announced = true;
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(timed_out(&format!(
                "waiting for the broker to reload {name} (serial {serial})"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `principal`'s rule: a path-like argument or an existing file is a certificate.
fn is_file_target(target: &str) -> bool {
    target.contains('/') || Path::new(target).exists()
}

/// The subject of the first certificate in a PEM file, or of a DER file.
fn read_certificate_subject(path: &Path) -> Result<Vec<dn::Rdn>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadInput {
        path: path.to_owned(),
        source,
    })?;
    let not_cert = |reason: String| Error::NotCertificate {
        path: path.to_owned(),
        reason,
    };
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem::parse_many(&bytes)
            .map_err(|e| not_cert(e.to_string()))?
            .into_iter()
            .find(|p| p.tag() == "CERTIFICATE")
            .ok_or_else(|| not_cert("no CERTIFICATE block".to_owned()))?
            .into_contents()
    } else {
        bytes
    };
    dn::certificate_subject(&der).map_err(|e| not_cert(chain(&e)))
}

/// Prints the subject and the principal for `rdns`.
fn principal(rdns: &[dn::Rdn], rules: Option<&str>) -> Result<ExitCode, Error> {
    let subject = dn::render(rdns, Jdk::Jdk17);
    let later = dn::render(rdns, Jdk::Later);
    let mapper = match rules {
        Some(r) => Mapper::parse(r)?,
        None => Mapper::default(),
    };
    println!("subject:   {subject}");
    let principal = principal::kafka_principal(&mapper, &subject)?;
    println!("principal: {principal}");
    if later != subject {
        eprintln!(
            "note: the subject has BMPString or 8-bit string values, which JDKs after 17 \
             decode differently: there it is {later:?}, principal {:?}",
            principal::kafka_principal(&mapper, &later).unwrap_or_else(|e| format!("none ({e})"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn kafka_config(
    name: &str,
    config_path: &Path,
    listener: Option<String>,
) -> Result<ExitCode, Error> {
    // Validated like the daemon's, but without reading a secret: the passwords are only
    // referenced, so their sources are all this needs.
    let loaded =
        config::load_sources_only(config_path, &LoadEnv::from_process()).map_err(Error::Config)?;
    for w in loaded.warnings() {
        eprintln!("leafctl: warning: {w}");
    }
    let settings = loaded.settings();
    let identity = settings
        .identities
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no identity named {name:?} in {}",
                config_path.display()
            ))
        })?;
    let listener = listener
        .or_else(|| kafka_config::default_listener(identity))
        .ok_or_else(|| {
            Error::Usage(format!(
                "the configuration names no broker listener for {name:?}; pass --listener L \
                 (the listener's name in the broker's listeners= setting, e.g. SSL)"
            ))
        })?;
    let text = kafka_config::render(&kafka_config::Request {
        identity,
        listener: &listener,
        config_path,
        keystore_password: identity
            .keystores
            .first()
            .and_then(kafka_config::password_ref),
        truststore_password: identity
            .truststores
            .first()
            .and_then(kafka_config::password_ref),
    })?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn man(out: &Path) -> Result<ExitCode, Error> {
    let write_err = |source| Error::Write {
        path: out.to_owned(),
        source,
    };
    std::fs::create_dir_all(out).map_err(write_err)?;
    clap_mangen::generate_to(Cli::command(), out).map_err(write_err)?;
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path) -> ExitCode {
    match config::load_with_warnings(path, &LoadEnv::from_process()) {
        Ok((s, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let names: Vec<&str> = s.identities.iter().map(|i| i.name.as_str()).collect();
            println!(
                "{}: OK ({} file{}, {} identit{}: {})",
                path.display(),
                s.sources.len(),
                if s.sources.len() == 1 { "" } else { "s" },
                names.len(),
                if names.len() == 1 { "y" } else { "ies" },
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(exit::CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_targets() {
        assert!(is_file_target("./broker"));
        assert!(is_file_target("/etc/x.pem"));
        assert!(!is_file_target("broker-no-such-file"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            Error::Unavailable {
                detail: String::new()
            }
            .exit_code(),
            69
        );
        assert_eq!(Error::AccessDenied(String::new()).exit_code(), 77);
        assert_eq!(Error::NotFound(String::new()).exit_code(), 64);
        assert_eq!(Error::InvalidArgument(String::new()).exit_code(), 64);
        assert_eq!(
            Error::Timeout {
                waited: String::new(),
                what: String::new()
            }
            .exit_code(),
            75
        );
    }

    #[test]
    fn classify_maps_leafd_errors() {
        let e = |name: &str| {
            client::classify(zbus::Error::MethodError(
                zbus::names::OwnedErrorName::try_from(name).unwrap(),
                Some("m".into()),
                zbus::message::Message::method_call("/", "x")
                    .unwrap()
                    .build(&())
                    .unwrap(),
            ))
        };
        assert!(matches!(
            e("org.leafd.leafd1.Error.AccessDenied"),
            Error::AccessDenied(_)
        ));
        assert!(matches!(
            e("org.leafd.leafd1.Error.NotFound"),
            Error::NotFound(_)
        ));
        assert!(matches!(
            e("org.leafd.leafd1.Error.InvalidArgument"),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            e("org.leafd.leafd1.Error.Failed"),
            Error::Failed(_)
        ));
        assert!(matches!(
            e("org.freedesktop.DBus.Error.ServiceUnknown"),
            Error::Unavailable { .. }
        ));
        assert!(matches!(e("com.example.Other"), Error::Protocol { .. }));
    }
}
