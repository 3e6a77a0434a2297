//! The `kurator` binary as a user runs it: the playground, and the controller process with
//! its endpoints and leader election as the chart's two replicas.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;

#[path = "binary/walkthrough.rs"]
mod walkthrough;

const KURATOR: &str = env!("CARGO_BIN_EXE_kurator");

fn kurator(dev_dir: &Path, args: &[&str]) -> Output {
    Command::new(KURATOR)
        .args(args)
        .env("KURATOR_DEV_DIR", dev_dir)
        .output()
        .expect("kurator runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn playground_up_twice_env_status_get_down() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev");
    // Stops the playground even when an assertion fails.
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = kurator(self.0, &["dev", "down"]);
        }
    }
    let _down = Down(&dev);

    let up = kurator(&dev, &["dev", "up"]);
    let up_text = text(&up);
    assert!(up.status.success(), "{up_text}");
    assert!(
        up_text.contains("Fleet quickstart is ready: 2/2 clusters."),
        "{up_text}"
    );
    assert!(up_text.contains("quickstart  Ready  2/2"), "{up_text}");
    assert!(
        up_text.contains("Application gitrepo-kustomization-demo is synced on every cluster."),
        "{up_text}"
    );
    assert!(up_text.contains("4/4     True"), "{up_text}");
    // The end screen reports podinfo's Deployment as each member does.
    for member in ["kurator-member1", "kurator-member2"] {
        assert!(
            up_text.contains(&format!("  {member}  Available  1/1 ready")),
            "{up_text}"
        );
    }

    let again = kurator(&dev, &["dev", "up"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("Playground already running"),
        "{}",
        text(&again)
    );

    let env = text(&kurator(&dev, &["dev", "env"]));
    let exports: Vec<(&str, &str)> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .collect();
    let names: Vec<&str> = exports.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "KUBECONFIG",
            "KURATOR_MEMBER1_KUBECONFIG",
            "KURATOR_MEMBER2_KUBECONFIG",
            "KURATOR_GIT_SERVER"
        ]
    );
    for (name, value) in &exports {
        if name.ends_with("KUBECONFIG") {
            assert!(Path::new(value).exists(), "{value} missing");
        } else {
            assert!(value.starts_with("http://127.0.0.1:"), "{name}={value}");
        }
    }

    let status = kurator(&dev, &["dev", "status"]);
    let status_text = text(&status);
    assert!(status.status.success(), "{status_text}");
    for expected in [
        "host     running",
        "member1  running",
        "member2  running",
        "controller running",
        "git-server running",
        "flux     source-",
    ] {
        assert!(status_text.contains(expected), "{status_text}");
    }
    // Every process of every cluster, each on its own line with its pid.
    let mut processes = vec!["etcd".to_string()];
    for cluster in ["host", "member1", "member2"] {
        for component in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ] {
            processes.push(format!("{cluster}-{component}"));
        }
    }
    for controller in ["source", "kustomize", "helm"] {
        processes.push(format!("host-{controller}-controller"));
    }
    for process in &processes {
        let line = status_text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(process.as_str()));
        assert!(
            line.is_some_and(|l| l.contains("running (pid ")),
            "{process} not listed as running:\n{status_text}"
        );
    }

    let host = exports[0].1;
    // The example application's workload landed in both members, and podinfo's Deployment
    // is Available there (Pods on kwok's simulated nodes).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let members = exports
        .iter()
        .filter(|(name, _)| name.starts_with("KURATOR_MEMBER"));
    for (_, member) in members {
        let (found, webapp) = rt.block_on(async {
            let client = kurator_cli::client(Some(&std::path::PathBuf::from(member)))
                .await
                .unwrap();
            let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client.clone(), "default");
            let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(client, "default");
            (
                (
                    cms.get_opt("webapp-config").await.unwrap(),
                    cms.get_opt("podinfo-kustomized").await.unwrap(),
                ),
                deployments.get_opt("webapp").await.unwrap(),
            )
        });
        assert!(
            found.0.is_some() && found.1.is_some(),
            "example workload missing in {member}"
        );
        let status = webapp
            .unwrap_or_else(|| panic!("no Deployment webapp in {member}"))
            .status
            .unwrap_or_default();
        let available = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Available")
            .map(|c| c.status.as_str());
        assert_eq!(available, Some("True"), "{member}: {status:?}");
        assert_eq!(status.ready_replicas, Some(1), "{member}: {status:?}");
    }
    let clusters = Command::new(KURATOR)
        .args(["get", "clusters", "--kubeconfig", host])
        .output()
        .unwrap();
    let clusters = text(&clusters);
    assert!(
        clusters.starts_with("NAME             READY  VERSION  FLEET       AGE"),
        "{clusters}"
    );
    assert!(
        clusters.contains("kurator-member1  true   v1.35.4  quickstart"),
        "{clusters}"
    );
    let json = Command::new(KURATOR)
        .args(["get", "fleets", "-o", "json", "--kubeconfig", host])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).expect("-o json is JSON");
    assert_eq!(list["items"][0]["status"]["readyClusters"], 2);

    // --watch prints the table again when the fleet changes.
    let mut watch = Command::new(KURATOR)
        .args(["get", "fleets", "--watch", "--kubeconfig", host])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("first table");
    assert!(first.starts_with("NAME"), "{first}");
    rt.block_on(async {
        let client = kurator_cli::client(Some(&std::path::PathBuf::from(host))).await.unwrap();
        let fleet = "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: quickstart, namespace: default}\nspec:\n  clusters:\n  - {name: kurator-member1, kind: AttachedCluster}\n  - {name: kurator-member2, kind: AttachedCluster}\n  - {name: ghost, kind: AttachedCluster}\n";
        let objects = kurator_cli::manifest::parse(fleet).unwrap();
        kurator_cli::manifest::apply(&client, &objects, "default").await.unwrap();
    });
    // Each look waits up to 100 ms for the next line the watch prints.
    let next_line = || match lines.recv_timeout(kurator_testenv::wait::INTERVAL) {
        Ok(line) if line.starts_with("quickstart  Running  2/3") => Ok(true),
        Ok(line) => Err(line),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(false),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the watch ended"),
    };
    kurator_testenv::wait::until_blocking(
        "the watch to show the change",
        Duration::from_secs(30),
        Duration::ZERO,
        next_line,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = watch.kill();
    let _ = watch.wait();

    // The same playground with the brief's plugins: every plugin Ready on both members and
    // the fleet's policy summary from the real Kyverno, in `describe fleet`. Kyverno's counts
    // grow as it scans; the example privileged workload fails in member2 only.
    let plugins = kurator(&dev, &["dev", "up", "--plugins"]);
    let out = text(&plugins);
    assert!(plugins.status.success(), "{out}");
    for line in [
        "metric   thanos            Ready   -                -",
        "metric   prometheus        -       Ready            Ready",
        "grafana  grafana           Ready   -                -",
        "kyverno  kyverno           -       Ready            Ready",
        "kyverno  kyverno-policies  -       Ready            Ready",
        "Policy reports: ",
        "real programs run as local processes configured from what the charts rendered",
        "MetricReady         True",
        "GrafanaReady        True",
        "PolicyReady         True",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let failing: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("disallow-privileged-containers"))
        .collect();
    assert!(
        failing.len() == 1 && failing[0].trim_end().ends_with("kurator-member2"),
        "the example workload fails in kurator-member2 only: {failing:?}\n{out}"
    );
    let by_policy = Command::new(KURATOR)
        .args([
            "get",
            "policyreports",
            "--fleet",
            "quickstart",
            "--by",
            "policy",
        ])
        .args(["--kubeconfig", host])
        .output()
        .unwrap();
    let by_policy = text(&by_policy);
    let row = by_policy
        .lines()
        .find(|l| l.starts_with("disallow-privileged-containers "))
        .unwrap_or_else(|| panic!("no row for the failing policy:\n{by_policy}"));
    // POLICY, CLUSTERS, PASS, FAIL, WARN, ERROR, SKIP, FAILING IN.
    let cells: Vec<&str> = row.split_whitespace().collect();
    let fail_count: i64 = cells[3].parse().unwrap_or_else(|_| panic!("{row}"));
    assert!(
        cells[1] == "2" && fail_count >= 1 && cells.last() == Some(&"kurator-member2"),
        "{by_policy}"
    );

    // docs/rollout.md's walkthrough: v2 canary first, then a bad v3 rolled back.
    walkthrough::staged_rollout(&dev, host, &out);

    // The fleet-wide query the playground ends with: each member's API request rate, from
    // its own Prometheus and Thanos sidecar, through the host's Thanos Query.
    let rates = out
        .split("API requests per second by cluster, fleet-wide through Thanos Query")
        .nth(1)
        .unwrap_or_else(|| panic!("no fleet-wide query result in:\n{out}"));
    for member in ["kurator-member1", "kurator-member2"] {
        let row = rates
            .lines()
            .find(|l| l.starts_with(&format!("{member} ")))
            .unwrap_or_else(|| panic!("no rate for {member} in:\n{rates}"));
        let rate: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rate > 0.0, "{row}");
    }
    assert!(!rates.contains("no series from"), "{rates}");

    // `kurator metrics query` as a user runs it after `eval "$(kurator dev env)"`.
    let env = text(&kurator(&dev, &["dev", "env"]));
    let thanos_url = env
        .lines()
        .find_map(|l| l.strip_prefix("export KURATOR_THANOS_URL="))
        .unwrap_or_else(|| panic!("no KURATOR_THANOS_URL in:\n{env}"));
    let query = Command::new(KURATOR)
        .args(["metrics", "query", "count by (cluster) (up)"])
        .args(["--fleet", "quickstart", "-o", "json", "--kubeconfig", host])
        .env("KURATOR_THANOS_URL", thanos_url)
        .output()
        .unwrap();
    assert!(query.status.success(), "{}", text(&query));
    let answer: serde_json::Value = serde_json::from_slice(&query.stdout).unwrap();
    let clusters: Vec<&str> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["cluster"].as_str())
        .collect();
    assert_eq!(clusters, ["kurator-member1", "kurator-member2"], "{answer}");
    assert_eq!(answer["clustersWithoutSeries"], serde_json::json!([]));

    // The real Kyverno runs in both members, listed with its pids, and so do the
    // members' Prometheus and sidecar and the host's Thanos Query.
    let status = text(&kurator(&dev, &["dev", "status"]));
    for name in [
        "member1-prometheus",
        "member1-thanos-sidecar",
        "member2-prometheus",
        "member2-thanos-sidecar",
        "host-thanos-query",
    ] {
        assert!(
            status
                .lines()
                .any(|l| l.trim_start().starts_with(name) && l.contains("running (pid ")),
            "{name} in:\n{status}"
        );
    }
    // member2's Prometheus killed (an outage: nothing restarts it): its series leave the
    // answer, and the CLI names the cluster that has none instead of leaving it out.
    let pid: u32 = status
        .lines()
        .find(|l| l.trim_start().starts_with("member2-prometheus "))
        .and_then(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("member2-prometheus's pid in:\n{status}"));
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill {pid}");
    let mut last = String::new();
    wait_until(
        Duration::from_secs(60),
        "kurator metrics query to name kurator-member2 as without series",
        || {
            let query = Command::new(KURATOR)
                .args(["metrics", "query", "count by (cluster) (up)"])
                .args(["--fleet", "quickstart", "--kubeconfig", host])
                .env("KURATOR_THANOS_URL", thanos_url)
                .output()
                .unwrap();
            last = text(&query);
            let stdout = String::from_utf8_lossy(&query.stdout);
            query.status.success()
                && stdout.lines().any(|l| l.starts_with("kurator-member1 "))
                && stdout
                    .trim_end()
                    .ends_with("no series from kurator-member2")
        },
    );
    // Thanos Query's partial-response warning goes to stderr and names the dead store.
    assert!(last.contains("warning: "), "{last}");

    for cluster in ["member1", "member2"] {
        for component in ["kyverno-admission-controller", "kyverno-reports-controller"] {
            let name = format!("{cluster}-{component}");
            assert!(
                status
                    .lines()
                    .any(|l| l.trim_start().starts_with(&name) && l.contains("running (pid ")),
                "{name} in:\n{status}"
            );
        }
    }

    let down = kurator(&dev, &["dev", "down"]);
    assert!(
        text(&down).contains("Playground stopped"),
        "{}",
        text(&down)
    );
    assert!(!dev.exists(), "state removed");
    let status = kurator(&dev, &["dev", "status"]);
    assert!(text(&status).contains("No playground running"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET; returns (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

fn wait_until(timeout: Duration, what: &str, check: impl FnMut() -> bool) {
    let interval = kurator_testenv::wait::INTERVAL;
    if let Err(e) = kurator_testenv::wait::until_blocking(what, timeout, interval, check) {
        panic!("{e}; logs:\n{}", all_logs());
    }
}

thread_local! {
    static LOGS: std::cell::RefCell<Vec<std::path::PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn all_logs() -> String {
    LOGS.with(|l| {
        l.borrow()
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    })
}

struct Controller {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

/// A replica as the kubelet would run the chart's Pod: its container's arguments and
/// environment (the downward API's fields resolved from the Pod), the ServiceAccount's token
/// as its only credential; the metrics port (`0.0.0.0:8080` in the Pod) moved to a free
/// loopback port, since every replica runs on this machine.
struct Replica {
    pod: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Replica {
    fn from_pod(pod: &Pod) -> Replica {
        let name = pod.metadata.name.clone().unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env = container
            .env
            .iter()
            .flatten()
            .map(|var| {
                let field = var
                    .value_from
                    .as_ref()
                    .and_then(|from| from.field_ref.as_ref())
                    .map(|f| f.field_path.as_str());
                let value = match field {
                    Some("metadata.name") => name.clone(),
                    Some("metadata.namespace") => pod.metadata.namespace.clone().unwrap(),
                    Some(other) => panic!("downward API field {other} not resolved here"),
                    None => var.value.clone().unwrap_or_default(),
                };
                (var.name.clone(), value)
            })
            .collect();
        Replica {
            pod: name,
            args: container.args.clone().unwrap_or_default(),
            env,
        }
    }
}

impl Controller {
    fn start(replica: &Replica, kubeconfig: &Path, log: std::path::PathBuf) -> Controller {
        let port = free_port();
        let file = std::fs::File::create(&log).unwrap();
        LOGS.with(|l| l.borrow_mut().push(log.clone()));
        let args = replica.args.iter().map(|arg| {
            if arg.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{port}")
            } else {
                arg.clone()
            }
        });
        let child = Command::new(KURATOR)
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env_clear()
            .envs(replica.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Controller { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the chart is installed, as a platform team would.
const RELEASE_NS: &str = "kurator-system";

/// The chart's two replicas (`charts/kurator`, installed by real Helm through Flux into the
/// test host; kwok runs its Pods), each run as the kubelet would run its Pod's container:
/// endpoints, metrics and leader election under the chart's own RBAC.
#[tokio::test(flavor = "multi_thread")]
async fn the_chart_replicas_lead_and_stand_by() {
    kurator_cli::install_crypto_provider();
    // No Kurator CRDs: Helm installs them from the chart's crds/.
    let env = kurator_testenv::TestEnv::builder()
        .members(1)
        .flux(true)
        .start()
        .await
        .expect("control planes");
    let logs = tempfile::tempdir().unwrap();
    let repo = kurator_testenv::HelmRepo::start(logs.path().join("charts")).unwrap();
    let chart_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/kurator");
    let version = env!("CARGO_PKG_VERSION");
    kurator_testenv::add_kurator_chart(&repo, &chart_dir, version).unwrap();
    let client = env.host().client().await.unwrap();
    let release = kurator_testenv::KuratorRelease {
        namespace: RELEASE_NS,
        name: "kurator",
        version,
    };
    // Debug level: the key-material check below covers what kube and the controller log.
    let values = serde_json::json!({"controller": {"logLevel":
        "debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info"}});
    kurator_testenv::install_kurator_chart(
        &client,
        &repo,
        &release,
        values,
        Duration::from_secs(180),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let pods = kube::Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=kurator"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2, "the chart's two replicas");
    let replicas: Vec<Replica> = pods.iter().map(Replica::from_pod).collect();
    let account = pods[0]
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let token = kurator_testenv::service_account_kubeconfig(&env, &client, RELEASE_NS, &account)
        .await
        .unwrap();
    let host = logs.path().join("token.kubeconfig");
    // JSON is YAML: kube reads it as a kubeconfig file.
    std::fs::write(&host, serde_json::to_vec(&token).unwrap()).unwrap();

    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), RELEASE_NS);
    let holder = |lease: k8s_openapi::api::coordination::v1::Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let mut first = Controller::start(&replicas[0], &host, logs.path().join("first.log"));
    wait_until(Duration::from_secs(30), "first /readyz", || {
        http_get(first.port, "/readyz").is_some_and(|r| r.0 == 200)
    });
    assert_eq!(http_get(first.port, "/healthz").map(|r| r.0), Some(200));
    wait_until(Duration::from_secs(30), "first to lead", || {
        first.log().contains("leading")
    });
    // JSON logs, the chart's default.
    assert!(first.log().starts_with('{'), "{}", first.log());
    assert!(
        !first.log().contains(r#""level":"ERROR""#),
        "{}",
        first.log()
    );
    assert_eq!(
        holder(leases.get("kurator-controller").await.unwrap()),
        replicas[0].pod
    );

    // Work for the controller, seen in its metrics.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: m1}}\nstringData:\n  value: |\n{}",
        env.members()[0]
            .kubeconfig_yaml()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let objects = kurator_cli::manifest::parse(&yaml).unwrap();
    kurator_cli::manifest::apply(&client, &objects, "default")
        .await
        .unwrap();
    let ac = kurator_cli::manifest::parse(
        "apiVersion: cluster.kurator.dev/v1alpha1\nkind: AttachedCluster\nmetadata: {name: m1}\nspec:\n  kubeconfig: {name: m1}\n",
    )
    .unwrap();
    kurator_cli::manifest::apply(&client, &ac, "default")
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "reconcile metrics", || {
        http_get(first.port, "/metrics").is_some_and(|(_, body)| {
            body.contains(
                "kurator_reconcile_duration_seconds_count{controller=\"attachedcluster\"}",
            )
        })
    });
    // The kubeconfig's key material never reaches the log.
    let kubeconfig = env.members()[0].kubeconfig_yaml();
    let key_data = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-key-data: "))
        .expect("inline client key");
    assert!(
        !first.log().contains(&key_data[..40]),
        "key material in the log"
    );
    let metrics = http_get(first.port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("kurator_reconcile_total{controller=\"attachedcluster\"}"),
        "{metrics}"
    );
    // Its own requests to the host, by verb and resource (status writes apart).
    for line in [
        r#"kurator_api_requests_total{verb="watch",group="cluster.kurator.dev",resource="attachedclusters",code="2xx"}"#,
        r#"kurator_api_requests_total{verb="patch",group="cluster.kurator.dev",resource="attachedclusters/status",code="2xx"}"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // A second replica stands by (ready, not leading) until the first is gone.
    let second = Controller::start(&replicas[1], &host, logs.path().join("second.log"));
    wait_until(Duration::from_secs(30), "second /readyz", || {
        http_get(second.port, "/readyz").is_some_and(|r| r.0 == 200)
    });
    wait_until(Duration::from_secs(10), "second to wait", || {
        second.log().contains("waiting for the leader lease")
    });
    assert!(
        !second.log().contains("leading"),
        "two leaders:\n{}",
        second.log()
    );
    // Nothing is done twice: the standby has not reconciled anything.
    let reconciled = "kurator_reconcile_total{controller=\"attachedcluster\"}";
    let standby_metrics = http_get(second.port, "/metrics").unwrap().1;
    assert!(
        !standby_metrics.contains(reconciled),
        "the standby reconciled:\n{standby_metrics}"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed = Instant::now();
    wait_until(Duration::from_secs(60), "second to take over", || {
        second.log().contains("leading")
    });
    let took_over = killed.elapsed();
    assert_eq!(
        holder(leases.get("kurator-controller").await.unwrap()),
        replicas[1].pod
    );
    eprintln!("standby took over {took_over:?} after the leader was killed");
    // The Lease lasts 15 s (renewed 5 s before it ends); polling and a busy machine add a few.
    assert!(
        took_over < Duration::from_secs(30),
        "takeover took {took_over:?}, more than the lease duration allows"
    );
    // The new leader reconciles what the old one left (the AttachedCluster, on its first list).
    wait_until(
        Duration::from_secs(30),
        "the new leader to reconcile",
        || http_get(second.port, "/metrics").is_some_and(|(_, body)| body.contains(reconciled)),
    );
}
