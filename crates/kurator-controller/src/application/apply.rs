//! The apply step: server-side apply of the desired Flux objects (skipped when the stored
//! copy already carries the same desired-state hash), deletion of the unwanted ones.

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use kurator_api::labels::FIELD_MANAGER;
use serde::{Serialize, de::DeserializeOwned};

use super::build::fnv1a;
use crate::error::Error;

/// Annotation holding a hash of what we last applied: an object whose stored copy carries
/// the hash of the current desired state needs no write.
pub const DESIRED_HASH: &str = "apps.kurator.dev/desired-hash";

/// Applies `desired` unless the store already holds it at the same desired-state hash.
/// Returns whether a write happened.
pub async fn apply_object<K>(
    client: &Client,
    store: &Store<K>,
    mut desired: K,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let hash = format!("{:08x}", fnv1a(&serde_json::to_string(&desired)?));
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let current = store.get(&ObjectRef::new(&name).within(&namespace));
    if current.is_some_and(|c| c.annotations().get(DESIRED_HASH) == Some(&hash)) {
        return Ok(false);
    }
    desired.annotations_mut().insert(DESIRED_HASH.into(), hash);
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
}

/// Deletes one object; already gone is fine.
pub async fn delete_object<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the host serves Flux's three API groups.
pub async fn flux_installed(client: &Client) -> Result<bool, Error> {
    for group in [
        "source.toolkit.fluxcd.io",
        "kustomize.toolkit.fluxcd.io",
        "helm.toolkit.fluxcd.io",
    ] {
        match kube::discovery::group(client, group).await {
            Ok(_) => {}
            Err(kube::Error::Discovery(_)) => return Ok(false),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}
