//! Indexes kept from watch events, so that no reconcile or mapper scans a whole store.
//!
//! Every watched object contributes a few [`Entry`] keys (the Secret it reads, the clusters a
//! fleet lists, the fleet a cluster's label names, the fleets an Application deploys to, the
//! owners of a Flux object). The index remembers each object's contribution, so an update
//! replaces it and a deletion removes it; [`Indexes::relisted`] drops what a re-list no longer
//! shows (objects deleted while the watch was down).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::RwLock,
};

use kube::{Resource, ResourceExt};
use kurator_api::{
    Application, AttachedCluster, Cluster, CustomCluster, Fleet, fleet::ClusterKind,
    labels::FLEET_NAME,
};

/// The kinds the controller watches on the host (and the members' policy reports, which the
/// collector watches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    AttachedCluster,
    Cluster,
    CustomCluster,
    Fleet,
    Application,
    /// Metadata only.
    Secret,
    GitRepository,
    HelmRepository,
    OciRepository,
    /// A staged rollout's tracking HelmChart.
    HelmChart,
    Kustomization,
    HelmRelease,
    /// A PolicyReport or ClusterPolicyReport in a member (watched by the collector).
    MemberPolicyReport,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::AttachedCluster,
        Kind::Cluster,
        Kind::CustomCluster,
        Kind::Fleet,
        Kind::Application,
        Kind::Secret,
        Kind::GitRepository,
        Kind::HelmRepository,
        Kind::OciRepository,
        Kind::HelmChart,
        Kind::Kustomization,
        Kind::HelmRelease,
        Kind::MemberPolicyReport,
    ];

    pub fn cluster_kind(self) -> Option<ClusterKind> {
        match self {
            Kind::AttachedCluster => Some(ClusterKind::AttachedCluster),
            Kind::Cluster => Some(ClusterKind::Cluster),
            Kind::CustomCluster => Some(ClusterKind::CustomCluster),
            _ => None,
        }
    }

    pub fn of_cluster(kind: ClusterKind) -> Kind {
        match kind {
            ClusterKind::AttachedCluster => Kind::AttachedCluster,
            ClusterKind::Cluster => Kind::Cluster,
            ClusterKind::CustomCluster => Kind::CustomCluster,
        }
    }
}

/// One watched object: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// What an object is found by. All are namespaced: references never cross namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// Reads this Secret: an AttachedCluster's kubeconfig, a Fleet's object store.
    UsesSecret { namespace: String, secret: String },
    /// A Fleet lists this cluster in `spec.clusters`.
    ListsCluster {
        namespace: String,
        kind: ClusterKind,
        name: String,
    },
    /// A cluster whose `fleet.kurator.dev/fleet-name` label names this fleet.
    LabelledFor { namespace: String, fleet: String },
    /// An Application with a destination in this fleet.
    DeploysTo { namespace: String, fleet: String },
    /// An object with an owner reference to this UID.
    OwnedBy { uid: String },
}

/// An owner reference, as the mappers need it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// What the index remembers of one object: its entries and owners, sorted and without
/// duplicates. Enough to route a deletion, when the object itself is gone.
///
/// Boxed slices, not sets: one exact allocation each (a set's first node holds room for
/// eleven), which matters with one summary per Flux object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: Box<[Entry]>,
    pub owners: Box<[Owner]>,
}

impl Summary {
    /// The fleet named by a cluster's membership label.
    pub fn labelled_for(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            Entry::LabelledFor { fleet, .. } => Some(fleet.as_str()),
            _ => None,
        })
    }
}

/// How an object of a watched kind is indexed (pure).
pub trait Indexed: Resource {
    const KIND: Kind;

    /// The object's own entries; owners are added for every kind.
    fn entries(&self) -> Vec<Entry> {
        Vec::new()
    }

    fn summary(&self) -> Summary {
        let mut entries: BTreeSet<Entry> = self.entries().into_iter().collect();
        let mut owners = BTreeSet::new();
        for o in self.meta().owner_references.iter().flatten() {
            entries.insert(Entry::OwnedBy { uid: o.uid.clone() });
            owners.insert(Owner {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
            });
        }
        Summary {
            entries: entries.into_iter().collect(),
            owners: owners.into_iter().collect(),
        }
    }
}

fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.meta().namespace.clone().unwrap_or_default()
}

