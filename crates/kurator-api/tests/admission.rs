//! The CRDs on a real kube-apiserver: the brief's manifests are accepted as written, and each
//! manifest of the invalid corpus is rejected with a message that says what is wrong.

use std::path::{Path, PathBuf};

use kube::{
    Api, CustomResourceExt,
    api::{DynamicObject, PostParams},
    core::ApiResource,
};
use kurator_api::{Application, AttachedCluster, Fleet};
use kurator_testenv::TestEnv;

fn fixtures(dir: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("fixture readable");
            (p, text)
        })
        .collect();
    files.sort();
    files
}

fn resource_for(kind: &str) -> ApiResource {
    let crd = match kind {
        "AttachedCluster" => AttachedCluster::crd(),
        "Fleet" => Fleet::crd(),
        "Application" => Application::crd(),
        other => panic!("no fixture kind {other}"),
    };
    let version = &crd.spec.versions[0].name;
    ApiResource {
        group: crd.spec.group.clone(),
        version: version.clone(),
        api_version: format!("{}/{version}", crd.spec.group),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    }
}

async fn create(client: &kube::Client, yaml: &str) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_saphyr::from_str(yaml).expect("fixture is YAML");
    let kind = obj.types.as_ref().expect("fixture has a kind").kind.clone();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource_for(&kind));
    api.create(&PostParams::default(), &obj).await
}

/// A host API server with our CRDs; keep the env alive as long as the client is used.
async fn host_with_crds() -> (TestEnv, kube::Client) {
    let env = TestEnv::builder()
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("control plane");
    let client = env.host().client().await.expect("client");
    (env, client)
}

#[tokio::test]
async fn brief_manifests_accepted_and_invalid_corpus_rejected() {
    let (_env, client) = host_with_crds().await;

    for (path, yaml) in fixtures("seed") {
        if let Err(e) = create(&client, &yaml).await {
            panic!("{} rejected: {e}", path.display());
        }
    }

    let mut failures = Vec::new();
    for (path, yaml) in fixtures("invalid") {
        let expect = yaml
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()));
        match create(&client, &yaml).await {
            Ok(_) => failures.push(format!("{}: accepted", path.display())),
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(expect) => {}
            Err(e) => failures.push(format!(
                "{}: wanted 422 with {expect:?}, got {e}",
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "invalid manifests not rejected as expected:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn defaults_match_upstream() {
    let (_env, client) = host_with_crds().await;
    let created = create(
        &client,
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: defaults}\nspec:\n  clusters: [{name: m1}]\n  plugin:\n    policy:\n      kyverno:\n        podSecurity: {}\n",
    )
    .await
    .expect("created");
    let fleet: Fleet = serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap();
    assert_eq!(
        fleet.spec.clusters[0].kind,
        kurator_api::fleet::ClusterKind::Cluster,
        "kind defaults to Cluster"
    );
    let ps = fleet
        .spec
        .plugin
        .unwrap()
        .policy
        .unwrap()
        .kyverno
        .unwrap()
        .pod_security
        .unwrap();
    let json = serde_json::to_value(&ps).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"standard": "baseline", "severity": "medium", "validationFailureAction": "Audit"})
    );

    let ac = create(
        &client,
        "apiVersion: cluster.kurator.dev/v1alpha1\nkind: AttachedCluster\nmetadata: {name: default-key}\nspec:\n  kubeconfig: {name: member1}\n",
    )
    .await
    .expect("created");
    assert_eq!(
        ac.data["spec"]["kubeconfig"]["key"], "value",
        "key defaults to value"
    );
}
