//! `kurator dev up|down|status|env`: a playground of real control planes on loopback (a host
//! and two members), the controller, and the quickstart fleet. No Docker.

mod controller_process;
mod wait;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams},
};
use kurator_api::{Fleet, labels::FIELD_MANAGER};
use kurator_testenv::{ClusterHandle, ControllerManagerMode, TestEnv};

use crate::{manifest, tables};

/// The quickstart manifests, compiled in so the binary works from any directory.
const QUICKSTART: &[(&str, &str)] = &[
    (
        "attachedclusters.yaml",
        include_str!("../../../../examples/quickstart/attachedclusters.yaml"),
    ),
    (
        "fleet.yaml",
        include_str!("../../../../examples/quickstart/fleet.yaml"),
    ),
];
const MEMBERS: usize = 2;
const NAMESPACE: &str = "default";
const FLEET: &str = "quickstart";

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start (or check) the playground and apply the quickstart fleet.
    Up {
        /// How long to wait for the fleet to become ready.
        #[arg(long, default_value = "180s", value_parser = crate::controller_cmd::parse_duration)]
        timeout: Duration,
    },
    /// Stop everything and remove the playground's state.
    Down,
    /// Build (once) and cache the etcd, Kubernetes and Flux binaries the playground and tests use.
    Prepare,
    /// Say what runs where.
    Status,
    /// Print shell exports for the playground's kubeconfigs.
    Env,
}

/// `$KURATOR_DEV_DIR`, else `~/.kurator/dev`.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KURATOR_DEV_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set KURATOR_DEV_DIR")?;
    Ok(PathBuf::from(home).join(".kurator").join("dev"))
}

fn env_dir(state: &std::path::Path) -> PathBuf {
    state.join("env")
}

pub async fn run(cmd: DevCommand) -> anyhow::Result<()> {
    let state = state_dir()?;
    match cmd {
        DevCommand::Up { timeout } => up(&state, timeout).await,
        DevCommand::Down => down(&state),
        DevCommand::Status => status(&state).await,
        DevCommand::Env => print_env(&state),
        DevCommand::Prepare => {
            let started = std::time::Instant::now();
            let bins = tokio::task::spawn_blocking(kurator_testenv::ensure_binaries).await??;
            let flux = tokio::task::spawn_blocking(kurator_testenv::ensure_flux_binaries).await??;
            println!("etcd:                    {}", bins.etcd.display());
            println!("kube-apiserver:          {}", bins.kube_apiserver.display());
            println!(
                "source-controller:       {}",
                flux.source_controller.display()
            );
            println!(
                "kustomize-controller:    {}",
                flux.kustomize_controller.display()
            );
            println!(
                "helm-controller:         {}",
                flux.helm_controller.display()
            );
            println!(
                "kube-controller-manager: {}",
                bins.kube_controller_manager.display()
            );
            println!("ready in {:.1}s", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

async fn up(state: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let env = match TestEnv::attach(env_dir(state))? {
        Some(env) if env.dead_processes().await.is_empty() => {
            println!("Playground already running (state in {}).", state.display());
            env
        }
        existing => {
            if existing.is_some() {
                println!("Some playground processes died: restarting it.");
            }
            controller_process::stop(state);
            TestEnv::stop_all(env_dir(state))?;
            std::fs::create_dir_all(state)?;
            println!(
                "Starting a host and {MEMBERS} member control planes (etcd + kube-apiserver, real binaries)..."
            );
            println!(
                "The first run builds Kubernetes from source: several minutes; later runs take seconds."
            );
            TestEnv::builder()
                .members(MEMBERS)
                .controller_manager(ControllerManagerMode::Host)
                .crds(vec![kurator_api::crds::all_yaml()])
                .state_dir(env_dir(state))
                .detached(true)
                .start()
                .await
                .context("starting the control planes")?
        }
    };
    let host = env.host();
    if !controller_process::is_running(state) {
        let addr = controller_process::start(state, host.kubeconfig_path())?;
        println!(
            "Controller started (metrics on http://{addr}/metrics, log {}).",
            controller_process::log_path(state).display()
        );
    }

    let client = host.client().await?;
    for (index, member) in env.members().iter().enumerate() {
        create_kubeconfig_secret(&client, index + 1, member).await?;
    }
    for (file, yaml) in QUICKSTART {
        let objects =
            manifest::parse(yaml).with_context(|| format!("examples/quickstart/{file}"))?;
        manifest::apply(&client, &objects, NAMESPACE).await?;
    }
    println!(
        "Applied examples/quickstart: AttachedClusters kurator-member1, kurator-member2 and Fleet {FLEET}."
    );

    let fleets: Api<Fleet> = Api::namespaced(client.clone(), NAMESPACE);
    let fleet = wait::fleet_ready(&fleets, FLEET, MEMBERS as i32, timeout)
        .await
        .inspect_err(|_| {
            eprintln!(
                "Controller log: {}",
                controller_process::log_path(state).display()
            );
        })?;
    println!();
    print!(
        "{}",
        tables::fleets(std::slice::from_ref(&fleet), false, false, Timestamp::now())
    );
    println!();
    // The repository's ./kurator wrapper sets KURATOR_CMD so the hints can be pasted as is.
    let cmd = std::env::var("KURATOR_CMD").unwrap_or_else(|_| "kurator".into());
    println!("Next:");
    println!(
        "  eval \"$({cmd} dev env)\"   # KUBECONFIG (host) and KURATOR_MEMBER{{1,2}}_KUBECONFIG"
    );
    println!("  {cmd} get clusters        # READY, VERSION, FLEET of each member");
    println!("  {cmd} get fleets -o wide  # phase, reason and unready members");
    println!("  {cmd} dev status          # what runs where");
    println!("  {cmd} dev down            # stop everything and remove the state");
    Ok(())
}

/// The member's kubeconfig, in a Secret named and keyed as the quickstart expects.
async fn create_kubeconfig_secret(
    client: &kube::Client,
    index: usize,
    member: &ClusterHandle,
) -> anyhow::Result<()> {
    let name = format!("kurator-member{index}");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            format!("{name}.config"),
            ByteString(member.kubeconfig_yaml().into_bytes()),
        )])),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("creating Secret {name}"))?;
    Ok(())
}

