//! A real Apache Kafka 4.x broker per test: one KRaft node that is broker and controller,
//! run from the jars `tests/kafka/prepare` resolves from Maven Central into a cache outside
//! the checkout, plus `LeafdKafkaClient` (tests/kafka/src) to produce, consume and
//! administer it.
//!
//! Listeners, all on random 127.0.0.1 ports:
//! - `SSL`: the listener under test. `ssl.client.auth=required`; its keystore and truststore
//!   come from [`KafkaConfig`] and may be reconfigured freely (it is not the inter-broker
//!   listener).
//! - `SASL_SSL`: SCRAM-SHA-512 as `admin` (a super user; the credential is created at format
//!   time). The broker's inter-broker listener, and the admin path for topics and ACLs.
//! - `CONTROLLER`: PLAINTEXT, for the KRaft quorum of one.
//!
//! The JVM logs through log4j2 to [`RealKafka::log_path`]; a panicking test prints its
//! tail and keeps the broker's directory. Dropping the fixture stops the broker (SIGTERM,
//! then SIGKILL after 10 s; a clean stop takes about 0.4 s).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test fixture driving a real broker: failures panic, deadlines are wall-clock"
)]

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore as _;

use super::java::Store;

/// The panic message when Maven or a JDK is missing (`tests/kafka/prepare` needs both).
pub const KAFKA_TOOLS_MISSING: &str = "Maven or JDK missing: run 'apt-get install -y \
     --no-install-recommends maven default-jdk-headless'";
/// The SCRAM-SHA-512 user on the SASL_SSL listener; always in `super.users`.
pub const ADMIN_USER: &str = "admin";
/// The admin password unless [`KafkaConfig::admin_password`] sets another.
pub const DEFAULT_ADMIN_PASSWORD: &str = "admin-secret";
/// The broker log line that means the node is up (`KafkaRaftServer`).
const STARTED_LINE: &str = "Kafka Server started";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_MAIN: &str = "org.leafd.test.kafka.LeafdKafkaClient";
/// Broker heap: the shell scripts default to 1 GB; one test node needs far less.
const BROKER_JVM_FLAGS: [&str; 3] = ["-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"];
/// Client JVMs start often and do little: C1 only, small heap, library logs at WARN (to
/// stderr: the client moves `System.out` there and keeps stdout for its verdict).
const CLIENT_JVM_FLAGS: [&str; 4] = [
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Xmx256m",
    "-Dlog4j2.level=WARN",
];
const TAIL_LINES: usize = 80;

/// The prepared Kafka distribution: `lib/` and `leafd-kafka-client.jar`.
pub fn kafka_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(prepare)
}

/// Runs `tests/kafka/prepare` (fast when its cache is current); its last stdout line is the
/// directory.
fn prepare() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/prepare");
    let output = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let hint = if stderr.contains("install with:") {
            format!("\n{KAFKA_TOOLS_MISSING}")
        } else {
            String::new()
        };
        panic!(
            "{} failed ({}):\n{stderr}{hint}",
            script.display(),
            output.status
        );
    }
    // How long it took (shown with --nocapture or on failure).
    eprint!("{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{} printed no directory", script.display())),
    );
    assert!(
        dir.join("lib").is_dir() && dir.join("leafd-kafka-client.jar").is_file(),
        "{} printed {}, which lacks lib/ or leafd-kafka-client.jar",
        script.display(),
        dir.display()
    );
    dir
}

fn broker_classpath() -> String {
    format!("{}/lib/*", kafka_home().display())
}

fn client_classpath() -> String {
    let home = kafka_home().display();
    format!("{home}/lib/*:{home}/leafd-kafka-client.jar")
}

/// One `ssl.keystore.*` or `ssl.truststore.*` group as server.properties text.
#[derive(Clone, Debug)]
pub struct StoreProps {
    /// `ssl.*.type`: `PKCS12`, `JKS` or `PEM`.
    pub kind: String,
    /// `ssl.*.location`, escaped for a properties file.
    pub location: String,
    /// `ssl.*.password`, escaped, or raw text such as `${directory:/dir:ks.pass}`; `None`
    /// leaves it unset (PEM stores must not have one).
    pub password: Option<String>,
}

