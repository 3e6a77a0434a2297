//! Plugins controller: the Fleet plugins (metric, grafana, policy). Each component is a Flux
//! HelmRepository + HelmRelease pair on the host, owned by the Fleet.
//!
//! Pipeline, one file per step: `dereference` (members, object-store Secret, release readiness,
//! sidecar Services) → `validate` → `build` (pure; `render/`, `sidecar.rs`) → `apply` → `status`
//! (the Fleet's `plugins`, `pluginEndpoints`, `policyReport` and plugin conditions, under its
//! own field manager). The Fleet controller owns membership and `Ready`, and reads the plugin
//! conditions from the object.

pub mod apply;
pub mod build;
pub mod collector;
pub mod dereference;
pub mod objstore;
pub mod render;
pub mod reports;
pub mod sidecar;
pub mod status;
pub mod validate;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use kurator_api::{
    Fleet,
    fleet::PluginConfig,
    flux::{HelmRelease, HelmRepository},
};
use tracing::{instrument, warn};

use self::{
    build::BuildInput,
    dereference::Reachable,
    status::{Failure, PluginStatus, reason},
};
use crate::{context::Context, error::Error};

pub const CONTROLLER: &str = "plugins";
/// Field manager of the plugins' part of the Fleet status.
pub const FIELD_MANAGER: &str = "kurator-plugins";
/// Removes the members' object-store copies before a Fleet goes away.
pub const FINALIZER: &str = "fleet.kurator.dev/plugins";

/// Member calls made at once (Secret copies, sidecar lookups).
const MEMBER_CONCURRENCY: usize = 16;
/// How soon a fleet is reconciled again after a member or Secret call failed.
const RETRY: Duration = Duration::from_secs(15);
/// How long a reconcile waits for the Flux watches before reporting Flux missing.
const FLUX_WAIT: Duration = Duration::from_secs(5);

/// The plugins the spec enables.
pub fn enabled(config: &PluginConfig) -> BTreeSet<Plugin> {
    let mut out = BTreeSet::new();
    if config.metric.is_some() {
        out.insert(Plugin::Metric);
    }
    if config.grafana.is_some() {
        out.insert(Plugin::Grafana);
    }
    if config.policy.as_ref().is_some_and(|p| p.kyverno.is_some()) {
        out.insert(Plugin::Policy);
    }
    out
}

#[instrument(skip_all, fields(fleet = %fleet.name_any(), namespace = fleet.namespace().unwrap_or_default()))]
pub async fn reconcile(fleet: Arc<Fleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_until_ready().await;
    let _measure = ctx.metrics.reconcile(CONTROLLER);
    let namespace = fleet.namespace().unwrap_or_default();
    let api: Api<Fleet> = Api::namespaced(ctx.client.clone(), &namespace);
    let fleet = crate::finalizer::ensure(&api, fleet, FINALIZER).await?;
    Ok(finalizer(&api, FINALIZER, fleet, |event| async {
        match event {
            Finalizer::Apply(fleet) => apply(&fleet, &namespace, &ctx).await,
            Finalizer::Cleanup(fleet) => cleanup(&fleet, &namespace, &ctx).await,
        }
    })
    .await?)
}

