//! kube-controller-manager with the controllers a workload needs to behave as in a real
//! cluster (Deployments roll out, Jobs finish, Services get endpoints, namespaces get their
//! `default` ServiceAccount), plus garbage collection and namespace deletion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::CertPaths;
use crate::error::Result;
use crate::health::{SECURE_PORT_FLAG, wait_secure};
use crate::process::{Proc, ProcessSpec, WaitError, start_on_free_port};

/// Controllers enabled (names as in kube-controller-manager v1.35 `--controllers`). Not the
/// default set: node lifecycle, IPAM, volumes, cloud and certificate controllers have nothing
/// to do here and would only cost start-up time and CPU.
pub(crate) const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    // Publishes `kube-root-ca.crt` into every namespace, which the token volume the
    // ServiceAccount admission plugin adds to each Pod refers to.
    "root-ca-certificate-publisher-controller",
    // Provisions and binds PersistentVolumeClaims (with the host-path provisioner, see
    // storage.rs), and removes the protection finalizers the apiserver's
    // StorageObjectInUseProtection admission adds, without which a claim or a namespace
    // holding one could never be deleted.
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
];

pub(crate) struct ControllerManagerParams<'a> {
    pub program: &'a Path,
    pub cluster: &'a str,
    pub kubeconfig: &'a Path,
    /// Where it writes its self-signed serving certificate.
    pub cert_dir: &'a Path,
    /// The cluster's certificates: the service-account key signs tokens, the serving CA is
    /// what Pods are told to trust.
    pub certs: &'a CertPaths,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
}

fn spec(p: &ControllerManagerParams<'_>, port: u16) -> ProcessSpec {
    ProcessSpec {
        name: format!("{}-kube-controller-manager", p.cluster),
        program: p.program.to_path_buf(),
        args: vec![
            format!("--kubeconfig={}", p.kubeconfig.display()),
            "--leader-elect=false".into(),
            format!("--controllers={}", CONTROLLERS.join(",")),
            "--bind-address=127.0.0.1".into(),
            format!("{SECURE_PORT_FLAG}{port}"),
            format!("--cert-dir={}", p.cert_dir.display()),
            format!(
                "--service-account-private-key-file={}",
                p.certs.sa_key.display()
            ),
            format!("--root-ca-file={}", p.certs.serving_ca.display()),
            // The default StorageClass's provisioner (storage.rs).
            "--enable-hostpath-provisioner=true".into(),
            "--profiling=false".into(),
        ],
        log: p.log.clone(),
        pid_file: p.pid_file.clone(),
        env: Vec::new(),
    }
}

/// Starts kube-controller-manager and waits for its `/healthz`.
pub(crate) async fn start(
    p: &ControllerManagerParams<'_>,
    detached: bool,
    timeout: Duration,
) -> Result<Proc> {
    start_on_free_port(
        |port| spec(p, port),
        detached,
        timeout,
        "/healthz",
        |mut proc| async move {
            let verdict = wait_until_healthy(&mut proc, timeout).await;
            (proc, verdict)
        },
    )
    .await
}

/// Waits for `/healthz` of an already spawned kube-controller-manager.
pub(crate) async fn wait_until_healthy(
    proc: &mut Proc,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    wait_secure(proc, "/healthz", timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_workload_and_service_account_controllers_with_the_signing_key() {
        let certs = CertPaths::in_dir(Path::new("/state/clusters/m1/certs"));
        let p = ControllerManagerParams {
            program: Path::new("/bin/kube-controller-manager"),
            cluster: "m1",
            kubeconfig: Path::new("/state/clusters/m1/kubeconfig"),
            cert_dir: Path::new("/state/clusters/m1/kcm"),
            certs: &certs,
            log: PathBuf::from("/state/logs/m1-kube-controller-manager.log"),
            pid_file: None,
        };
        let args = spec(&p, 4000).args;
        let controllers = args
            .iter()
            .find_map(|a| a.strip_prefix("--controllers="))
            .expect("--controllers");
        for c in [
            "deployment-controller",
            "job-controller",
            "serviceaccount-token-controller",
            "persistentvolume-binder-controller",
            "persistentvolumeclaim-protection-controller",
        ] {
            assert!(controllers.split(',').any(|x| x == c), "{c}");
        }
        for flag in [
            "--service-account-private-key-file=/state/clusters/m1/certs/sa.key",
            "--root-ca-file=/state/clusters/m1/certs/serving-ca.crt",
            "--secure-port=4000",
            "--leader-elect=false",
            "--enable-hostpath-provisioner=true",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}");
        }
    }
}
