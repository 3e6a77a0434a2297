//! Applying YAML manifests (several `---` documents) with server-side apply, as
//! `kubectl apply --server-side` would.

use anyhow::{Context as _, bail};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::{self, Scope},
};
use kurator_api::labels::FIELD_MANAGER;
use serde::Deserialize;

/// Parses a multi-document YAML stream into objects; empty documents are skipped.
pub fn parse(yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for (index, doc) in serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .context("manifest is not valid YAML")?
        .into_iter()
        .enumerate()
    {
        if doc.is_null() {
            continue;
        }
        let obj = DynamicObject::deserialize(doc)
            .with_context(|| format!("document {} is not a Kubernetes object", index + 1))?;
        if obj.types.is_none() {
            bail!("document {} has no apiVersion/kind", index + 1);
        }
        objects.push(obj);
    }
    Ok(objects)
}

/// Applies each object (namespaced ones into their own namespace, else `default_namespace`).
pub async fn apply(
    client: &Client,
    objects: &[DynamicObject],
    default_namespace: &str,
) -> anyhow::Result<()> {
    for obj in objects {
        apply_one(client, obj, default_namespace).await?;
    }
    Ok(())
}

pub async fn apply_one(
    client: &Client,
    obj: &DynamicObject,
    default_namespace: &str,
) -> anyhow::Result<DynamicObject> {
    let types = obj
        .types
        .as_ref()
        .context("object has no apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let name = obj
        .metadata
        .name
        .clone()
        .context("object has no metadata.name")?;
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| {
            format!(
                "the API server does not serve {}/{}",
                types.api_version, types.kind
            )
        })?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = obj
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(default_namespace);
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {} {name}", types.kind))
}