impl StoreProps {
    /// Values written verbatim, for config-provider references: the broker then needs
    /// `config.providers` lines, e.g. via [`KafkaConfig::property`]:
    /// `config.providers=directory` and
    /// `config.providers.directory.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider`.
    pub fn raw(kind: &str, location: &str, password: Option<&str>) -> StoreProps {
        StoreProps {
            kind: kind.to_owned(),
            location: location.to_owned(),
            password: password.map(str::to_owned),
        }
    }
}

impl From<&Store> for StoreProps {
    fn from(store: &Store) -> StoreProps {
        StoreProps {
            kind: store.kind.as_str().to_owned(),
            location: escape(path_str(&store.path)),
            password: store.password.as_deref().map(escape),
        }
    }
}

impl From<Store> for StoreProps {
    fn from(store: Store) -> StoreProps {
        StoreProps::from(&store)
    }
}

/// What the broker is started with. Build with [`KafkaConfig::new`] and the builder methods,
/// then [`KafkaConfig::start`].
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    ssl_keystore: StoreProps,
    ssl_truststore: StoreProps,
    sasl_keystore: Option<StoreProps>,
    sasl_truststore: Option<StoreProps>,
    admin_password: String,
    authorizer: bool,
    super_users: Vec<String>,
    principal_mapping_rules: Option<String>,
    extra: Vec<String>,
    node_id: u32,
    reserved: Option<ReservedPorts>,
}

impl KafkaConfig {
    /// The SSL listener's stores. The SASL_SSL listener uses the same ones unless
    /// [`Self::sasl_ssl_stores`] says otherwise; its truststore must trust the broker's own
    /// certificate, since the broker is its own inter-broker client.
    pub fn new(keystore: impl Into<StoreProps>, truststore: impl Into<StoreProps>) -> Self {
        KafkaConfig {
            ssl_keystore: keystore.into(),
            ssl_truststore: truststore.into(),
            sasl_keystore: None,
            sasl_truststore: None,
            admin_password: DEFAULT_ADMIN_PASSWORD.to_owned(),
            authorizer: false,
            super_users: Vec::new(),
            principal_mapping_rules: None,
            extra: Vec::new(),
            node_id: 1,
            reserved: None,
        }
    }

    /// Listens on `ports` (chosen before the broker starts, so that a daemon can be
    /// configured with the addresses first) instead of ports picked at start.
    pub fn ports(mut self, ports: ReservedPorts) -> Self {
        self.reserved = Some(ports);
        self
    }

    /// Separate stores for the SASL_SSL (inter-broker and admin) listener, so that tests can
    /// swap the SSL listener's files without touching the admin path.
    pub fn sasl_ssl_stores(
        mut self,
        keystore: impl Into<StoreProps>,
        truststore: impl Into<StoreProps>,
    ) -> Self {
        self.sasl_keystore = Some(keystore.into());
        self.sasl_truststore = Some(truststore.into());
        self
    }

    /// The SCRAM-SHA-512 password of [`ADMIN_USER`] (letters, digits, `.`, `_`, `-`).
    pub fn admin_password(mut self, password: &str) -> Self {
        self.admin_password = password.to_owned();
        self
    }

    /// `authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer`:
    /// everything not allowed by an ACL is denied, except for super users.
    pub fn standard_authorizer(mut self) -> Self {
        self.authorizer = true;
        self
    }

    /// Adds a principal (e.g. `User:CN=ops`) to `super.users`, besides `User:admin`.
    pub fn super_user(mut self, principal: &str) -> Self {
        self.super_users.push(principal.to_owned());
        self
    }

    /// `ssl.principal.mapping.rules` (end the list with `DEFAULT`).
    pub fn principal_mapping_rules(mut self, rules: &str) -> Self {
        self.principal_mapping_rules = Some(rules.to_owned());
        self
    }