fn down(state: &std::path::Path) -> anyhow::Result<()> {
    let controller = controller_process::stop(state);
    let env = TestEnv::stop_all(env_dir(state))?;
    if state.exists() {
        std::fs::remove_dir_all(state).with_context(|| format!("removing {}", state.display()))?;
    }
    if controller || env {
        println!("Playground stopped and its state removed.");
    } else {
        println!("No playground running.");
    }
    Ok(())
}

async fn status(state: &std::path::Path) -> anyhow::Result<()> {
    let Some(env) = TestEnv::attach(env_dir(state))? else {
        println!("No playground running. Start one with: kurator dev up");
        return Ok(());
    };
    let dead = env.dead_processes().await;
    println!("Playground state: {}", state.display());
    for cluster in env.clusters() {
        let up = if cluster.is_running().await {
            "running"
        } else {
            "STOPPED"
        };
        println!(
            "  {:<8} {:<8} {}  kubeconfig {}",
            cluster.name(),
            up,
            cluster.server_url(),
            cluster.kubeconfig_path().display()
        );
    }
    println!("  etcd     {}", env.etcd_url());
    match controller_process::running_pid(state) {
        Some(pid) => println!(
            "  controller running (pid {pid}), log {}",
            controller_process::log_path(state).display()
        ),
        None => println!(
            "  controller STOPPED, log {}",
            controller_process::log_path(state).display()
        ),
    }
    if !dead.is_empty() {
        bail!(
            "dead processes: {}; run `kurator dev up` to restart the playground",
            dead.join(", ")
        );
    }
    Ok(())
}

fn print_env(state: &std::path::Path) -> anyhow::Result<()> {
    let Some(env) = TestEnv::attach(env_dir(state))? else {
        bail!("no playground running; start one with: kurator dev up");
    };
    println!(
        "export KUBECONFIG={}",
        env.host().kubeconfig_path().display()
    );
    for (index, member) in env.members().iter().enumerate() {
        println!(
            "export KURATOR_MEMBER{}_KUBECONFIG={}",
            index + 1,
            member.kubeconfig_path().display()
        );
    }
    Ok(())
}
