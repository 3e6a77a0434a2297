//! Staged rollout metric gates end to end through real Prometheus and Thanos (issue 12,
//! docs/rollout.md): real Flux and the git server, two members in a fleet with the metric
//! plugin, the real charts installed from the local chart repository, and
//! [`MetricsStandIn`] running per member a real Prometheus + Thanos sidecar and on the host a
//! real Thanos Query (standing in for the kubelet, as in `metrics_thanos.rs`). Each member
//! also runs an [`AppExporter`], standing in for the application's container: its
//! `http_requests_total{code}` grows steadily with the share of 500s that the `errorRate` key
//! of the ConfigMap `shop` Flux applied in that member says; each member's Prometheus scrapes
//! it, so the series reach Thanos Query with the member's `cluster` label. The controller
//! queries that Thanos Query directly (`Settings::thanos_url`, as `--thanos-url`).
//!
//! Stages: `canary` (kurator-member1: soak, then an error-ratio gate `< 0.05` over a 10 s
//! rate window, then approval so the passed result stays visible in status) and `rest`,
//! `onFailure: Rollback`. v2 (errorRate 0): the canary alone on v2, the gate `Passed` with the
//! measured 0 and its threshold, then after promote the rest too, the run `Succeeded`. v3
//! (errorRate 0.5): the canary's measured ratio (about 0.5) fails the gate, the canary goes
//! back to v2's pinned source and the ConfigMap of v2 (its exporter's error rate with it),
//! the other member never leaves v2, the run ends `RolledBack` with the value in history and
//! in a Warning Event.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{
    Harness, NS, apply, put_objstore,
    rollout::{
        ended, kustomizations, member_version, pinned, rollout, rollout_reason, wait_members,
    },
    until, wait_for,
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use kurator_api::{
    Application, Fleet,
    rollout::{
        ClusterRolloutState, Comparison, GateOutcome, GateResult, RunPhase, StagePhase, annotation,
    },
};
use kurator_controller::{
    Settings,
    plugins::render::ChartMirrors,
    rollout::{observe::promote_token, pinning::same_revision},
};
use kurator_testenv::{
    AppExporter, AppExporterParams, LoadBalancerPool, MetricsStandIn, MetricsStandInParams,
    run_load_balancer_pool_simulator,
};

/// Flux installing the charts and the first scrapes reaching Thanos Query, on a loaded
/// 2-core machine.
const SETUP_WAIT: Duration = Duration::from_secs(180);
/// One step of a run: soak (15 s) and a Flux apply included.
const WAIT: Duration = Duration::from_secs(60);
const BITNAMI: &str = "oci://registry-1.docker.io/bitnamicharts";
const MEMBERS: [&str; 2] = ["kurator-member1", "kurator-member2"];
const CANARY: &str = MEMBERS[0];
/// Several samples in the gate's 10 s rate window.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
/// The canary's soak: longer than the rate window plus a scrape and the exporter's poll, so
/// the measurement sees the new revision only.
const SOAK: &str = "15s";
const THRESHOLD: f64 = 0.05;
/// Every cluster's request rate, to know the data path is up before the gated runs.
const REQUEST_RATE_BY_CLUSTER: &str = "sum by (cluster) (rate(http_requests_total[10s]))";

/// The brief's metric fleet without Grafana (not needed here).
const METRIC_FLEET: &str = "apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: quickstart, namespace: default}
spec:
  clusters:
    - {name: kurator-member1, kind: AttachedCluster}
    - {name: kurator-member2, kind: AttachedCluster}
  plugin:
    metric:
      thanos:
        objectStoreConfig: {secretName: thanos-objstore}
";

/// A loopback prefix no other test process or test of this binary uses at the same time
/// (metrics_thanos.rs takes 127.10–99.x, the playground 127.100–199.x): every sidecar listens
/// on port 10901, as behind its Service.
fn loopback_prefix() -> [u8; 3] {
    let pid = std::process::id();
    [127, 200 + (pid % 50) as u8, (pid / 50 % 250) as u8]
}

fn configmap(version: &str, error_rate: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\n  namespace: default\ndata:\n  version: {version}\n  errorRate: \"{error_rate}\"\n"
    )
}

