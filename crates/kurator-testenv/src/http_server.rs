//! A loopback HTTP server running on its own thread (with its own single-threaded tokio
//! runtime), so it works from sync and async callers alike and never competes with the
//! caller's runtime. Dropping the handle stops it and closes every connection.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) struct BackgroundServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BackgroundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl BackgroundServer {
    /// Binds `127.0.0.1:<free port>` and runs `serve(listener)` on a new thread named `name`
    /// until the handle is dropped.
    pub fn start<F, Fut>(name: &str, serve: F) -> Result<BackgroundServer>
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| Error::io("binding", "127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading local address of", "127.0.0.1:0", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring", addr.to_string(), e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("creating a runtime for", name.to_string(), e))?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(server = %label, error = %e, "cannot listen");
                            return;
                        }
                    };
                    tokio::select! {
                        result = serve(listener) => {
                            if let Err(e) = result {
                                tracing::error!(server = %label, error = %e, "server failed");
                            }
                        }
                        _ = stop => {}
                    }
                });
                // Dropping the runtime here cancels every connection task.
                drop(runtime);
            })
            .map_err(|e| Error::io("spawning thread for", name.to_string(), e))?;
        Ok(BackgroundServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
