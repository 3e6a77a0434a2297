//! Real Kubernetes control planes on loopback, for integration tests and `kurator dev`.
//!
//! One etcd serves a `host` cluster and `member1..N`, each with its own kube-apiserver
//! (distinct `--etcd-prefix`), TLS certificates, and a kubeconfig with inline credentials.
//! By default every cluster also runs kube-controller-manager (garbage collection, namespace
//! deletion, the workload and service-account controllers), kube-scheduler, and kwok with
//! [`FAKE_NODES`] simulated nodes: Pods are scheduled and reported Running and Ready, but no
//! container runs (kwok stands in for the kubelet). Binaries are built once from the pinned Go
//! modules in `tools/testenv/` and cached (see [`ensure_binaries`]). No Docker, no mocks.
//!
//! End to end: [`TestEnvBuilder::flux`] adds Flux source-, kustomize- and helm-controller
//! against the host (built by [`ensure_flux_binaries`]), [`GitServer`] serves bare git
//! repositories over smart HTTP and [`HelmRepo`] a chart repository, both on loopback.
//! [`Kyverno`] runs the real Kyverno against a member (built by [`ensure_kyverno_binaries`]),
//! and [`add_kyverno_charts`] serves its real charts; [`add_plugin_charts`] serves the real
//! bitnami charts of the metric and grafana plugins from `../shared/charts/`. Every cluster
//! with kube-controller-manager has a default StorageClass ([`DEFAULT_STORAGE_CLASS`],
//! host-path provisioner), so the charts' claims bind. [`MemberMetrics`] runs a member's real
//! Prometheus (Debian's package) and Thanos sidecar (built by [`ensure_thanos_binary`]), and
//! [`HostThanosQuery`] a real Thanos Query on the host reading its endpoints from a file
//! ([`HostThanosStore`]: a store gateway on the object store). [`MetricsStandIn`] runs them
//! for a fleet's metric plugin from what the controller rendered, standing in for the kubelet
//! that would run the charts' Pods; [`AppExporter`] serves a test application's
//! `http_requests_total` with the error rate of the ConfigMap the application deployed in a
//! member, standing in for the application's container, as an extra scrape target
//! ([`ScrapeTarget`]) of that member's Prometheus; [`run_load_balancer_pool_simulator`] gives each
//! LoadBalancer Service its own address, forwarded to a loopback one ([`LoadBalancerPool`]).
//! [`wait::until`] is the one way to wait for something (with a deadline and a message naming
//! what was awaited and the last thing seen), for the tests and for this crate itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kurator_testenv::Error> {
//! use kurator_testenv::{GitServer, HelmRepo, TestEnv};
//! let env = TestEnv::builder().members(2).start().await?;
//! let host = env.host().client().await?;
//! let member1 = env.cluster("member1").expect("member1").client().await?;
//! # let _ = (host, member1);
//! env.members()[0].stop().await?; // outage
//! env.members()[0].start().await?; // back, same URL and kubeconfig
//!
//! let env = TestEnv::builder().members(1).flux(true).start().await?;
//! let git = GitServer::start(env.state_dir().join("git"))?;
//! let repo = git.create_repo("fleet")?; // http://127.0.0.1:<port>/fleet.git, branch master
//! let sha = repo.commit_files(&[("deploy/cm.yaml", "apiVersion: v1\nkind: ConfigMap\n")], "init")?;
//! let charts = HelmRepo::start(env.state_dir().join("charts"))?;
//! charts.add_chart("demo", "0.1.0", &[("templates/cm.yaml", "kind: ConfigMap\n")])?;
//! # let _ = sha;
//! # Ok(()) }
//! ```
//!
//! Environment variables:
//! - `KURATOR_TESTENV_BIN_DIR`: prebuilt `etcd`, `kube-apiserver`, `kube-controller-manager`,
//!   `kube-scheduler`, `kwok` and (for Flux) `source-controller`, `kustomize-controller`,
//!   `helm-controller` plus the CRD directory `flux-crds/`; for Kyverno `kyverno`,
//!   `kyverno-reports-controller`, `kyverno-crds/` and the chart archives in `kyverno-charts/`
//!   (nothing is built); `thanos` for the metrics stack (`prometheus` is looked up on `PATH`
//!   and at `/usr/bin/prometheus` first).
//! - `KURATOR_TESTENV_CACHE`: cache dir (default `$XDG_CACHE_HOME/kurator-testenv` or
//!   `~/.cache/kurator-testenv`); `KURATOR_TESTENV_GO`: the `go` executable.
//! - `KURATOR_TESTENV_KEEP=1`: keep state dirs (logs, certs, kubeconfigs) on drop.
//! - `KURATOR_PLUGIN_CHARTS`: the directory holding the bitnami chart archives (default
//!   `<workspace>/../shared/charts`).
//!
//! Layout of a state dir: `env.json`, `logs/<cluster>-<component>.log` (components
//! `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kwok`; also `etcd.log`; Flux:
//! `host-{source,kustomize,helm}-controller.log`; Kyverno:
//! `<member>-kyverno-{admission,reports}-controller.log`; metrics: `<member>-prometheus.log`,
//! `<member>-thanos-sidecar.log`, `host-thanos-{query,store}.log`), `metrics/<member>/`
//! (Prometheus's configuration and data), `metrics/host/stores.json` (Thanos Query's SD
//! file), `metrics/store-gateway/`, `clusters/<name>/kubeconfig`,
//! `clusters/<name>/certs/`, `clusters/<name>/kwok-stages.yaml`, `etcd-data/`, `flux/storage/`
//! (source-controller artifacts),
//! `run/*.pid` (detached only).

