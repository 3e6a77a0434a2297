//! `kurator attach NAME --kubeconfig FILE`: the member's kubeconfig, reduced to one context
//! with its data inline, becomes the Secret `NAME-kubeconfig` (key `value`) and the
//! AttachedCluster `NAME` on the host, optionally listed in a fleet; then it waits for Ready.
//!
//! The kubeconfig's content never appears in output or errors: problems name the file, the
//! entry and the field.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use kurator_api::{
    AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, DEFAULT_KUBECONFIG_KEY, SecretKeyRef},
    conditions,
    kubeconfig::{self, KubeconfigProblem},
    labels::{ATTACHED_CLUSTER, CLI_FIELD_MANAGER, MANAGED_BY, MANAGED_BY_CLI},
};

use crate::{controller_cmd::parse_duration, fleet_edit};

#[derive(Args, Debug)]
#[command(after_help = "\
--kubeconfig is the member cluster's kubeconfig, as in upstream Kurator; the host cluster \
(where Kurator runs) comes from --host-kubeconfig, else KUBECONFIG, ~/.kube/config or \
in-cluster, as for the other commands.

The chosen context's cluster and user are copied into the Secret; the controller uses them \
from there, so they must be self-contained: certificate-authority-data, \
client-certificate-data / client-key-data or a token. File paths, exec and auth-provider \
plugins are refused.")]
pub struct AttachArgs {
    /// Name of the AttachedCluster (its kubeconfig Secret is NAME-kubeconfig).
    pub name: String,
    /// The member cluster's kubeconfig file (not the host's).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// Context of the member kubeconfig to use (default: its current-context).
    #[arg(long)]
    pub context: Option<String>,
    /// Also list the cluster in this fleet's spec.clusters (the fleet must exist).
    #[arg(long)]
    pub fleet: Option<String>,
    /// Namespace on the host (default: the host kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Kubeconfig of the host cluster, where Kurator runs (default: KUBECONFIG,
    /// ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub host_kubeconfig: Option<PathBuf>,
    /// How long to wait for the AttachedCluster to become Ready (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Do not wait for Ready.
    #[arg(long)]
    pub no_wait: bool,
}

/// The Secret `kurator attach` writes for AttachedCluster `name`.
pub fn secret_name(name: &str) -> String {
    format!("{name}-kubeconfig")
}

/// Whether `secret` is the one `kurator attach` created for AttachedCluster `name` (so
/// `kurator attach` may overwrite it and `kurator detach` may delete it).
pub fn created_by_attach(secret: &Secret, name: &str) -> bool {
    secret.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_CLI)
        && secret
            .annotations()
            .get(ATTACHED_CLUSTER)
            .map(String::as_str)
            == Some(name)
}

/// Why an AttachedCluster without status is not Ready (the controller's first check is due).
const NO_STATUS: &str = "no status yet: the controller has not checked it";

/// How often the AttachedCluster is looked at while waiting.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    let member = member_kubeconfig(&args).await?;
    let (host, ns) =
        crate::host_and_namespace(args.host_kubeconfig.as_ref(), args.namespace.as_ref()).await?;
    let name = &args.name;
    let fleets: Api<Fleet> = Api::namespaced(host.clone(), &ns);
    // Checked before anything is written, so a typo leaves nothing behind.
    if let Some(fleet) = &args.fleet
        && fleets.get_opt(fleet).await?.is_none()
    {
        bail!("Fleet {ns}/{fleet} not found: create it first, or attach without --fleet");
    }

    let secret = secret_name(name);
    apply_secret(&host, &ns, name, &secret, &member.yaml).await?;
    println!(
        "Secret {ns}/{secret}: kubeconfig of context {:?} (server {})",
        member.context, member.server
    );
    let ac = AttachedCluster::new(
        name,
        AttachedClusterSpec {
            kubeconfig: SecretKeyRef {
                name: secret.clone(),
                key: DEFAULT_KUBECONFIG_KEY.into(),
            },
        },
    );
    let clusters: Api<AttachedCluster> = Api::namespaced(host.clone(), &ns);
    clusters
        .patch(name, &apply_params(), &Patch::Apply(&ac))
        .await
        .with_context(|| format!("applying AttachedCluster {ns}/{name}"))?;
    println!("AttachedCluster {ns}/{name} applied");
    if let Some(fleet) = &args.fleet {
        if fleet_edit::add(&fleets, fleet, name).await? {
            println!("Fleet {ns}/{fleet}: {name} added");
        } else {
            println!("Fleet {ns}/{fleet} already lists {name}");
        }
    }
    if args.no_wait {
        return Ok(());
    }
    wait_ready(&clusters, &ns, name, args.timeout).await
}

