//! `kurator bench fanout`: how fast one Application reaches N clusters and M Applications
//! reach 10 clusters, against real API servers, compared with a client that makes the same
//! writes directly ([`direct`]). Prints a table; results are recorded in docs/benchmarks.md.
//!
//! Flux's CRDs are installed but its controllers are not started: what is measured is the
//! time until every Flux object exists and each Application's status lists all its clusters,
//! and, from the controller's own request counters ([`requests`]), how many writes it needed.
//!
//! `kurator bench rollout` ([`rollout`]) runs staged rollouts on the same setup, with a client
//! standing in for Flux ([`standin`]).

mod direct;
mod requests;
pub mod rollout;
mod standin;
mod timeline;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::runtime::watcher;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, PostParams},
};
use kurator_api::{
    Application, AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    flux::Kustomization,
};
use kurator_testenv::{ControllerManagerMode, TestEnv, ensure_flux_binaries};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Cluster counts for "one Application to N clusters".
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    pub clusters: Vec<usize>,
    /// Application counts for "M Applications to 10 clusters".
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    pub apps: Vec<usize>,
    /// Member API servers the clusters share.
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    /// Concurrency of the direct client (the baseline).
    #[arg(long, default_value_t = 16)]
    pub client_concurrency: usize,
    /// Extra "M Applications to N clusters" scenarios, as `MxN` (e.g. `20x1000`: the scale
    /// scenario, 20,000 Flux objects).
    #[arg(long, value_delimiter = ',', value_parser = parse_matrix)]
    pub matrix: Vec<(usize, usize)>,
}

fn parse_matrix(text: &str) -> Result<(usize, usize), String> {
    let (apps, clusters) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?} is not APPSxCLUSTERS, e.g. 20x1000"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{text:?} is not APPSxCLUSTERS, e.g. 20x1000"))
    };
    Ok((number(apps)?, number(clusters)?))
}

struct Row {
    scenario: String,
    objects: usize,
    kurator: Duration,
    direct: Duration,
    /// The controller's writes to Flux objects per Flux object wanted (Kustomizations and
    /// sources); 1.00 is one apply each.
    writes_per_object: f64,
    /// The controller's `applications/status` writes per Application; 1.00 is one each.
    status_writes_per_app: f64,
    cpu: f64,
    peak_rss_mb: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Started {
        env,
        client,
        controller,
        metrics,
    } = start(args.members).await?;
    let pid = controller.0.id();
    let bench = Bench {
        client: &client,
        pid,
        metrics,
        concurrency: args.client_concurrency,
    };

    let mut rows = Vec::new();
    for &n in &args.clusters {
        let ns = format!("fanout-{n}");
        setup(&client, &env, &ns, n, |_| BTreeMap::new()).await?;
        let apps = [app("fanout", &ns)];
        rows.push(
            bench
                .scenario(format!("1 app → {n} clusters"), &ns, &apps, n)
                .await?,
        );
    }
    for &m in &args.apps {
        let ns = format!("apps-{m}");
        setup(&client, &env, &ns, 10, |_| BTreeMap::new()).await?;
        let apps: Vec<Application> = (0..m).map(|i| app(&format!("app-{i}"), &ns)).collect();
        rows.push(
            bench
                .scenario(format!("{m} apps → 10 clusters"), &ns, &apps, 10)
                .await?,
        );
    }
    for &(m, n) in &args.matrix {
        let ns = format!("matrix-{m}x{n}");
        setup(&client, &env, &ns, n, |_| BTreeMap::new()).await?;
        let apps: Vec<Application> = (0..m).map(|i| app(&format!("app-{i}"), &ns)).collect();
        rows.push(
            bench
                .scenario(format!("{m} apps → {n} clusters"), &ns, &apps, n)
                .await?,
        );
    }
    drop(controller);

    println!(
        "| scenario | Flux objects | kurator | direct client | ratio | writes / Flux object | status writes / app | controller CPU | controller peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.2}x | {:.2} | {:.2} | {:.2} s | {:.1} MB |",
            r.scenario,
            r.objects,
            r.kurator.as_secs_f64(),
            r.direct.as_secs_f64(),
            r.kurator.as_secs_f64() / r.direct.as_secs_f64().max(0.001),
            r.writes_per_object,
            r.status_writes_per_app,
            r.cpu,
            r.peak_rss_mb
        );
    }
    Ok(())
}

