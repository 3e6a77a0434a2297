//! Leader election on a Lease: only the holder runs controllers.

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use kurator_api::labels::{CONTROLLER_VERSION, FIELD_MANAGER};

pub use kube_lease_manager::LeaseManagerError as LeaseError;

/// Name of the leader-election Lease (in the controller's `--lease-namespace`).
pub const LEASE_NAME: &str = "kurator-controller";

/// Builds the lease manager for this replica. `identity` should be unique per replica.
pub async fn lease_manager(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<LeaseManager, LeaseError> {
    LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
}

/// Writes this replica's `version` into the Lease's annotation [`CONTROLLER_VERSION`] (the
/// leader calls it once it leads), where `kurator version` reads it. The lease manager
/// patches only the Lease's spec, so the annotation stays until the next leader writes its
/// own.
pub async fn announce_version(
    client: Client,
    namespace: &str,
    name: &str,
    version: &str,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { CONTROLLER_VERSION: version } }
    });
    Api::<Lease>::namespaced(client, namespace)
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
}
