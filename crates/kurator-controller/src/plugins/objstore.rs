//! The metric plugin's object-store Secret: validated on the host, copied into each member's
//! `monitoring` namespace (where the Thanos sidecar reads it), removed when no longer wanted.
//!
//! The Secret's data never appears in errors, logs, events or status: messages name the
//! Secret and the problem only.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams},
};
use kurator_api::labels::{FIELD_MANAGER, FLEET, MANAGED_BY};

use super::render::MANAGED_BY_FLEET_MANAGER;
use crate::{
    application::build::{fnv1a, label_value},
    error::Error,
};

/// The key Thanos reads its object-store configuration from.
pub const OBJSTORE_KEY: &str = "objstore.yml";

/// A validated object-store Secret, ready to be copied.
#[derive(Clone, PartialEq)]
pub struct ObjectStore {
    pub name: String,
    pub data: BTreeMap<String, ByteString>,
    /// Hash of the data, to skip copies that are already current.
    pub hash: String,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the data.
        f.debug_struct("ObjectStore")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Pure: checks the Secret `namespace/name` (`None` when it does not exist). The error is a
/// message for the `MetricReady` condition.
pub fn validate(
    namespace: &str,
    name: &str,
    secret: Option<&Secret>,
) -> Result<ObjectStore, String> {
    let Some(secret) = secret else {
        return Err(format!(
            "object-store Secret {namespace}/{name} (spec.plugin.metric.thanos.objectStoreConfig.secretName) not found"
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let Some(config) = data.get(OBJSTORE_KEY) else {
        return Err(format!(
            "object-store Secret {namespace}/{name} has no key {OBJSTORE_KEY}"
        ));
    };
    let text = std::str::from_utf8(&config.0).map_err(|_| {
        format!("object-store Secret {namespace}/{name} key {OBJSTORE_KEY} is not UTF-8 text")
    })?;
    // The parser's message may quote the input, so only the kind of problem is reported.
    let parsed: serde_json::Value = serde_saphyr::from_str(text).map_err(|_| {
        format!("object-store Secret {namespace}/{name} key {OBJSTORE_KEY} is not valid YAML")
    })?;
    let has_type = parsed
        .get("type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    if !has_type {
        return Err(format!(
            "object-store Secret {namespace}/{name} key {OBJSTORE_KEY} has no `type` (Thanos object-store format: type, config)"
        ));
    }
    let mut hasher_input = String::new();
    for (key, value) in &data {
        hasher_input.push_str(key);
        hasher_input.push('\0');
        hasher_input.push_str(&String::from_utf8_lossy(&value.0));
        hasher_input.push('\0');
    }
    Ok(ObjectStore {
        name: name.to_string(),
        hash: format!("{:08x}", fnv1a(&hasher_input)),
        data,
    })
}

fn labels(fleet: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_FLEET_MANAGER.to_string()),
        (FLEET.to_string(), label_value(fleet)),
    ])
}

/// Copies the Secret into the member's `namespace` (created when missing).
pub async fn copy_to_member(
    member: &Client,
    namespace: &str,
    fleet: &str,
    store: &ObjectStore,
) -> Result<(), Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut ns_patch = serde_json::to_value(&ns)?;
    ns_patch["apiVersion"] = "v1".into();
    ns_patch["kind"] = "Namespace".into();
    Api::<Namespace>::all(member.clone())
        .patch(namespace, &params, &Patch::Apply(&ns_patch))
        .await?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(store.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(fleet)),
            ..Default::default()
        },
        data: Some(store.data.clone()),
        ..Default::default()
    };
    let mut patch = serde_json::to_value(&secret)?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Secret".into();
    Api::<Secret>::namespaced(member.clone(), namespace)
        .patch(&store.name, &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Removes every copy this fleet made in the member's `namespace`.
pub async fn remove_from_member(
    member: &Client,
    namespace: &str,
    fleet: &str,
) -> Result<(), Error> {
    let selector = format!(
        "{MANAGED_BY}={MANAGED_BY_FLEET_MANAGER},{FLEET}={}",
        label_value(fleet)
    );
    let api = Api::<Secret>::namespaced(member.clone(), namespace);
    match api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "s3cr3t-access-key-material";

    fn secret(key: &str, value: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn a_thanos_object_store_config_is_accepted() {
        let yaml = format!("type: S3\nconfig:\n  bucket: thanos\n  access_key: {MARKER}\n");
        let store = validate("default", "objstore", Some(&secret(OBJSTORE_KEY, &yaml))).unwrap();
        assert_eq!(store.name, "objstore");
        assert!(!format!("{store:?}").contains(MARKER));
    }

    #[test]
    fn problems_are_named_without_the_data() {
        let cases = [
            (None, "not found"),
            (Some(secret("other", "type: S3")), "has no key objstore.yml"),
            (
                Some(secret(OBJSTORE_KEY, &format!("{MARKER}: [unclosed"))),
                "is not valid YAML",
            ),
            (
                Some(secret(
                    OBJSTORE_KEY,
                    &format!("config: {{bucket: {MARKER}}}"),
                )),
                "has no `type`",
            ),
        ];
        for (secret, expected) in cases {
            let message = validate("default", "objstore", secret.as_ref()).unwrap_err();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("default/objstore"), "{message}");
            assert!(!message.contains(MARKER), "{message}");
        }
    }

    #[test]
    fn the_hash_follows_the_data() {
        let a = validate("ns", "s", Some(&secret(OBJSTORE_KEY, "type: S3"))).unwrap();
        let b = validate("ns", "s", Some(&secret(OBJSTORE_KEY, "type: GCS"))).unwrap();
        assert_ne!(a.hash, b.hash);
    }
}