/// What every scenario measures against.
struct Bench<'a> {
    client: &'a Client,
    /// The controller process and its /metrics address.
    pid: u32,
    metrics: SocketAddr,
    concurrency: usize,
}

impl Bench<'_> {
    /// Runs `apps` (each fanning out to `per_app` clusters) through the controller, then the
    /// same writes through the direct client.
    async fn scenario(
        &self,
        scenario: String,
        ns: &str,
        apps: &[Application],
        per_app: usize,
    ) -> anyhow::Result<Row> {
        let before = requests::settled(self.metrics).await?;
        let cpu0 = cpu_seconds(self.pid)?;
        let kurator = measure_apps(self.client, ns, apps, per_app).await?;
        let cpu = cpu_seconds(self.pid)? - cpu0;
        let during = requests::settled(self.metrics).await?.since(&before);
        // The controller's peak while it did the work (the direct run below adds objects the
        // controller's Flux watches also see).
        let peak_rss = peak_rss_mb(self.pid)?;
        // The controller's writes for the first Application, copied by the direct client.
        let first = apps.first().map(ResourceExt::name_any).unwrap_or_default();
        let template = direct::Template::read(self.client, ns, &first).await?;
        let direct = direct::run(
            self.client,
            &format!("{ns}-direct"),
            apps.len(),
            per_app,
            self.concurrency,
            &template,
        )
        .await?;
        let objects = apps.len() * per_app;
        // Kustomizations and one source per Application.
        let wanted = (objects + apps.len()).max(1) as f64;
        eprintln!("done: {scenario}");
        Ok(Row {
            scenario,
            objects,
            kurator,
            direct,
            writes_per_object: during.flux_writes() / wanted,
            status_writes_per_app: during.application_status_writes() / apps.len().max(1) as f64,
            cpu,
            peak_rss_mb: peak_rss,
        })
    }
}

/// A host and its members, Flux's CRDs but not its controllers, and our controller.
struct Started {
    env: TestEnv,
    client: Client,
    controller: ControllerProcess,
    /// The controller's /metrics.
    metrics: SocketAddr,
}

async fn start(members: usize) -> anyhow::Result<Started> {
    let flux = tokio::task::spawn_blocking(ensure_flux_binaries).await??;
    let mut crds = vec![
        kurator_api::crds::all_yaml(),
        direct::application_crd_yaml(),
    ];
    crds.extend(flux.crds()?);
    eprintln!("starting a host and {members} members...");
    // Only the API matters here: no Pods run, and per-cluster schedulers, kwoks and
    // controller-managers would steal CPU from the controller being measured.
    let env = TestEnv::builder()
        .members(members)
        .controller_manager(ControllerManagerMode::Host)
        .nodes(false)
        .crds(crds)
        .start()
        .await?;
    let client = env.host().client().await?;
    let (child, metrics) = start_controller(env.host().kubeconfig_path(), env.state_dir())?;
    Ok(Started {
        env,
        client,
        controller: ControllerProcess(child),
        metrics,
    })
}

/// Kills the benchmarked controller however the benchmark ends.
struct ControllerProcess(Child);

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The controller as its own process, and the address of its /metrics.
fn start_controller(
    kubeconfig: &std::path::Path,
    state: &std::path::Path,
) -> anyhow::Result<(Child, SocketAddr)> {
    let log = std::fs::File::create(state.join("logs").join("bench-controller.log"))?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // `KURATOR_BENCH_WRAPPER=heaptrack` (for example) runs the controller under a profiler.
    let mut command = match std::env::var_os("KURATOR_BENCH_WRAPPER") {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(std::env::current_exe()?);
            c
        }
        None => Command::new(std::env::current_exe()?),
    };
    command
        .args([
            "controller",
            "--leader-elect=false",
            "--health-interval=10m",
            &format!("--metrics-addr={addr}"),
        ])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        // `KURATOR_BENCH_RUST_LOG=info` (with `KURATOR_TESTENV_KEEP=1` to keep the log): what
        // the controller did, with times.
        .env(
            "RUST_LOG",
            std::env::var("KURATOR_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the controller")
        .map(|child| (child, addr))
}

