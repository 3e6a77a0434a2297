//! `<state_dir>/env.json`: what a detached environment runs, so that another process can
//! attach to it or stop it. Pids live in `<state_dir>/run/<process>.pid`, rewritten on every
//! (re)start of a process.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::write_file;
use crate::error::{Error, Result};
use crate::process::{Proc, ProcessSpec, pid_alive};

pub(crate) const STATE_FILE: &str = "env.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EnvState {
    pub version: u32,
    pub run_id: String,
    /// False until every process is up (a failed start leaves `false`).
    pub complete: bool,
    pub detached: bool,
    pub etcd: Option<EtcdState>,
    pub clusters: Vec<ClusterState>,
    /// Flux controllers running against the host (none unless started with Flux).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flux: Vec<ProcessSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EtcdState {
    pub client_port: u16,
    pub process: ProcessSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterState {
    pub name: String,
    pub port: u16,
    pub kubeconfig_path: PathBuf,
    pub apiserver: ProcessSpec,
    pub controller_manager: Option<ProcessSpec>,
    /// kube-scheduler and kwok (absent without simulated nodes, and in state files written
    /// before they existed, which stay readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ProcessSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwok: Option<ProcessSpec>,
}

impl ClusterState {
    /// The processes running against the apiserver, in teardown order.
    pub fn component_specs(&self) -> impl Iterator<Item = &ProcessSpec> {
        [&self.kwok, &self.scheduler, &self.controller_manager]
            .into_iter()
            .flatten()
    }
}

impl EnvState {
    pub fn new(run_id: &str, detached: bool) -> Self {
        EnvState {
            version: FORMAT_VERSION,
            run_id: run_id.to_string(),
            complete: false,
            detached,
            etcd: None,
            clusters: Vec::new(),
            flux: Vec::new(),
        }
    }

    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the state file; `Ok(None)` if there is none.
    pub fn read(state_dir: &Path) -> Result<Option<EnvState>> {
        let path = Self::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        let state: EnvState = serde_json::from_str(&text).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.version != FORMAT_VERSION {
            return Err(Error::State {
                path,
                message: format!("unsupported format version {}", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state file atomically (write to a temp file, then rename).
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir);
        let tmp = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_file(&tmp, &text, 0o600)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("renaming to", path, e))
    }

    /// Every process spec, in teardown order (Flux controllers, the components of every
    /// cluster, apiservers, etcd).
    pub fn specs(&self) -> Vec<&ProcessSpec> {
        let mut specs: Vec<&ProcessSpec> = self.flux.iter().collect();
        specs.extend(self.clusters.iter().flat_map(ClusterState::component_specs));
        specs.extend(self.clusters.iter().map(|c| &c.apiserver));
        specs.extend(self.etcd.as_ref().map(|e| &e.process));
        specs
    }
}

/// The recorded pid of `spec`, if its pid file exists.
pub(crate) fn recorded_pid(spec: &ProcessSpec) -> Option<u32> {
    let file = spec.pid_file.as_ref()?;
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// A handle on the recorded process. A pid that is gone or runs another program (reused)
/// is represented as pid 0, which every liveness check reports as dead.
pub(crate) fn adopt(spec: &ProcessSpec) -> Proc {
    let pid = recorded_pid(spec)
        .filter(|pid| pid_alive(*pid, Some(&spec.program)))
        .unwrap_or(0);
    Proc::adopt(spec.clone(), pid)
}

/// Kills every live process recorded in `state` (blocking).
pub(crate) fn kill_recorded(state: &EnvState) {
    for spec in state.specs() {
        let mut proc = adopt(spec);
        if proc.pid != 0 {
            tracing::debug!(process = %spec.name, pid = proc.pid, "killing");
            proc.kill_blocking();
        }
    }
}

/// Stops a detached environment (see [`crate::TestEnv::stop_all`]).
pub(crate) fn stop_all(state_dir: &Path) -> Result<bool> {
    let Some(state) = EnvState::read(state_dir)? else {
        return Ok(false);
    };
    kill_recorded(&state);
    fs::remove_dir_all(state_dir).map_err(|e| Error::io("removing", state_dir, e))?;
    Ok(true)
}

/// Default wait for restarts of an attached environment.
pub(crate) const ATTACHED_TIMEOUT: Duration = Duration::from_secs(60);
