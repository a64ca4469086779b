//! Runs `tests/java/KafkaStoreCheck.java`, a JDK-only program that loads keystores and
//! truststores the way Kafka's `DefaultSslEngineFactory` does, runs mutual-TLS handshakes
//! with them and validates certificate paths with the JDK's PKIX validator.
//!
//! Every function returns `Ok(line)` for an `OK ...` line and `Err(line)` for a `FAIL ...`
//! line. Anything else (no JDK, a usage error, a crashed JVM) panics: a test must never
//! mistake a broken harness for a rejected store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "test code: failing to set up or run the harness must panic; the serve JVM is \
              waited for with std time"
)]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

const SOURCE: &str = include_str!("../java/KafkaStoreCheck.java");
const MAIN_CLASS: &str = "KafkaStoreCheck";
/// The panic message when `java`, `javac` or `keytool` is not installed.
pub const JDK_MISSING: &str =
    "JDK missing: run 'apt-get install -y --no-install-recommends default-jdk-headless'";
const JVM_FLAGS: [&str; 2] = ["-XX:TieredStopAtLevel=1", "-Xshare:auto"];

/// A keystore or truststore format, as in Kafka's `ssl.keystore.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreType {
    Pkcs12,
    Jks,
    Pem,
}

impl StoreType {
    /// The name Kafka and the JDK use for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreType::Pkcs12 => "PKCS12",
            StoreType::Jks => "JKS",
            StoreType::Pem => "PEM",
        }
    }
}

/// A store as Kafka's `ssl.*.type`, `ssl.*.location` and `ssl.*.password` describe it.
#[derive(Clone, Debug)]
pub struct Store {
    pub kind: StoreType,
    pub path: PathBuf,
    pub password: Option<String>,
}

impl Store {
    pub fn pkcs12(path: impl Into<PathBuf>, password: &str) -> Store {
        Store {
            kind: StoreType::Pkcs12,
            path: path.into(),
            password: Some(password.to_owned()),
        }
    }

    pub fn jks(path: impl Into<PathBuf>, password: &str) -> Store {
        Store {
            kind: StoreType::Jks,
            path: path.into(),
            password: Some(password.to_owned()),
        }
    }

    pub fn pem(path: impl Into<PathBuf>) -> Store {
        Store {
            kind: StoreType::Pem,
            path: path.into(),
            password: None,
        }
    }

    /// The same store with a different password (`None` means "not configured").
    pub fn with_password(mut self, password: Option<&str>) -> Store {
        self.password = password.map(str::to_owned);
        self
    }
}

/// `load --role keystore`: `OK keystore key-entries=K chain-length=L subject=<RFC 2253>`.
pub fn load_keystore(store: &Store) -> Result<String, String> {
    let mut secrets = Secrets::new();
    run_once(&load_args("keystore", store, &mut secrets))
}

/// `load --role truststore`: `OK truststore trusted=N`; zero trusted entries is a failure.
pub fn load_truststore(store: &Store) -> Result<String, String> {
    let mut secrets = Secrets::new();
    run_once(&load_args("truststore", store, &mut secrets))
}

/// A TLSv1.3 mutual-TLS handshake on 127.0.0.1 with HTTPS endpoint identification against
/// `host`: `OK TLSv1.3 server-saw=<client subject> client-saw=<server subject>`.
pub fn handshake(
    server_ks: &Store,
    server_ts: &Store,
    client_ks: &Store,
    client_ts: &Store,
    host: &str,
) -> Result<String, String> {
    let mut secrets = Secrets::new();
    let args = handshake_args(
        [server_ks, server_ts, client_ks, client_ts],
        host,
        &mut secrets,
    );
    run_once(&args)
}

/// PKIX path validation (revocation off) of `chain_pem` (leaf first, root excluded) against
/// the certificates in `trust_pem`: `OK`.
pub fn pkix(chain_pem: &Path, trust_pem: &Path) -> Result<String, String> {
    run_once(&pkix_args(chain_pem, trust_pem))
}

