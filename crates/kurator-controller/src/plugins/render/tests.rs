//! Golden and unit tests of plugin rendering.
use super::*;
use serde_json::json;

const UID: &str = "6c1f4c1e-5b1a-4c36-9d0e-0000000000f1";

fn owner(fleet: &str) -> OwnerReference {
    OwnerReference {
        api_version: "fleet.kurator.dev/v1alpha1".into(),
        kind: "Fleet".into(),
        name: fleet.into(),
        uid: UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        kubeconfig: SecretKeyRef {
            name: name.into(),
            key: format!("{name}.config"),
        },
    }
}

fn quickstart() -> Vec<Member> {
    vec![member("kurator-member1"), member("kurator-member2")]
}

/// `spec.plugin` as a user writes it.
fn plugin(yaml: &str) -> PluginConfig {
    serde_saphyr::from_str(yaml).expect("fixture is a PluginConfig")
}

struct Fixture {
    plugin: PluginConfig,
    members: Vec<Member>,
    kyverno_ready: BTreeSet<String>,
    mirrors: ChartMirrors,
}

impl Fixture {
    fn new(yaml: &str) -> Self {
        Fixture {
            plugin: plugin(yaml),
            members: quickstart(),
            kyverno_ready: BTreeSet::new(),
            mirrors: ChartMirrors::default(),
        }
    }

    fn ready(mut self, members: &[&str]) -> Self {
        self.kyverno_ready = members.iter().map(|m| m.to_string()).collect();
        self
    }

    fn render(&self) -> Vec<Component> {
        render(&RenderInput {
            fleet_name: "quickstart",
            namespace: "default",
            owner: owner("quickstart"),
            plugin: &self.plugin,
            members: &self.members,
            kyverno_ready: &self.kyverno_ready,
            mirrors: &self.mirrors,
        })
    }
}

/// Every object as the API server would receive it: each component's HelmRepository, then its
/// HelmRelease.
fn objects(components: &[Component]) -> Vec<serde_json::Value> {
    components
        .iter()
        .flat_map(|c| {
            [
                serde_json::to_value(&c.repository).unwrap(),
                serde_json::to_value(&c.release).unwrap(),
            ]
        })
        .collect()
}

fn names(components: &[Component]) -> Vec<String> {
    components
        .iter()
        .map(|c| c.release.metadata.name.clone().unwrap())
        .collect()
}

fn find<'a>(components: &'a [Component], name: &str) -> &'a Component {
    components
        .iter()
        .find(|c| c.release.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no component {name} in {:?}", names(components)))
}

fn values(c: &Component) -> &serde_json::Value {
    c.release.spec.values.as_ref().expect("values are set")
}

fn chart_of(c: &Component) -> (String, String, String) {
    let spec = &c.release.spec.chart.as_ref().unwrap().spec;
    (
        c.repository.spec.url.clone(),
        spec.chart.clone(),
        spec.version.clone().unwrap(),
    )
}

const METRIC: &str = r#"
metric:
  thanos:
    objectStoreConfig:
      secretName: thanos-objstore
"#;

#[test]
fn metric_default() {
    let components = Fixture::new(METRIC).render();
    assert_eq!(
        names(&components),
        [
            "thanos",
            "prometheus-kurator-member1",
            "prometheus-kurator-member2"
        ]
    );
    let thanos = &components[0];
    assert_eq!(thanos.cluster, None);
    assert_eq!(thanos.release.spec.kube_config, None);
    assert_eq!(components[1].cluster.as_deref(), Some("kurator-member1"));
    insta::assert_yaml_snapshot!(objects(&components));
}

