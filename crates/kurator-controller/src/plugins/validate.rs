//! Validate (pure): the plugin spec and the object-store Secret. A plugin with a problem is
//! neither applied nor pruned until it is fixed; the problem becomes its condition.

use kurator_api::fleet::PluginConfig;

use super::{
    Plugin,
    dereference::SecretRead,
    objstore, render,
    status::{Failure, PluginProblem},
};

/// What may be rendered.
#[derive(Debug)]
pub struct Validated {
    pub problems: Vec<PluginProblem>,
    pub failures: Vec<Failure>,
    /// The spec with every plugin that has a problem taken out.
    pub render_config: PluginConfig,
    /// The object store, when the metric plugin can be installed.
    pub objstore: Option<objstore::ObjectStore>,
    /// The host could not be read: nothing is written or pruned this time (what is rendered
    /// without the Secret could differ from what is installed), only the status.
    pub hold_writes: bool,
}

impl Validated {
    /// Plugins whose objects stay as they are (neither written nor pruned).
    pub fn frozen(&self) -> std::collections::BTreeSet<&'static str> {
        self.problems.iter().map(|p| p.plugin.label()).collect()
    }
}

/// Problems of the spec alone (before anything is read).
pub fn spec_problems(config: &PluginConfig) -> Vec<PluginProblem> {
    render::problems(config)
        .into_iter()
        .map(|(plugin, message)| PluginProblem { plugin, message })
        .collect()
}

pub fn validate(config: &PluginConfig, namespace: &str, secret: SecretRead) -> Validated {
    let mut problems = spec_problems(config);
    let mut failures = Vec::new();
    let mut render_config = config.clone();
    let objstore = match secret {
        SecretRead::NotNeeded => None,
        SecretRead::Failed(failure) => {
            failures.push(failure);
            None
        }
        SecretRead::Read(name, secret) => {
            match objstore::validate(namespace, &name, secret.as_deref()) {
                Ok(store) => Some(store),
                Err(message) => {
                    problems.push(PluginProblem {
                        plugin: Plugin::Metric,
                        message,
                    });
                    None
                }
            }
        }
    };
    if problems.iter().any(|p| p.plugin == Plugin::Metric) {
        // Nothing of the metric plugin is applied or pruned until it is fixed (render leaves
        // out other plugins with a problem by itself).
        render_config.metric = None;
    }
    Validated {
        hold_writes: !failures.is_empty(),
        problems,
        failures,
        render_config,
        objstore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::status::reason;

    fn metric_config() -> PluginConfig {
        serde_json::from_value(serde_json::json!({
            "metric": { "thanos": { "objectStoreConfig": { "secretName": "objstore" } } }
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_secret_freezes_the_metric_plugin_with_a_problem() {
        let v = validate(
            &metric_config(),
            "ns",
            SecretRead::Read("objstore".into(), None),
        );
        assert!(v.render_config.metric.is_none());
        assert!(v.problems[0].message.contains("ns/objstore"));
        assert_eq!(v.frozen(), ["metric"].into());
        assert!(!v.hold_writes);
    }

    #[test]
    fn an_unreadable_secret_holds_every_write_and_keeps_the_spec() {
        let failure = Failure {
            plugin: Plugin::Metric,
            reason: reason::SECRET_UNREADABLE,
            message: "reading failed".into(),
        };
        let v = validate(&metric_config(), "ns", SecretRead::Failed(failure));
        assert!(v.hold_writes);
        assert!(v.problems.is_empty());
        assert!(v.render_config.metric.is_some());
        assert_eq!(v.failures.len(), 1);
    }
}