mod apiserver;
mod app_exporter;
mod binaries;
mod certs;
mod cluster;
mod controller_manager;
mod crds;
mod env;
mod error;
mod etcd;
mod fake_nodes;
mod flux;
mod flux_binaries;
mod git_server;
mod go_module;
mod health;
mod helm_repo;
mod http_server;
mod kubeconfig;
mod kurator_chart;
mod kwok;
mod kyverno;
mod kyverno_binaries;
mod kyverno_charts;
mod kyverno_standin;
mod load_balancer;
mod metrics;
mod metrics_standin;
mod plugin_charts;
mod process;
mod prometheus;
mod scheduler;
mod state;
mod storage;
mod thanos;
mod thanos_binaries;
mod thanos_query;
mod thanos_store;
pub mod wait;

pub use app_exporter::{
    APP_JOB, AppExporter, AppExporterParams, Counters, ERROR_RATE_KEY, REQUESTS_METRIC,
};
pub use binaries::{
    BIN_DIR_ENV, Binaries, CACHE_ENV, ETCD_VERSION, GO_ENV, KUBERNETES_VERSION, KWOK_VERSION,
    cache_dir, ensure_binaries,
};
pub use cluster::ClusterHandle;
pub use crds::{FIELD_MANAGER, install_crds, parse_crds};
pub use env::{ControllerManagerMode, KEEP_ENV, TestEnv, TestEnvBuilder};
pub use error::{Error, Result};
pub use fake_nodes::{FAKE_NODE_LABEL, FAKE_NODES};
pub use flux_binaries::{
    FLUX_HELM_VERSION, FLUX_KUSTOMIZE_VERSION, FLUX_SOURCE_VERSION, FluxBinaries,
    PREBUILT_FLUX_CRDS_DIR, ensure_flux_binaries,
};
pub use git_server::{FileChange, GIT_BRANCH, GitRepo, GitServer, Push, serve as serve_git};
pub use helm_repo::{HelmRepo, serve_static as serve_helm_repo, write_chart, write_index};
pub use kurator_chart::{
    KuratorRelease, add_kurator_chart, chart_dir_files, flux_api, flux_ready, helm_releases,
    install_kurator_chart, ready_condition, service_account_kubeconfig, wait_helm_release_ready,
};
pub use kyverno::{Kyverno, KyvernoOptions, KyvernoParams, POLICY_WEBHOOK_CONFIGURATION};
pub use kyverno_binaries::{
    KYVERNO_CHART_VERSION, KYVERNO_VERSION, KyvernoBinaries, PREBUILT_KYVERNO_CRDS_DIR,
    ensure_kyverno_binaries,
};
pub use kyverno_charts::{
    KYVERNO_CHART_NAMES, KYVERNO_CHART_RELEASES, KyvernoChart, PREBUILT_KYVERNO_CHARTS_DIR,
    add_kyverno_charts, ensure_kyverno_charts, write_kyverno_charts,
};
pub use kyverno_standin::{KyvernoStandIn, KyvernoStandInParams};
pub use load_balancer::{
    LoadBalancerIngress, LoadBalancerPool, POOL_ADVERTISED_PREFIX, assign_load_balancer_ingress,
    run_load_balancer_pool_simulator, run_load_balancer_simulator,
};
pub use metrics::{MemberMetrics, MemberMetricsParams, MetricsBinaries, ensure_metrics_binaries};
pub use metrics_standin::{MetricsStandIn, MetricsStandInParams};
pub use plugin_charts::{
    PLUGIN_CHARTS, PLUGIN_CHARTS_ENV, add_plugin_charts, plugin_chart_archives,
    plugin_chart_archives_in, plugin_chart_file, plugin_chart_values, plugin_charts_dir,
    write_plugin_charts,
};
pub use process::ProcessInfo;
pub use prometheus::{APISERVER_JOB, ScrapeTarget};
pub use storage::DEFAULT_STORAGE_CLASS;
pub use thanos::SIDECAR_GRPC_PORT;
pub use thanos_binaries::{
    PROMETHEUS_PACKAGE, THANOS_VERSION, ensure_thanos_binary, prometheus_binary,
};
pub use thanos_query::{
    HostThanosQuery, HostThanosQueryParams, InstantVector, Sample, StoreStatus,
};
pub use thanos_store::{HostThanosStore, HostThanosStoreParams};

/// Installs rustls' ring provider as the process default. Idempotent: an already installed
/// provider (ours or another) is left in place.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_can_be_shared_across_tasks() {
        assert_send_sync::<super::TestEnv>();
        assert_send_sync::<super::ClusterHandle>();
        assert_send_sync::<super::Error>();
        assert_send_sync::<super::GitServer>();
        assert_send_sync::<super::GitRepo>();
        assert_send_sync::<super::HelmRepo>();
    }

    #[test]
    fn crypto_provider_install_is_idempotent() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
