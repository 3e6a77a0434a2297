//! What the collector knows of one member: report counts per kind, the reports controller's
//! Lease, and whether the counts are current. Pure state transitions, driven by the member's
//! watch events and the Lease's timer.

use std::collections::HashMap;

use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
use kube::runtime::watcher::Event;

use super::lease::{LEASE_GRACE, REPORTS_LEASE};
use super::{KIND_NAMES, Report, key};
use crate::plugins::render::KYVERNO_NAMESPACE;
use crate::plugins::reports::{ClusterReports, ReportCounts, StaleCause, rfc3339};
use kurator_api::policy_report;

#[derive(Default)]
pub(super) struct MemberState {
    pub(super) kinds: [KindState; 2],
    pub(super) lease: LeaseState,
    pub(super) last_seen: Option<Timestamp>,
    /// Set with `stale_cause` while the counts may be out of date.
    pub(super) stale_since: Option<Timestamp>,
    pub(super) stale_cause: Option<StaleCause>,
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
            stale_cause: self.stale_cause,
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
        if let Some(down) = self.lease.message() {
            return Some(down);
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
        let new = &self.kinds[index].health;
        let changed = std::mem::discriminant(&old) != std::mem::discriminant(new);
        self.restale(now) | changed
    }

    /// The reports controller's Lease was listed or changed (`None`: there is none); true
    /// when the aggregate shows a difference (most events are renewals, which do not).
    pub(super) fn observe_lease(&mut self, lease: Option<LeaseInfo>, now: Timestamp) -> bool {
        self.visibly(|s| s.lease.observe(lease, now), now)
    }

    /// The Lease's deadline came (or any time): re-judges it; true when the aggregate shows a
    /// difference.
    pub(super) fn check_lease(&mut self, now: Timestamp) -> bool {
        self.visibly(|s| s.lease.check(now), now)
    }

    /// Runs a Lease transition `f` and derives staleness; true when the staleness or the
    /// error differ afterwards. A Lease verdict may change with nothing to show (a member
    /// already unreachable).
    fn visibly(&mut self, f: impl FnOnce(&mut Self), now: Timestamp) -> bool {
        let before = (self.stale_cause, self.error());
        f(self);
        self.restale(now);
        before != (self.stale_cause, self.error())
    }

    /// Derives staleness from the kinds' health and the Lease; true when it changed. An
    /// unreadable member outranks a stopped Kyverno (the Lease read before the outage says
    /// little). Nothing is stale before anything was read; while stale, `stale_since` keeps
    /// the start of the first cause.
    fn restale(&mut self, now: Timestamp) -> bool {
        let before = self.stale_cause;
        let cause = if self
            .kinds
            .iter()
            .any(|k| matches!(k.health, Health::Failing(_)))
        {
            Some(StaleCause::Unreachable)
        } else if self.lease.expired {
            Some(StaleCause::ReportsControllerDown)
        } else {
            None
        };
        match cause.filter(|_| self.last_seen.is_some()) {
            Some(cause) => {
                if self.stale_since.is_none() {
                    // Reports stopped being updated when the Lease was last renewed, not
                    // when its expiry was noticed.
                    let since = match cause {
                        StaleCause::Unreachable => now,
                        StaleCause::ReportsControllerDown => {
                            self.lease.last_renewal().map_or(now, |t| t.min(now))
                        }
                    };
                    self.stale_since = Some(since);
                }
                self.stale_cause = Some(cause);
            }
            None => {
                self.stale_since = None;
                self.stale_cause = None;
            }
        }
        before != self.stale_cause
    }
}

/// The reports controller's Lease, reduced to what the verdict needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaseInfo {
    /// `holderIdentity`; `None` once released (client-go empties it on release).
    pub(super) holder: Option<String>,
    /// `renewTime` (`acquireTime` if it has none), on the member's clock.
    pub(super) renewed: Timestamp,
    /// `leaseDurationSeconds`.
    pub(super) duration: SignedDuration,
}

impl LeaseInfo {
    /// `None` for a Lease without a renewal time or a positive duration: it cannot expire,
    /// so it says nothing about the reports controller.
    pub(super) fn of(lease: &Lease) -> Option<LeaseInfo> {
        let spec = lease.spec.as_ref()?;
        let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
        let seconds = spec.lease_duration_seconds.filter(|s| *s > 0)?;
        Some(LeaseInfo {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renewed,
            duration: SignedDuration::from_secs(i64::from(seconds)),
        })
    }
}

/// What the collector knows of the Lease. Pure: every transition takes the time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LeaseState {
    /// The Lease as last read; `None` before it was read or while it does not exist.
    pub(super) lease: Option<LeaseInfo>,
    /// When this collector saw `renewed` change (its own clock). The deadline counts from the
    /// later of this and `renewed`, so a member whose clock is behind ours is not judged dead
    /// while it visibly renews. At first sight only `renewed` is known, so a controller that
    /// starts while Kyverno is long gone says so at once.
    pub(super) renewal_seen: Option<Timestamp>,
    /// The deadline passed without a renewal.
    pub(super) expired: bool,
}

impl LeaseState {
    /// A listing or a watch event: `lease` is the current Lease (`None`: absent, or one that
    /// cannot expire).
    pub(super) fn observe(&mut self, lease: Option<LeaseInfo>, now: Timestamp) {
        self.renewal_seen = match (&self.lease, &lease) {
            // A re-list, or a write that did not renew: the renewal was seen when it was.
            (Some(old), Some(new)) if old.renewed == new.renewed => self.renewal_seen,
            (Some(_), Some(_)) => Some(now),
            _ => None,
        };
        self.lease = lease;
        self.check(now)
    }

    /// Re-judges the Lease at `now` (its timer fired).
    pub(super) fn check(&mut self, now: Timestamp) {
        self.expired = self.deadline().is_some_and(|deadline| now >= deadline);
    }

    /// When the Lease expires unless renewed: the last renewal plus its duration and
    /// [`LEASE_GRACE`].
    pub(super) fn deadline(&self) -> Option<Timestamp> {
        let lease = self.lease.as_ref()?;
        self.last_renewal()?
            .checked_add(lease.duration)
            .and_then(|t| t.checked_add(LEASE_GRACE))
            .ok()
    }

    /// The next deadline to wake up for; `None` once expired (only an event can change that).
    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        if self.expired { None } else { self.deadline() }
    }

    /// The best estimate of the last renewal on our clock.
    pub(super) fn last_renewal(&self) -> Option<Timestamp> {
        let renewed = self.lease.as_ref()?.renewed;
        Some(self.renewal_seen.map_or(renewed, |seen| seen.max(renewed)))
    }

    /// Why the reports are not being updated, while expired.
    pub(super) fn message(&self) -> Option<String> {
        let lease = self.lease.as_ref().filter(|_| self.expired)?;
        let name = format!("{KYVERNO_NAMESPACE}/{REPORTS_LEASE}");
        let at = rfc3339(lease.renewed);
        Some(match lease.holder {
            Some(_) => {
                format!("Kyverno's reports controller has not renewed its Lease {name} since {at}")
            }
            None => format!(
                "Kyverno's reports controller released its Lease {name} at {at} and no instance has taken it over"
            ),
        })
    }
}