fn apply_params() -> PatchParams {
    PatchParams::apply(CLI_FIELD_MANAGER).force()
}

/// The member kubeconfig, reduced and checked as the controller will check it.
struct MemberKubeconfig {
    yaml: String,
    context: String,
    server: String,
}

async fn member_kubeconfig(args: &AttachArgs) -> anyhow::Result<MemberKubeconfig> {
    let path = args.kubeconfig.display();
    let text = std::fs::read_to_string(&args.kubeconfig)
        .with_context(|| format!("reading the member kubeconfig {path}"))?;
    let reduced = kubeconfig::parse(&text)
        .and_then(|k| kubeconfig::reduce(&k, args.context.as_deref()))
        .map_err(|problem| {
            let why = match problem {
                KubeconfigProblem::FilePath { .. } | KubeconfigProblem::CredentialPlugin { .. } => {
                    "\n(the kubeconfig is copied into a Secret for the controller, which cannot \
                     read your files or run your programs)"
                }
                _ => "",
            };
            anyhow!("member kubeconfig {path}: {problem}{why}")
        })?;
    let context = reduced.current_context.clone().unwrap_or_default();
    let server = reduced
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    // Only the kind of failure is reported: serializer messages may quote values.
    let yaml = serde_saphyr::to_string(&reduced)
        .map_err(|_| anyhow!("member kubeconfig {path}: cannot be written back as YAML"))?;
    // The controller's own client construction: bad base64 or PEM is caught here, with its
    // sanitised description, rather than as the AttachedCluster's KubeconfigInvalid.
    kurator_controller::member::client_from_kubeconfig(&yaml, Duration::from_secs(10))
        .await
        .map_err(|problem| anyhow!("member kubeconfig {path}, context {context:?}: {problem}"))?;
    Ok(MemberKubeconfig {
        yaml,
        context,
        server,
    })
}

async fn apply_secret(
    host: &Client,
    ns: &str,
    cluster: &str,
    name: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(host.clone(), ns);
    if let Some(existing) = secrets
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {ns}/{name}"))?
        && !created_by_attach(&existing, cluster)
    {
        bail!(
            "Secret {ns}/{name} exists and was not created by kurator attach for {cluster} \
             (no {MANAGED_BY}={MANAGED_BY_CLI} label and {ATTACHED_CLUSTER}={cluster} \
             annotation); it is left alone: delete it, or attach under another name"
        );
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_string(),
                MANAGED_BY_CLI.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                ATTACHED_CLUSTER.to_string(),
                cluster.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DEFAULT_KUBECONFIG_KEY.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .patch(name, &apply_params(), &Patch::Apply(&secret))
        .await
        .with_context(|| format!("applying Secret {ns}/{name}"))?;
    Ok(())
}

/// Where an AttachedCluster stands, as far as `kurator attach` waits for it.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// Ready, with the Kubernetes version the controller saw.
    Ready(String),
    /// Not yet, and why.
    NotReady(String),
}

