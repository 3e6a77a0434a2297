//! Fleet plugins (metric, grafana, policy): each component is a Flux HelmRepository +
//! HelmRelease pair on the host, owned by the Fleet.
//!
//! `render` is the pure build step; the Fleet reconcile dereferences, applies and reports.

pub mod collector;
pub mod objstore;
pub mod reconcile;
pub mod render;
pub mod reports;
pub mod sidecar;
pub mod status;

use kurator_api::flux::{HelmRelease, HelmRepository};

/// A plugin as users enable it; the value is the `fleet.kurator.dev/plugin` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plugin {
    Metric,
    Grafana,
    Policy,
}

impl Plugin {
    pub const ALL: [Plugin; 3] = [Plugin::Metric, Plugin::Grafana, Plugin::Policy];

    /// The `fleet.kurator.dev/plugin` label value (upstream's: `kyverno` for policy).
    pub fn label(self) -> &'static str {
        match self {
            Plugin::Metric => "metric",
            Plugin::Grafana => "grafana",
            Plugin::Policy => "kyverno",
        }
    }

    /// The Fleet condition type reporting this plugin.
    pub fn condition(self) -> &'static str {
        match self {
            Plugin::Metric => "MetricReady",
            Plugin::Grafana => "GrafanaReady",
            Plugin::Policy => "PolicyReady",
        }
    }

    pub fn from_label(label: &str) -> Option<Plugin> {
        Plugin::ALL.into_iter().find(|p| p.label() == label)
    }
}

/// One rendered component: a HelmRepository and a HelmRelease with the same name.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub plugin: Plugin,
    /// `thanos`, `prometheus`, `grafana`, `kyverno` or `kyverno-policies` (the
    /// `fleet.kurator.dev/component` label).
    pub component: String,
    /// The member it installs into; `None` for fleet-scoped components (installed on the host).
    pub cluster: Option<String>,
    pub repository: HelmRepository,
    pub release: HelmRelease,
}
