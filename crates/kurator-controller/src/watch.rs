//! One watch per kind: feeds a reflector store, keeps the [`Indexes`] and routes every change
//! through the trigger table.
//!
//! Objects are decoded one by one ([`Lenient`]): a malformed or foreign object is logged and
//! left out of the store, and never fails the list or the watch the others arrive on.

use std::{borrow::Cow, collections::BTreeSet, fmt::Debug, sync::Arc};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future::BoxFuture};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::sync::watch as gate;
use tracing::{debug, warn};

use crate::{
    context::Listed,
    index::{Indexed, Indexes, Key, key_of},
    triggers::{Change, Dispatcher},
};

/// An object as the watch decodes it: the typed object, or what is wrong with it.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // Malformed objects are rare; boxing would cost every other.
pub enum Lenient<K> {
    Decoded(K),
    Malformed {
        metadata: ObjectMeta,
        problem: String,
    },
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match K::deserialize(&value) {
            Ok(obj) => Lenient::Decoded(obj),
            Err(e) => Lenient::Malformed {
                metadata: value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default(),
                problem: e.to_string(),
            },
        })
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Decoded(obj) => obj.meta(),
            Lenient::Malformed { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Decoded(obj) => obj.meta_mut(),
            Lenient::Malformed { metadata, .. } => metadata,
        }
    }
}

/// A store of one kind and the gate that opens once its first list is complete.
pub struct Watch<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    writer: reflector::store::Writer<K>,
    pub listed: Listed,
    mark_listed: gate::Sender<bool>,
}

type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

impl<K> Watch<K>
where
    K: Indexed<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new() -> Self {
        let (store, writer) = reflector::store();
        let (mark_listed, listed) = Listed::new();
        Self {
            store,
            writer,
            listed,
            mark_listed,
        }
    }

    /// Watches `api` (decoding each object on its own).
    pub fn typed(
        self,
        api: Api<Lenient<K>>,
        config: watcher::Config,
        dispatcher: Arc<Dispatcher>,
    ) -> BoxFuture<'static, ()> {
        let store = self.store.clone();
        let events = watcher(api, config.any_semantic())
            .default_backoff()
            .map_ok(move |event| decoded(event, &store))
            .try_filter_map(|event| futures::future::ready(Ok(event)))
            .boxed();
        self.run(events, dispatcher)
    }

    /// Drives `events` into the store and the index, and dispatches every change.
    pub fn run(self, events: Events<K>, dispatcher: Arc<Dispatcher>) -> BoxFuture<'static, ()> {
        let (store, mark_listed) = (self.store, self.mark_listed);
        let index: Arc<Indexes> = dispatcher.index.clone();
        let mut relisted: BTreeSet<Key> = BTreeSet::new();
        events
            // Nothing reads managedFields; with server-side apply they are a large part of
            // every object, and at 20,000 Flux objects most of the cache.
            .modify(|obj| obj.meta_mut().managed_fields = None)
            .reflect(self.writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Apply(obj)) => {
                        let before = index.applied(&obj);
                        dispatcher.dispatch(&Change {
                            key: key_of(&obj),
                            before,
                            after: Some(obj.summary()),
                            fleet: None,
                        });
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        let key = key_of(&obj);
                        dispatcher
                            .recent_writes
                            .forget(&K::kind(&()), &key.namespace, &key.name);
                        let before = index.deleted(&key);
                        dispatcher.dispatch(&Change {
                            key,
                            before,
                            after: None,
                            fleet: None,
                        });
                    }
                    Ok(watcher::Event::Init) => relisted.clear(),
                    Ok(watcher::Event::InitApply(obj)) => {
                        index.applied(&obj);
                        relisted.insert(key_of(&obj));
                    }
                    // After a (re)list the store is complete: route the objects deleted while
                    // the watch was down, then every object, like a resync.
                    Ok(watcher::Event::InitDone) => {
                        for (key, before) in index.relisted(K::KIND, &relisted) {
                            dispatcher.recent_writes.forget(
                                &K::kind(&()),
                                &key.namespace,
                                &key.name,
                            );
                            dispatcher.dispatch(&Change {
                                key,
                                before: Some(before),
                                after: None,
                                fleet: None,
                            });
                        }
                        let objects = store.state();
                        debug!(kind = %K::kind(&()), objects = objects.len(), "listed");
                        mark_listed.send_replace(true);
                        for obj in objects {
                            let summary = obj.summary();
                            dispatcher.dispatch(&Change {
                                key: key_of(obj.as_ref()),
                                before: Some(summary.clone()),
                                after: Some(summary),
                                fleet: None,
                            });
                        }
                    }
                    Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch error, retrying"),
                }
                futures::future::ready(())
            })
            .boxed()
    }
}