fn fleet_label<K: Resource>(obj: &K) -> Option<Entry> {
    let labels = obj.meta().labels.as_ref()?;
    Some(Entry::LabelledFor {
        namespace: namespace_of(obj),
        fleet: labels.get(FLEET_NAME)?.clone(),
    })
}

impl Indexed for AttachedCluster {
    const KIND: Kind = Kind::AttachedCluster;
    fn entries(&self) -> Vec<Entry> {
        let secret = Entry::UsesSecret {
            namespace: namespace_of(self),
            secret: self.spec.kubeconfig.name.clone(),
        };
        std::iter::once(secret).chain(fleet_label(self)).collect()
    }
}

impl Indexed for Cluster {
    const KIND: Kind = Kind::Cluster;
    fn entries(&self) -> Vec<Entry> {
        fleet_label(self).into_iter().collect()
    }
}

impl Indexed for CustomCluster {
    const KIND: Kind = Kind::CustomCluster;
    fn entries(&self) -> Vec<Entry> {
        fleet_label(self).into_iter().collect()
    }
}

impl Indexed for Fleet {
    const KIND: Kind = Kind::Fleet;
    fn entries(&self) -> Vec<Entry> {
        let namespace = namespace_of(self);
        let mut out: Vec<Entry> = self
            .spec
            .clusters
            .iter()
            .map(|c| Entry::ListsCluster {
                namespace: namespace.clone(),
                kind: c.kind,
                name: c.name.clone(),
            })
            .collect();
        let objstore = self
            .spec
            .plugin
            .as_ref()
            .and_then(|p| p.metric.as_ref())
            .and_then(|m| m.thanos.as_ref())
            .and_then(|t| t.object_store_config.as_ref());
        if let Some(o) = objstore {
            out.push(Entry::UsesSecret {
                namespace,
                secret: o.secret_name.clone(),
            });
        }
        out
    }
}

impl Indexed for Application {
    const KIND: Kind = Kind::Application;
    fn entries(&self) -> Vec<Entry> {
        let namespace = namespace_of(self);
        let app_level = self.spec.destination.iter();
        let per_policy = self
            .spec
            .sync_policies
            .iter()
            .filter_map(|p| p.destination.as_ref());
        app_level
            .chain(per_policy)
            .map(|d| Entry::DeploysTo {
                namespace: namespace.clone(),
                fleet: d.fleet.clone(),
            })
            .collect()
    }
}

impl Indexed for kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret> {
    const KIND: Kind = Kind::Secret;
}

// Flux objects are found by their owners only.
impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::GitRepository> {
    const KIND: Kind = Kind::GitRepository;
}

impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::HelmRepository> {
    const KIND: Kind = Kind::HelmRepository;
}

impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::OCIRepository> {
    const KIND: Kind = Kind::OciRepository;
}

impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::HelmChart> {
    const KIND: Kind = Kind::HelmChart;
}

impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::Kustomization> {
    const KIND: Kind = Kind::Kustomization;
}

impl Indexed for kurator_api::flux::StatusView<kurator_api::flux::HelmRelease> {
    const KIND: Kind = Kind::HelmRelease;
}

#[derive(Default)]
struct Inner {
    summaries: HashMap<Key, Summary>,
    by_entry: HashMap<Entry, BTreeSet<Key>>,
}