    /// One raw server.properties line, appended verbatim after everything the fixture
    /// writes (so a repeated key overrides the fixture's value).
    pub fn property(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// The KRaft node id (default 1).
    pub fn node_id(mut self, id: u32) -> Self {
        self.node_id = id;
        self
    }

    /// Formats the storage and starts the broker; panics with the log tail if it is not
    /// ready within 90 s.
    pub fn start(self) -> RealKafka {
        RealKafka::start(self)
    }
}

/// Where the broker listens.
#[derive(Clone, Copy, Debug)]
struct Ports {
    ssl: u16,
    sasl_ssl: u16,
    controller: u16,
}

/// Three free 127.0.0.1 ports picked before the broker starts ([`KafkaConfig::ports`]).
/// They stay bound by this process until the broker JVM is about to start, which narrows
/// the window in which another process could take one (a client that connects meanwhile
/// waits in the backlog and is reset at the release); if one is taken all the same, the
/// start panics saying so (a fixture that picks its own ports would retry on new ones, but
/// whoever was configured with these addresses could not follow).
#[derive(Clone, Debug)]
pub struct ReservedPorts {
    ports: Ports,
    held: Arc<Mutex<Vec<TcpListener>>>,
}

impl ReservedPorts {
    pub fn new() -> ReservedPorts {
        let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let held = vec![bind(), bind(), bind()];
        let port = |l: &TcpListener| l.local_addr().expect("local address").port();
        ReservedPorts {
            ports: Ports {
                ssl: port(&held[0]),
                sasl_ssl: port(&held[1]),
                controller: port(&held[2]),
            },
            held: Arc::new(Mutex::new(held)),
        }
    }

    /// The SSL listener the broker will have.
    pub fn ssl_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.ssl))
    }

    /// The SASL_SSL listener the broker will have.
    pub fn sasl_ssl_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.sasl_ssl))
    }

    /// Closes the placeholder sockets so that the broker can bind the ports.
    fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

impl Default for ReservedPorts {
    fn default() -> Self {
        Self::new()
    }
}

/// A running broker in its own temporary directory; stopped on drop.
pub struct RealKafka {
    dir: tempfile::TempDir,
    config: KafkaConfig,
    cluster_id: String,
    ports: Ports,
    child: Option<Child>,
    startup: Duration,
    next_file: u32,
}

impl RealKafka {
    /// See [`KafkaConfig::start`].
    pub fn start(config: KafkaConfig) -> RealKafka {
        assert!(
            !config.admin_password.is_empty()
                && config
                    .admin_password
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "the admin password must be letters, digits, '.', '_' or '-' (it goes into a \
             JAAS line and a --add-scram argument): {:?}",
            config.admin_password
        );
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("leafd-kafka-")
            .tempdir()
            .expect("create the broker's temporary directory");
        fs::write(
            dir.path().join("log4j2.properties"),
            log4j2_config(dir.path()),
        )
        .expect("write log4j2.properties");
        let ports = config
            .reserved
            .as_ref()
            .map_or_else(free_ports, |r| r.ports);
        let mut kafka = RealKafka {
            dir,
            config,
            cluster_id: cluster_id(),
            ports,
            child: None,
            startup: Duration::ZERO,
            next_file: 0,
        };
        kafka.write_server_properties();
        kafka.format();
        let mut attempt = 1;
        while let Err(log) = kafka.spawn_and_wait() {
            // Another process may have taken a port between our probe and the broker's bind.
            if log.contains("Address already in use")
                && let Some(reserved) = &kafka.config.reserved
            {
                panic!(
                    "another process took one of the reserved ports {:?} before the broker \
                     bound it (rerun the test):\n{log}",
                    reserved.ports
                );
            }
            if attempt < 3 && log.contains("Address already in use") {
                attempt += 1;
                kafka.ports = free_ports();
                kafka.write_server_properties();
                continue;
            }
            panic!("the Kafka broker did not start:\n{log}");
        }
        kafka.startup = started.elapsed();
        kafka
    }