#[test]
fn metric_with_custom_values_and_partial_chart_override() {
    let components = Fixture::new(
        r#"
metric:
  thanos:
    objectStoreConfig:
      secretName: thanos-objstore
    extraArgs:
      storegateway:
        enabled: false
      query:
        replicaCount: 2
        dnsDiscovery:
          sidecarsNamespace: somewhere-else
      existingObjstoreSecret: not-this-one
  prometheus:
    chart:
      version: 8.10.0
    nodeExporter:
      enabled: true
    kubeStateMetrics:
      enabled: false
    extraArgs:
      exporters:
        kube-state-metrics:
          enabled: true
      prometheus:
        externalLabels:
          cluster: hijacked
          region: eu-west
        thanos:
          service:
            type: NodePort
"#,
    )
    .render();
    let thanos = values(find(&components, "thanos"));
    // extraArgs beat chart defaults ...
    assert_eq!(thanos["storegateway"]["enabled"], false);
    assert_eq!(thanos["query"]["replicaCount"], 2);
    // ... injected values beat extraArgs.
    assert_eq!(
        thanos["query"]["dnsDiscovery"]["sidecarsNamespace"],
        "default"
    );
    assert_eq!(thanos["existingObjstoreSecret"], "thanos-objstore");

    let prometheus = find(&components, "prometheus-kurator-member2");
    let v = values(prometheus);
    assert_eq!(
        v["prometheus"]["externalLabels"]["cluster"],
        "kurator-member2"
    );
    assert_eq!(v["prometheus"]["externalLabels"]["region"], "eu-west");
    assert_eq!(v["prometheus"]["thanos"]["service"]["type"], "NodePort");
    assert_eq!(v["exporters"]["node-exporter"]["enabled"], true);
    assert_eq!(v["exporters"]["kube-state-metrics"]["enabled"], false);
    // Only the version was overridden.
    assert_eq!(
        chart_of(prometheus),
        (
            BITNAMI_REPOSITORY.into(),
            "kube-prometheus".into(),
            "8.10.0".into()
        )
    );
    insta::assert_yaml_snapshot!(objects(&[
        find(&components, "thanos").clone(),
        prometheus.clone()
    ]));
}

#[test]
fn exporters_follow_extra_args_when_the_spec_says_nothing() {
    let components = Fixture::new(
        r#"
metric:
  thanos: {objectStoreConfig: {secretName: s}}
  prometheus:
    extraArgs: {exporters: {node-exporter: {enabled: true}}}
"#,
    )
    .render();
    let v = values(&components[1]);
    assert_eq!(v["exporters"]["node-exporter"]["enabled"], true);
    assert_eq!(v["exporters"]["kube-state-metrics"]["enabled"], false);
    assert_eq!(v["exporters"].get("enabled"), None);
}

#[test]
fn grafana_without_metric() {
    let components = Fixture::new("grafana: {}").render();
    assert_eq!(names(&components), ["grafana"]);
    assert_eq!(values(&components[0]).get("datasources"), None);
    insta::assert_yaml_snapshot!(objects(&components));
}

#[test]
fn grafana_with_metric() {
    let components = Fixture::new(&format!("{METRIC}grafana: {{}}")).render();
    assert_eq!(
        names(&components),
        [
            "thanos",
            "prometheus-kurator-member1",
            "prometheus-kurator-member2",
            "grafana"
        ]
    );
    let grafana = find(&components, "grafana");
    assert_eq!(
        values(grafana)["datasources"]["secretDefinition"]["datasources"][0]["url"],
        "http://default-thanos-query:9090"
    );
    insta::assert_yaml_snapshot!(objects(std::slice::from_ref(grafana)));
}

#[test]
fn grafana_chart_override_and_extra_args() {
    let components = Fixture::new(
        r#"
grafana:
  chart: {repository: "https://grafana.github.io/helm-charts", name: grafana, version: ""}
  extraArgs: {admin: {password: s3cret}, service: {type: ClusterIP}}
"#,
    )
    .render();
    let grafana = &components[0];
    assert_eq!(
        chart_of(grafana),
        (
            "https://grafana.github.io/helm-charts".into(),
            "grafana".into(),
            "8.2.33".into()
        )
    );
    assert_eq!(grafana.repository.spec.type_, None);
    assert_eq!(values(grafana)["admin"]["password"], "s3cret");
    assert_eq!(values(grafana)["fullnameOverride"], "grafana");
}

#[test]
fn kyverno_default_installs_kyverno_only() {
    // Ready members get no policies without podSecurity.
    let components = Fixture::new("policy: {kyverno: {}}")
        .ready(&["kurator-member1", "kurator-member2"])
        .render();
    assert_eq!(
        names(&components),
        ["kyverno-kurator-member1", "kyverno-kurator-member2"]
    );
    insta::assert_yaml_snapshot!(objects(&components));
}

