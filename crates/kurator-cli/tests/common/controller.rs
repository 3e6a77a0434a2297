//! `kurator controller` as a process of its own, to be SIGKILLed and started again.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KURATOR: &str = env!("CARGO_BIN_EXE_kurator");

/// The built controller against a host; killed when dropped.
pub struct Controller {
    child: Child,
    metrics_port: u16,
}

impl Controller {
    /// Starts it against the host of `kubeconfig`, appending its log to `log`. No leader
    /// election: a killed leader's Lease would hold the next process back for its duration.
    pub fn start(kubeconfig: &Path, log: &Path) -> Controller {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(KURATOR)
            .args([
                "controller",
                "--leader-elect=false",
                "--health-interval=10m",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            // CRASH_TEST_LOG raises the controller log level when investigating a failure.
            .env(
                "RUST_LOG",
                std::env::var("CRASH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Controller {
            child,
            metrics_port,
        }
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Whether the process is still running (it exits only when killed or on a fatal error).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its `/metrics` text; none until it serves.
    pub async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of `metric` whose labels include `labels` (e.g.
/// `controller="application"`), in Prometheus text; 0 when there is none.
pub fn sample_sum(text: &str, metric: &str, labels: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (set, value) = rest.split_once("} ")?;
            set.split(',')
                .any(|l| l == labels)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}