/// What a JDK makes of a certificate's subject: `X500Principal.getName()`, and the name
/// after `ssl.principal.mapping.rules` (from `rules_file`) applied with `java.util.regex`
/// the way Kafka does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JavaPrincipal {
    pub name: String,
    pub mapped: Option<String>,
}

/// `principal --cert CERT [--rules-file RULES]`.
pub fn principal(cert: &Path, rules_file: Option<&Path>) -> Result<JavaPrincipal, String> {
    run_once(&principal_args(cert, rules_file)).map(|line| parse_principal(&line))
}

fn principal_args(cert: &Path, rules_file: Option<&Path>) -> Vec<String> {
    let mut args = vec!["principal".into(), "--cert".into(), path_arg(cert)];
    if let Some(rules) = rules_file {
        args.push("--rules-file".into());
        args.push(path_arg(rules));
    }
    args
}

/// Parses `OK name=HEX [mapped=HEX]` (HEX: UTF-8 bytes).
fn parse_principal(line: &str) -> JavaPrincipal {
    let field = |key: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .map(|hex| {
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex from the JDK"))
                    .collect();
                String::from_utf8(bytes).expect("UTF-8 from the JDK")
            })
    };
    JavaPrincipal {
        name: field("name=").unwrap_or_else(|| panic!("no name= in {line:?}")),
        mapped: field("mapped="),
    }
}

/// One long-lived `KafkaStoreCheck batch` JVM: each command costs milliseconds instead of a
/// JVM start-up.
pub struct Batch {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    secrets: Secrets,
}

impl Batch {
    pub fn new() -> Batch {
        let mut child = java(&["batch".to_owned()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| spawn_failed("java", &e));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Batch {
            child,
            stdin: Some(stdin),
            stdout,
            secrets: Secrets::new(),
        }
    }

    /// Runs one raw command (the same arguments as a one-shot run). Arguments cannot contain
    /// whitespace, as the batch protocol splits lines on it.
    pub fn run(&mut self, args: &[String]) -> Result<String, String> {
        for arg in args {
            assert!(
                !arg.is_empty() && !arg.contains(char::is_whitespace),
                "batch arguments cannot be empty or contain whitespace: {arg:?}"
            );
        }
        let stdin = self.stdin.as_mut().expect("stdin is open until drop");
        let mut line = args.join(" ");
        line.push('\n');
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!("writing to the batch JVM failed: {e}; {}", self.exit_note());
        }
        let mut reply = String::new();
        match self.stdout.read_line(&mut reply) {
            Ok(0) => panic!("batch JVM closed its output; {}", self.exit_note()),
            Ok(_) => {}
            Err(e) => panic!("reading from the batch JVM failed: {e}"),
        }
        verdict(reply.trim_end(), args)
    }

    pub fn load_keystore(&mut self, store: &Store) -> Result<String, String> {
        let args = load_args("keystore", store, &mut self.secrets);
        self.run(&args)
    }

    pub fn load_truststore(&mut self, store: &Store) -> Result<String, String> {
        let args = load_args("truststore", store, &mut self.secrets);
        self.run(&args)
    }

    pub fn handshake(
        &mut self,
        server_ks: &Store,
        server_ts: &Store,
        client_ks: &Store,
        client_ts: &Store,
        host: &str,
    ) -> Result<String, String> {
        let args = handshake_args(
            [server_ks, server_ts, client_ks, client_ts],
            host,
            &mut self.secrets,
        );
        self.run(&args)
    }

    pub fn pkix(&mut self, chain_pem: &Path, trust_pem: &Path) -> Result<String, String> {
        self.run(&pkix_args(chain_pem, trust_pem))
    }

    pub fn principal(
        &mut self,
        cert: &Path,
        rules_file: Option<&Path>,
    ) -> Result<JavaPrincipal, String> {
        self.run(&principal_args(cert, rules_file))
            .map(|line| parse_principal(&line))
    }