#[test]
fn kyverno_policies_default_pod_security() {
    let components = Fixture::new(
        r#"
policy:
  kyverno:
    podSecurity: {}
    extraArgs: {admissionController: {replicas: 3}}
"#,
    )
    .ready(&["kurator-member1", "kurator-member2"])
    .render();
    assert_eq!(
        names(&components),
        [
            "kyverno-kurator-member1",
            "kyverno-kurator-member2",
            "kyverno-policies-kurator-member1",
            "kyverno-policies-kurator-member2",
        ]
    );
    // extraArgs configure kyverno, not kyverno-policies.
    assert_eq!(values(&components[0])["admissionController"]["replicas"], 3);
    assert_eq!(values(&components[2]).get("admissionController"), None);
    insta::assert_yaml_snapshot!(objects(&components[2..3]));
}

#[test]
fn kyverno_policies_pod_security_variants() {
    let variants = [
        "{standard: privileged}",
        "{standard: baseline}",
        "{standard: restricted}",
        "{standard: restricted, severity: high, validationFailureAction: Enforce}",
        "{standard: baseline, severity: low}",
        "{validationFailureAction: Enforce}",
    ];
    let rendered: Vec<serde_json::Value> = variants
        .iter()
        .map(|v| {
            let components = Fixture::new(&format!("policy: {{kyverno: {{podSecurity: {v}}}}}"))
                .ready(&["kurator-member1"])
                .render();
            let policies = find(&components, "kyverno-policies-kurator-member1");
            json!({ "podSecurity": v, "values": values(policies) })
        })
        .collect();
    insta::assert_yaml_snapshot!(rendered);
}

#[test]
fn kyverno_policies_wait_for_kyverno() {
    let components = Fixture::new("policy: {kyverno: {podSecurity: {standard: restricted}}}")
        .ready(&["kurator-member2", "not-a-member"])
        .render();
    assert_eq!(
        names(&components),
        [
            "kyverno-kurator-member1",
            "kyverno-kurator-member2",
            "kyverno-policies-kurator-member2",
        ]
    );
}

#[test]
fn kyverno_override_serves_kyverno_policies_but_its_name() {
    let components = Fixture::new(
        r#"
policy:
  kyverno:
    chart: {repository: "oci://ghcr.io/kyverno/charts", name: kyverno-custom, version: 3.1.4}
    podSecurity: {}
"#,
    )
    .ready(&["kurator-member1"])
    .render();
    let kyverno = find(&components, "kyverno-kurator-member1");
    let policies = find(&components, "kyverno-policies-kurator-member1");
    assert_eq!(
        chart_of(kyverno),
        (
            "oci://ghcr.io/kyverno/charts".into(),
            "kyverno-custom".into(),
            "3.1.4".into()
        )
    );
    assert_eq!(
        chart_of(policies),
        (
            "oci://ghcr.io/kyverno/charts".into(),
            "kyverno-policies".into(),
            "3.1.4".into()
        )
    );
    assert_eq!(policies.repository.spec.type_.as_deref(), Some("oci"));
}

