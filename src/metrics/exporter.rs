//! Where the metrics go: a textfile for node-exporter's textfile collector, rewritten
//! atomically after every status change, and an HTTP endpoint on loopback serving
//! `GET /metrics` from the latest status.
//!
//! The endpoint is unauthenticated, so config validation admits loopback addresses only.
//! It is small and bounded: HTTP/1 only, no keep-alive, request heads of at most
//! [`MAX_HEAD_BYTES`] read within [`HEAD_TIMEOUT`], each connection done within
//! [`CONNECTION_TIMEOUT`], at most [`MAX_CONNECTIONS`] at a time. Request bodies are never
//! read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::atomic::{FileSpec, write_atomic};
use crate::settings::MetricsSettings;
use crate::status::Status;

/// The one path served.
pub const PATH: &str = "/metrics";
/// Largest request head (request line and headers) read; larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most request headers read.
const MAX_HEADERS: usize = 32;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last in all.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Mode of the textfile: node-exporter runs as another user.
const TEXTFILE_MODE: u32 = 0o644;

/// Metrics export errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured address could not be bound (in use, or the address family is off).
    #[error("could not listen on {addr} for metrics")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The textfile could not be written.
    #[error("could not write the metrics textfile {}", path.display())]
    Textfile {
        /// The textfile.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::atomic::Error,
    },
}

impl Error {
    /// A bind failure may pass (the port is freed); a textfile failure is retried at the
    /// next status change anyway.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// The daemon's metrics outputs: construct with [`Exporter::start`], then call
/// [`Exporter::publish`] with every new status.
#[derive(Debug)]
pub struct Exporter {
    textfile: Option<PathBuf>,
    /// Whether the last textfile write failed (so a lasting failure is logged once).
    textfile_failing: bool,
    local_addr: Option<SocketAddr>,
}

impl Exporter {
    /// Binds the endpoint if one is configured and serves it as a task on `tracker` until
    /// `token` is cancelled; `status` is the watch the engine publishes to.
    pub async fn start(
        settings: &MetricsSettings,
        status: watch::Receiver<Status>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, Error> {
        let mut local_addr = None;
        if let Some(addr) = settings.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| Error::Bind { addr, source })?;
            info!("metrics on http://{bound}{PATH}");
            local_addr = Some(bound);
            tracker.spawn(serve(listener, status, token));
        }
        Ok(Self {
            textfile: settings.textfile.clone(),
            textfile_failing: false,
            local_addr,
        })
    }

    /// The address the endpoint listens on, if one is configured.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Writes the textfile, if one is configured, from a new status rendered at `now`. A
    /// failure is logged when it starts and when it ends, not at every status change.
    pub fn publish(&mut self, status: &Status, now: SystemTime) {
        let Some(path) = &self.textfile else {
            return;
        };
        let text = super::render(status, now);
        let spec = FileSpec {
            mode: TEXTFILE_MODE,
            owner: None,
            group: None,
        };
        match write_atomic(path, text.as_bytes(), &spec) {
            Ok(_) => {
                if self.textfile_failing {
                    info!(path = %path.display(), "metrics textfile written again");
                }
                self.textfile_failing = false;
            }
            Err(source) => {
                if !self.textfile_failing {
                    let e = Error::Textfile {
                        path: path.clone(),
                        source,
                    };
                    warn!(
                        "{}; retrying at every status change",
                        crate::error::chain(&e)
                    );
                }
                self.textfile_failing = true;
            }
        }
    }
}

/// Accepts connections until `token` is cancelled; cancelling drops the ones in flight.
async fn serve(listener: TcpListener, status: watch::Receiver<Status>, token: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = connections.join_next() => continue,
            }
        }
        tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, status.clone()));
                }
                Err(e) => {
                    warn!("metrics endpoint: accept failed: {e}");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, status: watch::Receiver<Status>) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(request.method(), request.uri().path(), || {
            super::render(&status.borrow(), SystemTime::now())
        });
        async move { Ok::<_, Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, "metrics connection: {e}"),
        Err(_) => debug!(%peer, "metrics connection timed out"),
    }
}

/// The response to `method` on `path`; `body` renders the metrics when they are asked for.
pub fn respond(
    method: &Method,
    path: &str,
    body: impl FnOnce() -> String,
) -> Response<Full<Bytes>> {
    let (code, content_type, text) = if path != PATH {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        )
    } else if method == Method::GET || method == Method::HEAD {
        (StatusCode::OK, super::CONTENT_TYPE, body())
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n".to_owned(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if code == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::metrics::tests::status;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn textfile_is_replaced_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prom/leafd.prom");
        let settings = MetricsSettings {
            textfile: Some(path.clone()),
            listen: None,
        };
        let (_tx, rx) = watch::channel(status());
        let tracker = TaskTracker::new();
        let mut exporter = Exporter::start(&settings, rx, CancellationToken::new(), &tracker)
            .await
            .unwrap();
        assert_eq!(exporter.local_addr(), None);
        assert!(tracker.is_empty(), "no endpoint configured, no task");

        // The directory is missing: logged, retried at the next change.
        exporter.publish(&status(), at(1_700_001_000));
        assert!(exporter.textfile_failing);
        std::fs::create_dir(dir.path().join("prom")).unwrap();
        exporter.publish(&status(), at(1_700_001_000));
        assert!(!exporter.textfile_failing);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            crate::metrics::render(&status(), at(1_700_001_000))
        );

        // Replaced by rename (a new inode), nothing left beside it.
        exporter.publish(&status(), at(1_700_001_060));
        let again = std::fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), again.ino());
        assert_eq!(again.permissions().mode() & 0o7777, 0o644);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("leafd_certificate_expiry_seconds{identity=\"broker\"} 2540\n")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("prom"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["leafd.prom"]);
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    }

    #[tokio::test]
    async fn endpoint_serves_until_cancelled() {
        let settings = MetricsSettings {
            textfile: None,
            listen: Some("127.0.0.1:0".parse().unwrap()),
        };
        let (_tx, rx) = watch::channel(status());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let exporter = Exporter::start(&settings, rx, token.clone(), &tracker)
            .await
            .unwrap();
        let addr = exporter.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);

        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        // No keep-alive: the server closes after one response (read_to_end returned).
        assert!(r.contains("connection: close\r\n"), "{r}");
        assert!(r.contains("\r\n\r\n# HELP leafd_"), "{r}");

        // An oversized request head is refused.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let r = exchange(addr, big.as_bytes()).await;
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );

        // Cancelling stops the server task and closes the socket.
        tracker.close();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let settings = MetricsSettings {
            textfile: None,
            listen: Some(addr),
        };
        let (_tx, rx) = watch::channel(status());
        let e = Exporter::start(&settings, rx, CancellationToken::new(), &TaskTracker::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Bind { .. }));
        assert_eq!(
            e.to_string(),
            format!("could not listen on {addr} for metrics")
        );
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn metrics_path_only_get_and_head() {
        let r = respond(&Method::GET, "/metrics", || "m 1\n".into());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(body(r).await, "m 1\n");
        assert_eq!(
            respond(&Method::HEAD, "/metrics", String::new).status(),
            StatusCode::OK
        );

        let r = respond(&Method::GET, "/", || unreachable!());
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(r).await, "not found\n");
        for path in ["/metrics/", "/metricsx", "/other"] {
            let r = respond(&Method::GET, path, || unreachable!());
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }

        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let r = respond(&method, "/metrics", || unreachable!());
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
    }
}
