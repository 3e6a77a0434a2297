//! The trigger table: for each watched kind, which controllers it wakes and how the changed
//! object is mapped to the objects they reconcile. The same rows route changes and deletions
//! (a deletion is mapped from what the index remembers of the object).

use std::collections::BTreeSet;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use kurator_api::{Application, AttachedCluster, Fleet};

use crate::index::{Indexes, Key, Kind, Summary};

/// The controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    AttachedCluster,
    /// Fleet membership and `Ready`.
    Fleet,
    /// Fleet plugins: their status fields and conditions.
    Plugins,
    Application,
}

/// How a changed object is mapped to the objects a controller reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapper {
    /// The object itself.
    Itself,
    /// Objects that read this Secret (kubeconfig, object store).
    UsersOfSecret,
    /// Fleets that list the cluster, and the fleet its membership label names (before and
    /// after the change).
    FleetsOfCluster,
    /// Applications with a destination in this fleet.
    ApplicationsOfFleet,
    /// Applications with a destination in a fleet of this cluster.
    ApplicationsOfCluster,
    /// The owner named by the object's owner references.
    Owner,
    /// The fleet whose policy plugin watches this member report (named by the collector).
    FleetOfReport,
}

/// One row: changes of `watched` wake `wakes` through `via`.
#[derive(Clone, Copy, Debug)]
pub struct Trigger {
    pub watched: Kind,
    pub wakes: Controller,
    pub via: Mapper,
}

const fn row(watched: Kind, wakes: Controller, via: Mapper) -> Trigger {
    Trigger {
        watched,
        wakes,
        via,
    }
}

use Controller as C;
use Kind as K;
use Mapper as M;

/// Every trigger, in one place (docs/architecture.md shows it as a table).
pub const TRIGGERS: &[Trigger] = &[
    // AttachedCluster health
    row(K::AttachedCluster, C::AttachedCluster, M::Itself),
    row(K::Secret, C::AttachedCluster, M::UsersOfSecret),
    // Fleet membership
    row(K::Fleet, C::Fleet, M::Itself),
    row(K::AttachedCluster, C::Fleet, M::FleetsOfCluster),
    row(K::Cluster, C::Fleet, M::FleetsOfCluster),
    row(K::CustomCluster, C::Fleet, M::FleetsOfCluster),
    // Fleet plugins
    row(K::Fleet, C::Plugins, M::Itself),
    row(K::AttachedCluster, C::Plugins, M::FleetsOfCluster),
    row(K::Cluster, C::Plugins, M::FleetsOfCluster),
    row(K::CustomCluster, C::Plugins, M::FleetsOfCluster),
    row(K::HelmRepository, C::Plugins, M::Owner),
    row(K::HelmRelease, C::Plugins, M::Owner),
    row(K::Secret, C::Plugins, M::UsersOfSecret),
    row(K::MemberPolicyReport, C::Plugins, M::FleetOfReport),
    // Applications
    row(K::Application, C::Application, M::Itself),
    row(K::Fleet, C::Application, M::ApplicationsOfFleet),
    row(K::AttachedCluster, C::Application, M::ApplicationsOfCluster),
    row(K::Cluster, C::Application, M::ApplicationsOfCluster),
    row(K::CustomCluster, C::Application, M::ApplicationsOfCluster),
    row(K::GitRepository, C::Application, M::Owner),
    row(K::HelmRepository, C::Application, M::Owner),
    row(K::OciRepository, C::Application, M::Owner),
    row(K::HelmChart, C::Application, M::Owner),
    row(K::Kustomization, C::Application, M::Owner),
    row(K::HelmRelease, C::Application, M::Owner),
];

impl Controller {
    /// The kind this controller reconciles.
    pub fn kind(self) -> Kind {
        match self {
            C::AttachedCluster => K::AttachedCluster,
            C::Fleet | C::Plugins => K::Fleet,
            C::Application => K::Application,
        }
    }
}

