//! Status: per-component readiness and one condition per enabled plugin, from the rendered
//! components and the HelmReleases Flux reports on (pure), written as the plugins' own part
//! of the Fleet's status ([`write`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, ResourceExt};
use kurator_api::{
    Fleet,
    conditions::Desired,
    fleet::{FleetStatus, PluginComponentStatus},
    flux::{self, FluxReadiness, HelmRelease, StatusView},
    policy_report::FleetPolicyReport,
};
use serde::Serialize;

use super::{Component, FIELD_MANAGER, Plugin};
use crate::{
    context::Context,
    error::Error,
    status::{apply_status_as, publish_transition},
};

/// Reasons of the plugin conditions and component entries (documented in docs/conditions.md).
pub mod reason {
    /// Every component of the plugin is installed.
    pub const INSTALLED: &str = "Installed";
    /// Some component is not (yet) installed; the message names them.
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    /// The plugin's configuration cannot be used as it is (e.g. a bad object-store Secret).
    pub const INVALID_CONFIG: &str = "InvalidConfig";
    /// helm-controller has not reported on the HelmRelease's current generation yet.
    pub const PENDING: &str = "Pending";
    /// kyverno-policies waits until kyverno is installed in that cluster.
    pub const WAITING_FOR_KYVERNO: &str = "WaitingForKyverno";
    /// The fleet has no member to install a per-cluster component into.
    pub const NO_CLUSTERS: &str = "NoClusters";
    /// A member could not be written or read (Secret copy, sidecar Service); retried.
    pub const MEMBER_UNREACHABLE: &str = "MemberUnreachable";
    /// A member's sidecar Service has no load-balancer address yet; looked at again.
    pub const SIDECAR_ADDRESS_PENDING: &str = "SidecarAddressPending";
    /// The plugin's Secret on the host could not be read; retried.
    pub const SECRET_UNREADABLE: &str = "SecretUnreadable";
    /// Flux is not installed on the host.
    pub const FLUX_NOT_INSTALLED: &str = "FluxNotInstalled";
}

/// At most this many components are named in a condition message; the rest are counted.
const NAMED_IN_MESSAGE: usize = 10;

/// A component the plugins want but that is deliberately not rendered yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub plugin: Plugin,
    pub component: String,
    pub cluster: String,
    pub release: String,
    pub reason: &'static str,
    pub message: String,
}

/// A call that failed this time (a member, or the host's Secret): reported and retried.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub plugin: Plugin,
    pub reason: &'static str,
    pub message: String,
}

/// A problem that keeps a whole plugin from being installed.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginProblem {
    pub plugin: Plugin,
    pub message: String,
}

/// Whether a HelmRelease is Ready for its current generation ([`flux::readiness`]), with
/// helm-controller's reason and message; [`reason::PENDING`] while helm-controller has not
/// reported on the current generation.
pub fn release_state(release: Option<&StatusView<HelmRelease>>) -> (bool, String, String) {
    let Some(release) = release else {
        return (
            false,
            reason::PENDING.into(),
            "HelmRelease not created yet".into(),
        );
    };
    match flux::readiness(release.metadata.generation, release.status.as_ref()) {
        FluxReadiness::Ready => (true, String::new(), String::new()),
        FluxReadiness::NotReady {
            reason: why,
            message,
        } => (false, why, message),
        FluxReadiness::Progressing {
            reason: why,
            message,
        } => (
            false,
            why.unwrap_or_else(|| reason::PENDING.into()),
            message,
        ),
    }
}