async fn apply(fleet: &Fleet, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let fleet_name = fleet.name_any();
    let config = fleet.spec.plugin.clone().unwrap_or_default();
    let enabled = enabled(&config);
    let owner = fleet
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Internal("the Fleet has no uid yet".into()))?;

    // dereference + validate
    let members = dereference::members(fleet, namespace, ctx);
    let metric_spec_valid = !validate::spec_problems(&config)
        .iter()
        .any(|p| p.plugin == Plugin::Metric);
    let secret = dereference::object_store_secret(&config, metric_spec_valid, namespace, ctx).await;
    let mut validated = validate::validate(&config, namespace, secret);
    if !enabled.is_empty() && !ctx.stores.flux.ready_within(FLUX_WAIT).await {
        validated.hold_writes = true;
        validated.failures.extend(enabled.iter().map(|&plugin| {
            Failure {
                plugin,
                reason: reason::FLUX_NOT_INSTALLED,
                message:
                    "Flux's source and helm controllers (their CRDs) are not installed on the host"
                        .into(),
            }
        }));
    }
    let mut failures = validated.failures.clone();
    let kyverno_ready = dereference::ready_members(ctx, namespace, "kyverno", &members);
    let sidecars = match validated.objstore {
        Some(_) => {
            let installed = dereference::ready_members(ctx, namespace, "prometheus", &members);
            let ready: Vec<&Reachable> = members
                .iter()
                .filter(|r| installed.contains(r.name()))
                .collect();
            let (addresses, failed) = dereference::sidecar_addresses(ctx, namespace, &ready).await;
            failures.extend(failed);
            Some(addresses)
        }
        None => None,
    };

    // build
    let render_members: Vec<render::Member> = members.iter().map(|r| r.render.clone()).collect();
    let built = build::build(&BuildInput {
        fleet_name: &fleet_name,
        namespace,
        owner,
        config: &validated.render_config,
        members: &render_members,
        kyverno_ready: &kyverno_ready,
        mirrors: &ctx.settings.chart_mirrors,
        sidecars: sidecars.as_ref(),
    });

    // apply
    let mut retry = false;
    if !validated.hold_writes {
        if let Some(store) = &validated.objstore {
            let copies =
                apply::copy_object_store(ctx, namespace, &fleet_name, store, &members).await;
            failures.extend(copies);
        }
        apply::apply_components(ctx, &built.components).await?;
        // Discovery is written beside the components: a failure is retried without holding
        // back the status.
        let metric_invalid = validated
            .problems
            .iter()
            .any(|p| p.plugin == Plugin::Metric);
        let discovery = match &built.discovery {
            Some(d) => apply::apply_discovery(ctx, &fleet_name, d).await,
            None if !metric_invalid => apply::remove_discovery(ctx, namespace, &fleet_name).await,
            None => Ok(()),
        };
        if let Err(e) = discovery {
            warn!(error = %e, "writing the Thanos sidecar discovery failed; retrying");
            retry = true;
        }
        let uid = fleet.uid().unwrap_or_default();
        let frozen = validated.frozen();
        failures.extend(
            apply::prune(
                ctx,
                namespace,
                &fleet_name,
                &uid,
                &built.components,
                &frozen,
            )
            .await?,
        );
    }
    let on = enabled.contains(&Plugin::Policy);
    let policy_report = apply::policy_reports(ctx, namespace, &fleet_name, &members, on).await;

    // status
    let (plugins, desired) = status::build(
        &enabled,
        &built.components,
        &built.waiting,
        &validated.problems,
        &failures,
        |name| dereference::release(ctx, namespace, name).map(|r| r.as_ref().clone()),
    );
    let stored = status::stored_part(fleet.status.as_ref());
    let plugin_endpoints = match &built.discovery {
        Some(d) => [("thanos-sidecar".to_string(), d.endpoints.clone())].into(),
        // Nothing was read this time: keep what was known.
        None if validated.hold_writes => stored.plugin_endpoints.clone(),
        None => Default::default(),
    };
    let conditions = kurator_api::conditions::merge(
        &stored.conditions,
        desired,
        fleet.metadata.generation,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let desired = PluginStatus {
        plugin_endpoints,
        plugins,
        policy_report,
        conditions,
    };
    status::write(ctx, fleet, &desired).await?;
    // Everything else arrives through the trigger table; failed calls are retried.
    Ok(if retry || !failures.is_empty() {
        Action::requeue(RETRY)
    } else {
        Action::await_change()
    })
}

/// Removes every plugin trace of a deleted fleet that its owner references do not cover: the
/// members' object-store copies, and the policy report watches.
async fn cleanup(fleet: &Fleet, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let fleet_name = fleet.name_any();
    ctx.policy_reports
        .retain(namespace, &fleet_name, &BTreeSet::new());
    let metric = fleet.spec.plugin.as_ref().and_then(|p| p.metric.as_ref());
    if metric.is_some() {
        let mut clusters: BTreeSet<String> =
            fleet.spec.clusters.iter().map(|c| c.name.clone()).collect();
        clusters.extend(
            crate::fleet::labelled_with(&fleet_name, namespace, ctx)
                .into_iter()
                .map(|c| c.name),
        );
        for cluster in clusters {
            apply::remove_objstore_copy(ctx, namespace, &fleet_name, &cluster).await;
        }
    }
    Ok(Action::await_change())
}

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
