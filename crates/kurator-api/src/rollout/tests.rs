//! The examples of docs/rollout.md are read from the page itself, so page and types cannot
//! drift apart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde::Deserialize;

use super::*;

const PAGE: &str = include_str!("../../../../docs/rollout.md");

/// The YAML block that follows `<!-- example: NAME -->` on the page.
fn example(name: &str) -> &'static str {
    let marker = format!("<!-- example: {name} -->");
    let after = &PAGE[PAGE.find(&marker).expect("marker on the page") + marker.len()..];
    let start = after.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = after[start..].find("```").expect("closed block");
    &after[start..start + len]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExampleSpec {
    staged_rollout: StagedRolloutSpec,
}

#[derive(Deserialize)]
struct ExampleApp {
    spec: ExampleSpec,
}

/// Deserialise, serialise, compare with the page's own value (nothing lost or invented).
fn round_trip<T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    written: serde_json::Value,
) -> T {
    let typed: T = serde_json::from_value(written.clone()).expect("the example fits the types");
    let back = serde_json::to_value(&typed).expect("serialises");
    assert_eq!(back, written);
    let again: T = serde_json::from_value(back).expect("reads back");
    assert_eq!(again, typed);
    typed
}

#[test]
fn spec_example_round_trips() {
    let doc: serde_json::Value = serde_saphyr::from_str(example("spec")).expect("yaml");
    let spec: StagedRolloutSpec = round_trip(doc["spec"]["stagedRollout"].clone());
    assert_eq!(spec.stages.len(), 3);
    assert_eq!(spec.on_failure, OnFailure::Rollback);
    let canary = &spec.stages[0];
    assert_eq!(
        canary.clusters.as_deref(),
        Some(&["member1".to_string()][..])
    );
    assert_eq!(canary.gates.metrics[0].comparison, Comparison::Less);
    assert_eq!(canary.gates.metrics[0].threshold, 0.05);
    assert!(canary.gates.metrics[0].query.contains("$cluster"));
    assert_eq!(spec.stages[1].max_concurrent, Some(2));
    assert_eq!(spec.stages[1].gates.approval, Some(true));
    assert_eq!(spec.stages[2].rest, Some(true));
    // The typed view of the whole example agrees, and the served Application still reads it
    // (the field is ignored until the controller acts on it).
    let typed: ExampleApp = serde_saphyr::from_str(example("spec")).expect("typed");
    assert_eq!(typed.spec.staged_rollout, spec);
    let app: crate::Application = serde_saphyr::from_str(example("spec")).expect("application");
    assert_eq!(app.spec.sync_policies.len(), 1);
}

#[test]
fn status_example_round_trips() {
    let doc: serde_json::Value = serde_saphyr::from_str(example("status")).expect("yaml");
    let status: StagedRolloutStatus = round_trip(doc);
    let run = status.run.as_ref().expect("a run");
    assert_eq!(run.phase, RunPhase::Paused);
    assert_eq!(run.stage.phase, StagePhase::Verifying);
    assert_eq!(run.stage.gates[0].outcome, GateOutcome::Failed);
    assert_eq!(run.stage.gates[0].value, Some(0.12));
    assert_eq!(status.clusters[1].state, ClusterRolloutState::Pending);
    assert_eq!(status.history[0].phase, RunPhase::Succeeded);
}

#[test]
fn comparisons_hold_as_written_and_never_for_nan() {
    use Comparison::*;
    assert!(Less.holds(0.01, 0.05) && !Less.holds(0.05, 0.05));
    assert!(LessOrEqual.holds(0.05, 0.05) && !LessOrEqual.holds(0.06, 0.05));
    assert!(Greater.holds(2.0, 1.0) && !Greater.holds(1.0, 1.0));
    assert!(GreaterOrEqual.holds(1.0, 1.0) && !GreaterOrEqual.holds(0.9, 1.0));
    for c in [Less, LessOrEqual, Greater, GreaterOrEqual] {
        assert!(!c.holds(f64::NAN, 1.0), "{}", c.as_str());
    }
}

/// The schema as kube-derive generates a CRD's (inlined, structural, nullable options), so
/// it is what `spec.stagedRollout` will serve once it joins `ApplicationSpec`.
fn crd_schema<T: JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>())
        .and_then(serde_json::from_value)
        .expect("a valid JSONSchemaProps")
}

#[test]
fn schema_carries_the_stage_rules() {
    let schema = crd_schema::<StagedRolloutSpec>();
    let text = serde_json::to_string(&schema).expect("json");
    for message in [
        "stage names must be unique",
        "only the last stage may say rest: true",
        "a stage selects its clusters by exactly one of clusterSelector, clusters or rest: true",
        "metric gate names must be unique within a stage",
    ] {
        assert!(text.contains(message), "missing rule: {message}");
    }
    insta::assert_yaml_snapshot!(schema);
}

#[test]
fn status_schema_is_structural() {
    let schema = crd_schema::<StagedRolloutStatus>();
    let run = &schema.properties.as_ref().expect("properties")["run"];
    assert!(
        run.properties
            .as_ref()
            .expect("run properties")
            .contains_key("stage")
    );
}