/// The per-component list (rendered components first, in render order, then the waiting ones)
/// and one condition per enabled plugin.
pub fn build(
    enabled: &BTreeSet<Plugin>,
    components: &[Component],
    waiting: &[Waiting],
    problems: &[PluginProblem],
    failures: &[Failure],
    lookup: impl Fn(&str) -> Option<StatusView<HelmRelease>>,
) -> (Vec<PluginComponentStatus>, Vec<Desired>) {
    let mut entries: Vec<(Plugin, PluginComponentStatus)> = components
        .iter()
        .map(|c| {
            let name = c.release.metadata.name.clone().unwrap_or_default();
            let (ready, reason, message) = release_state(lookup(&name).as_ref());
            let entry = PluginComponentStatus {
                plugin: c.plugin.label().into(),
                component: c.component.clone(),
                cluster: c.cluster.clone(),
                release: name,
                ready,
                reason: (!ready).then_some(reason),
                message: (!ready && !message.is_empty()).then_some(message),
            };
            (c.plugin, entry)
        })
        .collect();
    entries.extend(waiting.iter().map(|w| {
        let entry = PluginComponentStatus {
            plugin: w.plugin.label().into(),
            component: w.component.clone(),
            cluster: Some(w.cluster.clone()),
            release: w.release.clone(),
            ready: false,
            reason: Some(w.reason.into()),
            message: Some(w.message.clone()),
        };
        (w.plugin, entry)
    }));

    let conditions = enabled
        .iter()
        .map(|&plugin| {
            let problems: Vec<&str> = problems
                .iter()
                .filter(|p| p.plugin == plugin)
                .map(|p| p.message.as_str())
                .collect();
            if !problems.is_empty() {
                return Desired::new(
                    plugin.condition(),
                    false,
                    reason::INVALID_CONFIG,
                    problems.join("; "),
                );
            }
            let failed: Vec<&Failure> = failures.iter().filter(|f| f.plugin == plugin).collect();
            if let Some(first) = failed.first() {
                let messages: Vec<&str> = failed
                    .iter()
                    .take(NAMED_IN_MESSAGE)
                    .map(|f| f.message.as_str())
                    .collect();
                return Desired::new(
                    plugin.condition(),
                    false,
                    first.reason,
                    format!("{} (retrying)", messages.join("; ")),
                );
            }
            let mine: Vec<&PluginComponentStatus> = entries
                .iter()
                .filter(|(p, _)| *p == plugin)
                .map(|(_, e)| e)
                .collect();
            let unready: Vec<&&PluginComponentStatus> = mine.iter().filter(|e| !e.ready).collect();
            if mine.is_empty() {
                Desired::new(
                    plugin.condition(),
                    true,
                    reason::NO_CLUSTERS,
                    "no member cluster to install into",
                )
            } else if unready.is_empty() {
                Desired::new(
                    plugin.condition(),
                    true,
                    reason::INSTALLED,
                    format!("{} components installed", mine.len()),
                )
            } else {
                let named: Vec<String> = unready
                    .iter()
                    .take(NAMED_IN_MESSAGE)
                    .map(|e| {
                        format!(
                            "{} ({}: {})",
                            e.release,
                            e.reason.as_deref().unwrap_or(reason::PENDING),
                            e.message.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                let more = unready.len().saturating_sub(NAMED_IN_MESSAGE);
                let mut message = format!(
                    "{} of {} components not ready: {}",
                    unready.len(),
                    mine.len(),
                    named.join("; ")
                );
                if more > 0 {
                    message.push_str(&format!("; and {more} more"));
                }
                Desired::new(
                    plugin.condition(),
                    false,
                    reason::COMPONENTS_NOT_READY,
                    message,
                )
            }
        })
        .collect();
    (entries.into_iter().map(|(_, e)| e).collect(), conditions)
}

/// The part of a Fleet's status the plugins controller writes, under its own field manager.
/// Empty fields are left out: the controller then no longer owns them and they go away.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_endpoints: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginComponentStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_report: Option<FleetPolicyReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_plugin_condition(type_: &str) -> bool {
    Plugin::ALL.iter().any(|p| p.condition() == type_)
}

/// The plugins' part of a stored status, conditions in plugin order.
pub fn stored_part(status: Option<&FleetStatus>) -> PluginStatus {
    let Some(status) = status else {
        return PluginStatus::default();
    };
    let mut conditions: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| is_plugin_condition(&c.type_))
        .cloned()
        .collect();
    conditions.sort_by_key(|c| Plugin::ALL.iter().position(|p| p.condition() == c.type_));
    PluginStatus {
        plugin_endpoints: status.plugin_endpoints.clone(),
        plugins: status.plugins.clone(),
        policy_report: status.policy_report.clone(),
        conditions,
    }
}

/// Writes the plugins' part of the status when it changed, with an Event for every plugin
/// condition that flipped or changed reason.
pub async fn write(ctx: &Context, fleet: &Fleet, desired: &PluginStatus) -> Result<(), Error> {
    let namespace = fleet.namespace().unwrap_or_default();
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = stored_part(fleet.status.as_ref());
    if apply_status_as(ctx, &api, fleet, FIELD_MANAGER, Some(&stored), desired).await? {
        for plugin in Plugin::ALL {
            publish_transition(
                ctx,
                fleet,
                &stored.conditions,
                &desired.conditions,
                plugin.condition(),
                "Install",
            )
            .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::flux::HelmRepository;
    use kurator_api::flux::{FluxCondition, FluxStatus, HelmReleaseSpec, HelmRepositorySpec};

    fn component(plugin: Plugin, name: &str, cluster: Option<&str>) -> Component {
        Component {
            plugin,
            component: name.split('-').next().unwrap().into(),
            cluster: cluster.map(Into::into),
            repository: HelmRepository::new(name, HelmRepositorySpec::default()),
            release: HelmRelease::new(name, HelmReleaseSpec::default()),
        }
    }

    fn release(name: &str, ready: &str, generation: i64, observed: i64) -> StatusView<HelmRelease> {
        let mut r = HelmRelease::new(name, HelmReleaseSpec::default());
        r.metadata.generation = Some(generation);
        r.status = Some(FluxStatus {
            observed_generation: Some(observed),
            conditions: vec![FluxCondition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: Some(
                    if ready == "True" {
                        "InstallSucceeded"
                    } else {
                        "InstallFailed"
                    }
                    .into(),
                ),
                message: Some("helm said so".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        StatusView::of(&r)
    }

    #[test]
    fn ready_releases_make_the_plugin_ready() {
        let enabled = BTreeSet::from([Plugin::Metric]);
        let components = [
            component(Plugin::Metric, "thanos", None),
            component(Plugin::Metric, "prometheus-a", Some("a")),
        ];
        let (entries, conditions) = build(&enabled, &components, &[], &[], &[], |n| {
            Some(release(n, "True", 2, 2))
        });
        assert!(entries.iter().all(|e| e.ready && e.reason.is_none()));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "MetricReady");
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].reason, reason::INSTALLED);
    }

    #[test]
    fn a_missing_failed_or_outdated_release_is_named() {
        let enabled = BTreeSet::from([Plugin::Metric]);
        let components = [
            component(Plugin::Metric, "thanos", None),
            component(Plugin::Metric, "prometheus-a", Some("a")),
            component(Plugin::Metric, "prometheus-b", Some("b")),
        ];
        let (entries, conditions) = build(&enabled, &components, &[], &[], &[], |n| match n {
            "thanos" => Some(release(n, "True", 3, 2)),
            "prometheus-a" => Some(release(n, "False", 1, 1)),
            _ => None,
        });
        assert!(entries.iter().all(|e| !e.ready));
        assert_eq!(entries[1].reason.as_deref(), Some("InstallFailed"));
        assert_eq!(entries[2].reason.as_deref(), Some(reason::PENDING));
        let c = &conditions[0];
        assert_eq!(
            (c.status, c.reason.as_str()),
            ("False", reason::COMPONENTS_NOT_READY)
        );
        assert!(
            c.message
                .starts_with("3 of 3 components not ready: thanos ("),
            "{}",
            c.message
        );
        assert!(
            c.message
                .contains("prometheus-a (InstallFailed: helm said so)")
        );
    }

    #[test]
    fn a_release_is_ready_only_for_its_observed_generation() {
        assert!(release_state(Some(&release("r", "True", 2, 2))).0);
        assert_eq!(
            release_state(Some(&release("r", "True", 3, 2))),
            (
                false,
                reason::PENDING.into(),
                "Flux has not acted on generation 3 yet (observed 2)".into()
            )
        );
        // No observedGeneration while the object has a generation: not observed yet.
        let mut unobserved = release("r", "True", 1, 1);
        unobserved.status.as_mut().unwrap().observed_generation = None;
        assert_eq!(
            release_state(Some(&unobserved)),
            (
                false,
                reason::PENDING.into(),
                "Flux has not observed generation 1 yet".into()
            )
        );
        assert_eq!(
            release_state(Some(&release("r", "False", 1, 1))),
            (false, "InstallFailed".into(), "helm said so".into())
        );
        let mut no_status = release("r", "True", 1, 1);
        no_status.status = None;
        assert_eq!(release_state(Some(&no_status)).1, reason::PENDING);
        assert_eq!(release_state(None).1, reason::PENDING);
    }

    #[test]
    fn waiting_components_and_problems_keep_a_plugin_unready() {
        let enabled = BTreeSet::from([Plugin::Metric, Plugin::Policy]);
        let components = [component(Plugin::Policy, "kyverno-a", Some("a"))];
        let waiting = [Waiting {
            plugin: Plugin::Policy,
            component: "kyverno-policies".into(),
            cluster: "a".into(),
            release: "kyverno-policies-a".into(),
            reason: reason::WAITING_FOR_KYVERNO,
            message: "installed once kyverno-a is ready".into(),
        }];
        let problems = [PluginProblem {
            plugin: Plugin::Metric,
            message: "Secret default/objstore has no key objstore.yml".into(),
        }];
        let (entries, conditions) = build(&enabled, &components, &waiting, &problems, &[], |n| {
            Some(release(n, "True", 1, 1))
        });
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1].reason.as_deref(),
            Some(reason::WAITING_FOR_KYVERNO)
        );
        let metric = &conditions[0];
        assert_eq!(
            (metric.type_.as_str(), metric.reason.as_str()),
            ("MetricReady", reason::INVALID_CONFIG)
        );
        assert!(metric.message.contains("objstore.yml"));
        let policy = &conditions[1];
        assert_eq!(
            (policy.type_.as_str(), policy.status),
            ("PolicyReady", "False")
        );
    }

    #[test]
    fn a_plugin_without_members_is_ready_with_its_own_reason() {
        let enabled = BTreeSet::from([Plugin::Policy]);
        let (_, conditions) = build(&enabled, &[], &[], &[], &[], |_| None);
        assert_eq!(
            (conditions[0].status, conditions[0].reason.as_str()),
            ("True", reason::NO_CLUSTERS)
        );
    }

    #[test]
    fn a_failed_member_call_is_a_condition_with_its_reason() {
        let enabled = BTreeSet::from([Plugin::Metric]);
        let components = [component(Plugin::Metric, "thanos", None)];
        let failures = [Failure {
            plugin: Plugin::Metric,
            reason: reason::MEMBER_UNREACHABLE,
            message: "copying the object-store Secret to m2: connection refused".into(),
        }];
        let (_, conditions) = build(&enabled, &components, &[], &[], &failures, |n| {
            Some(release(n, "True", 1, 1))
        });
        let c = &conditions[0];
        assert_eq!(
            (c.status, c.reason.as_str()),
            ("False", reason::MEMBER_UNREACHABLE)
        );
        assert!(
            c.message.contains("m2: connection refused"),
            "{}",
            c.message
        );
    }
}
