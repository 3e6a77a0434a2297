//! `kurator` commands: controller, crds, get, describe, attach, detach, metrics, rollout,
//! version, completion;
//! with the `dev` feature (default) also the playground (`dev`) and the benchmarks (`bench`),
//! which link the test environment.

pub mod attach;
#[cfg(feature = "dev")]
pub mod bench;
pub mod completion;
pub mod controller_cmd;
pub mod describe;
pub mod detach;
#[cfg(feature = "dev")]
pub mod dev;
pub mod fleet_edit;
pub mod get;
pub mod manifest;
pub mod metrics;
pub mod policyreports;
pub mod rollout;
pub mod tables;
pub mod version;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::{Client, Config, config::KubeConfigOptions};

/// Kurator in Rust: a fleet manager for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "kurator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every controller against the host cluster.
    Controller(controller_cmd::ControllerArgs),
    /// Print the CRDs (or write one file per CRD with --out-dir).
    Crds {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// List clusters, fleets or applications with their state.
    Get(get::GetArgs),
    /// Show one fleet or application: members, per-cluster state, conditions.
    Describe(describe::DescribeArgs),
    /// Attach a cluster from its kubeconfig: Secret, AttachedCluster, fleet entry; waits for
    /// Ready.
    Attach(attach::AttachArgs),
    /// Detach a cluster: out of every fleet, AttachedCluster and its attach-made Secret deleted.
    Detach(detach::DetachArgs),
    /// Fleet-wide PromQL through the fleet's Thanos Query, by cluster.
    #[command(subcommand)]
    Metrics(metrics::MetricsCommand),
    /// Staged rollout of an Application: status, and requests to the controller (promote,
    /// pause, resume, abort, undo).
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Print the client's version and the running controller's.
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completion(completion::CompletionArgs),
    /// Benchmarks against real API servers; prints a Markdown table.
    #[cfg(feature = "dev")]
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A local playground: host and member control planes, and the controller.
    #[cfg(feature = "dev")]
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

#[cfg(feature = "dev")]
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One Application to N clusters, and M Applications to 10 clusters.
    Fanout(bench::BenchArgs),
    /// One Application's staged rollout over N clusters in S stages, gates passing at once.
    Rollout(bench::rollout::RolloutArgs),
}

/// Installs rustls' ring provider; call once before any TLS client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Controller(args) => controller_cmd::run(args).await,
        Command::Crds { out_dir } => write_crds(out_dir),
        Command::Get(args) => get::run(args).await,
        Command::Describe(args) => describe::run(args).await,
        Command::Attach(args) => attach::run(args).await,
        Command::Detach(args) => detach::run(args).await,
        Command::Metrics(cmd) => metrics::run(cmd).await,
        Command::Rollout(cmd) => rollout::run(cmd).await,
        Command::Version(args) => version::run(args).await,
        Command::Completion(args) => completion::run(args),
        #[cfg(feature = "dev")]
        Command::Dev(cmd) => dev::run(cmd).await,
        #[cfg(feature = "dev")]
        Command::Bench(BenchCommand::Fanout(args)) => bench::run(args).await,
        #[cfg(feature = "dev")]
        Command::Bench(BenchCommand::Rollout(args)) => bench::rollout::run(args).await,
    }
}

fn write_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let Some(dir) = out_dir else {
        print!("{}", kurator_api::crds::all_yaml());
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in kurator_api::crds::all() {
        let path = dir.join(kurator_api::crds::file_name(&crd));
        std::fs::write(&path, kurator_api::crds::to_yaml(&crd))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A client for `kubeconfig`, or for the usual kubeconfig / in-cluster lookup when `None`.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    Ok(Client::try_from(config(kubeconfig).await?)?)
}

/// The host cluster's client and the namespace to work in: `namespace`, else the kubeconfig
/// context's (or the in-cluster) default.
pub async fn host_and_namespace(
    kubeconfig: Option<&PathBuf>,
    namespace: Option<&String>,
) -> anyhow::Result<(Client, String)> {
    let host = client(kubeconfig).await.context("host cluster")?;
    let ns = namespace
        .cloned()
        .unwrap_or_else(|| host.default_namespace().to_string());
    Ok((host, ns))
}

/// The client configuration for `kubeconfig`, or for the usual kubeconfig / in-cluster lookup
/// when `None`.
pub async fn config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig found (set KUBECONFIG or pass --kubeconfig)")?,
    })
}
