//! `kurator dev up|down|status|env`: a playground of real control planes on loopback (a host
//! and two members), the controller, and the quickstart fleet. No Docker.

mod background;
mod plugins;
mod quickstart;
mod wait;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kurator_api::{Application, Fleet};
use kurator_testenv::TestEnv;

use self::{
    background::Background,
    quickstart::{APPLICATION, FLEET, NAMESPACE, PODINFO_DEPLOYMENT},
};
use crate::tables;

const MEMBERS: usize = 2;

/// `dev up`'s wait for each step without `--timeout`.
const UP_TIMEOUT: Duration = Duration::from_secs(180);
/// With `--plugins`: nine Helm releases from the real charts (a CI run's share of two cores
/// once took longer than 180 s for them).
const UP_TIMEOUT_WITH_PLUGINS: Duration = Duration::from_secs(420);

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start (or check) the playground and apply the quickstart fleet.
    Up {
        /// How long to wait for each step (fleet ready, application synced, ...). Default 180s,
        /// or 420s with --plugins: Flux then installs nine Helm releases from the real charts,
        /// which takes minutes on a busy two-core machine.
        #[arg(long, value_parser = crate::controller_cmd::parse_duration)]
        timeout: Option<Duration>,
        /// Also enable the metric, grafana and policy plugins on the quickstart fleet.
        #[arg(long)]
        plugins: bool,
    },
    /// Stop everything and remove the playground's state.
    Down,
    /// Build (once) and cache the etcd, Kubernetes and Flux binaries the playground and tests use.
    Prepare,
    /// Say what runs where.
    Status,
    /// Print shell exports for the playground's kubeconfigs.
    Env,
    /// (internal) Serve the playground's chart repository and give member LoadBalancer
    /// Services an address.
    #[command(hide = true)]
    ServePlugins {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
        /// The test environment's state directory (Kyverno's logs go to its `logs/`).
        #[arg(long)]
        env_dir: PathBuf,
        /// Run Kyverno in the members where its chart is installed.
        #[arg(long)]
        kyverno: bool,
        /// Run Prometheus and a Thanos sidecar per member and Thanos Query on the host.
        #[arg(long)]
        metrics: bool,
        #[arg(long = "member-kubeconfig")]
        members: Vec<PathBuf>,
    },
    /// (internal) Serve the playground's git repositories over smart HTTP.
    #[command(hide = true)]
    ServeGit {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
    },
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
        DevCommand::Up { timeout, plugins } => {
            let timeout = timeout.unwrap_or(if plugins {
                UP_TIMEOUT_WITH_PLUGINS
            } else {
                UP_TIMEOUT
            });
            up(&state, timeout, plugins).await
        }
        DevCommand::ServePlugins {
            dir,
            addr,
            env_dir,
            kyverno,
            metrics,
            members,
        } => {
            plugins::serve(plugins::Serve {
                dir: &dir,
                addr,
                env_dir: &env_dir,
                kyverno,
                metrics,
                members: &members,
            })
            .await
        }
        DevCommand::Down => down(&state),
        DevCommand::Status => status(&state).await,
        DevCommand::Env => print_env(&state),
        DevCommand::ServeGit { root, addr } => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            kurator_testenv::serve_git(root, listener, kurator_testenv::Push::Allowed).await?;
            Ok(())
        }
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
            println!("kube-scheduler:          {}", bins.kube_scheduler.display());
            println!("kwok:                    {}", bins.kwok.display());
            // Kyverno runs in the members (tests so far; the playground next).
            let kyverno =
                tokio::task::spawn_blocking(kurator_testenv::ensure_kyverno_binaries).await??;
            let charts =
                tokio::task::spawn_blocking(kurator_testenv::ensure_kyverno_charts).await??;
            println!(
                "kyverno:                 {}",
                kyverno.admission_controller.display()
            );
            println!(
                "kyverno reports:         {}",
                kyverno.reports_controller.display()
            );
            let thanos =
                tokio::task::spawn_blocking(kurator_testenv::ensure_thanos_binary).await??;
            println!("thanos:                  {}", thanos.display());
            for chart in charts {
                println!("chart:                   {}", chart.archive.display());
            }
            println!("ready in {:.1}s", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

fn controller(state: &std::path::Path) -> Background<'_> {
    Background {
        state,
        name: "controller",
    }
}

