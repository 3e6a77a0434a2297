//! `kurator metrics query` as a user runs it: the built binary against a real Prometheus (the
//! HTTP API Thanos Query serves) and a real host API server holding the Fleet.
//!
//! Prometheus scrapes itself twice, once as `cluster: member1` and once as `cluster: member2`,
//! so `up` has the two clusters a fleet's Thanos Query would return; the Fleet lists member1..3,
//! so member3 must be named as having no series. Thanos Query itself is not run here (other
//! tests run it); its query API is the same.
//!
//! The service-proxy lookup is checked against the real API server as far as it goes: which
//! Service it picks and that the request goes through that Service's proxy path. The API
//! server refuses to proxy to loopback addresses (and Endpoints may not name them), so the
//! proxied query itself cannot reach a local Prometheus: the API server's refusal is what the
//! test sees and asserts.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::{Api, api::PostParams};
use kurator_api::{
    Fleet,
    fleet::{ClusterKind, FleetCluster, FleetSpec},
};
use kurator_cli::metrics::discover::{self, Endpoint};
use kurator_testenv::{ControllerManagerMode, TestEnv, wait};
use tokio::process::{Child, Command};

use common::{Run, run};

const KURATOR: &str = env!("CARGO_BIN_EXE_kurator");
const NS: &str = "default";
/// Upper bound of one CLI run (its own --timeout is 30 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Prometheus up and both static targets scraped once.
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(60);

/// Straight to the terminal (or CI's log): libtest captures `eprintln!` of passing tests, and
/// a skip must be seen.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn has_prometheus() -> bool {
    std::process::Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prometheus' configuration, data and log (`prometheus.log`); kept when the test fails.
struct PrometheusDir(Option<tempfile::TempDir>);

impl PrometheusDir {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for PrometheusDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            say(&format!(
                "metrics_query: Prometheus' log kept at {}/prometheus.log",
                dir.keep().display()
            ));
        }
    }
}

/// A real Prometheus on `port` scraping itself as two clusters every second.
fn start_prometheus(dir: &Path, port: u16) -> Child {
    let log = dir.join("prometheus.log");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: prometheus\n  static_configs:\n  - targets: ['127.0.0.1:{port}']\n    labels: {{cluster: member1}}\n  - targets: ['127.0.0.1:{port}']\n    labels: {{cluster: member2}}\n"
        ),
    )
    .unwrap();
    Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts")
}

/// The binary with `args`, the host named by flag; no KUBECONFIG or KURATOR_THANOS_URL of the
/// developer's plays a part (`env` may set the latter).
async fn kurator(host_kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(KURATOR);
    command
        .args(["metrics", "query"])
        .args(args)
        .arg(format!("--kubeconfig={}", host_kubeconfig.display()))
        .env_remove("KUBECONFIG")
        .env_remove(discover::THANOS_URL_ENV)
        .envs(env.iter().copied());
    run(&mut command, &format!("kurator {args:?}"), RUN_TIMEOUT).await
}

fn fleet(name: &str, clusters: &[&str], metric: bool) -> Fleet {
    let mut spec = FleetSpec {
        clusters: clusters
            .iter()
            .map(|c| FleetCluster {
                name: c.to_string(),
                kind: ClusterKind::AttachedCluster,
            })
            .collect(),
        plugin: None,
    };
    if metric {
        spec.plugin = Some(
            serde_json::from_value(serde_json::json!({
                "metric": { "thanos": { "objectStoreConfig": { "secretName": "thanos-objstore" } } }
            }))
            .unwrap(),
        );
    }
    Fleet::new(name, spec)
}

/// A Service as the bitnami thanos chart renders the query one (labels and ports), without a
/// selector: nothing runs behind it.
fn query_service(name: &str, labels: &[(&str, &str)]) -> Service {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "ports": [
            { "name": "grpc", "port": 10901 },
            { "name": "http", "port": 9090 },
        ] },
    }))
    .unwrap()
}

/// `-o json` of `promql`, parsed; the command's output when it fails (Prometheus may still be
/// starting).
async fn json_query(
    host_kubeconfig: &Path,
    url: &str,
    promql: &str,
) -> Result<serde_json::Value, String> {
    let run = kurator(
        host_kubeconfig,
        &[
            promql,
            "--fleet",
            "metrics",
            "-o",
            "json",
            "--thanos-url",
            url,
        ],
        &[],
    )
    .await;
    if !run.ok {
        return Err(run.text());
    }
    Ok(serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout)))
}