    fn exit_note(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited with {status}"),
            Ok(None) => "it is still running".to_owned(),
            Err(e) => format!("its status is unknown: {e}"),
        }
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
        }
        // Closing stdin is the batch loop's end-of-input; the JVM then exits by itself.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
/// A `KafkaStoreCheck serve` JVM: a TLSv1.3 server on 127.0.0.1 (want client auth) that
/// serves handshakes until dropped, and rebuilds its SSLContext on [`JavaTlsServer::reload`]
/// the way Kafka does (new connections use the new stores).
pub struct JavaTlsServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: std::net::SocketAddr,
    secrets: Secrets,
    _dir: tempfile::TempDir,
}

impl JavaTlsServer {
    /// Starts the server on `keystore` and `truststore`; panics if they do not load.
    pub fn start(keystore: &Store, truststore: &Store) -> JavaTlsServer {
        let dir = tempfile::Builder::new()
            .prefix("leafd-java-serve-")
            .tempdir()
            .expect("create a temporary directory for the port file");
        let port_file = dir.path().join("port");
        let mut secrets = Secrets::new();
        let args = vec![
            "serve".to_owned(),
            "--keystore".to_owned(),
            store_spec(keystore, &mut secrets),
            "--truststore".to_owned(),
            store_spec(truststore, &mut secrets),
            "--port-file".to_owned(),
            path_arg(&port_file),
        ];
        let mut child = java(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| spawn_failed("java", &e));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let port: u16 = loop {
            if let Ok(text) = fs::read_to_string(&port_file) {
                break text.trim().parse().expect("a port number in the port file");
            }
            if let Some(status) = child.try_wait().expect("poll the serve JVM") {
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                panic!("KafkaStoreCheck serve {args:?} exited with {status}: {line}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "KafkaStoreCheck serve did not write its port within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        JavaTlsServer {
            child,
            stdin: Some(stdin),
            stdout,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            secrets,
            _dir: dir,
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Rebuilds the server's SSLContext from new stores: `Ok("OK reloaded")` or
    /// `Err("FAIL ...")` (the old context stays in use).
    pub fn reload(&mut self, keystore: &Store, truststore: &Store) -> Result<String, String> {
        let ks = store_spec(keystore, &mut self.secrets);
        let ts = store_spec(truststore, &mut self.secrets);
        let args = vec!["reload".to_owned(), ks, ts];
        let stdin = self.stdin.as_mut().expect("stdin open until drop");
        writeln!(stdin, "{}", args.join(" ")).expect("write to the serve JVM");
        stdin.flush().expect("flush the serve JVM's stdin");
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read from the serve JVM");
        assert!(n > 0, "the serve JVM exited during reload {args:?}");
        verdict(line.trim_end(), &args)
    }
}

impl Drop for JavaTlsServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Password files: written 0600 into a private temporary directory and passed by path, so
/// passwords never appear on a command line.
struct Secrets {
    dir: Option<tempfile::TempDir>,
    next: usize,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets { dir: None, next: 0 }
    }

    fn write(&mut self, password: &str) -> PathBuf {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("leafd-java-pw-")
                .tempdir()
                .expect("create a temporary directory for password files");
            self.dir = Some(dir);
        }
        let dir = self.dir.as_ref().expect("created above");
        self.next += 1;
        let path = dir.path().join(format!("password-{}", self.next));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create a password file");
        file.write_all(password.as_bytes())
            .expect("write a password file");
        path
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path: {}", path.display()))
        .to_owned()
}

fn load_args(role: &str, store: &Store, secrets: &mut Secrets) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "load".into(),
        "--role".into(),
        role.into(),
        "--type".into(),
        store.kind.as_str().into(),
        "--path".into(),
        path_arg(&store.path),
    ];
    if let Some(password) = &store.password {
        args.push("--password-file".into());
        args.push(path_arg(&secrets.write(password)));
    }
    args
}

/// `TYPE:PATH[:PASSWORD_FILE]`.
fn store_spec(store: &Store, secrets: &mut Secrets) -> String {
    let path = path_arg(&store.path);
    assert!(
        !path.contains(':'),
        "handshake store paths cannot contain ':': {path}"
    );
    let mut spec = format!("{}:{path}", store.kind.as_str());
    if let Some(password) = &store.password {
        spec.push(':');
        spec.push_str(&path_arg(&secrets.write(password)));
    }
    spec
}

fn handshake_args(stores: [&Store; 4], host: &str, secrets: &mut Secrets) -> Vec<String> {
    let names = [
        "--server-keystore",
        "--server-truststore",
        "--client-keystore",
        "--client-truststore",
    ];
    let mut args = vec!["handshake".to_owned()];
    for (name, store) in names.into_iter().zip(stores) {
        args.push(name.to_owned());
        args.push(store_spec(store, secrets));
    }
    args.push("--host".to_owned());
    args.push(host.to_owned());
    args
}

fn pkix_args(chain_pem: &Path, trust_pem: &Path) -> Vec<String> {
    vec![
        "pkix".into(),
        "--chain".into(),
        path_arg(chain_pem),
        "--trust".into(),
        path_arg(trust_pem),
    ]
}

/// Maps one result line to `Ok`/`Err`; a usage error or garbage is a harness bug and panics.
fn verdict(line: &str, args: &[String]) -> Result<String, String> {
    if line == "OK" || line.starts_with("OK ") {
        Ok(line.to_owned())
    } else if line.starts_with("FAIL usage:") {
        panic!("KafkaStoreCheck rejected its arguments {args:?}: {line}")
    } else if line.starts_with("FAIL ") {
        Err(line.to_owned())
    } else {
        panic!("KafkaStoreCheck printed {line:?} for {args:?}")
    }
}

fn run_once(args: &[String]) -> Result<String, String> {
    let output = java(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| spawn_failed("java", &e));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    let line = match lines.as_slice() {
        [line] => *line,
        _ => panic!(
            "KafkaStoreCheck {args:?} ({}) printed {} lines instead of one:\n\
             {stdout}\nstderr:\n{stderr}",
            output.status,
            lines.len()
        ),
    };
    let result = verdict(line, args);
    assert!(
        matches!(
            (&result, output.status.code()),
            (Ok(_), Some(0)) | (Err(_), Some(1))
        ),
        "KafkaStoreCheck {args:?} printed {line:?} but exited with {}; stderr:\n{stderr}",
        output.status
    );
    result
}

fn java(args: &[String]) -> Command {
    let mut cmd = Command::new("java");
    cmd.args(JVM_FLAGS)
        .arg("-cp")
        .arg(classes())
        .arg(MAIN_CLASS)
        .args(args);
    cmd
}

fn spawn_failed(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::NotFound {
        panic!("{JDK_MISSING} ({program} not found)");
    }
    panic!("cannot run {program}: {e}");
}

/// The compiled classes, built once per test process and cached across processes under
/// `CARGO_TARGET_TMPDIR/java-check/<hash of the source>`.
fn classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(compile)
}

fn compile() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-check");
    let dir = root.join(format!("{:016x}", fnv1a(SOURCE.as_bytes())));
    let main_class = format!("{MAIN_CLASS}.class");
    if dir.join(&main_class).is_file() {
        return dir;
    }
    fs::create_dir_all(&root).expect("create the java-check directory");
    // Build in a private directory and rename it into place, so concurrent test processes
    // never see half-written class files.
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&root)
        .expect("create a javac build directory");
    let source = build.path().join(format!("{MAIN_CLASS}.java"));
    fs::write(&source, SOURCE).expect("write the Java source");
    let out = build.path().join("classes");
    let output = Command::new("javac")
        .args(["--release", "17", "-encoding", "UTF-8", "-d"])
        .arg(&out)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| spawn_failed("javac", &e));
    assert!(
        output.status.success(),
        "javac failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if let Err(e) = fs::rename(&out, &dir) {
        // Another test process may have won the race; its classes are just as good.
        assert!(
            dir.join(&main_class).is_file(),
            "cannot move compiled classes to {}: {e}",
            dir.display()
        );
    }
    dir
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
