//! `kurator controller`: leader election, health/metrics endpoints, every controller.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::Args;
use kurator_controller::{
    Settings, leader, metrics::Metrics, plugins::render::ChartMirrors, requests, runtime, server,
};
use tracing::{error, info, warn};
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig of the host cluster (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub metrics_addr: SocketAddr,
    /// How often each attached cluster is health-checked (e.g. 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Timeout of one member health check.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Fetch plugin charts from a mirror: a repository URL starting with FROM is read from TO
    /// instead (e.g. `oci://registry-1.docker.io/bitnamicharts=oci://mirror.local/bitnami`).
    /// Repeatable; the first matching prefix wins.
    #[arg(long = "chart-mirror", value_name = "FROM=TO", value_parser = parse_mirror)]
    pub chart_mirrors: Vec<(String, String)>,

    /// Thanos Query's URL for staged-rollout metric gates, instead of the fleet's Thanos Query
    /// Service through the host API server's service proxy: for a controller running outside
    /// the host's network (the playground records it in KURATOR_THANOS_URL). Serves every
    /// fleet.
    #[arg(long, env = crate::metrics::discover::THANOS_URL_ENV, value_parser = parse_thanos_url)]
    pub thanos_url: Option<String>,
}

fn parse_thanos_url(text: &str) -> Result<String, String> {
    crate::metrics::discover::checked_url(text).map_err(|e| e.to_string())
}

fn parse_mirror(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_string(), to.to_string()))
        }
        _ => Err(format!(
            "{text:?} is not FROM=TO (two repository URL prefixes)"
        )),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

/// `30s`, `1m30s`, `5m`, `1h`, `250ms` (jiff's friendly format, also `1m 30s` or ISO 8601
/// `PT1M30S`), or plain seconds; zero or positive, at most hours as the largest unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 30s, 1m30s or 250ms ({e})"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?}: a duration cannot be negative"))
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let metrics = Arc::new(Metrics::default());
    // Every host request is counted on /metrics (kurator_api_requests_total).
    let client =
        requests::instrumented_client(crate::config(args.kubeconfig.as_ref()).await?, &metrics)?;
    let health = server::Health {
        metrics: metrics.clone(),
        ..Default::default()
    };
    let addr = args.metrics_addr;
    let listener_health = health.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve(addr, listener_health).await {
            error!(%addr, error = %e, "health/metrics server failed");
            std::process::exit(1);
        }
    });
    info!(%addr, "serving /healthz, /readyz and /metrics");

    let settings = Settings {
        health_interval: args.health_interval,
        probe_timeout: args.probe_timeout,
        concurrency: args.concurrency,
        chart_mirrors: ChartMirrors(args.chart_mirrors.clone()),
        thanos_url: args.thanos_url.clone(),
    };
    let shutdown = shutdown_signal();
    if !args.leader_elect {
        health.ready.store(true, Ordering::Relaxed);
        runtime::run(client, settings, metrics, shutdown).await;
        return Ok(());
    }

    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    let manager = leader::lease_manager(
        client.clone(),
        &args.lease_namespace,
        leader::LEASE_NAME,
        &identity,
    )
    .await
    .context("setting up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby replica is healthy and ready to take over.
    health.ready.store(true, Ordering::Relaxed);
    info!(%identity, "waiting for the leader lease");
    while !*leading.borrow_and_update() {
        leading.changed().await.context("leader election stopped")?;
    }
    info!(%identity, "leading");
    // What `kurator version` shows as the controller's version; not worth failing over.
    if let Err(e) = leader::announce_version(
        client.clone(),
        &args.lease_namespace,
        leader::LEASE_NAME,
        &crate::version::client_version(),
    )
    .await
    {
        warn!(error = %e, "cannot write the version onto the leader Lease");
    }
    let lost = async move {
        while *leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = runtime::run(client, settings, metrics, shutdown) => {}
        _ = lost => {
            // Another replica leads now: stop at once rather than reconcile beside it.
            warn!("leadership lost, exiting");
            std::process::exit(1);
        }
    }
    lease_task.abort();
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the controller");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down");
    // In-flight reconciles get a grace period; one stuck on an unreachable API server must
    // not keep the process alive.
    tokio::spawn(async {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        warn!(
            "reconciles still running after {}s, exiting",
            SHUTDOWN_GRACE.as_secs()
        );
        std::process::exit(0);
    });
}

/// How long in-flight reconciles may take after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "kurator".into())
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("15s"), Duration::from_secs(15));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1s500ms"), Duration::from_millis(1500));
        assert_eq!(ok("7"), Duration::from_secs(7));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("PT1M"), Duration::from_secs(60));
    }

    #[test]
    fn bad_durations_say_why() {
        for garbage in ["soon", "", "5x", "5d", "s", "1m30", "--1s"] {
            let e = parse_duration(garbage).expect_err(garbage);
            assert!(
                e.contains("is not a duration like 30s, 1m30s or 250ms"),
                "{e}"
            );
        }
        for negative in ["-5s", "5s ago", "-1m30s"] {
            let e = parse_duration(negative).expect_err(negative);
            assert!(e.ends_with("a duration cannot be negative"), "{e}");
        }
    }
}