fn error_ratio_query() -> String {
    let window = "10s";
    format!(
        "sum(rate(http_requests_total{{cluster=\"$cluster\",code=\"500\"}}[{window}])) / sum(rate(http_requests_total{{cluster=\"$cluster\"}}[{window}]))"
    )
}

/// The Application; with `gated`, the canary soaks, then measures the error ratio and waits
/// for approval (without, run 1 deploys quickly while the metrics stack comes up).
fn application(url: &str, gated: bool) -> Application {
    let canary = if gated {
        format!(
            "
        soak: {SOAK}
        gates:
          approval: true
          metrics:
            - name: error-rate
              query: '{}'
              comparison: '<'
              threshold: {THRESHOLD}",
            error_ratio_query()
        )
    } else {
        String::new()
    };
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kurator.dev/v1alpha1
kind: Application
metadata: {{name: shop, namespace: default}}
spec:
  source:
    gitRepository: {{url: '{url}', interval: 2s, ref: {{branch: master}}}}
  destination: {{fleet: quickstart}}
  syncPolicies:
    - kustomization: {{interval: 1m, retryInterval: 2s, path: ./deploy, prune: true, wait: true, timeout: 30s}}
  stagedRollout:
    onFailure: Rollback
    progressDeadline: 45s
    stages:
      - name: canary
        clusters: [{CANARY}]{canary}
      - name: rest
        rest: true
"
    ))
    .expect("application")
}