#[test]
fn mirror_rewrites_repositories_and_drops_oci_type() {
    let mut fixture = Fixture::new(&format!("{METRIC}policy: {{kyverno: {{}}}}"));
    fixture.members.truncate(1);
    fixture.mirrors = ChartMirrors(vec![
        (
            "oci://registry-1.docker.io/bitnamicharts".into(),
            "http://127.0.0.1:8879/bitnami".into(),
        ),
        (
            "https://kyverno.github.io/".into(),
            "oci://127.0.0.1:5000/".into(),
        ),
    ]);
    let components = fixture.render();
    let repos: Vec<(String, Option<String>)> = components
        .iter()
        .map(|c| {
            (
                c.repository.spec.url.clone(),
                c.repository.spec.type_.clone(),
            )
        })
        .collect();
    assert_eq!(
        repos,
        [
            ("http://127.0.0.1:8879/bitnami".into(), None),
            ("http://127.0.0.1:8879/bitnami".into(), None),
            ("oci://127.0.0.1:5000/kyverno/".into(), Some("oci".into())),
        ]
    );
    insta::assert_yaml_snapshot!(objects(&components[..1])[0]["spec"], @r#"
    interval: 5m0s
    url: "http://127.0.0.1:8879/bitnami"
    "#);
}

const EVERYTHING: &str = r#"
metric:
  thanos: {objectStoreConfig: {secretName: thanos-objstore}}
grafana: {}
policy:
  kyverno:
    podSecurity: {standard: restricted}
"#;

#[test]
fn stable_order() {
    let mut fixture = Fixture::new(EVERYTHING).ready(&["b", "a"]);
    fixture.members = vec![member("b"), member("a"), member("b")];
    let first = fixture.render();
    assert_eq!(
        names(&first),
        [
            "thanos",
            "prometheus-b",
            "prometheus-a",
            "grafana",
            "kyverno-b",
            "kyverno-a",
            "kyverno-policies-b",
            "kyverno-policies-a",
        ]
    );
    assert_eq!(first, fixture.render());
    let plugins: Vec<Plugin> = first.iter().map(|c| c.plugin).collect();
    assert!(plugins.is_sorted());
}

#[test]
fn no_plugin_no_members() {
    assert!(Fixture::new("{}").render().is_empty());
    let mut fixture = Fixture::new(EVERYTHING);
    fixture.members.clear();
    assert_eq!(names(&fixture.render()), ["thanos", "grafana"]);
}

#[test]
fn every_object_is_labelled_and_owned() {
    let components = Fixture::new(EVERYTHING)
        .ready(&["kurator-member1"])
        .render();
    for c in &components {
        for meta in [&c.repository.metadata, &c.release.metadata] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[MANAGED_BY], "fleet-manager");
            assert_eq!(labels[FLEET], "quickstart");
            assert_eq!(labels[PLUGIN], c.plugin.label());
            assert_eq!(labels[COMPONENT], c.component);
            assert_eq!(meta.namespace.as_deref(), Some("default"));
            assert_eq!(meta.owner_references, Some(vec![owner("quickstart")]));
        }
        let spec = &c.release.spec;
        let source = &spec.chart.as_ref().unwrap().spec.source_ref;
        assert_eq!(source.kind, "HelmRepository");
        assert_eq!(Some(&source.name), c.repository.metadata.name.as_ref());
        match &c.cluster {
            Some(cluster) => {
                let secret = &spec.kube_config.as_ref().unwrap().secret_ref;
                assert_eq!(&secret.name, cluster);
                assert_eq!(secret.key, Some(format!("{cluster}.config")));
                assert_eq!(spec.storage_namespace, spec.target_namespace);
            }
            None => {
                assert_eq!(spec.kube_config, None);
                assert_eq!(spec.target_namespace.as_deref(), Some("default"));
                assert_eq!(spec.storage_namespace.as_deref(), Some("default"));
            }
        }
    }
}

#[test]
fn long_fleet_names_fit_in_a_label() {
    let long = "f".repeat(100);
    let l = labels(&long, Plugin::Metric, component::THANOS);
    assert!(l[FLEET].len() <= 63);
    assert_eq!(l[FLEET], label_value(&long));
}

#[test]
fn problems_leave_the_plugin_out() {
    let fixture = Fixture::new(
        r#"
metric:
  thanos: {}
grafana:
  extraArgs: [not, an, object]
policy:
  kyverno:
    chart: {repository: "ftp://example.com/charts"}
"#,
    );
    let problems = problems(&fixture.plugin);
    let plugins: Vec<Plugin> = problems.iter().map(|(p, _)| *p).collect();
    assert_eq!(plugins, [Plugin::Metric, Plugin::Grafana, Plugin::Policy]);
    insta::assert_yaml_snapshot!(
        problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(),
        @r#"
    - "spec.plugin.metric.thanos.objectStoreConfig.secretName is required: a Secret holding objstore.yml"
    - spec.plugin.grafana.extraArgs must be an object of Helm values
    - "spec.plugin.policy.kyverno.chart.repository \"ftp://example.com/charts\" must start with http://, https:// or oci://"
    "#
    );
    assert!(fixture.render().is_empty());

    // A broken plugin does not hold back the others.
    let fixture =
        Fixture::new("metric: {thanos: {objectStoreConfig: {secretName: ''}}}\ngrafana: {}");
    assert_eq!(names(&fixture.render()), ["grafana"]);
    assert!(problems_of(&Fixture::new(EVERYTHING)).is_empty());
}

