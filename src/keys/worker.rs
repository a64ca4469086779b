//! The key thread: one OS thread owns the backend; everyone else sends it closures.
//!
//! TPM and PKCS#11 calls are blocking FFI over contexts that must not be shared, so the
//! backend is built on this thread and never leaves it.

use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use super::{Error, KeyBackend};

type Job = Box<dyn FnOnce(&mut dyn KeyBackend) + Send>;

/// Handle to the key thread. Cheap to clone; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct KeyService {
    tx: mpsc::Sender<Job>,
    backend: &'static str,
}

impl KeyService {
    /// Starts the key thread and builds the backend on it with `build`.
    pub fn spawn<F>(build: F) -> Result<(Self, thread::JoinHandle<()>), Error>
    where
        F: FnOnce() -> Result<Box<dyn KeyBackend>, Error> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<&'static str, Error>>(1);
        let handle = thread::Builder::new()
            .name("leafd-keys".into())
            .spawn(move || {
                let mut backend = match build() {
                    Ok(b) => {
                        let _ = ready_tx.send(Ok(b.name()));
                        b
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(backend.as_mut());
                }
            })
            .map_err(|source| Error::Store {
                label: "key thread".into(),
                source: source.into(),
            })?;
        let backend = ready_rx.recv().map_err(|_| Error::ServiceStopped)??;
        Ok((Self { tx, backend }, handle))
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend
    }

    /// Runs `f` on the key thread and waits for its result without blocking the runtime.
    pub async fn with_backend<R, F>(&self, f: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn KeyBackend) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |b| {
                let _ = tx.send(f(b));
            }))
            .map_err(|_| Error::ServiceStopped)?;
        rx.await.map_err(|_| Error::ServiceStopped)
    }

    /// Like [`Self::with_backend`], for synchronous callers (benchmarks, CLI).
    pub fn blocking_with_backend<R, F>(&self, f: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn KeyBackend) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |b| {
                let _ = tx.send(f(b));
            }))
            .map_err(|_| Error::ServiceStopped)?;
        rx.recv().map_err(|_| Error::ServiceStopped)
    }
}
