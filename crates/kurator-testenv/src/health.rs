//! Readiness probes: the Kubernetes components that serve their health endpoints over HTTPS
//! with a self-signed certificate on `--secure-port` (kube-controller-manager,
//! kube-scheduler; Kyverno's webhook server reuses the client), and plain-HTTP health
//! endpoints (Flux controllers, kwok).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::process::{Proc, ProcessSpec, WaitError, wait_ready};

pub(crate) const SECURE_PORT_FLAG: &str = "--secure-port=";

/// The port of the secure-serving endpoint (only used for health probes).
fn secure_port(spec: &ProcessSpec) -> Option<u16> {
    spec.args
        .iter()
        .find_map(|a| a.strip_prefix(SECURE_PORT_FLAG))
        .and_then(|p| p.parse().ok())
}

/// Anonymous client for `https://127.0.0.1:<port>` that does not verify the certificate: it
/// only ever reads health paths, which these components (and Kyverno's webhook server) allow
/// without authentication, on loopback.
pub(crate) fn loopback_client(port: u16) -> Result<kube::Client> {
    let uri: http::Uri = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| Error::Usage(format!("invalid health url: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    kube::Client::try_from(config).map_err(|e| Error::kube("creating a health client", e))
}

/// The body of a successful `GET <path>`, if one came within 3 s.
pub(crate) async fn get_text(client: &kube::Client, path: &str) -> Option<String> {
    let req = http::Request::get(path).body(Vec::new()).ok()?;
    match tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await {
        Ok(Ok(body)) => Some(body),
        _ => None,
    }
}

async fn answers_ok(client: &kube::Client, path: &str) -> bool {
    get_text(client, path)
        .await
        .is_some_and(|body| body.trim() == "ok")
}

/// Waits until `GET <path>` on the process's `--secure-port` answers `ok`.
pub(crate) async fn wait_secure(
    proc: &mut Proc,
    path: &str,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let Some(client) = secure_port(&proc.spec).and_then(|port| loopback_client(port).ok()) else {
        return Err(WaitError::Exited(format!(
            "no usable {SECURE_PORT_FLAG}<port>"
        )));
    };
    wait_ready(proc, timeout, || answers_ok(&client, path)).await
}

/// `GET http://127.0.0.1:<port><path>` answers 200 (within 2 s).
pub(crate) async fn http_get_ok(port: u16, path: &str) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(resp)) => String::from_utf8_lossy(&resp)
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("200")),
        _ => false,
    }
}