    /// The SSL listener (mutual TLS required).
    pub fn ssl_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.ssl))
    }

    /// The SASL_SSL listener (SCRAM-SHA-512; `admin` is a super user).
    pub fn sasl_ssl_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.sasl_ssl))
    }

    /// The PLAINTEXT KRaft controller listener.
    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.controller))
    }

    /// The node id: the BROKER config resource name is its decimal string.
    pub fn node_id(&self) -> i32 {
        i32::try_from(self.config.node_id).expect("node id fits an i32")
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn admin_password(&self) -> &str {
        &self.config.admin_password
    }

    /// The broker's temporary directory (server.properties, data/, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn server_properties_path(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    /// The broker's log4j2 log (all loggers, INFO).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The whole broker log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the broker log, and of the JVM's own stdout/stderr if it wrote any.
    pub fn log_tail(&self) -> String {
        let mut text = format!("--- {} (tail)\n", self.log_path().display());
        text.push_str(&tail(&self.log(), TAIL_LINES));
        let jvm = fs::read_to_string(self.jvm_output_path()).unwrap_or_default();
        if !jvm.trim().is_empty() {
            let _ = writeln!(text, "--- JVM stdout/stderr (tail)");
            text.push_str(&tail(&jvm, TAIL_LINES));
        }
        text
    }

    /// Waits until the broker log contains `needle` more than `seen_before` times (count
    /// with [`Self::log_count`] before the action). `Err` with the log tail on timeout.
    pub fn wait_for_log(
        &self,
        needle: &str,
        seen_before: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) > seen_before {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{needle:?} did not appear in the broker log within {timeout:?}\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many lines of the broker log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// From creating the directory to ready: format plus JVM start-up.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The broker JVM's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    /// The broker JVM's resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Client properties for the SASL_SSL listener as `admin`, trusting `truststore`.
    pub fn admin_client_properties(&self, truststore: &Store) -> String {
        let mut p = format!(
            "bootstrap.servers={}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
             required username=\"{ADMIN_USER}\" password=\"{}\";\n",
            self.sasl_ssl_addr(),
            self.config.admin_password
        );
        push_store(&mut p, "ssl.truststore", &truststore.into());
        p
    }

    /// Client properties for the SSL listener: `keystore` is the client certificate (`None`
    /// to connect without one), `truststore` must trust the broker.
    pub fn ssl_client_properties(&self, keystore: Option<&Store>, truststore: &Store) -> String {
        let mut p = format!(
            "bootstrap.servers={}\nsecurity.protocol=SSL\n",
            self.ssl_addr()
        );
        if let Some(ks) = keystore {
            push_store(&mut p, "ssl.keystore", &ks.into());
        }
        push_store(&mut p, "ssl.truststore", &truststore.into());
        p
    }

    /// Writes `text` as a 0600 file `<name>-<n>.properties` in the broker's directory.
    pub fn write_properties(&mut self, name: &str, text: &str) -> PathBuf {
        self.next_file += 1;
        let path = self
            .dir
            .path()
            .join(format!("{name}-{}.properties", self.next_file));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create a client properties file");
        file.write_all(text.as_bytes())
            .expect("write a client properties file");
        path
    }

    /// Runs `LeafdKafkaClient COMMAND PROPS ARGS...`; see [`run_client`].
    pub fn client(&self, command: &str, props: &Path, args: &[&str]) -> Result<String, String> {
        run_client(command, props, args)
    }

    /// Starts `LeafdKafkaClient COMMAND PROPS ARGS...` in the background (for
    /// `produce-continuous`); see [`ClientProcess`].
    pub fn spawn_client(&self, command: &str, props: &Path, args: &[&str]) -> ClientProcess {
        ClientProcess::spawn(command, props, args)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s). The data stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts the broker on the same ports and data (as after a host reboot:
    /// static configs are read again, dynamic ones come back from the metadata log).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn_and_wait() {
            panic!("the Kafka broker did not restart:\n{log}");
        }
    }

    fn jvm_output_path(&self) -> PathBuf {
        self.dir.path().join("jvm.out")
    }

    fn write_server_properties(&self) {
        fs::write(self.server_properties_path(), self.server_properties())
            .expect("write server.properties");
    }

    fn server_properties(&self) -> String {
        let c = &self.config;
        let Ports {
            ssl,
            sasl_ssl,
            controller,
        } = self.ports;
        let id = c.node_id;
        let data = escape(path_str(&self.dir.path().join("data")));
        let mut p = String::new();
        let _ = write!(
            p,
            "# Written by tests/common/real_kafka.rs\n\
             process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={id}@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
             listeners=SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl}\n\
             listener.security.protocol.map=SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT\n\
             # The broker is its own inter-broker client, so this must be a listener it can\n\
             # always use: SASL_SSL as admin. Kafka also test-handshakes a new keystore on the\n\
             # inter-broker listener against its truststore at a dynamic reload (kafka.md §1),\n\
             # which the SSL listener under test is spared.\n\
             inter.broker.listener.name=SASL_SSL\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN_USER}\" password=\"{pw}\";\n\
             listener.name.ssl.ssl.client.auth=required\n",
            pw = c.admin_password,
        );
        push_store(&mut p, "listener.name.ssl.ssl.keystore", &c.ssl_keystore);
        push_store(
            &mut p,
            "listener.name.ssl.ssl.truststore",
            &c.ssl_truststore,
        );
        push_store(
            &mut p,
            "listener.name.sasl_ssl.ssl.keystore",
            c.sasl_keystore.as_ref().unwrap_or(&c.ssl_keystore),
        );
        push_store(
            &mut p,
            "listener.name.sasl_ssl.ssl.truststore",
            c.sasl_truststore.as_ref().unwrap_or(&c.ssl_truststore),
        );
        // The CONTROLLER listener is PLAINTEXT, so the node's own controller and broker
        // registration requests arrive as User:ANONYMOUS and need CLUSTER_ACTION: without
        // it in super.users a StandardAuthorizer denies them and the broker never starts.
        // No other listener can yield ANONYMOUS (SSL requires a client certificate, SASL_SSL
        // a login), so this grants nothing to clients.
        let mut supers = vec![format!("User:{ADMIN_USER}"), "User:ANONYMOUS".to_owned()];
        supers.extend(c.super_users.iter().cloned());
        let _ = writeln!(p, "super.users={}", supers.join(";"));
        if c.authorizer {
            p.push_str(
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n",
            );
        }
        if let Some(rules) = &c.principal_mapping_rules {
            let _ = writeln!(p, "ssl.principal.mapping.rules={}", escape(rules));
        }
        let _ = write!(
            p,
            "log.dirs={data}\n\
             num.partitions=1\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n"
        );
        if !c.extra.is_empty() {
            p.push_str("# KafkaConfig::property\n");
            for line in &c.extra {
                p.push_str(line);
                p.push('\n');
            }
        }
        p
    }

    /// `kafka.tools.StorageTool format` with the admin SCRAM credential.
    fn format(&self) {
        let output = Command::new("java")
            .arg("-Xmx256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                path_str(&self.dir.path().join("log4j2.properties"))
            ))
            .arg("-cp")
            .arg(broker_classpath())
            .args(["kafka.tools.StorageTool", "format", "-t", &self.cluster_id])
            .arg("-c")
            .arg(self.server_properties_path())
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-512=[name={ADMIN_USER},password={}]",
                self.config.admin_password
            ))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| spawn_failed("java", &e));
        assert!(
            output.status.success(),
            "kafka.tools.StorageTool format failed ({}):\n{}{}\nserver.properties:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_properties()
        );
    }

    /// Starts the JVM and waits for the started line and both TLS ports; `Err(log tail)`
    /// (with the JVM reaped) if it exits or is not ready in time.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the broker is already running");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.jvm_output_path())
            .expect("open jvm.out");
        let started_before = self.log_count(STARTED_LINE);
        if let Some(reserved) = &self.config.reserved {
            reserved.release();
        }
        let mut child = Command::new("java")
            .args(BROKER_JVM_FLAGS)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                path_str(&self.dir.path().join("log4j2.properties"))
            ))
            .arg("-cp")
            .arg(broker_classpath())
            .arg("kafka.Kafka")
            .arg(self.server_properties_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone jvm.out"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| spawn_failed("java", &e));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("poll the broker JVM") {
                return Err(format!(
                    "the broker exited with {status}\n{}",
                    self.log_tail()
                ));
            }
            if self.log_count(STARTED_LINE) > started_before
                && accepts(self.ssl_addr())
                && accepts(self.sasl_ssl_addr())
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the broker was not ready within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RealKafka {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed start has already put the tail into its panic message.
            if self.child.is_some() {
                eprintln!("real_kafka: the test panicked\n{}", self.log_tail());
            }
            self.dir.disable_cleanup(true);
            eprintln!(
                "real_kafka: kept the broker directory {} for inspection",
                self.dir.path().display()
            );
        }
        self.stop();
    }
}