fn git_server(state: &std::path::Path) -> Background<'_> {
    Background {
        state,
        name: "git-server",
    }
}

fn plugin_support(state: &std::path::Path) -> Background<'_> {
    Background {
        state,
        name: "plugin-support",
    }
}

/// The recorded processes of a playground that are not running. An environment recorded
/// without Flux is not a playground either.
async fn not_running(env: &TestEnv) -> Vec<String> {
    let mut dead = env.dead_processes().await;
    if dead.is_empty() && !env.flux_running() {
        dead.push("Flux controllers (none recorded)".into());
    }
    dead
}

async fn up(state: &std::path::Path, timeout: Duration, with_plugins: bool) -> anyhow::Result<()> {
    let running = match TestEnv::attach(env_dir(state))? {
        Some(env) => {
            let dead = not_running(&env).await;
            if dead.is_empty() {
                println!("Playground already running (state in {}).", state.display());
                Some(env)
            } else {
                println!(
                    "Some playground processes are not running ({}): restarting it.",
                    dead.join(", ")
                );
                None
            }
        }
        None => None,
    };
    let env = match running {
        Some(env) => env,
        None => {
            controller(state).stop();
            git_server(state).stop();
            plugin_support(state).stop();
            TestEnv::stop_all(env_dir(state))?;
            std::fs::create_dir_all(state)?;
            println!(
                "Starting a host and {MEMBERS} member control planes (etcd, kube-apiserver, controller-manager, scheduler, kwok's simulated nodes) and Flux, real binaries..."
            );
            println!(
                "The first run builds Kubernetes and Flux from source: several minutes; later runs take seconds."
            );
            // Every cluster gets the workload controllers, kube-scheduler and kwok's simulated
            // nodes (the builder's defaults), so workloads Flux applies get Running Pods.
            TestEnv::builder()
                .members(MEMBERS)
                .crds(vec![kurator_api::crds::all_yaml()])
                .flux(true)
                .state_dir(env_dir(state))
                .detached(true)
                .start()
                .await
                .context("starting the control planes")?
        }
    };
    let host = env.host();
    // The chart repository (and load-balancer addresses) the plugins use; the controller
    // fetches upstream's chart repositories from it.
    let support = plugin_support(state);
    let charts_addr_file = state.join("charts.addr");
    // Kyverno (and its charts) only once the plugins are asked for: it takes a long first build.
    let kyverno_marker = state.join("plugin-support.kyverno");
    if with_plugins && !kyverno_marker.exists() {
        support.stop();
    }
    if support.running_pid().is_none() {
        let dir = state.join("charts");
        if with_plugins {
            println!(
                "Preparing the real Kyverno v1.12.0 (admission and reports controllers) and its charts; the first run builds them from source: 3 to 8 minutes..."
            );
            tokio::task::spawn_blocking(kurator_testenv::ensure_kyverno_binaries)
                .await?
                .context("building Kyverno")?;
            println!(
                "Preparing Prometheus (Debian's prometheus package) and the real Thanos v0.31.0; the first run builds Thanos from source: 3 to 6 minutes..."
            );
            tokio::task::spawn_blocking(kurator_testenv::ensure_metrics_binaries)
                .await?
                .context("Prometheus and Thanos")?;
        }
        plugins::write_charts(&dir, with_plugins)?;
        // The controller's chart mirror points here: keep the address across restarts.
        let addr = match std::fs::read_to_string(&charts_addr_file) {
            Ok(text) => text
                .trim()
                .parse()
                .context("reading the chart repository's address")?,
            Err(_) => free_addr()?,
        };
        let mut args = vec![
            "dev".into(),
            "serve-plugins".into(),
            format!("--dir={}", dir.display()),
            format!("--addr={addr}"),
            format!("--env-dir={}", env_dir(state).display()),
        ];
        if with_plugins {
            args.push("--kyverno".into());
            args.push("--metrics".into());
            std::fs::write(&kyverno_marker, "")?;
        } else {
            let _ = std::fs::remove_file(&kyverno_marker);
        }
        for member in env.members() {
            args.push(format!(
                "--member-kubeconfig={}",
                member.kubeconfig_path().display()
            ));
        }
        // Written again by the new process once its Thanos Query listens.
        let _ = std::fs::remove_file(env_dir(state).join(plugins::THANOS_URL_FILE));
        support.start(&args)?;
        std::fs::write(&charts_addr_file, addr.to_string())?;
        wait::port_open(addr, Duration::from_secs(10)).await?;
        println!(
            "Chart repository started on http://{addr} (the real bitnami thanos, kube-prometheus and grafana charts{}).",
            if with_plugins {
                ", the real kyverno charts"
            } else {
                ""
            }
        );
    }
    let charts_addr: SocketAddr = std::fs::read_to_string(&charts_addr_file)?
        .trim()
        .parse()
        .context("reading the chart repository's address")?;
    // With the metric plugin, staged-rollout metric gates query the playground's Thanos Query
    // directly: the API server's service proxy refuses the loopback address it listens on.
    // (Also on a plain `dev up` after `dev up --plugins`: the plugin support keeps running.)
    let thanos_url = if kyverno_marker.exists() {
        Some(wait::file_text(&env_dir(state).join(plugins::THANOS_URL_FILE), timeout).await?)
    } else {
        None
    };
    let controller = controller(state);
    let mut wanted = vec![
        "controller".to_string(),
        "--health-interval=10s".into(),
        "--probe-timeout=5s".into(),
        format!("--kubeconfig={}", host.kubeconfig_path().display()),
    ];
    wanted.extend(plugins::mirror_args(charts_addr));
    wanted.extend(thanos_url.iter().map(|url| format!("--thanos-url={url}")));
    let args_file = state.join("controller.args");
    let started_with = std::fs::read_to_string(&args_file).unwrap_or_default();
    if controller.running_pid().is_some() && started_with != wanted.join("\n") {
        println!("Restarting the controller with the plugins' settings (--thanos-url).");
        controller.stop();
    }
    if controller.running_pid().is_none() {
        let addr = free_addr()?;
        let mut args = wanted.clone();
        args.push(format!("--metrics-addr={addr}"));
        controller.start(&args)?;
        std::fs::write(&args_file, wanted.join("\n"))?;
        println!(
            "Controller started (metrics on http://{addr}/metrics, log {}{}).",
            controller.log_path().display(),
            thanos_url
                .as_deref()
                .map(|url| format!(", metric gates through Thanos Query at {url}"))
                .unwrap_or_default()
        );
    }
    let git_root = state.join("git");
    let git = git_server(state);
    let git_addr_file = state.join("git-server.addr");
    if git.running_pid().is_none() {
        std::fs::create_dir_all(&git_root)?;
        let addr = free_addr()?;
        git.start(&[
            "dev".into(),
            "serve-git".into(),
            format!("--root={}", git_root.display()),
            format!("--addr={addr}"),
        ])?;
        std::fs::write(&git_addr_file, addr.to_string())?;
        wait::port_open(addr, Duration::from_secs(10)).await?;
        println!(
            "Git server started on http://{addr} (repositories in {}).",
            git_root.display()
        );
    }
    let git_url = format!("http://{}", std::fs::read_to_string(&git_addr_file)?.trim());

    let client = host.client().await?;
    quickstart::apply_clusters(&client, env.members()).await?;
    println!(
        "Applied examples/quickstart: AttachedClusters kurator-member1, kurator-member2 and Fleet {FLEET}."
    );
    quickstart::apply_application(&client, &git_root, &git_url).await?;
    println!(
        "Applied Application {APPLICATION}: {git_url}/podinfo.git (./deploy/webapp and ./kustomize) to every member."
    );
    if with_plugins {
        let bucket = state.join("thanos-bucket");
        plugins::apply(&client, &bucket).await?;
        println!(
            "Applied examples/quickstart/plugins: Secret thanos-objstore (its FILESYSTEM bucket moved to {}) and Fleet {FLEET} with the metric, grafana and policy plugins.",
            bucket.display()
        );
        println!(
            "  (No kubelet here: kwok runs the charts' Pods as simulated ones. Standing in for the Pods, real programs run as local processes configured from what the charts rendered: Kyverno from the kyverno chart's Deployments; per member Prometheus (scraping its API server) and a Thanos sidecar from the prometheus release and the Secret copy, listening where the member's sidecar LoadBalancer (198.51.100.x) is forwarded; on the host Thanos Query, following the controller's discovery; per member the shop's /metrics, its error rate from the shop ConfigMap Flux applied there. The charts are the real bitnami thanos, kube-prometheus and grafana from ../shared/charts; Grafana does not run: no image of it is reachable here. Claims bind to host-path volumes.)"
        );
    }

    let on_error =
        |_: &anyhow::Error| eprintln!("Controller log: {}", controller.log_path().display());
    let fleets: Api<Fleet> = Api::namespaced(client.clone(), NAMESPACE);
    let fleet = wait::fleet_ready(&fleets, FLEET, MEMBERS as i32, timeout)
        .await
        .inspect_err(on_error)?;
    let apps: Api<Application> = Api::namespaced(client.clone(), NAMESPACE);
    let app = wait::application_synced(&apps, APPLICATION, timeout)
        .await
        .inspect_err(on_error)?;
    // Synced means Flux applied it; whether podinfo runs is the members' to say.
    let mut members = Vec::new();
    for (index, member) in env.members().iter().enumerate() {
        members.push((quickstart::member_name(index + 1), member.client().await?));
    }
    let podinfo =
        wait::deployment_available(&members, NAMESPACE, PODINFO_DEPLOYMENT, timeout).await?;
    let fleet = if with_plugins {
        plugins::apply_violating_workload(&env.members()[1]).await?;
        println!(
            "Applied {} to kurator-member2: a privileged container, which the baseline standard forbids (Audit: Kyverno admits and reports it).",
            plugins::VIOLATING_FILE
        );
        wait::policy_summary(&fleets, FLEET, MEMBERS, plugins::VIOLATED_POLICY, timeout)
            .await
            .inspect_err(on_error)?
    } else {
        fleet
    };
    let metrics = if with_plugins {
        let host_config = crate::config(Some(&host.kubeconfig_path().to_path_buf())).await?;
        let env_dir = env_dir(state);
        let result = wait::fleet_query(
            host_config,
            FLEET,
            plugins::FLEET_QUERY,
            || plugins::thanos_url(&env_dir),
            timeout,
        )
        .await
        .inspect_err(|_| {
            eprintln!(
                "Plugin support log (Prometheus, Thanos): {}",
                plugin_support(state).log_path().display()
            )
        })?;
        Some(result)
    } else {
        None
    };
    // The staged rollout's metric gate measures through Thanos Query, so its Application is
    // applied once the fleet's metrics answer there: a gate measured before the shop's series
    // reach Query finds none, and fails.
    let shop = if with_plugins {
        quickstart::apply_shop(&client, &git_root, &git_url).await?;
        println!(
            "Applied examples/quickstart/rollout: Application shop ({git_url}/shop.git), a staged rollout: stage canary (rollout-stage=canary: kurator-member1) with policy and error-rate gates, then production (kurator-member2)."
        );
        let app = wait::first_rollout(&apps, quickstart::SHOP, timeout)
            .await
            .inspect_err(on_error)?;
        Some(app)
    } else {
        None
    };
    let now = Timestamp::now();
    println!();
    if with_plugins {
        print!("{}", crate::describe::fleet_text(&fleet, now));
    } else {
        print!(
            "{}",
            tables::fleets(std::slice::from_ref(&fleet), false, false, now)
        );
    }
    println!();
    print!(
        "{}",
        tables::applications(std::slice::from_ref(&app), false, false, now)
    );
    println!();
    println!(
        "podinfo (Deployment {NAMESPACE}/{PODINFO_DEPLOYMENT}) in each member, as the member reports it:"
    );
    for line in &podinfo {
        println!("  {line}");
    }
    println!(
        "  (kwok simulates the nodes: Pods are scheduled and reported Running and Ready; no container runs.)"
    );
    println!();
    if let Some(result) = &metrics {
        println!(
            "API requests per second by cluster, fleet-wide through Thanos Query ({}), `{}`:",
            plugins::thanos_url(&env_dir(state)).unwrap_or_default(),
            result.query
        );
        print!("{}", crate::metrics::render::table(result));
        println!();
    }
    if let Some(shop) = &shop
        && let Some(spec) = &shop.spec.staged_rollout
    {
        println!(
            "Application shop, rolled out stage by stage (`kurator rollout status shop`; a walkthrough with a failing metric gate in docs/rollout.md):"
        );
        let status = shop.status.as_ref().and_then(|s| s.staged_rollout.as_ref());
        print!("{}", crate::rollout::render::status_text(spec, status));
        println!();
    }
    // The repository's ./kurator wrapper sets KURATOR_CMD so the hints can be pasted as is.
    let cmd = std::env::var("KURATOR_CMD").unwrap_or_else(|_| "kurator".into());
    println!("Next:");
    println!(
        "  eval \"$({cmd} dev env)\"   # KUBECONFIG (host), KURATOR_MEMBER{{1,2}}_KUBECONFIG, KURATOR_GIT_SERVER{}",
        if with_plugins {
            ", KURATOR_THANOS_URL"
        } else {
            ""
        }
    );
    println!("  {cmd} get clusters        # READY, VERSION, FLEET of each member");
    println!("  {cmd} get fleets -o wide  # phase, reason and unready members");
    println!("  {cmd} describe application {APPLICATION}   # where each cluster stands");
    if with_plugins {
        println!("  {cmd} describe fleet {FLEET}   # plugins × clusters, policy summary");
        println!("  {cmd} get policyreports --fleet {FLEET} --by policy");
        println!("  {cmd} metrics query 'count by (cluster) (up)' --fleet {FLEET}");
        println!(
            "  git clone \"$KURATOR_GIT_SERVER/shop.git\"   # commit and push a new revision: docs/rollout.md, Walkthrough"
        );
        println!("  {cmd} rollout status shop   # stages, gates with measured values, history");
    } else {
        println!("  {cmd} dev up --plugins    # add the metric, grafana and policy plugins");
    }
    println!("  {cmd} dev status          # what runs where");
    println!("  {cmd} dev down            # stop everything and remove the state");
    Ok(())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn down(state: &std::path::Path) -> anyhow::Result<()> {
    let controller = controller(state).stop();
    git_server(state).stop();
    plugin_support(state).stop();
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
    let mut processes = env.processes().await;
    // Kyverno, Prometheus and Thanos, run by the plugin support process: listed only while
    // that process lives.
    if plugin_support(state).running_pid().is_some() {
        processes.extend(plugins::plugin_processes(&env_dir(state)));
    }
    let width = processes.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let state_and_log = |p: &kurator_testenv::ProcessInfo| {
        let state = match p.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "STOPPED".to_string(),
        };
        format!("{state}, log {}", p.log.display())
    };
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
        // kube-apiserver, controller-manager, scheduler and kwok of this cluster (and its
        // Kyverno with the policy plugin), and on the host the Flux controllers.
        for process in processes
            .iter()
            .filter(|p| p.cluster.as_deref() == Some(cluster.name()))
        {
            println!("    {:<width$}  {}", process.name, state_and_log(process));
        }
    }
    // etcd, shared by every cluster.
    for process in processes.iter().filter(|p| p.cluster.is_none()) {
        println!(
            "  {:<8} {}  {}",
            process.name,
            env.etcd_url(),
            state_and_log(process)
        );
    }
    println!(
        "  flux     {}",
        if env.flux_running() {
            "source-, kustomize-, helm-controller running"
        } else {
            "NOT RUNNING"
        }
    );
    for process in [controller(state), git_server(state), plugin_support(state)] {
        match process.running_pid() {
            Some(pid) => println!(
                "  {} running (pid {pid}), log {}",
                process.name,
                process.log_path().display()
            ),
            None => println!(
                "  {} STOPPED, log {}",
                process.name,
                process.log_path().display()
            ),
        }
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
    // The playground's git server takes pushes: `git clone "$KURATOR_GIT_SERVER/shop.git"`.
    if git_server(state).running_pid().is_some()
        && let Ok(addr) = std::fs::read_to_string(state.join("git-server.addr"))
    {
        println!("export KURATOR_GIT_SERVER=http://{}", addr.trim());
    }
    // With the metric plugin, `kurator metrics query` reaches the playground's Thanos Query
    // here: the API server cannot proxy to the loopback address it listens on.
    if plugin_support(state).running_pid().is_some()
        && let Some(url) = plugins::thanos_url(&env_dir(state))
    {
        println!("export {}={url}", crate::metrics::discover::THANOS_URL_ENV);
    }
    Ok(())
}
