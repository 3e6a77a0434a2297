//! Real etcd + kube-apiserver + kube-controller-manager: a host and two members.
//!
//! One environment is shared by the steps below (starting three control planes is the
//! expensive part on a 2-core machine); each step polls its condition with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use kurator_testenv::wait;
use kurator_testenv::{ClusterHandle, KUBERNETES_VERSION, TestEnv};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testenv.kurator.dev
spec:
  group: testenv.kurator.dev
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WAIT: Duration = Duration::from_secs(60);

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_two_members() -> Result<()> {
    crate::common::init();
    // Binaries first (a no-op once cached), so the start time below is the warm start.
    let build = Instant::now();
    let binaries = tokio::task::spawn_blocking(kurator_testenv::ensure_binaries).await??;
    eprintln!("ensure_binaries: {:.1}s", build.elapsed().as_secs_f64());

    let started = Instant::now();
    let env = TestEnv::builder()
        .members(2)
        .binaries(binaries)
        .crds(vec![WIDGET_CRD.to_string()])
        .start()
        .await?;
    eprintln!(
        "warm start of host + 2 members (with CRD): {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let names: Vec<&str> = env.clusters().iter().map(ClusterHandle::name).collect();
    assert_eq!(names, ["host", "member1", "member2"]);

    versions_and_kubeconfigs(&env).await?;
    crd_is_served(&env).await?;
    clusters_are_isolated(&env).await?;
    garbage_collection_on_host(&env).await?;
    namespace_deletion_on_host(&env).await?;
    member_outage(&env).await?;
    Ok(())
}

async fn versions_and_kubeconfigs(env: &TestEnv) -> Result<()> {
    for cluster in env.clusters() {
        let version = cluster.client().await?.apiserver_version().await?;
        assert_eq!(
            version.git_version,
            KUBERNETES_VERSION,
            "{}",
            cluster.name()
        );
        assert_eq!(
            (version.major.as_str(), version.minor.as_str()),
            ("1", "35")
        );

        // The kubeconfig file is self-contained (inline data) and names the cluster.
        let text = std::fs::read_to_string(cluster.kubeconfig_path())?;
        assert_eq!(text, cluster.kubeconfig_yaml());
        assert!(text.contains("certificate-authority-data:"));
        assert!(text.contains("client-key-data:"));
        assert!(text.contains(&format!("current-context: {}", cluster.name())));
        assert!(text.contains(&cluster.server_url()));
    }
    Ok(())
}

async fn crd_is_served(env: &TestEnv) -> Result<()> {
    let gvk = GroupVersionKind::gvk("testenv.kurator.dev", "v1alpha1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(env.host().client().await?, "default", &ar);
    let mut w = DynamicObject::new("w1", &ar);
    w.data = serde_json::json!({"spec": {"size": 3}});
    widgets.create(&PostParams::default(), &w).await?;
    ensure!(widgets.get_opt("w1").await?.is_some());
    // Members did not get the CRD.
    let member: Api<DynamicObject> =
        Api::namespaced_with(env.members()[0].client().await?, "default", &ar);
    ensure!(member.list(&Default::default()).await.is_err());
    Ok(())
}

async fn clusters_are_isolated(env: &TestEnv) -> Result<()> {
    let [m1, m2] = env.members() else {
        anyhow::bail!("expected two members");
    };
    let ns1: Api<Namespace> = Api::all(m1.client().await?);
    ns1.create(&PostParams::default(), &namespace("only-in-member1"))
        .await?;
    ensure!(ns1.get_opt("only-in-member1").await?.is_some());
    for other in [m2, env.host()] {
        let api: Api<Namespace> = Api::all(other.client().await?);
        ensure!(
            api.get_opt("only-in-member1").await?.is_none(),
            "namespace leaked into {}",
            other.name()
        );
    }
    Ok(())
}

async fn garbage_collection_on_host(env: &TestEnv) -> Result<()> {
    let client: Client = env.host().client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", None))
        .await?;
    cms.create(
        &PostParams::default(),
        &config_map("dependent", Some(&owner)),
    )
    .await?;
    cms.delete("owner", &DeleteParams::default()).await?;
    let t = Instant::now();
    wait::until("GC to delete the dependent ConfigMap", WAIT, || async {
        anyhow::Ok(cms.get_opt("dependent").await?.is_none())
    })
    .await?;
    eprintln!(
        "GC removed the dependent in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn namespace_deletion_on_host(env: &TestEnv) -> Result<()> {
    let client = env.host().client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &namespace("doomed"))
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "doomed");
    cms.create(&PostParams::default(), &config_map("inside", None))
        .await?;
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await?;
    wait::until("namespace `doomed` to be finalized", WAIT, || async {
        anyhow::Ok(namespaces.get_opt("doomed").await?.is_none())
    })
    .await?;
    Ok(())
}

async fn member_outage(env: &TestEnv) -> Result<()> {
    let member = &env.members()[0];
    let url = member.server_url();
    let kubeconfig = member.kubeconfig_yaml();
    member.stop().await?;
    ensure!(!member.is_running().await);
    let namespaces: Api<Namespace> = Api::all(member.client().await?);
    let err = namespaces.get("default").await;
    ensure!(err.is_err(), "API must fail while the apiserver is stopped");

    // Other clusters are unaffected.
    let m2: Api<Namespace> = Api::all(env.members()[1].client().await?);
    m2.get("default")
        .await
        .context("member2 during member1 outage")?;

    let t = Instant::now();
    member.start().await?;
    eprintln!("member1 restart: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(member.server_url(), url);
    assert_eq!(member.kubeconfig_yaml(), kubeconfig);
    // A client created before the restart works again, and the data survived (same prefix).
    wait::until("member1 to serve again", WAIT, || async {
        anyhow::Ok(namespaces.get_opt("only-in-member1").await?.is_some())
    })
    .await?;
    Ok(())
}