/// What happened to one watched object, as the mappers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: Key,
    /// What the index held before the change (`None` for a new object).
    pub before: Option<Summary>,
    /// What it holds now (`None` after a deletion).
    pub after: Option<Summary>,
    /// For [`Kind::MemberPolicyReport`]: the fleet that watches it.
    pub fleet: Option<String>,
}

/// The objects (of `wakes`'s kind) that one row maps a change to. Pure over the index.
pub fn map(index: &Indexes, trigger: &Trigger, change: &Change) -> Vec<Key> {
    let key = &change.key;
    let namespace = key.namespace.as_str();
    let target = trigger.wakes.kind();
    let summaries = || change.before.iter().chain(change.after.iter());
    let fleets_of_cluster = || -> BTreeSet<Key> {
        let mut fleets: BTreeSet<Key> = key
            .kind
            .cluster_kind()
            .map(|kind| index.fleets_listing(namespace, kind, &key.name))
            .unwrap_or_default()
            .into_iter()
            .collect();
        for summary in summaries() {
            fleets.extend(
                summary
                    .labelled_for()
                    .map(|f| Key::new(K::Fleet, namespace, f)),
            );
        }
        fleets
    };
    match trigger.via {
        M::Itself => vec![key.clone()],
        M::UsersOfSecret => index.secret_users(namespace, &key.name, target),
        M::FleetsOfCluster => fleets_of_cluster().into_iter().collect(),
        M::ApplicationsOfFleet => index.applications_of(namespace, &key.name),
        M::ApplicationsOfCluster => {
            let apps: BTreeSet<Key> = fleets_of_cluster()
                .iter()
                .flat_map(|f| index.applications_of(namespace, &f.name))
                .collect();
            apps.into_iter().collect()
        }
        M::Owner => {
            let (group, kind) = match target {
                K::Application => ("apps.kurator.dev/", "Application"),
                _ => ("fleet.kurator.dev/", "Fleet"),
            };
            let owners: BTreeSet<Key> = summaries()
                .flat_map(|s| s.owners.iter())
                .filter(|o| o.kind == kind && o.api_version.starts_with(group))
                .map(|o| Key::new(target, namespace, &o.name))
                .collect();
            owners.into_iter().collect()
        }
        M::FleetOfReport => change
            .fleet
            .iter()
            .map(|f| Key::new(K::Fleet, namespace, f))
            .collect(),
    }
}

/// Where each controller's reconcile requests go.
#[derive(Clone)]
pub struct Queues {
    pub attached_clusters: UnboundedSender<ObjectRef<AttachedCluster>>,
    pub fleets: UnboundedSender<ObjectRef<Fleet>>,
    pub plugins: UnboundedSender<ObjectRef<Fleet>>,
    pub applications: UnboundedSender<ObjectRef<Application>>,
}

impl Queues {
    fn send(&self, controller: Controller, key: &Key) {
        // A closed queue means its controller stopped; nothing needs the request any more.
        let sent = match controller {
            C::AttachedCluster => self
                .attached_clusters
                .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace))
                .is_ok(),
            C::Fleet => self
                .fleets
                .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace))
                .is_ok(),
            C::Plugins => self
                .plugins
                .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace))
                .is_ok(),
            C::Application => self
                .applications
                .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace))
                .is_ok(),
        };
        if !sent {
            tracing::debug!(?controller, "queue closed; request dropped");
        }
    }
}

/// Routes changes through [`TRIGGERS`].
pub struct Dispatcher {
    pub index: std::sync::Arc<Indexes>,
    pub queues: Queues,
    /// Forgotten as the watches report deletions.
    pub recent_writes: std::sync::Arc<crate::application::apply::RecentWrites>,
}

impl Dispatcher {
    pub fn dispatch(&self, change: &Change) {
        for trigger in TRIGGERS.iter().filter(|t| t.watched == change.key.kind) {
            for key in map(&self.index, trigger, change) {
                self.queues.send(trigger.wakes, &key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