impl Inner {
    /// Replaces the object's summary; returns the previous one.
    fn set(&mut self, key: Key, summary: Option<Summary>) -> Option<Summary> {
        let previous = match &summary {
            Some(s) => self.summaries.insert(key.clone(), s.clone()),
            None => self.summaries.remove(&key),
        };
        if let Some(old) = &previous {
            for entry in &old.entries {
                if let Some(keys) = self.by_entry.get_mut(entry) {
                    keys.remove(&key);
                    if keys.is_empty() {
                        self.by_entry.remove(entry);
                    }
                }
            }
        }
        if let Some(new) = &summary {
            for entry in &new.entries {
                self.by_entry
                    .entry(entry.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        previous
    }
}

/// The indexes of every watched kind.
#[derive(Default)]
pub struct Indexes {
    inner: RwLock<Inner>,
}

impl Indexes {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("index poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("index poisoned")
    }

    /// Records an object as it is now; returns what was recorded before.
    pub fn applied<K: Indexed>(&self, obj: &K) -> Option<Summary> {
        let key = Key::new(
            K::KIND,
            &namespace_of(obj),
            &obj.meta().name.clone().unwrap_or_default(),
        );
        self.write().set(key, Some(obj.summary()))
    }

    /// Forgets a deleted object; returns what was recorded of it.
    pub fn deleted(&self, key: &Key) -> Option<Summary> {
        self.write().set(key.clone(), None)
    }

    /// After a re-list: forgets the objects of `kind` the list no longer holds, and returns
    /// them (they were deleted while the watch was down).
    pub fn relisted(&self, kind: Kind, present: &BTreeSet<Key>) -> Vec<(Key, Summary)> {
        let mut inner = self.write();
        let gone: Vec<Key> = inner
            .summaries
            .keys()
            .filter(|k| k.kind == kind && !present.contains(k))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|k| inner.set(k.clone(), None).map(|s| (k, s)))
            .collect()
    }

    /// The objects of `kind` found by `entry`.
    pub fn find(&self, entry: &Entry, kind: Kind) -> Vec<Key> {
        self.read()
            .by_entry
            .get(entry)
            .map(|keys| keys.iter().filter(|k| k.kind == kind).cloned().collect())
            .unwrap_or_default()
    }

    /// The objects of any of `kinds` found by `entry`.
    pub fn find_any(&self, entry: &Entry, kinds: &[Kind]) -> Vec<Key> {
        self.read()
            .by_entry
            .get(entry)
            .map(|keys| {
                keys.iter()
                    .filter(|k| kinds.contains(&k.kind))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The clusters (any kind) whose membership label names `fleet`.
    pub fn labelled_for(&self, namespace: &str, fleet: &str) -> Vec<Key> {
        let entry = Entry::LabelledFor {
            namespace: namespace.into(),
            fleet: fleet.into(),
        };
        self.find_any(
            &entry,
            &[Kind::AttachedCluster, Kind::Cluster, Kind::CustomCluster],
        )
    }

    /// The fleets that list this cluster.
    pub fn fleets_listing(&self, namespace: &str, kind: ClusterKind, name: &str) -> Vec<Key> {
        let entry = Entry::ListsCluster {
            namespace: namespace.into(),
            kind,
            name: name.into(),
        };
        self.find(&entry, Kind::Fleet)
    }

    /// The Applications with a destination in `fleet`.
    pub fn applications_of(&self, namespace: &str, fleet: &str) -> Vec<Key> {
        let entry = Entry::DeploysTo {
            namespace: namespace.into(),
            fleet: fleet.into(),
        };
        self.find(&entry, Kind::Application)
    }

    /// The objects of `kinds` owned by `uid`.
    pub fn owned_by(&self, uid: &str, kinds: &[Kind]) -> Vec<Key> {
        self.find_any(&Entry::OwnedBy { uid: uid.into() }, kinds)
    }

    /// The objects of `kind` that read the Secret `namespace/secret`.
    pub fn secret_users(&self, namespace: &str, secret: &str, kind: Kind) -> Vec<Key> {
        let entry = Entry::UsesSecret {
            namespace: namespace.into(),
            secret: secret.into(),
        };
        self.find(&entry, kind)
    }

    /// The recorded summary of one object.
    pub fn summary(&self, key: &Key) -> Option<Summary> {
        self.read().summaries.get(key).cloned()
    }

    /// Objects indexed, by kind (for tests and debugging).
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut out = BTreeMap::new();
        for key in self.read().summaries.keys() {
            *out.entry(key.kind).or_insert(0) += 1;
        }
        out
    }
}

/// A cluster object's name as [`Key`]s of every cluster kind carry it.
pub fn cluster_of(key: &Key) -> Option<kurator_api::fleet::FleetCluster> {
    Some(kurator_api::fleet::FleetCluster {
        kind: key.kind.cluster_kind()?,
        name: key.name.clone(),
    })
}

/// The stored object of `key`.
pub fn stored<K: Resource<DynamicType = ()> + Clone>(
    store: &kube::runtime::reflector::Store<K>,
    key: &Key,
) -> Option<std::sync::Arc<K>> {
    store.get(&kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace))
}

/// The key of a typed object.
pub fn key_of<K: Indexed>(obj: &K) -> Key {
    Key::new(K::KIND, &namespace_of(obj), &obj.name_any())
}

#[cfg(test)]
pub(crate) mod tests;
