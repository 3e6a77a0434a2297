//! Leader election on a Lease: only the holder runs controllers.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

pub use kube_lease_manager::LeaseManagerError as LeaseError;

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
