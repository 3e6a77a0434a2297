//! Status writes shared by the controllers: server-side apply on the status subresource,
//! skipped when nothing changed.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;
use kurator_api::labels::FIELD_MANAGER;

/// Applies `status` unless it equals `current`. Returns whether a write happened.
pub async fn apply_status<K, S>(
    ctx: &crate::context::Context,
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    apply_status_as(ctx, api, obj, FIELD_MANAGER, current, status).await
}

/// As [`apply_status`], for a controller that owns only part of the status under its own
/// field manager: `status` holds exactly its fields, `current` the same part as stored.
pub async fn apply_status_as<K, S>(
    ctx: &crate::context::Context,
    api: &Api<K>,
    obj: &K,
    field_manager: &str,
    current: Option<&S>,
    status: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let patch = StatusPatch {
        api_version: K::api_version(&()),
        kind: K::kind(&()),
        status,
    };
    // A reconcile that runs before the watch delivered this controller's last status write
    // sees the older status: the same write is not made twice.
    let kind = format!("{}/status/{field_manager}", K::kind(&()));
    let hash = format!(
        "{:08x}",
        crate::application::build::fnv1a(&serde_json::to_string(&patch)?)
    );
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let stored_rv = obj.meta().resource_version.as_deref();
    if ctx
        .recent_writes
        .pending(&kind, &namespace, &name, &hash, stored_rv)
    {
        return Ok(false);
    }
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.recent_writes.record(
        &kind,
        &namespace,
        &name,
        hash,
        written.meta().resource_version.as_deref(),
    );
    Ok(true)
}

/// The body of a status apply. Typed rather than a `serde_json::Value`: a status of a
/// thousand entries is serialised straight into the request instead of being copied into a
/// tree first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a, S> {
    api_version: std::borrow::Cow<'a, str>,
    kind: std::borrow::Cow<'a, str>,
    status: &'a S,
}

// kube's `Patch` wants `Debug`; a status of a thousand entries is not worth printing.
impl<S> std::fmt::Debug for StatusPatch<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatusPatch({} {})", self.api_version, self.kind)
    }
}

/// Records an Event (and a log line) when the `Ready` condition appears or changes status or
/// reason: Normal when ready, Warning otherwise.
pub async fn publish_ready_transition<K>(
    ctx: &crate::context::Context,
    obj: &K,
    before: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    after: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    action: &str,
) where
    K: Resource<DynamicType = ()>,
{
    publish_transition(
        ctx,
        obj,
        before,
        after,
        kurator_api::conditions::READY,
        action,
    )
    .await;
}

/// As [`publish_ready_transition`], for the condition `type_`.
pub async fn publish_transition<K>(
    ctx: &crate::context::Context,
    obj: &K,
    before: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    after: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    action: &str,
) where
    K: Resource<DynamicType = ()>,
{
    use kube::runtime::events::{Event, EventType};
    use kurator_api::conditions;
    let Some(new) = conditions::find(after, type_) else {
        return;
    };
    if conditions::find(before, type_)
        .is_some_and(|old| old.status == new.status && old.reason == new.reason)
    {
        return;
    }
    let ready = new.status == conditions::TRUE;
    let kind = K::kind(&());
    if ready {
        tracing::info!(%kind, condition = type_, reason = %new.reason, "ready");
    } else {
        tracing::warn!(%kind, condition = type_, reason = %new.reason, message = %new.message, "not ready");
    }
    let event = Event {
        type_: if ready {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: new.reason.clone(),
        note: Some(new.message.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

/// Reason of the Warning Event recorded when the API server refuses a call (403).
pub const FORBIDDEN: &str = "Forbidden";

/// The note of a `Forbidden` Event: the API server's message, which names the missing
/// permission, except the OwnerReferencesPermissionEnforcement admission plugin's, which names
/// none: the permission it wants is `update` on the owner's `finalizers`, and the owner of what
/// a controller writes is the object it reconciles (`owner_plural`).
pub fn forbidden_note(controller: &str, owner_plural: &str, message: &str) -> String {
    let mut note = format!("{controller} controller: {message}");
    if message.contains("cannot set blockOwnerDeletion") {
        note.push_str(&format!(
            " (owner references with blockOwnerDeletion need update on {owner_plural}/finalizers)"
        ));
    }
    note.chars().take(1000).collect()
}

/// Records a Warning Event `Forbidden` on `object` (of the resource `plural`) with
/// [`forbidden_note`]: a status write that is refused cannot say so in the status.
pub async fn publish_forbidden(
    ctx: &crate::context::Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    plural: &str,
    controller: &str,
    message: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: EventType::Warning,
        reason: FORBIDDEN.into(),
        note: Some(forbidden_note(controller, plural, message)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, object).await {
        tracing::warn!(error = %e, "publishing the Forbidden event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::forbidden_note;

    #[test]
    fn a_refused_owner_reference_names_the_finalizers_permission() {
        let message = "gitrepositories.source.toolkit.fluxcd.io \"webapp\" is forbidden: cannot \
                       set blockOwnerDeletion if an ownerReference refers to a resource you \
                       can't set finalizers on: , <nil>";
        let note = forbidden_note("application", "applications", message);
        assert!(note.starts_with("application controller: gitrepositories"));
        assert!(
            note.ends_with("need update on applications/finalizers)"),
            "{note}"
        );
    }

    #[test]
    fn other_refusals_are_quoted_as_they_are() {
        let message = "fleets.fleet.kurator.dev \"q\" is forbidden: User \"x\" cannot patch \
                       resource \"fleets/status\"";
        assert_eq!(
            forbidden_note("fleet", "fleets", message),
            format!("fleet controller: {message}")
        );
    }
}
