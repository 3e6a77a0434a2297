//! Adds a controller's finalizer and carries on in the same reconcile.
//!
//! kube-runtime's `finalizer()` helper ends the reconcile that adds the finalizer and waits
//! for the watch event of its own write; a new object then costs one extra round trip and one
//! debounce before any work is done. This adds the finalizer first (with the same guarded JSON
//! patch), and hands the helper the object as the server returned it, so the helper goes
//! straight to its apply step. Deletion is still the helper's.

use std::sync::Arc;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// `obj` with `name` among its finalizers: unchanged when it is there already or the object is
/// being deleted, else as stored after adding it.
pub async fn ensure<K>(api: &Api<K>, obj: Arc<K>, name: &str) -> Result<Arc<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    if obj.meta().deletion_timestamp.is_some() || obj.finalizers().iter().any(|f| f == name) {
        return Ok(obj);
    }
    let patch = add_patch(obj.meta().finalizers.as_deref(), name);
    let updated = api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(|source| Error::Finalizer {
            action: "adding",
            source,
        })?;
    Ok(Arc::new(updated))
}

/// A JSON patch that adds `name`, and fails (409/422) if the finalizers changed meanwhile.
fn add_patch(current: Option<&[String]>, name: &str) -> json_patch::Patch {
    let value = match current {
        None | Some([]) => serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [name] }
        ]),
        Some(list) => serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": name }
        ]),
    };
    serde_json::from_value(value).expect("a well-formed JSON patch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_guards_the_current_list() {
        let first = serde_json::to_value(add_patch(None, "a.dev")).unwrap();
        assert_eq!(first[0]["op"], "test");
        assert_eq!(first[1]["value"], serde_json::json!(["a.dev"]));
        let next = serde_json::to_value(add_patch(Some(&["x".into()]), "a.dev")).unwrap();
        assert_eq!(next[0]["value"], serde_json::json!(["x"]));
        assert_eq!(next[1]["path"], "/metadata/finalizers/-");
    }
}
