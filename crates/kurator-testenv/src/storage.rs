//! Persistent volumes for charts that ask for them (Thanos' store gateway, Grafana): every
//! cluster whose kube-controller-manager runs gets a default StorageClass served by that
//! manager's own host-path provisioner (`--enable-hostpath-provisioner`, Kubernetes' in-tree
//! `kubernetes.io/host-path` plugin). It is real Kubernetes code, so a PersistentVolumeClaim
//! is provisioned and bound as on a real cluster and Helm's waits behave as users see them,
//! instead of product values that turn persistence off.
//!
//! The provisioner creates one empty directory per volume under `/tmp/hostpath_pv/` (a path
//! fixed in Kubernetes) and removes it when the volume is deleted. No Pod mounts it: kwok
//! simulates the Pods and no container runs.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// The default StorageClass of every cluster (kind's name for its own).
pub const DEFAULT_STORAGE_CLASS: &str = "standard";
/// kube-controller-manager's in-tree host-path provisioner.
pub(crate) const HOST_PATH_PROVISIONER: &str = "kubernetes.io/host-path";
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

fn default_storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(DEFAULT_STORAGE_CLASS.to_string()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: HOST_PATH_PROVISIONER.to_string(),
        // Volumes go with their claims, as with most clouds' default classes.
        reclaim_policy: Some("Delete".to_string()),
        // Bound at once: host-path volumes have no topology to wait for.
        volume_binding_mode: Some("Immediate".to_string()),
        ..Default::default()
    }
}

/// Creates the default StorageClass (left alone when it exists).
pub(crate) async fn create_default_class(client: &kube::Client) -> Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    match classes
        .create(&PostParams::default(), &default_storage_class())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("creating the default StorageClass {DEFAULT_STORAGE_CLASS}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_is_the_default_one_and_uses_the_host_path_provisioner() {
        let class = default_storage_class();
        assert_eq!(
            class.metadata.annotations.unwrap_or_default()[DEFAULT_CLASS_ANNOTATION],
            "true"
        );
        assert_eq!(class.provisioner, "kubernetes.io/host-path");
        assert_eq!(class.volume_binding_mode.as_deref(), Some("Immediate"));
    }
}