async fn wait_kustomizations(h: &Harness, want: [(String, bool); 2]) {
    until(format!("Kustomizations at {want:?}"), WAIT, || async {
        let got = kustomizations(h, &MEMBERS).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await
}

fn error_rate_gate(gates: &[GateResult]) -> GateResult {
    gates
        .iter()
        .find(|g| g.gate == "error-rate")
        .cloned()
        .unwrap_or_else(|| panic!("no error-rate result in {gates:?}"))
}

/// Records every `version` member `client` holds until stopped: what "stays on v2
/// throughout" is checked against.
fn sample_versions(
    client: Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(BTreeSet<String>, usize)> {
    tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut samples = 0;
        let mut every = tokio::time::interval(Duration::from_millis(250));
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            seen.insert(member_version(&client, "shop").await.unwrap_or_default());
            samples += 1;
        }
        (seen, samples)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_gate_passes_through_thanos_then_a_bad_release_is_rolled_back() {
    let started = Instant::now();
    let (binaries, _charts_dir, charts) = crate::common::metric_charts().await;
    let h = Harness::without_controller(Harness::environment(2, true).await).await;
    let git = kurator_testenv::GitServer::start(h.env.state_dir().join("git")).unwrap();
    let repo = git.create_repo("shop").unwrap();
    let v1 = repo
        .commit_files(&[("deploy/cm.yaml", &configmap("v1", "0"))], "v1")
        .unwrap();

    // The application's stand-in in each member, scraped by that member's Prometheus.
    let mut exporters = Vec::new();
    for member in h.env.members() {
        let exporter = AppExporter::start(AppExporterParams::new(member, NS, "shop"))
            .await
            .expect("app exporter");
        exporters.push(exporter);
    }
    let pool = LoadBalancerPool::new(loopback_prefix());
    let mut simulators = Vec::new();
    for (name, cluster) in MEMBERS.iter().zip(h.env.members()) {
        simulators.push(tokio::spawn(run_load_balancer_pool_simulator(
            cluster.client().await.unwrap(),
            name.to_string(),
            pool.clone(),
        )));
    }
    let state = h.env.state_dir().to_path_buf();
    let stand_in = MetricsStandIn::start(MetricsStandInParams {
        binaries: &binaries,
        host: h.client.clone(),
        namespace: NS.into(),
        members: MEMBERS
            .iter()
            .map(|m| m.to_string())
            .zip(h.env.members())
            .collect(),
        pool,
        state_dir: &state,
        scrape_interval: SCRAPE_INTERVAL,
        extra_scrape_targets: MEMBERS
            .iter()
            .zip(&exporters)
            .map(|(m, e)| (m.to_string(), vec![e.scrape_target()]))
            .collect(),
        detached: false,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("Thanos Query starts");
    // The controllers query that Thanos Query directly (loopback: the service proxy refuses it).
    h.start_controller(Settings {
        health_interval: Duration::from_secs(10),
        chart_mirrors: ChartMirrors(vec![(BITNAMI.to_string(), charts.url())]),
        thanos_url: Some(stand_in.query_url()),
        ..Default::default()
    });
    for (i, name) in MEMBERS.iter().enumerate() {
        h.attach_member(name, i + 1).await;
    }
    put_objstore(
        &h,
        &format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            state.join("bucket").display()
        ),
    )
    .await;
    let fleets: Api<Fleet> = h.api();
    let fleet: Fleet = serde_saphyr::from_str(METRIC_FLEET).unwrap();
    apply(&fleets, "quickstart", &fleet).await;
    let clients = h.member_clients().await;
    let apps: Api<Application> = h.api();

    let scenario = async {
        // Run 1, a first deployment without gates, while the charts install.
        apply(&apps, "shop", &application(&repo.url(), false)).await;
        wait_for(&apps, "shop", SETUP_WAIT, |a| {
            ended(a, 1, RunPhase::Succeeded, &v1)
        })
        .await;
        wait_members(&clients, "shop", &["v1", "v1"]).await;
        // The data path: both apps' requests through Thanos Query, by cluster.
        until(
            format!("`{REQUEST_RATE_BY_CLUSTER}` to answer for {MEMBERS:?}"),
            SETUP_WAIT,
            || async {
                match stand_in
                    .query()
                    .instant_query(REQUEST_RATE_BY_CLUSTER)
                    .await
                {
                    Ok(v) => {
                        let rates = v.by_label("cluster");
                        let flowing = MEMBERS.iter().all(|m| {
                            rates
                                .get(*m)
                                .and_then(|r| r.parse::<f64>().ok())
                                .is_some_and(|r| r > 0.0)
                        });
                        if flowing && rates.len() == MEMBERS.len() {
                            Ok(())
                        } else {
                            Err(format!(
                                "rates {rates:?}, endpoints {:?}",
                                stand_in.sd_endpoints().await
                            ))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
        eprintln!(
            "v1 everywhere and both apps' requests in Thanos Query after {:.1}s",
            started.elapsed().as_secs_f64()
        );

        // Run 2, v2 (no errors): the canary alone, its gate measured through Thanos Query.
        let t = Instant::now();
        apply(&apps, "shop", &application(&repo.url(), true)).await;
        let v2 = repo
            .commit_files(&[("deploy/cm.yaml", &configmap("v2", "0"))], "v2")
            .unwrap();
        let a = wait_for(&apps, "shop", WAIT, |a| {
            rollout_reason(a).as_deref() == Some("AwaitingApproval")
        })
        .await;
        let run = rollout(&a).unwrap().run.clone().unwrap();
        assert_eq!((run.id, run.stage.name.as_str()), (2, "canary"));
        assert_eq!(run.stage.phase, StagePhase::AwaitingApproval);
        let gate = error_rate_gate(&run.stage.gates);
        assert_eq!(gate.cluster.as_deref(), Some(CANARY));
        assert_eq!(gate.outcome, GateOutcome::Passed, "{gate:?}");
        assert_eq!(gate.value, Some(0.0), "no 500s at v2: {gate:?}");
        assert_eq!(
            (gate.comparison, gate.threshold),
            (Some(Comparison::Less), Some(THRESHOLD))
        );
        // Measured after the soak ended, as specified.
        let verifying_since = run.stage.verifying_since.clone().expect("verifyingSince");
        assert!(gate.evaluated_at.expect("evaluatedAt").0 >= verifying_since.0);
        wait_members(&clients, "shop", &["v2", "v1"]).await;
        wait_kustomizations(&h, [(pinned(&v2), true), (pinned(&v1), true)]).await;
        let token = promote_token(run.id, "canary", "e2e");
        let patch = serde_json::json!({"metadata": {"annotations": {annotation::PROMOTE: token}}});
        apps.patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        wait_for(&apps, "shop", WAIT, |a| {
            ended(a, 2, RunPhase::Succeeded, &v2)
        })
        .await;
        wait_members(&clients, "shop", &["v2", "v2"]).await;
        eprintln!(
            "run 2 (gate passed, promoted) Succeeded in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        // Run 3, v3 (half the requests fail): the canary's gate fails on the measured ratio.
        let t = Instant::now();
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let rest_versions = sample_versions(clients[1].clone(), stop_sampling.clone());
        let v3 = repo
            .commit_files(&[("deploy/cm.yaml", &configmap("v3", "0.5"))], "v3")
            .unwrap();
        wait_members(&clients, "shop", &["v3", "v2"]).await;
        until(
            "the canary's app to serve v3's error rate",
            WAIT,
            || async {
                let rate = exporters[0].error_rate();
                if rate == Some(0.5) {
                    Ok(())
                } else {
                    Err(format!("error rate {rate:?}"))
                }
            },
        )
        .await;
        let a = wait_for(&apps, "shop", WAIT, |a| {
            ended(a, 3, RunPhase::RolledBack, &v2)
        })
        .await;
        let state = rollout(&a).unwrap();
        let ended_run = &state.history[0];
        assert!(same_revision(&ended_run.to_revision, &format!("sha1:{v3}")));
        assert_eq!(ended_run.stage, "canary");
        let gate = error_rate_gate(&ended_run.failed_gates);
        assert_eq!(gate.cluster.as_deref(), Some(CANARY));
        assert_eq!(gate.outcome, GateOutcome::Failed);
        let value = gate.value.expect("the measured value");
        // The whole window after v3 reached the canary: about the 0.5 its ConfigMap says.
        assert!((0.4..0.6).contains(&value), "{gate:?}");
        assert_eq!(gate.threshold, Some(THRESHOLD));
        assert_eq!(
            gate.message.as_deref(),
            Some(format!("{value} is not < {THRESHOLD}").as_str())
        );
        assert_eq!(rollout_reason(&a).as_deref(), Some("RolledBack"));
        let canary = state.clusters.iter().find(|c| c.name == CANARY).unwrap();
        assert_eq!(canary.state, ClusterRolloutState::RolledBack);
        assert!(same_revision(
            canary.revision.as_deref().unwrap(),
            &format!("sha1:{v2}")
        ));
        // Flux puts the canary back on v2's pinned source, and v2's ConfigMap with it; its
        // app follows (no 500s any more).
        wait_kustomizations(&h, [(pinned(&v2), true), (pinned(&v2), true)]).await;
        wait_members(&clients, "shop", &["v2", "v2"]).await;
        until("the canary's app back at v2's error rate", WAIT, || async {
            let rate = exporters[0].error_rate();
            if rate == Some(0.0) {
                Ok(())
            } else {
                Err(format!("error rate {rate:?}"))
            }
        })
        .await;
        stop_sampling.store(true, Ordering::Relaxed);
        let (seen, samples) = rest_versions.await.unwrap();
        assert_eq!(
            seen,
            BTreeSet::from(["v2".to_string()]),
            "kurator-member2 over {samples} samples"
        );
        assert!(samples > 10, "{samples} samples");
        eprintln!(
            "run 3 (gate failed at {value}) RolledBack in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        // The rollback was announced with the measured value.
        let events: Api<Event> = h.api();
        let events = events
            .list(&ListParams::default().fields("regarding.name=shop"))
            .await
            .unwrap()
            .items;
        let rolled_back = events
            .iter()
            .find(|e| e.reason.as_deref() == Some("RolledBack"))
            .expect("a RolledBack Event");
        assert_eq!(rolled_back.type_.as_deref(), Some("Warning"));
        let note = rolled_back.note.clone().unwrap_or_default();
        assert!(
            note.contains(&format!(
                "error-rate on {CANARY}: {value} is not < {THRESHOLD}"
            )) && note.contains(&format!("{CANARY} back on")),
            "{note}"
        );
        let reasons: BTreeSet<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
        for reason in [
            "StageVerifying",
            "ApprovalRequired",
            "StagePromoted",
            "RolloutSucceeded",
        ] {
            assert!(reasons.contains(reason), "no {reason} Event in {reasons:?}");
        }
    };
    tokio::select! {
        () = stand_in.run() => unreachable!("the stand-in runs until dropped"),
        () = scenario => {}
    }
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
    drop(stand_in);
    drop(exporters);
    for simulator in simulators {
        simulator.abort();
    }
    h.shutdown().await;
}