fn series_clusters(result: &serde_json::Value) -> Vec<String> {
    result["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cluster"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn query_by_cluster_through_a_real_prometheus_and_the_service_lookup() {
    if !has_prometheus() {
        say(
            "SKIPPED metrics_query: no `prometheus` on PATH (Debian: apt-get install prometheus); the CLI's query path is NOT tested",
        );
        return;
    }
    let started = Instant::now();
    // Prometheus first: it applies its scrape targets about 5 s after starting (its discovery
    // manager's fixed update interval), time the host's start overlaps.
    let port = free_port();
    let prometheus_dir = PrometheusDir(Some(
        tempfile::Builder::new()
            .prefix("kurator-metrics-query-")
            .tempdir()
            .unwrap(),
    ));
    let _prometheus = start_prometheus(prometheus_dir.path(), port);
    let env = TestEnv::builder()
        .nodes(false)
        .controller_manager(ControllerManagerMode::None)
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("test environment starts");
    say(&format!(
        "metrics_query: host API server up {:.1} s after the start",
        started.elapsed().as_secs_f64()
    ));
    let kubeconfig = env.host().kubeconfig_path().to_path_buf();
    let url = format!("http://127.0.0.1:{port}");
    let host = env.host().client().await.unwrap();
    let fleets: Api<Fleet> = Api::namespaced(host.clone(), NS);
    for f in [
        fleet("metrics", &["member1", "member2", "member3"], true),
        fleet("plain", &["member1"], false),
    ] {
        fleets.create(&PostParams::default(), &f).await.unwrap();
    }
    let mut outputs = Vec::new();

    // Both clusters scraped: the JSON names them with their values, member3 as silent.
    let promql = "count by (cluster) (up)";
    let result = wait::until("up from member1 and member2", SCRAPED_TIMEOUT, || async {
        json_query(&kubeconfig, &url, promql)
            .await
            .map(|result| (series_clusters(&result) == ["member1", "member2"]).then_some(result))
    })
    .await
    .unwrap();
    say(&format!(
        "metrics_query: Prometheus answering with both clusters {:.1} s after the start",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(result["fleet"], "metrics");
    assert_eq!(result["query"], promql);
    assert_eq!(result["resultType"], "vector");
    assert_eq!(
        result["clustersWithoutSeries"],
        serde_json::json!(["member3"])
    );
    for series in result["series"].as_array().unwrap() {
        assert_eq!(series["value"]["value"], "1", "{series}");
    }

    // The table: one row per cluster with its value and other labels; member3 named.
    let run = kurator(
        &kubeconfig,
        &["up", "--fleet", "metrics", "--thanos-url", &url],
        &[],
    )
    .await;
    assert!(run.ok, "{}", run.text());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["CLUSTER", "VALUE", "LABELS"],
        "{}",
        run.stdout
    );
    for (line, cluster) in lines[1..3].iter().zip(["member1", "member2"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[..2], [cluster, "1"], "{}", run.stdout);
        assert!(
            line.contains(&format!("instance=\"127.0.0.1:{port}\""))
                && line.contains("job=\"prometheus\""),
            "{}",
            run.stdout
        );
    }
    assert_eq!(lines[3..], ["no series from member3"], "{}", run.stdout);
    say(&format!(
        "metrics_query: `kurator metrics query up`:\n{}",
        run.stdout
    ));
    outputs.push(run);

    // KURATOR_THANOS_URL stands for --thanos-url; a series without `cluster` is shown as `-`.
    let run = kurator(
        &kubeconfig,
        &["vector(7)", "--fleet", "metrics", "-n", NS],
        &[(discover::THANOS_URL_ENV, &url)],
    )
    .await;
    assert!(run.ok, "{}", run.text());
    assert_eq!(
        run.stdout,
        "CLUSTER  VALUE  LABELS\n-        7      -\nno series from member1, member2, member3\n"
    );
    outputs.push(run);

    // Errors: clear, on stderr, exit code non-zero.
    let refused = |run: &Run, wanted: &[&str]| {
        assert!(!run.ok, "{}", run.text());
        assert!(run.stdout.is_empty(), "{}", run.text());
        for w in wanted {
            assert!(run.stderr.contains(w), "{w:?} not in: {}", run.stderr);
        }
    };
    let run = kurator(
        &kubeconfig,
        &["sum(up", "--fleet", "metrics", "--thanos-url", &url],
        &[],
    )
    .await;
    refused(
        &run,
        &["Thanos Query refused the query (bad_data)", "parse error"],
    );
    say(&format!("metrics_query: bad PromQL: {}", run.stderr.trim()));
    outputs.push(run);
    let run = kurator(
        &kubeconfig,
        &["up", "--fleet", "nope", "--thanos-url", &url],
        &[],
    )
    .await;
    refused(&run, &["fleet default/nope not found"]);
    outputs.push(run);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let run = kurator(
        &kubeconfig,
        &["up", "--fleet", "metrics", "--thanos-url", &closed],
        &[],
    )
    .await;
    refused(&run, &[&format!("Thanos Query not reachable ({closed})")]);
    outputs.push(run);
    let run = kurator(&kubeconfig, &["up", "--fleet", "plain"], &[]).await;
    refused(
        &run,
        &["fleet default/plain has no metric plugin", "--thanos-url"],
    );
    outputs.push(run);
    let run = kurator(&kubeconfig, &["up", "--fleet", "metrics"], &[]).await;
    refused(
        &run,
        &[
            "Thanos Query not found",
            "default-thanos-query",
            "app.kubernetes.io/instance=default-thanos",
        ],
    );
    outputs.push(run);

    // The lookup on the real API server: by the chart's labels first (here a renamed Service,
    // as a fullnameOverride would make it), not by the default name; the storegateway's
    // Service, same release, is not taken.
    let services: Api<Service> = Api::namespaced(host.clone(), NS);
    let release = discover::thanos_release(NS);
    for service in [
        query_service(
            "default-thanos-storegateway",
            &[
                ("app.kubernetes.io/instance", &release),
                ("app.kubernetes.io/name", "thanos"),
                ("app.kubernetes.io/component", "storegateway"),
            ],
        ),
        query_service("default-thanos-query", &[]),
        query_service(
            "renamed-query",
            &[
                ("app.kubernetes.io/instance", &release),
                ("app.kubernetes.io/name", "thanos"),
                ("app.kubernetes.io/component", "query"),
            ],
        ),
    ] {
        services
            .create(&PostParams::default(), &service)
            .await
            .unwrap();
    }
    let found = discover::thanos_query(&host, NS).await.unwrap();
    assert_eq!(
        found,
        Endpoint::ServiceProxy {
            namespace: NS.into(),
            service: "renamed-query".into(),
            port: "http".into(),
        }
    );
    // Through the service proxy: the API server answers for that Service, which names the
    // path taken. Nothing runs behind it: its Endpoints are empty, as the endpoints controller
    // (not run here) leaves them while no query Pod is ready.
    let endpoints: Api<Endpoints> = Api::namespaced(host.clone(), NS);
    let empty: Endpoints =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "renamed-query" } }))
            .unwrap();
    endpoints
        .create(&PostParams::default(), &empty)
        .await
        .unwrap();
    let run = kurator(&kubeconfig, &["up", "--fleet", "metrics"], &[]).await;
    refused(
        &run,
        &[
            "Thanos Query not reachable (Service default/renamed-query port http, through the API server's service proxy)",
            "the API server answered HTTP 503",
            r#"no endpoints available for service "renamed-query""#,
        ],
    );
    outputs.push(run);
    // Without the labelled one, the default name is the fallback.
    services
        .delete("renamed-query", &Default::default())
        .await
        .unwrap();
    let found = discover::thanos_query(&host, NS).await.unwrap();
    assert!(
        matches!(&found, Endpoint::ServiceProxy { service, .. } if service == "default-thanos-query"),
        "{found:?}"
    );

    // No credential of the host kubeconfig in any output.
    let host_kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let user = serde_json::to_value(&host_kubeconfig.auth_infos[0].auth_info).unwrap();
    let secrets: Vec<String> = ["client-key-data", "token"]
        .iter()
        .filter_map(|k| user[k].as_str().map(String::from))
        .collect();
    assert!(
        !secrets.is_empty(),
        "the host kubeconfig holds a credential"
    );
    for run in &outputs {
        for secret in &secrets {
            assert!(
                !run.text().contains(secret.as_str()),
                "a credential in: {}",
                run.text()
            );
        }
    }
    say(&format!(
        "metrics_query: whole test {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}