/// Runs `LeafdKafkaClient COMMAND PROPS ARGS...` to completion: `Ok(line)` for its `OK ...`
/// line (exit 0), `Err(line)` for `FAIL <exception class>: <message>` (exit 1). A usage
/// error, a crash or any other output panics. The client's stderr (library warnings, stack
/// traces) is printed to the test's captured output on `Err`.
pub fn run_client(command: &str, props: &Path, args: &[&str]) -> Result<String, String> {
    let output = client_command(command, props, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| spawn_failed("java", &e));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result = client_verdict(command, args, &stdout, output.status, &stderr);
    if result.is_err() {
        eprintln!("LeafdKafkaClient {command} {args:?} stderr:\n{stderr}");
    }
    result
}

fn client_command(command: &str, props: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("java");
    cmd.args(CLIENT_JVM_FLAGS)
        .arg("-cp")
        .arg(client_classpath())
        .arg(CLIENT_MAIN)
        .arg(command)
        .arg(props)
        .args(args);
    cmd
}

fn client_verdict(
    command: &str,
    args: &[&str],
    stdout: &str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Result<String, String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let result = match lines.as_slice() {
        [line] if line.starts_with("OK") => Ok((*line).to_owned()),
        [line] if line.starts_with("FAIL ") => Err((*line).to_owned()),
        _ => panic!(
            "LeafdKafkaClient {command} {args:?} ({status}) printed {stdout:?} instead of \
             one OK or FAIL line; stderr:\n{stderr}"
        ),
    };
    assert!(
        matches!(
            (&result, status.code()),
            (Ok(_), Some(0)) | (Err(_), Some(1))
        ),
        "LeafdKafkaClient {command} {args:?} printed {stdout:?} but exited with {status}; \
         stderr:\n{stderr}"
    );
    result
}

