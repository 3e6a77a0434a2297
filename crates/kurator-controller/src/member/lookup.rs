//! Which kubeconfig a member cluster has, and whether it is ready: the one place every
//! controller (and the CLI, through kurator-api's [`MemberCluster`]) asks, whatever the
//! cluster's kind.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};
use kurator_api::{
    cluster::SecretKeyRef,
    fleet::{ClusterKind, FleetCluster},
    labels::FLEET_NAME,
    member::{ClusterReadiness, MemberCluster},
};

use super::AccessError;
use crate::{
    context::{Context, Stores},
    index::{Key, Kind, stored},
};

/// A member cluster as the stores show it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub cluster: FleetCluster,
    pub labels: BTreeMap<String, String>,
    /// Where its kubeconfig lives; `None` while a CustomCluster has none yet.
    pub kubeconfig: Option<SecretKeyRef>,
    /// The kubeconfig Secret's resourceVersion (empty when unknown): clients are rebuilt when
    /// it changes.
    pub secret_version: String,
    pub readiness: ClusterReadiness,
}

impl Member {
    /// The value of the membership label.
    pub fn fleet_label(&self) -> Option<&str> {
        self.labels.get(FLEET_NAME).map(String::as_str)
    }
}

fn of<K: MemberCluster + ResourceExt>(
    obj: &K,
    kind: ClusterKind,
    secrets: &Store<PartialObjectMeta<Secret>>,
) -> Member {
    let namespace = obj.namespace().unwrap_or_default();
    let kubeconfig = obj.kubeconfig_ref();
    let secret_version = kubeconfig
        .as_ref()
        .and_then(|k| secrets.get(&ObjectRef::new(&k.name).within(&namespace)))
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default();
    Member {
        cluster: FleetCluster {
            name: obj.name_any(),
            kind,
        },
        labels: obj.labels().clone(),
        kubeconfig,
        secret_version,
        readiness: obj.readiness(),
    }
}

/// The cluster object `cluster` in `namespace`, from the stores.
pub fn lookup(stores: &Stores, namespace: &str, cluster: &FleetCluster) -> Option<Member> {
    let key = Key::new(Kind::of_cluster(cluster.kind), namespace, &cluster.name);
    let secrets = &stores.secrets;
    Some(match cluster.kind {
        ClusterKind::AttachedCluster => of(
            stored(&stores.attached_clusters, &key)?.as_ref(),
            cluster.kind,
            secrets,
        ),
        ClusterKind::Cluster => of(
            stored(&stores.clusters, &key)?.as_ref(),
            cluster.kind,
            secrets,
        ),
        ClusterKind::CustomCluster => of(
            stored(&stores.custom_clusters, &key)?.as_ref(),
            cluster.kind,
            secrets,
        ),
    })
}

/// A client for `member` (cached until its Secret changes). `watch` leaves reads unbounded,
/// for long-running watches.
pub async fn client(
    ctx: &Context,
    namespace: &str,
    member: &Member,
    watch: bool,
) -> Result<Client, AccessError> {
    let Some(kubeconfig) = &member.kubeconfig else {
        return Err(AccessError::NoKubeconfig(format!(
            "{} {}",
            member.cluster.kind, member.cluster.name
        )));
    };
    let (host, timeout) = (&ctx.client, ctx.settings.probe_timeout);
    let version = &member.secret_version;
    if watch {
        ctx.members
            .watch_client(host, namespace, kubeconfig, version, timeout)
            .await
    } else {
        ctx.members
            .client(host, namespace, kubeconfig, version, timeout)
            .await
    }
}

/// The cluster object named `name` in any kind (AttachedCluster, then Cluster, then
/// CustomCluster): for objects that name a cluster without its kind (plugin releases).
pub fn find_by_name(stores: &Stores, namespace: &str, name: &str) -> Option<Member> {
    [
        ClusterKind::AttachedCluster,
        ClusterKind::Cluster,
        ClusterKind::CustomCluster,
    ]
    .into_iter()
    .find_map(|kind| {
        lookup(
            stores,
            namespace,
            &FleetCluster {
                name: name.to_string(),
                kind,
            },
        )
    })
}
