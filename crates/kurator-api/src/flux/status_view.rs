//! [`StatusView`]: a Flux object as a controller caches it, without its spec.

use std::{borrow::Cow, fmt, marker::PhantomData};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

use super::FluxStatus;

/// The annotation holding a hash of what the controller last applied to a Flux object: a
/// stored copy that carries the hash of the current desired state needs no write.
pub const DESIRED_HASH: &str = "apps.kurator.dev/desired-hash";

/// A Flux object of kind `K` as the controller keeps it: metadata and status only.
///
/// The controller reads a stored Flux object for its labels, owners, desired-state hash,
/// generation and status, never for its spec; the spec is what it writes. Decoding into this
/// type drops the spec (serde ignores unknown fields), which at 20,000 Flux objects is most of
/// the watch cache. Annotations are not kept either, except [`DESIRED_HASH`] as its own field
/// (a map of one entry costs a whole B-tree node). It is the same API type as `K` (kind,
/// group, version, plural), so `Api<StatusView<Kustomization>>` lists and watches
/// Kustomizations.
#[derive(Serialize)]
#[serde(bound = "")]
pub struct StatusView<K> {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<FluxStatus>,
    /// The [`DESIRED_HASH`] annotation.
    #[serde(skip)]
    pub desired_hash: Option<String>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<'de, K> Deserialize<'de> for StatusView<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: ObjectMeta,
            #[serde(default)]
            status: Option<FluxStatus>,
        }
        let Wire { metadata, status } = Wire::deserialize(deserializer)?;
        Ok(Self::new(metadata, status))
    }
}

impl<K> StatusView<K> {
    /// The view of an object's metadata and status (annotations reduced to the hash).
    pub fn new(mut metadata: ObjectMeta, status: Option<FluxStatus>) -> Self {
        let desired_hash = metadata
            .annotations
            .take()
            .and_then(|mut a| a.remove(DESIRED_HASH));
        Self {
            metadata,
            status,
            desired_hash,
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> StatusView<K> {
    /// The view of a typed object (tests, and callers holding a full object).
    pub fn of(object: &K) -> Self
    where
        K: HasFluxStatus,
    {
        Self::new(object.meta().clone(), object.flux_status().cloned())
    }
}

/// The Flux kinds whose status is a [`FluxStatus`].
pub trait HasFluxStatus {
    fn flux_status(&self) -> Option<&FluxStatus>;
}

// Manual impls: derives would demand `K: Clone` / `K: Debug` of the marker type.
impl<K> Clone for StatusView<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            status: self.status.clone(),
            desired_hash: self.desired_hash.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for StatusView<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("StatusView<{}>", K::kind(&())))
            .field("metadata", &self.metadata)
            .field("status", &self.status)
            .field("desired_hash", &self.desired_hash)
            .finish()
    }
}

impl<K> PartialEq for StatusView<K> {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata
            && self.status == other.status
            && self.desired_hash == other.desired_hash
    }
}

impl<K: Resource<DynamicType = ()>> Resource for StatusView<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::Kustomization;

    #[test]
    fn decodes_a_full_object_without_its_spec() {
        let json = serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": "default", "generation": 3,
                         "annotations": {"apps.kurator.dev/desired-hash": "0badf00d"}},
            "spec": {"interval": "5m", "prune": true, "path": "./deploy",
                     "sourceRef": {"kind": "GitRepository", "name": "repo"}},
            "status": {"observedGeneration": 3,
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let observed: StatusView<Kustomization> = serde_json::from_value(json).unwrap();
        assert_eq!(observed.metadata.generation, Some(3));
        assert_eq!(observed.desired_hash.as_deref(), Some("0badf00d"));
        assert_eq!(observed.metadata.annotations, None);
        assert!(
            observed
                .status
                .as_ref()
                .unwrap()
                .condition("Ready")
                .is_some()
        );
        let back = serde_json::to_value(&observed).unwrap();
        assert!(back.get("spec").is_none(), "the spec is not kept: {back}");
        assert_eq!(StatusView::<Kustomization>::kind(&()), "Kustomization");
        assert_eq!(
            StatusView::<Kustomization>::api_version(&()),
            "kustomize.toolkit.fluxcd.io/v1"
        );
        assert_eq!(StatusView::<Kustomization>::plural(&()), "kustomizations");
    }
}