fn problems_of(f: &Fixture) -> Vec<(Plugin, String)> {
    problems(&f.plugin)
}

#[test]
fn query_stores_are_added_to_thanos() {
    let mut components = Fixture::new(
        r#"
metric:
  thanos:
    objectStoreConfig: {secretName: s}
    extraArgs: {query: {stores: ["dns+mine:10901"]}}
"#,
    )
    .render();
    let before = components.clone();
    add_query_stores(&mut components, &[]);
    assert_eq!(components, before);
    let stores = [
        "dns+a.elb.example:10901".to_string(),
        "dns+mine:10901".to_string(),
    ];
    add_query_stores(&mut components, &stores);
    let thanos = values(&components[0]);
    assert_eq!(
        thanos["query"]["stores"],
        json!(["dns+mine:10901", "dns+a.elb.example:10901"])
    );
    assert_eq!(
        thanos["query"]["dnsDiscovery"]["sidecarsService"],
        SIDECAR_REMOTE_SERVICE
    );
    assert_eq!(components[1], before[1]);
}

#[test]
fn chart_override_keeps_defaults_for_empty_fields() {
    let default = default_chart(component::THANOS).unwrap();
    assert_eq!(default.clone().overridden(None), default);
    let blank = ChartConfig {
        repository: Some(String::new()),
        name: Some("  ".into()),
        version: None,
    };
    assert_eq!(default.clone().overridden(Some(&blank)), default);
    let version = ChartConfig {
        version: Some("12.6.0".into()),
        ..ChartConfig::default()
    };
    assert_eq!(
        default.clone().overridden(Some(&version)),
        Chart {
            version: "12.6.0".into(),
            ..default
        }
    );
    assert_eq!(default_chart("nope"), None);
}

#[test]
fn names_and_services() {
    assert_eq!(
        resource_name("kyverno-policies", Some("m1")),
        "kyverno-policies-m1"
    );
    assert_eq!(resource_name("thanos", None), "thanos");
    assert_eq!(thanos_query_service("kurator"), "kurator-thanos-query");
}

mod merge {
    use super::*;

    fn merged(base: serde_json::Value, overlay: serde_json::Value) -> serde_json::Value {
        let mut base = base;
        merge_values(&mut base, overlay);
        base
    }

    #[test]
    fn objects_merge_key_by_key_at_every_depth() {
        assert_eq!(
            merged(
                json!({"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": 4}),
                json!({"a": {"c": {"d": 20, "x": 30}}, "g": 5}),
            ),
            json!({"a": {"b": 1, "c": {"d": 20, "e": 3, "x": 30}}, "f": 4, "g": 5})
        );
    }

    #[test]
    fn scalars_arrays_and_null_replace() {
        assert_eq!(
            merged(
                json!({"s": "x", "l": [1, 2, 3], "n": {"deep": true}, "o": {"k": 1}}),
                json!({"s": "y", "l": [9], "n": null, "o": "flat"}),
            ),
            json!({"s": "y", "l": [9], "n": null, "o": "flat"})
        );
    }

    #[test]
    fn an_object_replaces_a_scalar_and_empty_overlay_changes_nothing() {
        assert_eq!(
            merged(json!({"a": 1}), json!({"a": {"b": 2}})),
            json!({"a": {"b": 2}})
        );
        assert_eq!(merged(json!({"a": 1}), json!({})), json!({"a": 1}));
        assert_eq!(merged(json!(null), json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn layering_puts_injected_over_extra_args_over_defaults() {
        let values = layered(
            json!({"k": "default", "d": "default", "nested": {"a": "default"}}),
            Some(&json!({"k": "user", "u": "user", "nested": {"a": "user", "b": "user"}})),
            json!({"k": "injected", "nested": {"b": "injected"}}),
        );
        assert_eq!(
            values,
            json!({
                "k": "injected",
                "d": "default",
                "u": "user",
                "nested": {"a": "user", "b": "injected"}
            })
        );
        // Non-object extraArgs are ignored (problems() reports them).
        assert_eq!(
            layered(json!({"a": 1}), Some(&json!([1])), json!({})),
            json!({"a": 1})
        );
    }
}
