//! What the collector knows of one member: report counts per kind, and whether they are
//! current. Pure state transitions, driven by the member's watch events.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;

use super::{KIND_NAMES, Report, key};
use crate::plugins::reports::{ClusterReports, ReportCounts};
use kurator_api::policy_report;

#[derive(Default)]
pub(super) struct MemberState {
    pub(super) kinds: [KindState; 2],
    pub(super) last_seen: Option<Timestamp>,
    pub(super) stale_since: Option<Timestamp>,
}

#[derive(Default)]
pub(super) struct KindState {
    /// Counts per report (`namespace/name`, or `name` when cluster-scoped).
    pub(super) items: HashMap<String, ReportCounts>,
    /// The sum of `items`, kept up to date.
    pub(super) total: ReportCounts,
    /// A listing in progress (between `Init` and `InitDone`).
    pub(super) buffer: Option<HashMap<String, ReportCounts>>,
    pub(super) health: Health,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Health {
    /// Not listed yet.
    #[default]
    Pending,
    /// Listed; the watch keeps `items` current.
    Synced,
    /// The CRD is not installed (404): no reports.
    Missing,
    /// The member cannot be read.
    Failing(String),
}

impl MemberState {
    pub(super) fn view(&self) -> ClusterReports {
        ClusterReports {
            counts: ReportCounts::sum(self.kinds.iter().map(|k| &k.total)),
            reports: self.kinds.iter().map(|k| k.items.len()).sum(),
            last_seen: self.last_seen,
            stale_since: self.stale_since,
            error: self.error(),
        }
    }

    pub(super) fn error(&self) -> Option<String> {
        if let Some(error) = self.kinds.iter().find_map(|k| match &k.health {
            Health::Failing(e) => Some(e.clone()),
            _ => None,
        }) {
            return Some(error);
        }
        let missing: Vec<&str> = self
            .kinds
            .iter()
            .zip(KIND_NAMES)
            .filter(|(k, _)| k.health == Health::Missing)
            .map(|(_, name)| name)
            .collect();
        match missing.as_slice() {
            [] => None,
            [kind] => Some(format!(
                "the {kind} CRD ({}) is not installed",
                policy_report::GROUP
            )),
            _ => Some(format!(
                "the {} CRDs are not installed (no Kyverno yet)",
                policy_report::GROUP
            )),
        }
    }

    /// Folds one watcher event in; true when the sums changed.
    pub(super) fn apply<K: Report>(&mut self, event: Event<K>, now: Timestamp) -> bool {
        let kind = &mut self.kinds[K::INDEX];
        match event {
            Event::Init => {
                kind.buffer = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                if let Some(buffer) = &mut kind.buffer {
                    buffer.insert(key(&obj), obj.counts());
                }
                false
            }
            Event::InitDone => {
                let items = kind.buffer.take().unwrap_or_default();
                let total = ReportCounts::sum(items.values());
                let changed = total != kind.total || items.len() != kind.items.len();
                kind.items = items;
                kind.total = total;
                self.last_seen = Some(now);
                self.set_health(K::INDEX, Health::Synced, now) | changed
            }
            Event::Apply(obj) => {
                let counts = obj.counts();
                self.last_seen = Some(now);
                match kind.items.insert(key(&obj), counts.clone()) {
                    Some(old) if old == counts => false,
                    Some(old) => {
                        kind.total.sub(&old);
                        kind.total.add(&counts);
                        true
                    }
                    None => {
                        kind.total.add(&counts);
                        true
                    }
                }
            }
            Event::Delete(obj) => {
                self.last_seen = Some(now);
                match kind.items.remove(&key(&obj)) {
                    Some(old) => {
                        kind.total.sub(&old);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// The kind's CRD is missing: its reports are gone, the member answered.
    pub(super) fn missing(&mut self, index: usize, now: Timestamp) -> bool {
        let kind = &mut self.kinds[index];
        let had = !kind.items.is_empty();
        kind.items.clear();
        kind.total = ReportCounts::default();
        kind.buffer = None;
        self.last_seen = Some(now);
        self.set_health(index, Health::Missing, now) | had
    }

    /// Sets a kind's health and derives staleness; true when either changed in a way the
    /// aggregate shows (a new error text alone does not notify).
    pub(super) fn set_health(&mut self, index: usize, health: Health, now: Timestamp) -> bool {
        let old = std::mem::replace(&mut self.kinds[index].health, health);
        let was_stale = self.stale_since.is_some();
        let failing = self
            .kinds
            .iter()
            .any(|k| matches!(k.health, Health::Failing(_)));
        if !failing {
            self.stale_since = None;
        } else if self.stale_since.is_none() && self.last_seen.is_some() {
            self.stale_since = Some(now);
        }
        let new = &self.kinds[index].health;
        std::mem::discriminant(&old) != std::mem::discriminant(new)
            || was_stale != self.stale_since.is_some()
    }
}
