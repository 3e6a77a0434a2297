use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kurator_api::{
    AttachedCluster, Fleet,
    cluster::{AttachedClusterSpec, SecretKeyRef},
    fleet::{ClusterKind, FleetCluster, FleetSpec},
    flux::{Kustomization, KustomizationSpec, StatusView},
    labels::FLEET_NAME,
};

use super::*;

pub(crate) fn attached(name: &str, secret: &str, fleet: Option<&str>) -> AttachedCluster {
    let mut ac = AttachedCluster::new(
        name,
        AttachedClusterSpec {
            kubeconfig: SecretKeyRef {
                name: secret.into(),
                key: "value".into(),
            },
        },
    );
    ac.metadata.namespace = Some("ns".into());
    if let Some(fleet) = fleet {
        ac.metadata.labels = Some([(FLEET_NAME.to_string(), fleet.to_string())].into());
    }
    ac
}

pub(crate) fn fleet(name: &str, clusters: &[&str]) -> Fleet {
    let mut f = Fleet::new(
        name,
        FleetSpec {
            clusters: clusters
                .iter()
                .map(|c| FleetCluster {
                    name: c.to_string(),
                    kind: ClusterKind::AttachedCluster,
                })
                .collect(),
            plugin: None,
        },
    );
    f.metadata.namespace = Some("ns".into());
    f
}

fn owned_kustomization(name: &str, owner_uid: &str) -> StatusView<Kustomization> {
    let mut k = Kustomization::new(name, KustomizationSpec::default());
    k.metadata.namespace = Some("ns".into());
    k.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps.kurator.dev/v1alpha1".into(),
        kind: "Application".into(),
        name: "app".into(),
        uid: owner_uid.into(),
        ..Default::default()
    }]);
    StatusView::of(&k)
}

#[test]
fn an_update_replaces_what_the_object_contributed() {
    let index = Indexes::default();
    index.applied(&attached("m1", "kc-old", Some("a")));
    assert_eq!(
        index
            .secret_users("ns", "kc-old", Kind::AttachedCluster)
            .len(),
        1
    );
    assert_eq!(index.labelled_for("ns", "a").len(), 1);

    let previous = index.applied(&attached("m1", "kc-new", Some("b")));
    assert_eq!(
        previous.unwrap().labelled_for().collect::<Vec<_>>(),
        vec!["a"]
    );
    assert!(
        index
            .secret_users("ns", "kc-old", Kind::AttachedCluster)
            .is_empty()
    );
    assert!(index.labelled_for("ns", "a").is_empty());
    assert_eq!(
        index.secret_users("ns", "kc-new", Kind::AttachedCluster),
        vec![Key::new(Kind::AttachedCluster, "ns", "m1")]
    );
    assert_eq!(index.labelled_for("ns", "b").len(), 1);
}

#[test]
fn a_deletion_returns_the_summary_and_forgets_the_object() {
    let index = Indexes::default();
    index.applied(&attached("m1", "kc", Some("a")));
    let key = Key::new(Kind::AttachedCluster, "ns", "m1");
    let gone = index.deleted(&key).expect("was indexed");
    assert_eq!(gone.labelled_for().collect::<Vec<_>>(), vec!["a"]);
    assert!(index.labelled_for("ns", "a").is_empty());
    assert!(index.summary(&key).is_none());
    assert!(index.deleted(&key).is_none());
}

#[test]
fn fleets_are_found_by_the_clusters_they_list() {
    let index = Indexes::default();
    index.applied(&fleet("a", &["m1", "m2"]));
    index.applied(&fleet("b", &["m2"]));
    let listing = |c: &str| index.fleets_listing("ns", ClusterKind::AttachedCluster, c);
    assert_eq!(listing("m1"), vec![Key::new(Kind::Fleet, "ns", "a")]);
    assert_eq!(listing("m2").len(), 2);
    assert!(listing("m3").is_empty());
    // Another kind or namespace is another cluster.
    assert!(
        index
            .fleets_listing("ns", ClusterKind::Cluster, "m1")
            .is_empty()
    );
    assert!(
        index
            .fleets_listing("other", ClusterKind::AttachedCluster, "m1")
            .is_empty()
    );
}

#[test]
fn flux_objects_are_found_by_owner_uid_and_kind() {
    let index = Indexes::default();
    index.applied(&owned_kustomization("k1", "uid-1"));
    index.applied(&owned_kustomization("k2", "uid-1"));
    index.applied(&owned_kustomization("k3", "uid-2"));
    assert_eq!(index.owned_by("uid-1", &[Kind::Kustomization]).len(), 2);
    assert!(index.owned_by("uid-1", &[Kind::HelmRelease]).is_empty());
    let summary = index
        .summary(&Key::new(Kind::Kustomization, "ns", "k3"))
        .unwrap();
    assert_eq!(summary.owners.iter().next().unwrap().name, "app");
}

#[test]
fn a_relist_drops_objects_deleted_while_the_watch_was_down() {
    let index = Indexes::default();
    index.applied(&attached("m1", "kc", Some("a")));
    index.applied(&attached("m2", "kc", Some("a")));
    index.applied(&fleet("a", &["m1"]));
    let present: BTreeSet<Key> = [Key::new(Kind::AttachedCluster, "ns", "m1")].into();
    let gone = index.relisted(Kind::AttachedCluster, &present);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0.name, "m2");
    assert_eq!(index.labelled_for("ns", "a").len(), 1);
    // Other kinds are untouched.
    assert_eq!(index.counts().get(&Kind::Fleet), Some(&1));
}
