//! Adding an AttachedCluster to a Fleet's `spec.clusters` and removing it, for `kurator
//! attach --fleet` and `kurator detach`.
//!
//! A JSON merge patch carrying the resourceVersion that was read, not server-side apply:
//! apply would create a missing fleet, and it cannot remove an entry another manager (the
//! user's `kubectl apply`) owns. With the resourceVersion, a concurrent change of the fleet
//! fails the patch (409) and the edit is redone on the new list, so no entry is lost.

use anyhow::{Context as _, bail};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use kurator_api::{
    Fleet,
    fleet::{ClusterKind, FleetCluster},
    labels::CLI_FIELD_MANAGER,
};

/// How often an edit is redone when the fleet changed under it.
const ATTEMPTS: usize = 5;

/// Whether `fleet` lists the AttachedCluster `name`.
pub fn lists(fleet: &Fleet, name: &str) -> bool {
    fleet.spec.clusters.contains(&entry(name))
}

fn entry(name: &str) -> FleetCluster {
    FleetCluster {
        name: name.to_string(),
        kind: ClusterKind::AttachedCluster,
    }
}

/// Appends the AttachedCluster `name` unless listed; true when the list changed.
pub fn add_entry(clusters: &mut Vec<FleetCluster>, name: &str) -> bool {
    let wanted = entry(name);
    if clusters.contains(&wanted) {
        return false;
    }
    clusters.push(wanted);
    true
}

/// Removes the AttachedCluster `name` (entries of other kinds with that name stay); true
/// when the list changed.
pub fn remove_entry(clusters: &mut Vec<FleetCluster>, name: &str) -> bool {
    let unwanted = entry(name);
    let before = clusters.len();
    clusters.retain(|c| *c != unwanted);
    clusters.len() != before
}

/// Adds the AttachedCluster `name` to fleet `fleet`; false when it was already listed.
pub async fn add(api: &Api<Fleet>, fleet: &str, name: &str) -> anyhow::Result<bool> {
    edit(api, fleet, |clusters| add_entry(clusters, name)).await
}

/// Removes the AttachedCluster `name` from fleet `fleet`; false when it was not listed.
pub async fn remove(api: &Api<Fleet>, fleet: &str, name: &str) -> anyhow::Result<bool> {
    edit(api, fleet, |clusters| remove_entry(clusters, name)).await
}

async fn edit(
    api: &Api<Fleet>,
    fleet: &str,
    change: impl Fn(&mut Vec<FleetCluster>) -> bool,
) -> anyhow::Result<bool> {
    let ns = api.namespace().unwrap_or_default().to_string();
    for _ in 0..ATTEMPTS {
        let Some(current) = api
            .get_opt(fleet)
            .await
            .with_context(|| format!("reading Fleet {ns}/{fleet}"))?
        else {
            bail!("Fleet {ns}/{fleet} not found");
        };
        let mut clusters = current.spec.clusters.clone();
        if !change(&mut clusters) {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.resource_version() },
            "spec": { "clusters": clusters },
        });
        let params = PatchParams {
            field_manager: Some(CLI_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(fleet, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("updating Fleet {ns}/{fleet}")),
        }
    }
    bail!("Fleet {ns}/{fleet} changed {ATTEMPTS} times while being edited; try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, kind: ClusterKind) -> FleetCluster {
        FleetCluster {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn add_keeps_existing_entries_and_does_not_duplicate() {
        let mut clusters = vec![cluster("a", ClusterKind::Cluster)];
        assert!(add_entry(&mut clusters, "a"));
        assert!(!add_entry(&mut clusters, "a"));
        assert_eq!(
            clusters,
            [
                cluster("a", ClusterKind::Cluster),
                cluster("a", ClusterKind::AttachedCluster)
            ]
        );
    }

    #[test]
    fn remove_takes_only_the_attached_cluster() {
        let mut clusters = vec![
            cluster("a", ClusterKind::CustomCluster),
            cluster("a", ClusterKind::AttachedCluster),
            cluster("b", ClusterKind::AttachedCluster),
        ];
        assert!(remove_entry(&mut clusters, "a"));
        assert!(!remove_entry(&mut clusters, "a"));
        assert_eq!(
            clusters,
            [
                cluster("a", ClusterKind::CustomCluster),
                cluster("b", ClusterKind::AttachedCluster)
            ]
        );
    }
}
