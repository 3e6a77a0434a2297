//! The single etcd shared by all clusters of one environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::Result;
use crate::process::{Proc, ProcessSpec, WaitError, free_port, lost_port_race, wait_ready};

const ATTEMPTS: usize = 4;

/// etcd as spawned: the process and its client port.
pub(crate) struct Etcd {
    pub proc: Proc,
    pub client_port: u16,
}

impl Etcd {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

fn spec(
    program: &Path,
    state: &Path,
    client_port: u16,
    peer_port: u16,
    pid_file: Option<PathBuf>,
) -> ProcessSpec {
    let client = format!("http://127.0.0.1:{client_port}");
    ProcessSpec {
        name: "etcd".into(),
        program: program.to_path_buf(),
        args: vec![
            "--name=default".into(),
            format!("--data-dir={}", state.join("etcd-data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=4294967296".into(),
            "--log-level=warn".into(),
        ],
        log: state.join("logs").join("etcd.log"),
        pid_file,
        env: Vec::new(),
    }
}

/// Starts etcd with its data under `<state>/etcd-data` and waits for `/health`.
pub(crate) async fn start(
    program: &Path,
    state: &Path,
    detached: bool,
    timeout: Duration,
) -> Result<Etcd> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let pid_file = detached.then(|| state.join("run").join("etcd.pid"));
        let spec = spec(program, state, client_port, peer_port, pid_file);
        let mut proc = Proc::spawn(spec, detached)?;
        match wait_ready(&mut proc, timeout, || healthy(client_port)).await {
            Ok(()) => {
                tracing::info!(port = client_port, pid = proc.pid, "etcd ready");
                return Ok(Etcd { proc, client_port });
            }
            Err(WaitError::Exited(status)) if attempt < ATTEMPTS && lost_port_race(&proc) => {
                tracing::warn!(%status, "etcd lost a port race, retrying with new ports");
                let _ = std::fs::remove_dir_all(state.join("etcd-data"));
            }
            Err(err) => {
                proc.kill().await.ok();
                return Err(proc.startup_error(err.describe(timeout, "/health")));
            }
        }
    }
}

/// `GET /health` returns 200 with `"health":"true"`.
pub(crate) async fn healthy(port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(resp)) => {
            let status_ok = resp
                .lines()
                .next()
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
            status_ok && resp.replace(' ', "").contains("\"health\":\"true\"")
        }
        _ => false,
    }
}
