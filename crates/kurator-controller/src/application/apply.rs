//! The apply step: server-side apply of the desired Flux objects (skipped when the stored
//! copy already carries the same desired-state hash), deletion of the unwanted ones.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use kurator_api::{flux::StatusView, labels::FIELD_MANAGER};
use serde::{Serialize, de::DeserializeOwned};

use super::build::fnv1a;
use crate::error::Error;

pub use kurator_api::flux::DESIRED_HASH;

/// How long a write we made is trusted while the watch has not shown it yet.
const WRITE_TRUSTED_FOR: Duration = Duration::from_secs(30);

/// The writes this process made that the watches may not have delivered yet ("expectations"):
/// a reconcile that runs before its own earlier writes reach the store must not write them
/// again. Forgotten when the watch reports the object deleted, and after 30 s.
///
/// It also bounds the Flux object writes in flight across all reconciles
/// ([`WRITES_IN_FLIGHT`]): each reconcile writes 16 at a time, and 16 reconciles at once would
/// otherwise hold 256 requests (connections, buffers, bodies) open.
pub struct RecentWrites(Mutex<HashMap<WriteKey, Written>>, tokio::sync::Semaphore);

/// Flux object writes in flight at once, over every reconcile of the process.
pub const WRITES_IN_FLIGHT: usize = 32;

/// Flux objects that Application reconciles may hold at once (desired objects built, being
/// written, and their entries in a status being built), over every reconcile of the process.
pub const FANOUT_BUDGET: u32 = 2_000;

/// Bounds the memory of concurrent fan-outs: a reconcile takes one permit per Flux object it
/// will build (at most the whole budget) for its build, apply and status steps.
///
/// The writes are bounded anyway ([`WRITES_IN_FLIGHT`]), so sixteen reconciles of 1,000
/// clusters each built at once only wait for the same 32 slots while holding 16,000 desired
/// objects and statuses of 1,000 entries; two at a time keep the writes just as busy. Small
/// Applications are not held up: they take few permits.
pub struct FanoutBudget(tokio::sync::Semaphore);

impl Default for FanoutBudget {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(FANOUT_BUDGET as usize))
    }
}

impl FanoutBudget {
    /// Waits until `objects` (clamped to the budget) can be held.
    pub async fn hold(&self, objects: usize) -> tokio::sync::SemaphorePermit<'_> {
        let permits = u32::try_from(objects)
            .unwrap_or(u32::MAX)
            .clamp(1, FANOUT_BUDGET);
        self.0
            .acquire_many(permits)
            .await
            .expect("the fan-out budget is never closed")
    }
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self(
            Mutex::default(),
            tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
        )
    }
}

/// Kind (or kind, subresource and field manager), namespace and name.
type WriteKey = (String, String, String);
/// Desired-state hash, the resourceVersion the write returned, and when.
type Written = (String, u64, Instant);

impl RecentWrites {
    /// Whether `hash` was written to `kind` `namespace/name` at a resourceVersion newer than
    /// the store's `stored_rv` (`None`: not in the store yet). `kind` may name a subresource
    /// and field manager (`Fleet/status/kurator`).
    pub fn pending(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        hash: &str,
        stored_rv: Option<&str>,
    ) -> bool {
        let map = self.0.lock().expect("recent writes poisoned");
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some((written, rv, at)) = map.get(&key) else {
            return false;
        };
        written == hash
            && at.elapsed() < WRITE_TRUSTED_FOR
            && stored_rv.is_none_or(|s| s.parse::<u64>().is_ok_and(|s| s < *rv))
    }

    /// Records a write of `hash` that the server answered with resourceVersion `rv`.
    pub fn record(&self, kind: &str, namespace: &str, name: &str, hash: String, rv: Option<&str>) {
        let Some(rv) = rv.and_then(|rv| rv.parse::<u64>().ok()) else {
            return;
        };
        self.0.lock().expect("recent writes poisoned").insert(
            (kind.to_string(), namespace.to_string(), name.to_string()),
            (hash, rv, Instant::now()),
        );
    }

    /// The watch saw the object deleted: a write of it is no longer pending.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        self.0.lock().expect("recent writes poisoned").remove(&(
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        ));
    }
}

/// Applies `desired` unless the store already holds it at the same desired-state hash, or
/// this process wrote that hash and the watch has not caught up yet. Returns whether a write
/// happened.
pub async fn apply_object<K>(
    client: &Client,
    store: &Store<StatusView<K>>,
    recent: &RecentWrites,
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
    if current
        .as_ref()
        .is_some_and(|c| c.desired_hash.as_ref() == Some(&hash))
    {
        return Ok(false);
    }
    let stored_rv = current
        .as_ref()
        .and_then(|c| c.meta().resource_version.clone());
    let kind = K::kind(&());
    if recent.pending(&kind, &namespace, &name, &hash, stored_rv.as_deref()) {
        return Ok(false);
    }
    desired
        .annotations_mut()
        .insert(DESIRED_HASH.into(), hash.clone());
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let _slot = recent
        .1
        .acquire()
        .await
        .expect("the write semaphore is never closed");
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    recent.record(
        &kind,
        &namespace,
        &name,
        hash,
        written.meta().resource_version.as_deref(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::flux::Kustomization;

    #[test]
    fn a_write_is_pending_until_the_store_shows_it_or_it_is_deleted() {
        let recent = RecentWrites::default();
        let k = Kustomization::KIND.as_str();
        assert!(!recent.pending(k, "ns", "k", "h1", None));
        recent.record(k, "ns", "k", "h1".into(), Some("120"));
        // Not in the store yet, or the store still holds an older version: do not write again.
        assert!(recent.pending(k, "ns", "k", "h1", None));
        assert!(recent.pending(k, "ns", "k", "h1", Some("100")));
        // A newer stored version without our hash was changed by someone else: write.
        assert!(!recent.pending(k, "ns", "k", "h1", Some("130")));
        // Another desired state is another write.
        assert!(!recent.pending(k, "ns", "k", "h2", None));
        recent.forget(k, "ns", "k");
        assert!(!recent.pending(k, "ns", "k", "h1", None));
    }
}
