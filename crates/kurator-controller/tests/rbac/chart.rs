//! Installing `charts/kurator` through Flux's helm-controller, and a client holding only a
//! ServiceAccount's token.

use std::path::Path;

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use kurator_testenv::{HelmRepo, TestEnv, add_kyverno_charts, add_standin_charts};

use super::{RELEASE, RELEASE_NS, WAIT, common::until};

/// The host (and `members` members) with Flux, without Kurator's CRDs: Helm installs them.
pub async fn environment(members: usize) -> TestEnv {
    TestEnv::builder()
        .members(members)
        .flux(true)
        .start()
        .await
        .expect("test environment starts")
}

/// Every file of `charts/kurator`, as (path inside the chart, contents).
pub fn chart_files() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("chart directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((
                    relative,
                    std::fs::read_to_string(&path).expect("chart file"),
                ));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/kurator");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files
}

/// A chart repository serving the kurator chart (and the plugins' charts: the real Kyverno
/// ones and the metric stand-ins); its directory is removed when dropped.
pub fn chart_repository() -> (HelmRepo, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = HelmRepo::start(dir.path().join("charts")).expect("chart repository starts");
    let files = chart_files();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.add_chart("kurator", env!("CARGO_PKG_VERSION"), &files)
        .expect("the kurator chart packaged");
    add_kyverno_charts(&repo).expect("the real Kyverno charts");
    add_standin_charts(&repo).expect("the metric plugin's stand-in charts");
    (repo, dir)
}

pub fn flux_api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), RELEASE_NS, &resource)
}

pub fn helm_releases(client: &Client) -> Api<DynamicObject> {
    flux_api(
        client,
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
}

/// `Ready` of a Flux object for the generation it last handled: (status, reason, message).
pub fn flux_ready(obj: &DynamicObject) -> Option<(String, String, String)> {
    let observed = obj
        .data
        .get("status")?
        .get("observedGeneration")?
        .as_i64()?;
    if Some(observed) != obj.metadata.generation {
        return None;
    }
    ready_condition(obj)
}

/// `Ready` of a Flux object, whichever generation it is about: (status, reason, message).
pub fn ready_condition(obj: &DynamicObject) -> Option<(String, String, String)> {
    let ready = obj
        .data
        .get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let text = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

/// Installs the chart with `values` through a HelmRepository and a HelmRelease, and waits
/// until helm-controller reports the release Ready (Helm waited for the Deployment).
pub async fn install_chart(admin: &Client, repo: &HelmRepo, values: serde_json::Value) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NS}});
    namespaces
        .patch(RELEASE_NS, &PatchParams::apply("test"), &Patch::Apply(&ns))
        .await
        .expect("release namespace");
    let repository = serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": "kurator", "namespace": RELEASE_NS},
        "spec": {"url": repo.url(), "interval": "1m"},
    });
    flux_api(
        admin,
        "source.toolkit.fluxcd.io",
        "v1",
        "HelmRepository",
        "helmrepositories",
    )
    .patch(
        "kurator",
        &PatchParams::apply("test"),
        &Patch::Apply(&repository),
    )
    .await
    .expect("HelmRepository");
    let release = serde_json::json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": RELEASE, "namespace": RELEASE_NS},
        "spec": {
            "interval": "1m",
            "releaseName": RELEASE,
            "timeout": "2m",
            "chart": {"spec": {
                "chart": "kurator",
                "version": env!("CARGO_PKG_VERSION"),
                "sourceRef": {"kind": "HelmRepository", "name": "kurator"},
                "interval": "1m",
            }},
            "install": {"crds": "Create"},
            "values": values,
        },
    });
    let releases = helm_releases(admin);
    releases
        .patch(
            RELEASE,
            &PatchParams::apply("test"),
            &Patch::Apply(&release),
        )
        .await
        .expect("HelmRelease");
    wait_release_ready(&releases).await;
}

pub async fn wait_release_ready(releases: &Api<DynamicObject>) {
    until("the kurator HelmRelease to be Ready", WAIT, || async {
        let release = releases.get(RELEASE).await.expect("get HelmRelease");
        match flux_ready(&release) {
            Some((status, _, _)) if status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// A kube client holding only a TokenRequest token of ServiceAccount `account` (in the
/// release namespace) and the host's CA.
pub async fn service_account_client(env: &TestEnv, admin: &Client, account: &str) -> Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), RELEASE_NS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token issued")
        .token;
    let mut kubeconfig =
        Kubeconfig::from_yaml(&env.host().kubeconfig_yaml()).expect("host kubeconfig");
    for user in &mut kubeconfig.auth_infos {
        // No client certificate left: the token is the only credential.
        user.auth_info = Some(AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("token kubeconfig");
    let client = Client::try_from(config).expect("token client");
    // Not the admin: the chart grants nothing on Namespaces.
    let refused = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect_err("the ServiceAccount cannot list namespaces");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused}"
    );
    client
}

pub async fn deployment_args(admin: &Client) -> Vec<String> {
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Deployment");
    deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
}
