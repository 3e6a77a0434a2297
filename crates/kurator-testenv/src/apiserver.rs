//! kube-apiserver: flags and readiness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::certs::CertPaths;
use crate::process::{Proc, ProcessSpec, WaitError, wait_ready};

/// Everything that goes into one kube-apiserver command line.
pub(crate) struct ApiserverParams<'a> {
    pub program: &'a Path,
    pub cluster: &'a str,
    pub run_id: &'a str,
    pub etcd_url: &'a str,
    pub port: u16,
    pub certs: &'a CertPaths,
    pub cert_dir: &'a Path,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// Admit Pods through the ServiceAccount plugin (default service account, token volume)
    /// as real clusters do. Only where kube-controller-manager runs the service-account
    /// controllers: without them the `default` ServiceAccount never exists and the plugin
    /// would reject every Pod.
    pub service_account_admission: bool,
}

pub(crate) fn spec(p: &ApiserverParams<'_>) -> ProcessSpec {
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        format!("--etcd-servers={}", p.etcd_url),
        format!("--etcd-prefix=/{}/{}/registry", p.run_id, p.cluster),
        "--etcd-compaction-interval=0".into(),
        format!("--secure-port={}", p.port),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--cert-dir={}", path(p.cert_dir)),
        format!("--tls-cert-file={}", path(&p.certs.serving_cert)),
        format!("--tls-private-key-file={}", path(&p.certs.serving_key)),
        format!("--client-ca-file={}", path(&p.certs.client_ca)),
        format!("--service-account-issuer=https://127.0.0.1:{}/", p.port),
        format!("--service-account-key-file={}", path(&p.certs.sa_public)),
        format!(
            "--service-account-signing-key-file={}",
            path(&p.certs.sa_key)
        ),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--authorization-mode=RBAC".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ];
    // TaintNodesByCondition taints every new Node `not-ready` until the node-lifecycle
    // controller lifts it; that controller does not run here (it would also need kwok to
    // send heartbeats), so the simulated Nodes are created untainted instead.
    let mut disabled = vec!["TaintNodesByCondition"];
    if !p.service_account_admission {
        disabled.push("ServiceAccount");
    }
    args.push(format!(
        "--disable-admission-plugins={}",
        disabled.join(",")
    ));
    // As on clusters that harden garbage collection (OpenShift enables it): setting
    // `blockOwnerDeletion` needs `update` on the owner's `finalizers` subresource, so a client
    // under a narrow role (charts/kurator's ClusterRole in tests/rbac.rs) is held to those
    // rules. Admin clients are unaffected.
    args.push("--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into());
    ProcessSpec {
        name: format!("{}-kube-apiserver", p.cluster),
        program: p.program.to_path_buf(),
        args,
        log: p.log.clone(),
        pid_file: p.pid_file.clone(),
        env: Vec::new(),
    }
}

/// `/readyz` answers `ok` and namespace `default` exists.
pub(crate) async fn is_ready(client: &kube::Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    let ready = tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await;
    if !matches!(ready, Ok(Ok(ref body)) if body.trim() == "ok") {
        return false;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    matches!(
        tokio::time::timeout(Duration::from_secs(5), namespaces.get_opt("default")).await,
        Ok(Ok(Some(_)))
    )
}

/// Waits until the apiserver behind `client` is ready; on failure the error names the
/// process and carries its log tail.
pub(crate) async fn wait(
    proc: &mut Proc,
    client: &kube::Client,
    timeout: Duration,
) -> Result<(), WaitError> {
    wait_ready(proc, timeout, || is_ready(client)).await
}
