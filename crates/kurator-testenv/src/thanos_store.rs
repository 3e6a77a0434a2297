//! A Thanos store gateway on the host as a local process, standing in for the kubelet that
//! would run the bitnami thanos chart's storegateway Pod: it serves the blocks the sidecars
//! uploaded to the object store over the Store API, for Thanos Query to use as a static
//! `--endpoint`.
//!
//! Files: `<state>/metrics/store-gateway/` (`objstore.yml`, `data/`); log:
//! `logs/host-thanos-store.log`. Detached processes write a pid file to `run/` but are not
//! recorded in `env.json`.

use std::path::Path;
use std::time::Duration;

use crate::certs::write_file;
use crate::cluster::log_path;
use crate::error::{Error, Result};
use crate::metrics::{pid_file, start_thanos, thanos_grpc_port};
use crate::process::{Proc, ProcessInfo, ProcessSpec, free_port};

/// Inputs to start a store gateway on the host.
#[derive(Clone)]
pub struct HostThanosStoreParams<'a> {
    /// The `thanos` binary ([`crate::ensure_thanos_binary`]).
    pub thanos: &'a Path,
    pub state_dir: &'a Path,
    /// The `--objstore.config-file` content (the bucket the sidecars upload to).
    pub objstore_config: &'a str,
    pub detached: bool,
    pub timeout: Duration,
}

impl std::fmt::Debug for HostThanosStoreParams<'_> {
    // Never print the object-store configuration: it may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostThanosStoreParams")
            .field("thanos", &self.thanos)
            .field("state_dir", &self.state_dir)
            .field("detached", &self.detached)
            .finish_non_exhaustive()
    }
}

/// A running store gateway. Dropping it kills it (unless detached).
#[derive(Debug)]
pub struct HostThanosStore {
    grpc_port: u16,
    proc: Proc,
}

impl HostThanosStore {
    /// Writes the object-store configuration, starts `thanos store` on free loopback ports
    /// and waits for `/-/ready` (after its first sync of the bucket).
    pub async fn start(p: HostThanosStoreParams<'_>) -> Result<HostThanosStore> {
        let dir = p.state_dir.join("metrics").join("store-gateway");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| Error::io("creating", &data, e))?;
        let objstore = dir.join("objstore.yml");
        // It may hold object-store credentials.
        write_file(&objstore, p.objstore_config, 0o600)?;
        let name = "host-thanos-store".to_string();
        let spec_for = |http_port: u16| ProcessSpec {
            name: name.clone(),
            program: p.thanos.to_path_buf(),
            args: vec![
                "store".into(),
                format!("--data-dir={}", data.display()),
                format!("--objstore.config-file={}", objstore.display()),
                // A port race on it shows in the log like one on the HTTP port: retried.
                format!("--grpc-address=127.0.0.1:{}", free_port().unwrap_or(0)),
                format!("--http-address=127.0.0.1:{http_port}"),
                "--log.level=info".into(),
            ],
            log: log_path(p.state_dir, "host", "thanos-store"),
            pid_file: pid_file(p.state_dir, p.detached, &name),
            env: Vec::new(),
        };
        let proc = start_thanos(spec_for, p.detached, p.timeout).await?;
        let grpc_port = thanos_grpc_port(&proc.spec).unwrap_or_default();
        Ok(HostThanosStore { grpc_port, proc })
    }

    /// `127.0.0.1:<port>`: its Store API, for Thanos Query's `--endpoint`.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The process, for `kurator dev status`.
    pub fn processes(&mut self) -> Vec<ProcessInfo> {
        vec![self.proc.info(Some("host"))]
    }

    /// Kills the process and waits until it is gone.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc.kill().await
    }
}