fn readiness(ac: &AttachedCluster) -> Readiness {
    let Some(status) = &ac.status else {
        return Readiness::NotReady(NO_STATUS.into());
    };
    if status.observed_generation < ac.metadata.generation {
        return Readiness::NotReady("the controller has not checked the new spec yet".into());
    }
    match conditions::find(&status.conditions, conditions::READY) {
        Some(ready) if ready.status == conditions::TRUE && status.ready => {
            Readiness::Ready(status.version.clone().unwrap_or_else(|| "unknown".into()))
        }
        Some(ready) => Readiness::NotReady(format!("{}: {}", ready.reason, ready.message)),
        None => Readiness::NotReady("no Ready condition yet".into()),
    }
}

/// Polls until Ready, printing each new reason; fails with the last one after `timeout`.
async fn wait_ready(
    api: &Api<AttachedCluster>,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    println!(
        "Waiting up to {}s for AttachedCluster {ns}/{name} to be Ready",
        timeout.as_secs()
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let seen = match api.get_opt(name).await {
            Ok(Some(ac)) => readiness(&ac),
            Ok(None) => Readiness::NotReady("the AttachedCluster was deleted".into()),
            Err(e) => Readiness::NotReady(format!("cannot read it: {e}")),
        };
        match seen {
            Readiness::Ready(version) => {
                println!("AttachedCluster {ns}/{name} is Ready (Kubernetes {version})");
                return Ok(());
            }
            Readiness::NotReady(why) => {
                if last.as_ref() != Some(&why) {
                    println!("  not ready: {why}");
                    last = Some(why);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let last = last.unwrap_or_default();
            let hint = if last == NO_STATUS {
                "; is the controller running on the host? (kurator version)"
            } else {
                ""
            };
            bail!(
                "AttachedCluster {ns}/{name} is not Ready after {}s: {last}{hint}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kurator_api::cluster::AttachedClusterStatus;

    use super::*;

    fn cluster(generation: i64, status: Option<AttachedClusterStatus>) -> AttachedCluster {
        let mut ac = AttachedCluster::new("m1", AttachedClusterSpec::default());
        ac.metadata.generation = Some(generation);
        ac.status = status;
        ac
    }

    fn status(ready: bool, reason: &str, message: &str) -> AttachedClusterStatus {
        AttachedClusterStatus {
            ready,
            version: ready.then(|| "v1.35.4".into()),
            conditions: vec![Condition {
                type_: conditions::READY.into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(2),
            }],
            observed_generation: Some(2),
        }
    }

    /// The readiness on one line.
    fn shown(ac: &AttachedCluster) -> String {
        format!("{:?}", readiness(ac))
    }

    #[test]
    fn ready_only_when_the_current_spec_was_checked_and_found_healthy() {
        assert_eq!(
            readiness(&cluster(2, Some(status(true, "Healthy", "ok")))),
            Readiness::Ready("v1.35.4".into())
        );
        let stale = cluster(3, Some(status(true, "Healthy", "ok")));
        insta::assert_snapshot!(shown(&stale), @r#"NotReady("the controller has not checked the new spec yet")"#);
        let unreachable = status(
            false,
            "Unreachable",
            "cluster unreachable: connection refused",
        );
        insta::assert_snapshot!(shown(&cluster(2, Some(unreachable))), @r#"NotReady("Unreachable: cluster unreachable: connection refused")"#);
        insta::assert_snapshot!(shown(&cluster(1, None)), @r#"NotReady("no status yet: the controller has not checked it")"#);
    }

    #[test]
    fn only_the_secret_attach_made_for_the_cluster_is_its_own() {
        let mut secret = Secret::default();
        assert!(!created_by_attach(&secret, "m1"));
        secret
            .labels_mut()
            .insert(MANAGED_BY.into(), MANAGED_BY_CLI.into());
        assert!(!created_by_attach(&secret, "m1"));
        secret
            .annotations_mut()
            .insert(ATTACHED_CLUSTER.into(), "m2".into());
        assert!(!created_by_attach(&secret, "m1"));
        secret
            .annotations_mut()
            .insert(ATTACHED_CLUSTER.into(), "m1".into());
        assert!(created_by_attach(&secret, "m1"));
    }
}