impl<K> Default for Watch<K>
where
    K: Indexed<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// The typed event, with malformed objects left out. A stored object that turned malformed is
/// removed from the store (its last good version must not be acted on as if current).
fn decoded<K>(event: watcher::Event<Lenient<K>>, store: &Store<K>) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    use watcher::Event as E;
    let skip = |metadata: &ObjectMeta, problem: &str| {
        warn!(
            kind = %K::kind(&()),
            namespace = metadata.namespace.as_deref().unwrap_or_default(),
            name = metadata.name.as_deref().unwrap_or_default(),
            problem,
            "object cannot be decoded; skipped"
        );
        let mut key = ObjectRef::<K>::new(metadata.name.as_deref().unwrap_or_default());
        key.namespace = metadata.namespace.clone();
        store.get(&key).map(|stored| stored.as_ref().clone())
    };
    match event {
        E::Apply(Lenient::Decoded(obj)) => Some(E::Apply(obj)),
        E::InitApply(Lenient::Decoded(obj)) => Some(E::InitApply(obj)),
        E::Delete(Lenient::Decoded(obj)) => Some(E::Delete(obj)),
        E::Apply(Lenient::Malformed { metadata, problem })
        | E::Delete(Lenient::Malformed { metadata, problem }) => {
            skip(&metadata, &problem).map(E::Delete)
        }
        E::InitApply(Lenient::Malformed { metadata, problem }) => {
            skip(&metadata, &problem);
            None
        }
        E::Init => Some(E::Init),
        E::InitDone => Some(E::InitDone),
    }
}

/// The events of a metadata-only watch (metadata always decodes).
pub fn metadata_events<K>(
    api: Api<kube::core::PartialObjectMeta<K>>,
    config: watcher::Config,
) -> Events<kube::core::PartialObjectMeta<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, config.any_semantic())
        .default_backoff()
        .boxed()
}

/// A stream that never yields: controllers are fed through their queues only.
pub fn never<T: Send + 'static>() -> impl Stream<Item = T> + Send + 'static {
    futures::stream::pending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::flux::Kustomization;

    #[test]
    fn a_malformed_object_decodes_as_its_metadata_and_problem() {
        let json = serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": { "name": "odd", "namespace": "ns" },
            "spec": { "interval": 5 }
        });
        match serde_json::from_value::<Lenient<Kustomization>>(json).unwrap() {
            Lenient::Malformed { metadata, problem } => {
                assert_eq!(metadata.name.as_deref(), Some("odd"));
                assert!(!problem.is_empty());
            }
            Lenient::Decoded(k) => panic!("decoded {k:?}"),
        }
    }

    #[test]
    fn a_list_with_one_malformed_item_keeps_the_others() {
        let list = serde_json::json!([
            {
                "metadata": { "name": "good", "namespace": "ns" },
                "spec": {
                    "sourceRef": { "kind": "GitRepository", "name": "repo" },
                    "interval": "5m",
                    "prune": true
                }
            },
            { "metadata": { "name": "odd", "namespace": "ns" }, "spec": { "interval": 5 } }
        ]);
        let items: Vec<Lenient<Kustomization>> = serde_json::from_value(list).unwrap();
        assert!(
            matches!(&items[0], Lenient::Decoded(k) if k.metadata.name.as_deref() == Some("good"))
        );
        assert!(matches!(&items[1], Lenient::Malformed { .. }));
    }

    #[test]
    fn a_stored_object_that_turns_malformed_leaves_the_store() {
        let (store, mut writer) = reflector::store::<Kustomization>();
        let mut good = Kustomization::new("k", Default::default());
        good.metadata.namespace = Some("ns".into());
        writer.apply_watcher_event(&watcher::Event::Apply(good.clone()));
        let malformed = Lenient::Malformed {
            metadata: good.metadata.clone(),
            problem: "bad".into(),
        };
        let event = decoded(watcher::Event::Apply(malformed), &store);
        assert!(matches!(event, Some(watcher::Event::Delete(k)) if k == good));
        let unknown = Lenient::<Kustomization>::Malformed {
            metadata: ObjectMeta {
                name: Some("never-seen".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            problem: "bad".into(),
        };
        assert!(decoded(watcher::Event::Apply(unknown), &store).is_none());
    }
}
