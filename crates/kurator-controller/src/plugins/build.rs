//! Build (pure): the Flux objects of every enabled plugin (`render/`), the components that wait
//! for kyverno, and the sidecar discovery objects (`sidecar.rs`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kurator_api::fleet::PluginConfig;

use super::{
    Component, Plugin,
    render::{self, ChartMirrors, Member, RenderInput},
    sidecar,
    status::{Waiting, reason},
};

/// Everything the plugins want on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub components: Vec<Component>,
    pub waiting: Vec<Waiting>,
    /// `Some` while the metric plugin is installed.
    pub discovery: Option<sidecar::Discovery>,
}

/// What the build step reads.
pub struct BuildInput<'a> {
    pub fleet_name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub config: &'a PluginConfig,
    pub members: &'a [Member],
    pub kyverno_ready: &'a BTreeSet<String>,
    pub mirrors: &'a ChartMirrors,
    /// Sidecar addresses per member, when the metric plugin is installed.
    pub sidecars: Option<&'a BTreeMap<String, Vec<sidecar::Address>>>,
}

pub fn build(input: &BuildInput<'_>) -> Built {
    let mut components = render::render(&RenderInput {
        fleet_name: input.fleet_name,
        namespace: input.namespace,
        owner: input.owner.clone(),
        plugin: input.config,
        members: input.members,
        kyverno_ready: input.kyverno_ready,
        mirrors: input.mirrors,
    });
    let discovery = input.sidecars.map(|addresses| {
        let discovery = sidecar::build(input.fleet_name, input.namespace, &input.owner, addresses);
        render::add_query_stores(&mut components, &discovery.stores);
        discovery
    });
    Built {
        components,
        waiting: waiting_for_kyverno(input.config, input.members, input.kyverno_ready),
        discovery,
    }
}

/// Members waiting for kyverno before kyverno-policies is rendered for them.
fn waiting_for_kyverno(
    config: &PluginConfig,
    members: &[Member],
    kyverno_ready: &BTreeSet<String>,
) -> Vec<Waiting> {
    let pod_security = config
        .policy
        .as_ref()
        .and_then(|p| p.kyverno.as_ref())
        .and_then(|k| k.pod_security.as_ref());
    if pod_security.is_none() {
        return Vec::new();
    }
    members
        .iter()
        .filter(|m| !kyverno_ready.contains(&m.name))
        .map(|m| Waiting {
            plugin: Plugin::Policy,
            component: "kyverno-policies".into(),
            cluster: m.name.clone(),
            release: format!("kyverno-policies-{}", m.name),
            reason: reason::WAITING_FOR_KYVERNO,
            message: format!("installed once kyverno-{} is ready", m.name),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurator_api::cluster::SecretKeyRef;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            kubeconfig: SecretKeyRef {
                name: format!("{name}-kc"),
                key: "value".into(),
            },
        }
    }

    #[test]
    fn kyverno_policies_wait_for_kyverno_per_member() {
        let config: PluginConfig = serde_json::from_value(serde_json::json!({
            "policy": { "kyverno": { "podSecurity": { "standard": "baseline", "severity": "high", "validationFailureAction": "Audit" } } }
        }))
        .unwrap();
        let members = [member("a"), member("b")];
        let ready = BTreeSet::from(["a".to_string()]);
        let built = build(&BuildInput {
            fleet_name: "f",
            namespace: "ns",
            owner: OwnerReference::default(),
            config: &config,
            members: &members,
            kyverno_ready: &ready,
            mirrors: &ChartMirrors::default(),
            sidecars: None,
        });
        let names: Vec<String> = built
            .components
            .iter()
            .filter_map(|c| c.release.metadata.name.clone())
            .collect();
        assert!(
            names.contains(&"kyverno-policies-a".to_string()),
            "{names:?}"
        );
        assert!(!names.contains(&"kyverno-policies-b".to_string()));
        assert_eq!(built.waiting.len(), 1);
        assert_eq!(built.waiting[0].release, "kyverno-policies-b");
        assert!(built.discovery.is_none());
    }
}
