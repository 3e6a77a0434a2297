//! Crash safety: the controller is SIGKILLed at several moments of a 100-cluster fan-out and
//! started again; afterwards the host holds exactly the wanted Flux objects and the status is
//! right. Level-based reconciles, not luck, must get it there.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use common::controller::Controller;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use kurator_api::{
    Application, AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    flux::Kustomization,
};
use kurator_testenv::{TestEnv, ensure_flux_binaries};

const CLUSTERS: usize = 100;
const NS: &str = "default";

fn fleet(n: usize) -> Fleet {
    let clusters = (0..n)
        .map(|i| FleetCluster {
            name: format!("c{i}"),
            kind: ClusterKind::AttachedCluster,
        })
        .collect();
    Fleet::new(
        "bench",
        FleetSpec {
            clusters,
            plugin: None,
        },
    )
}

async fn kustomizations(client: &Client) -> Vec<String> {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|k| k.name_any())
        .collect()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> F,
) {
    kurator_testenv::wait::until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Server-side apply by one manager, so that shrinking the list removes entries.
async fn apply_fleet(fleets: &Api<Fleet>, n: usize) {
    let body = serde_json::json!({
        "apiVersion": "fleet.kurator.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "bench"},
        "spec": {"clusters": fleet(n).spec.clusters}
    });
    fleets
        .patch(
            "bench",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
}

fn wanted(n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| format!("fanout-0-attachedcluster-c{i}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_fan_out_converges_to_exactly_the_wanted_objects() {
    kurator_cli::install_crypto_provider();
    let flux = tokio::task::spawn_blocking(ensure_flux_binaries)
        .await
        .unwrap()
        .unwrap();
    let mut crds = vec![kurator_api::crds::all_yaml()];
    crds.extend(flux.crds().unwrap());
    let env = TestEnv::builder()
        .members(1)
        .crds(crds)
        .start()
        .await
        .unwrap();
    let client = env.host().client().await.unwrap();
    let kubeconfig = env.host().kubeconfig_path().to_path_buf();
    let log = env
        .state_dir()
        .join("logs")
        .join("controller-under-test.log");

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("member".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_string(),
            ByteString(env.members()[0].kubeconfig_yaml().into_bytes()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let acs: Api<AttachedCluster> = Api::namespaced(client.clone(), NS);
    for i in 0..CLUSTERS {
        let spec = AttachedClusterSpec {
            kubeconfig: SecretKeyRef {
                name: "member".into(),
                key: "value".into(),
            },
        };
        acs.create(
            &PostParams::default(),
            &AttachedCluster::new(&format!("c{i}"), spec),
        )
        .await
        .unwrap();
    }
    let fleets: Api<Fleet> = Api::namespaced(client.clone(), NS);
    apply_fleet(&fleets, CLUSTERS).await;

    let controller = Controller::start(&kubeconfig, &log);
    wait_until("the fleet to be ready", Duration::from_secs(300), || {
        let fleets = fleets.clone();
        async move {
            fleets
                .get("bench")
                .await
                .unwrap()
                .status
                .is_some_and(|s| s.ready_clusters == CLUSTERS as i32)
        }
    })
    .await;

    // Kill #1: right after the Application is created.
    let app: Application = serde_saphyr::from_str(
        "metadata: {name: fanout}\nspec:\n  source:\n    gitRepository: {url: 'http://127.0.0.1:1/r.git', interval: 10m, ref: {branch: master}}\n  destination: {fleet: bench}\n  syncPolicies:\n    - kustomization: {interval: 10m, prune: true, path: ./deploy}\n",
    )
    .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    apps.create(&PostParams::default(), &app).await.unwrap();
    controller.kill();

    // Kills #2 and #3: in the middle of the fan-out, as soon as some objects exist.
    for threshold in [1, 40] {
        let controller = Controller::start(&kubeconfig, &log);
        wait_until("objects to appear", Duration::from_secs(120), || {
            let client = client.clone();
            async move { kustomizations(&client).await.len() >= threshold }
        })
        .await;
        controller.kill();
    }

    // While no controller runs, 10 clusters leave the fleet: the restart must prune them.
    apply_fleet(&fleets, CLUSTERS - 10).await;

    let _controller = Controller::start(&kubeconfig, &log);
    let want = wanted(CLUSTERS - 10);
    kurator_testenv::wait::until(
        "exactly the wanted Kustomizations",
        Duration::from_secs(180),
        || async {
            let have: BTreeSet<String> = kustomizations(&client).await.into_iter().collect();
            if have == want {
                return Ok(());
            }
            let missing = want.difference(&have).count();
            let extra: Vec<&String> = have.difference(&want).collect();
            Err(format!("{missing} missing, extra {extra:?}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let names = kustomizations(&client).await;
    assert_eq!(names.len(), want.len(), "no duplicates");
    wait_until(
        "the status to list every cluster",
        Duration::from_secs(60),
        || {
            let apps = apps.clone();
            async move {
                apps.get("fanout").await.unwrap().status.is_some_and(|s| {
                    s.total_clusters == (CLUSTERS - 10) as i32 && s.clusters.len() == CLUSTERS - 10
                })
            }
        },
    )
    .await;
    // Exactly one source, owned by the Application.
    let sources: Api<kurator_api::flux::GitRepository> = Api::namespaced(client.clone(), NS);
    let sources = sources.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        sources.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["fanout"]
    );
}