/// A background `LeafdKafkaClient` (typically `produce-continuous TOPIC`). Its stderr is
/// collected as it arrives; [`ClientProcess::stop`] sends `stop` and returns the verdict.
/// Dropping it without `stop` kills the JVM.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    command: String,
    args: Vec<String>,
}

/// The end of a [`ClientProcess`].
#[derive(Debug)]
pub struct ClientOutcome {
    /// `Ok("OK sent=S failed=F")` or `Err("FAIL ...")`.
    pub result: Result<String, String>,
    /// Everything the client wrote to stderr (each send failure's cause, one per line).
    pub stderr: String,
}

impl ClientProcess {
    fn spawn(command: &str, props: &Path, args: &[&str]) -> ClientProcess {
        let mut child = client_command(command, props, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| spawn_failed("java", &e));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        ClientProcess {
            child,
            stdin: Some(stdin),
            stderr,
            reader: Some(reader),
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The client's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle` (`produce-continuous` writes "first record
    /// acknowledged"); panics with the stderr on timeout or if the client exits first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll the client JVM") {
                panic!(
                    "LeafdKafkaClient {} exited with {status} before {needle:?}; stderr:\n{}",
                    self.command,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "LeafdKafkaClient {} did not write {needle:?} within {timeout:?}; stderr:\n{}",
                self.command,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `stop`, closes stdin and waits for the verdict line.
    pub fn stop(mut self) -> ClientOutcome {
        if let Some(mut stdin) = self.stdin.take() {
            // The client may already have exited (its stdin reader saw EOF or it failed).
            let _ = stdin.write_all(b"stop\n").and_then(|()| stdin.flush());
        }
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_string(&mut stdout)
            .expect("read the client's stdout");
        let status = self.child.wait().expect("wait for the client JVM");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let result = client_verdict(&self.command, &args, &stdout, status, &stderr);
        ClientOutcome { result, stderr }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn log4j2_config(dir: &Path) -> String {
    format!(
        "status = warn\n\
         appender.file.type = File\n\
         appender.file.name = FILE\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.file.ref = FILE\n",
        escape(path_str(&dir.join("server.log")))
    )
}

fn push_store(p: &mut String, prefix: &str, store: &StoreProps) {
    let _ = writeln!(p, "{prefix}.type={}", store.kind);
    let _ = writeln!(p, "{prefix}.location={}", store.location);
    if let Some(password) = &store.password {
        let _ = writeln!(p, "{prefix}.password={password}");
    }
}

/// A random cluster id: 16 bytes, base64url without padding (what `StorageTool
/// random-uuid` prints), not starting with `-` (the tool's argument parser would take it for
/// an option).
fn cluster_id() -> String {
    let mut rng = rand::thread_rng();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) && bytes.iter().any(|&b| b > 1) {
            return id;
        }
    }
}

/// Three distinct free 127.0.0.1 ports (bound together, then released).
fn free_ports() -> Ports {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let (a, b, c) = (bind(), bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    Ports {
        ssl: port(&a),
        sasl_ssl: port(&b),
        controller: port(&c),
    }
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Escapes a value for a java.util.Properties file.
fn escape(value: &str) -> String {
    assert!(
        !value.contains(['\n', '\r']),
        "a properties value cannot span lines: {value:?}"
    );
    let mut out = value.replace('\\', "\\\\");
    if out.starts_with(' ') {
        out.insert(0, '\\');
    }
    out
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path: {}", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

fn spawn_failed(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::NotFound {
        panic!("{KAFKA_TOOLS_MISSING} ({program} not found)");
    }
    panic!("cannot run {program}: {e}");
}