pub(super) async fn create_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// Namespace, one kubeconfig Secret per member, `n` AttachedClusters spread over the members
/// (cluster `i` labelled `labels(i)`), and a ready Fleet `bench` holding them all.
async fn setup(
    client: &Client,
    env: &TestEnv,
    ns: &str,
    n: usize,
    labels: impl Fn(usize) -> BTreeMap<String, String>,
) -> anyhow::Result<()> {
    create_namespace(client, ns).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (i, member) in env.members().iter().enumerate() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("member{i}")),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(member.kubeconfig_yaml().into_bytes()),
            )])),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
    }
    let acs: Api<AttachedCluster> = Api::namespaced(client.clone(), ns);
    let members = env.members().len();
    stream::iter(0..n)
        .map(|i| {
            let acs = acs.clone();
            let mut cluster = AttachedCluster::new(
                &format!("c{i}"),
                AttachedClusterSpec {
                    kubeconfig: SecretKeyRef {
                        name: format!("member{}", i % members),
                        key: "value".into(),
                    },
                },
            );
            let labels = labels(i);
            if !labels.is_empty() {
                cluster.metadata.labels = Some(labels);
            }
            async move { acs.create(&PostParams::default(), &cluster).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let clusters = (0..n)
        .map(|i| FleetCluster {
            name: format!("c{i}"),
            kind: ClusterKind::AttachedCluster,
        })
        .collect();
    let fleets: Api<Fleet> = Api::namespaced(client.clone(), ns);
    fleets
        .create(
            &PostParams::default(),
            &Fleet::new(
                "bench",
                FleetSpec {
                    clusters,
                    plugin: None,
                },
            ),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let fleet = fleets.get("bench").await?;
        if fleet
            .status
            .as_ref()
            .is_some_and(|s| s.ready_clusters == n as i32)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("fleet in {ns} not ready after 10 min");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn app(name: &str, ns: &str) -> Application {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  source:\n    gitRepository: {{url: 'http://127.0.0.1:1/bench.git', interval: 10m, ref: {{branch: master}}}}\n  destination: {{fleet: bench}}\n  syncPolicies:\n    - kustomization: {{interval: 10m, prune: true, path: ./deploy}}\n"
    );
    serde_saphyr::from_str(&yaml).expect("benchmark Application is valid")
}

/// Creates `apps` and waits until each has `per_app` Kustomizations and lists them all.
async fn measure_apps(
    client: &Client,
    ns: &str,
    apps: &[Application],
    per_app: usize,
) -> anyhow::Result<Duration> {
    let api: Api<Application> = Api::namespaced(client.clone(), ns);
    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    stream::iter(apps.iter().cloned())
        .map(|a| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &a).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let want = apps.len() * per_app;
    // Event-driven, so the measured time is not rounded up to a polling interval; metadata
    // lists only, so the observer does not load the API server it measures.
    let mut changes = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut complete: BTreeMap<String, bool> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        let all = complete.values().filter(|c| **c).count() == apps.len();
        if all
            && kustomizations
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len()
                == want
        {
            return Ok(started.elapsed());
        }
        tokio::select! {
            event = changes.next() => match event {
                Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a))) => {
                    let done = a.status.as_ref().is_some_and(|s| s.total_clusters == per_app as i32);
                    complete.insert(a.name_any(), done);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("{ns}: watching Applications failed: {e}"),
                None => bail!("{ns}: the Application watch ended"),
            },
            // Every status may be complete before the last Kustomization is listed.
            _ = tokio::time::sleep(Duration::from_millis(100)), if all => {}
            _ = tokio::time::sleep_until(deadline) => {
                bail!(
                    "{ns}: {}/{} Applications complete after 15 min",
                    complete.values().filter(|c| **c).count(),
                    apps.len()
                );
            }
        }
    }
}

/// user + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc stat")?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5), counted after the command name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident set size (VmHWM) of `pid`, in MB.
fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::parse_matrix;

    #[test]
    fn matrix_scenarios_parse() {
        assert_eq!(parse_matrix("20x1000"), Ok((20, 1000)));
        assert!(parse_matrix("20").is_err());
        assert!(parse_matrix("ax1").is_err());
    }
}
