//! `kurator version`: this binary's version, and the running controller's as the leading
//! replica wrote it on its leader-election Lease (annotation `kurator.dev/controller-version`).
//!
//! The Lease is read through the host API, so it works wherever `kurator get` works, without a
//! route to the controller's Pods.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, ResourceExt, api::ListParams};
use kurator_api::labels::CONTROLLER_VERSION;
use kurator_controller::leader::LEASE_NAME;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Print the client's version only; do not contact the host cluster.
    #[arg(long)]
    pub client: bool,
    /// Kubeconfig of the host cluster (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the controller's leader Lease (the controller's --lease-namespace).
    /// Default: the Lease is looked up in every namespace.
    #[arg(long)]
    pub lease_namespace: Option<String>,
}

/// How long the host may take to answer before the controller's version is given up.
const HOST_TIMEOUT: Duration = Duration::from_secs(10);

/// The crate version, and the git commit when the build set `KURATOR_GIT_COMMIT` (no build
/// script: the image build passes it if it wants it).
pub fn client_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("KURATOR_GIT_COMMIT") {
        Some(commit) if !commit.is_empty() => format!("{version} (commit {commit})"),
        _ => version.to_string(),
    }
}

/// Prints both versions. An unreachable host or a missing controller is reported, not an
/// error: the client's version is still useful.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    println!("client: {}", client_version());
    if args.client {
        return Ok(());
    }
    let leases = match tokio::time::timeout(HOST_TIMEOUT, leases(&args)).await {
        Ok(Ok(leases)) => leases,
        Ok(Err(e)) => {
            // Unreachable, no kubeconfig, or not allowed to list Leases everywhere (then
            // --lease-namespace reads just one).
            println!("controller: unknown (cannot read its leader Lease: {e:#})");
            return Ok(());
        }
        Err(_) => {
            println!(
                "controller: unknown (host cluster did not answer within {}s)",
                HOST_TIMEOUT.as_secs()
            );
            return Ok(());
        }
    };
    print!(
        "{}",
        describe(&leases, args.lease_namespace.as_deref(), Timestamp::now())
    );
    Ok(())
}

async fn leases(args: &VersionArgs) -> anyhow::Result<Vec<Lease>> {
    let client = crate::client(args.kubeconfig.as_ref()).await?;
    Ok(match &args.lease_namespace {
        Some(ns) => Api::<Lease>::namespaced(client, ns)
            .get_opt(LEASE_NAME)
            .await?
            .into_iter()
            .collect(),
        None => {
            let by_name = ListParams::default().fields(&format!("metadata.name={LEASE_NAME}"));
            let mut items = Api::<Lease>::all(client).list(&by_name).await?.items;
            items.sort_by_key(|l| l.namespace());
            items
        }
    })
}

/// One `controller:` line per Lease found (several installs, several lines).
fn describe(leases: &[Lease], namespace: Option<&str>, now: Timestamp) -> String {
    if leases.is_empty() {
        let place = match namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "in any namespace".into(),
        };
        return format!(
            "controller: not found (no Lease {LEASE_NAME} {place}: the controller is not \
             running, or runs with --leader-elect=false)\n"
        );
    }
    leases
        .iter()
        .map(|lease| format!("controller: {}\n", describe_one(lease, now)))
        .collect()
}

fn describe_one(lease: &Lease, now: Timestamp) -> String {
    let place = format!(
        "Lease {}/{}",
        lease.namespace().unwrap_or_default(),
        lease.name_any()
    );
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec.renew_time.map(|t| t.0);
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let leading = match (&holder, renewed) {
        (Some(holder), Some(renewed)) if now.duration_since(renewed) <= duration => {
            format!("leader {holder}, renewed {} ago", ago(renewed, now))
        }
        (_, Some(renewed)) => format!("no leader now, last renewed {} ago", ago(renewed, now)),
        (_, None) => "no leader yet".into(),
    };
    match lease.annotations().get(CONTROLLER_VERSION) {
        Some(version) => format!("{version} ({place}, {leading})"),
        None => format!(
            "unknown ({place}, {leading}: no {CONTROLLER_VERSION} annotation, the controller \
             is older than this client)"
        ),
    }
}

fn ago(then: Timestamp, now: Timestamp) -> String {
    crate::tables::age(Some(&Time(then)), now)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn lease(version: Option<&str>, renewed_secs_ago: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some("kurator-system".into()),
                annotations: version
                    .map(|v| [(CONTROLLER_VERSION.to_string(), v.to_string())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("kurator-5d8f-x2x".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    now() - SignedDuration::from_secs(renewed_secs_ago),
                )),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_leaders_version_and_whether_it_still_leads() {
        let leases = [lease(Some("0.1.0"), 3), lease(Some("0.0.9"), 600)];
        insta::assert_snapshot!(describe(&leases, None, now()), @r"
        controller: 0.1.0 (Lease kurator-system/kurator-controller, leader kurator-5d8f-x2x, renewed 3s ago)
        controller: 0.0.9 (Lease kurator-system/kurator-controller, no leader now, last renewed 10m ago)
        ");
    }

    #[test]
    fn missing_lease_or_annotation_is_said() {
        insta::assert_snapshot!(describe(&[], Some("kube-system"), now()), @"controller: not found (no Lease kurator-controller in namespace kube-system: the controller is not running, or runs with --leader-elect=false)");
        insta::assert_snapshot!(describe(&[lease(None, 1)], None, now()), @"controller: unknown (Lease kurator-system/kurator-controller, leader kurator-5d8f-x2x, renewed 1s ago: no kurator.dev/controller-version annotation, the controller is older than this client)");
    }

    #[test]
    fn client_version_is_the_crate_version() {
        assert!(client_version().starts_with(env!("CARGO_PKG_VERSION")));
    }
}
