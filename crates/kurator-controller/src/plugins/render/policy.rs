//! The policy plugin: Kyverno in every member and, once Kyverno is ready there and a pod
//! security standard is set, the kyverno-policies chart enforcing or auditing it.

use kurator_api::fleet::{ChartConfig, KyvernoConfig, PodSecurityPolicy};
use serde_json::{Value, json};

use super::{
    Component, KYVERNO_NAMESPACE, Member, Plugin, RenderInput, Spec, build, chart, component,
    layered,
};

pub(super) fn render(
    input: &RenderInput<'_>,
    kyverno: &KyvernoConfig,
    members: &[&Member],
) -> Vec<Component> {
    let kyverno_chart = chart(component::KYVERNO, kyverno.chart.as_ref());
    // The override's repository and version also serve kyverno-policies; its name does not.
    let policies_override = kyverno.chart.as_ref().map(|c| ChartConfig {
        name: None,
        ..c.clone()
    });
    let policies_chart = chart(component::KYVERNO_POLICIES, policies_override.as_ref());

    let mut out: Vec<Component> = members
        .iter()
        .map(|member| {
            build(
                input,
                Spec {
                    plugin: Plugin::Policy,
                    component: component::KYVERNO,
                    member: Some(member),
                    chart: kyverno_chart.clone(),
                    target_namespace: KYVERNO_NAMESPACE.to_string(),
                    values: layered(
                        json!({ "fullnameOverride": "kyverno" }),
                        kyverno.extra_args.as_ref(),
                        json!({}),
                    ),
                },
            )
        })
        .collect();

    let Some(pod_security) = &kyverno.pod_security else {
        return out;
    };
    let ready = members
        .iter()
        .filter(|m| input.kyverno_ready.contains(&m.name));
    for member in ready {
        out.push(build(
            input,
            Spec {
                plugin: Plugin::Policy,
                component: component::KYVERNO_POLICIES,
                member: Some(member),
                chart: policies_chart.clone(),
                target_namespace: KYVERNO_NAMESPACE.to_string(),
                // extraArgs configure kyverno only, as upstream.
                values: layered(
                    json!({ "fullnameOverride": "kyverno-policies" }),
                    None,
                    policy_values(pod_security),
                ),
            },
        ));
    }
    out
}

/// The kyverno-policies chart's pod security values.
fn policy_values(p: &PodSecurityPolicy) -> Value {
    json!({
        "podSecurityStandard": p.standard,
        "podSecuritySeverity": p.severity,
        "validationFailureAction": p.validation_failure_action,
    })
}
