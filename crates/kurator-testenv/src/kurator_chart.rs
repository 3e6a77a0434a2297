//! The product's own Helm chart (`charts/kurator`) in a test host: packaged into a local
//! chart repository and installed by real Flux helm-controller (HelmRepository + HelmRelease),
//! as a platform team would with `helm install`, and a kubeconfig holding only a TokenRequest
//! token of one of its ServiceAccounts (what a Pod of the chart would run with).

use std::path::Path;

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    config::{AuthInfo, Kubeconfig},
};

use crate::env::TestEnv;
use crate::error::{Error, Result};
use crate::helm_repo::HelmRepo;
use crate::wait;

const FIELD_MANAGER: &str = "kurator-testenv";

/// Where and how the chart is installed.
#[derive(Clone, Debug)]
pub struct KuratorRelease<'a> {
    /// The release's namespace (created if missing), e.g. `kurator-system`.
    pub namespace: &'a str,
    /// The Helm release's name, and the HelmRelease's and HelmRepository's.
    pub name: &'a str,
    /// The chart version it was packaged as.
    pub version: &'a str,
}

/// Every file of the chart directory `chart_dir`, as (path inside the chart, contents).
pub fn chart_dir_files(chart_dir: &Path) -> Result<Vec<(String, String)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("reading", dir, e))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
                out.push((relative.to_string_lossy().into_owned(), text));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(chart_dir, chart_dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// Packages the chart directory `chart_dir` into `repo` as `kurator` `version`.
pub fn add_kurator_chart(repo: &HelmRepo, chart_dir: &Path, version: &str) -> Result<()> {
    let files = chart_dir_files(chart_dir)?;
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.add_chart("kurator", version, &files)?;
    Ok(())
}

/// A Flux object API in `namespace`.
pub fn flux_api(
    client: &Client,
    namespace: &str,
    (group, version, kind, plural): (&str, &str, &str, &str),
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Flux's HelmReleases in `namespace`.
pub fn helm_releases(client: &Client, namespace: &str) -> Api<DynamicObject> {
    flux_api(
        client,
        namespace,
        (
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
            "helmreleases",
        ),
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

/// Installs the chart from `repo` with `values` through a HelmRepository and a HelmRelease
/// (Helm creates the CRDs of `crds/`), and waits until helm-controller reports the release
/// Ready: Helm waited for the Deployment, whose Pods the simulated nodes run.
pub async fn install_kurator_chart(
    admin: &Client,
    repo: &HelmRepo,
    release: &KuratorRelease<'_>,
    values: serde_json::Value,
    timeout: std::time::Duration,
) -> Result<()> {
    let KuratorRelease {
        namespace,
        name,
        version,
    } = *release;
    let apply = PatchParams::apply(FIELD_MANAGER);
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    Api::<Namespace>::all(admin.clone())
        .patch(namespace, &apply, &Patch::Apply(&ns))
        .await
        .map_err(|e| Error::kube(format!("creating namespace {namespace}"), e))?;
    let repository = serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": repo.url(), "interval": "1m"},
    });
    flux_api(
        admin,
        namespace,
        (
            "source.toolkit.fluxcd.io",
            "v1",
            "HelmRepository",
            "helmrepositories",
        ),
    )
    .patch(name, &apply, &Patch::Apply(&repository))
    .await
    .map_err(|e| Error::kube("applying the HelmRepository", e))?;
    let helm_release = serde_json::json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "1m",
            "releaseName": name,
            "timeout": "2m",
            "chart": {"spec": {
                "chart": "kurator",
                "version": version,
                "sourceRef": {"kind": "HelmRepository", "name": name},
                "interval": "1m",
            }},
            "install": {"crds": "Create"},
            "values": values,
        },
    });
    helm_releases(admin, namespace)
        .patch(name, &apply, &Patch::Apply(&helm_release))
        .await
        .map_err(|e| Error::kube("applying the HelmRelease", e))?;
    wait_helm_release_ready(admin, namespace, name, timeout).await
}

/// Waits until HelmRelease `namespace/name` is Ready for its current generation.
pub async fn wait_helm_release_ready(
    admin: &Client,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    let releases = helm_releases(admin, namespace);
    wait::until(
        format!("HelmRelease {namespace}/{name} to be Ready"),
        timeout,
        || async {
            let release = releases.get(name).await.map_err(|e| e.to_string())?;
            match flux_ready(&release) {
                Some((status, _, _)) if status == "True" => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// The host's kubeconfig with only a TokenRequest token (valid for an hour) of ServiceAccount
/// `namespace/account` as credential, and the host's CA: what a Pod running as that account
/// holds.
pub async fn service_account_kubeconfig(
    env: &TestEnv,
    admin: &Client,
    namespace: &str,
    account: &str,
) -> Result<Kubeconfig> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| Error::kube(format!("requesting a token of {namespace}/{account}"), e))?
        .status
        .ok_or_else(|| Error::Usage(format!("no token issued for {namespace}/{account}")))?
        .token;
    let mut kubeconfig = Kubeconfig::from_yaml(&env.host().kubeconfig_yaml())
        .map_err(|e| Error::Usage(format!("the host kubeconfig: {e}")))?;
    for user in &mut kubeconfig.auth_infos {
        // No client certificate left: the token is the only credential.
        user.auth_info = Some(AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    Ok(kubeconfig)
}
