//! Pure: the Flux objects a Fleet's plugins want (see docs/plugins.md and
//! ../shared/reference/kurator-behaviour.md, "Plugins").

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kurator_api::{cluster::SecretKeyRef, fleet::PluginConfig};

use super::Component;

/// A member cluster a per-cluster component installs into.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// Its kubeconfig Secret (in the Fleet's namespace), for `kubeConfig.secretRef`.
    pub kubeconfig: SecretKeyRef,
}

/// Chart repository rewrites for air-gapped hosts and the playground: a repository URL that
/// starts with `from` is fetched from `to` instead (`--chart-mirror FROM=TO`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartMirrors(pub Vec<(String, String)>);

impl ChartMirrors {
    pub fn rewrite(&self, url: &str) -> String {
        for (from, to) in &self.0 {
            if let Some(rest) = url.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        url.to_string()
    }
}

/// Everything rendering needs.
#[derive(Clone, Debug)]
pub struct RenderInput<'a> {
    pub fleet_name: &'a str,
    pub namespace: &'a str,
    /// Owner reference to the Fleet (controller: true) set on every object.
    pub owner: OwnerReference,
    pub plugin: &'a PluginConfig,
    /// Members (ready or not) in a stable order.
    pub members: &'a [Member],
    /// Members whose `kyverno-<cluster>` release is Ready: only these get kyverno-policies.
    pub kyverno_ready: &'a BTreeSet<String>,
    pub mirrors: &'a ChartMirrors,
}

/// The components the plugins want, in a stable order.
pub fn render(_input: &RenderInput<'_>) -> Vec<Component> {
    todo!("rendering: see the plugin brief")
}
