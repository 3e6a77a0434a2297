use super::*;
use kurator_controller::rollout::stages::{DestinationCluster, assign};

/// docs/rollout.md: its examples are what these tests render, and its CLI section shows the
/// output, so page and command cannot drift apart.
const PAGE: &str = include_str!("../../../../docs/rollout.md");

/// The YAML block that follows `<!-- example: NAME -->` on the page.
fn example(name: &str) -> &'static str {
    let marker = format!("<!-- example: {name} -->");
    let after = &PAGE[PAGE.find(&marker).expect("marker on the page") + marker.len()..];
    let start = after.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = after[start..].find("```").expect("closed block");
    &after[start..start + len]
}

/// The page's `status.stagedRollout` example: run 2 paused at canary.
fn paused() -> &'static str {
    example("status")
}

/// `spec.stagedRollout` of the page's example Application.
fn spec() -> StagedRolloutSpec {
    let app: serde_json::Value = serde_saphyr::from_str(example("spec")).unwrap();
    serde_json::from_value(app["spec"]["stagedRollout"].clone()).unwrap()
}

fn status(yaml: &str) -> StagedRolloutStatus {
    serde_saphyr::from_str(yaml).unwrap()
}

#[test]
fn the_docs_example_paused_on_a_failed_metric_gate() {
    let text = status_text(&spec(), Some(&status(paused())));
    assert!(
        PAGE.contains(&format!("```\n{text}```\n")),
        "docs/rollout.md shows this output"
    );
    insta::assert_snapshot!(text, @r#"
        RUN 2  main@sha1:1111111 → main@sha1:2222222  Paused: GateFailed
               stage canary (1/3) started 2026-12-02T04:00:00Z: Verifying
               stage canary: error-rate on member1: 0.12 is not < 0.05

        STAGE            CLUSTER  REVISION           STATE    GATES
        canary           member1  main@sha1:2222222  Failed   error-rate 0.12 (< 0.05) failed
        everything-else  member2  main@sha1:1111111  Pending

        HISTORY  RUN  TO                 PHASE      STAGE            FINISHED              WHY
                 1    main@sha1:1111111  Succeeded  everything-else  2026-12-01T10:30:00Z
    "#);
}

#[test]
fn a_run_awaiting_approval_with_pending_and_passed_gates() {
    let yaml = "
stableRevision: main@sha1:1111111111111111111111111111111111111111
lastRunId: 3
run:
  id: 3
  fromRevision: main@sha1:1111111111111111111111111111111111111111
  toRevision: main@sha1:3333333333333333333333333333333333333333
  phase: Progressing
  startedAt: 2026-12-02T05:00:00Z
  stage:
    index: 1
    name: europe
    phase: AwaitingApproval
    startedAt: 2026-12-02T05:10:00Z
    gates:
      - {gate: approval, outcome: Pending, message: waiting for kurator rollout promote}
      - {gate: p99-latency, cluster: eu1, outcome: Passed, value: 0.21, comparison: '<=', threshold: 0.3}
      - {gate: p99-latency, cluster: eu2, outcome: Pending, message: no series}
clusters:
  - {name: member1, stage: canary, revision: 'main@sha1:3333333333333333333333333333333333333333', state: Healthy, since: '2026-12-02T05:06:00Z'}
  - {name: eu2, stage: europe, revision: 'main@sha1:3333333333333333333333333333333333333333', state: Healthy, since: '2026-12-02T05:12:00Z'}
  - {name: eu1, stage: europe, revision: 'main@sha1:3333333333333333333333333333333333333333', state: Healthy, since: '2026-12-02T05:12:00Z'}
  - {name: old, state: Healthy, revision: 'main@sha1:1111111111111111111111111111111111111111', since: '2026-12-02T04:00:00Z'}
";
    insta::assert_snapshot!(status_text(&spec(), Some(&status(yaml))), @r#"
        RUN 3  main@sha1:1111111 → main@sha1:3333333  Progressing
               stage europe (2/3) started 2026-12-02T05:10:00Z: AwaitingApproval
               approval pending: waiting for kurator rollout promote

        STAGE   CLUSTER  REVISION           STATE    GATES
        canary  member1  main@sha1:3333333  Healthy
        europe  eu1      main@sha1:3333333  Healthy  p99-latency 0.21 (<= 0.3) passed
        europe  eu2      main@sha1:3333333  Healthy  p99-latency pending: no series
        -       old      main@sha1:1111111  Healthy
    "#);
}

#[test]
fn a_canary_flux_failed_shows_flux_message_in_its_own_column() {
    let yaml = "
lastRunId: 2
stableRevision: main@sha1:1111111111111111111111111111111111111111
run:
  id: 2
  fromRevision: main@sha1:1111111111111111111111111111111111111111
  toRevision: main@sha1:2222222222222222222222222222222222222222
  phase: Progressing
  startedAt: 2026-12-02T04:00:00Z
  stage: {index: 0, name: canary, phase: Updating, startedAt: 2026-12-02T04:00:00Z}
clusters:
  - {name: member1, stage: canary, revision: 'main@sha1:2222222222222222222222222222222222222222', state: Progressing, since: '2026-12-02T04:00:00Z', message: 'kustomize build failed: deploy/shop.yaml: not found'}
  - {name: member2, stage: everything-else, revision: 'main@sha1:1111111111111111111111111111111111111111', state: Pending, since: '2026-12-02T04:00:00Z'}
";
    insta::assert_snapshot!(status_text(&spec(), Some(&status(yaml))), @r#"
        RUN 2  main@sha1:1111111 → main@sha1:2222222  Progressing
               stage canary (1/3) started 2026-12-02T04:00:00Z: Updating

        STAGE            CLUSTER  REVISION           STATE        GATES  MESSAGE
        canary           member1  main@sha1:2222222  Progressing         kustomize build failed: deploy/shop.yaml: not found
        everything-else  member2  main@sha1:1111111  Pending
    "#);
}

#[test]
fn no_run_after_a_rollback_keeps_the_measured_value_in_history() {
    let yaml = "
stableRevision: main@sha1:3333333333333333333333333333333333333333
lastRunId: 4
clusters:
  - {name: member1, stage: canary, revision: 'main@sha1:3333333333333333333333333333333333333333', state: RolledBack, since: '2026-12-02T06:08:00Z'}
  - {name: member2, stage: everything-else, revision: 'main@sha1:3333333333333333333333333333333333333333', state: Healthy, since: '2026-12-02T05:30:00Z'}
history:
  - id: 4
    fromRevision: main@sha1:3333333333333333333333333333333333333333
    toRevision: main@sha1:4444444444444444444444444444444444444444
    phase: RolledBack
    startedAt: 2026-12-02T06:00:00Z
    finishedAt: 2026-12-02T06:08:00Z
    stage: canary
    message: 'stage canary failed: rolled back to main@sha1:3333333'
    failedGates:
      - {gate: error-rate, cluster: member1, outcome: Failed, value: 0.2, comparison: '<', threshold: 0.05}
  - id: 3
    fromRevision: main@sha1:1111111111111111111111111111111111111111
    toRevision: main@sha1:3333333333333333333333333333333333333333
    phase: Succeeded
    startedAt: 2026-12-02T05:00:00Z
    finishedAt: 2026-12-02T05:30:00Z
    stage: everything-else
";
    insta::assert_snapshot!(status_text(&spec(), Some(&status(yaml))), @r#"
        No run in progress. Stable revision: main@sha1:3333333

        STAGE            CLUSTER  REVISION           STATE       GATES
        canary           member1  main@sha1:3333333  RolledBack
        everything-else  member2  main@sha1:3333333  Healthy

        HISTORY  RUN  TO                 PHASE       STAGE            FINISHED              WHY
                 4    main@sha1:4444444  RolledBack  canary           2026-12-02T06:08:00Z  member1: error-rate 0.2 (< 0.05) failed
                 3    main@sha1:3333333  Succeeded   everything-else  2026-12-02T05:30:00Z
    "#);
}

#[test]
fn before_the_controller_acted() {
    insta::assert_snapshot!(status_text(&spec(), None), @r#"
        No rollout status yet: the controller has not acted on spec.stagedRollout.
    "#);
}

#[test]
fn stages_of_a_destination() {
    let cluster = |name: &str, region: &str| DestinationCluster {
        name: name.into(),
        labels: [("region".to_string(), region.to_string())].into(),
    };
    let clusters = [
        cluster("member1", "eu"),
        cluster("eu1", "eu"),
        cluster("eu2", "eu"),
        cluster("eu3", "eu"),
        cluster("us1", "us"),
    ];
    let spec = spec();
    let text = stages_text(&spec, &assign(&spec, &clusters));
    assert!(
        PAGE.contains(&format!("```\n{text}```\n")),
        "docs/rollout.md shows this output"
    );
    insta::assert_snapshot!(text, @r#"
        Staged rollout: onFailure Rollback, progressDeadline 10m
          #  STAGE            SELECTS           CLUSTERS     AT ONCE        SOAK  GATES
          1  canary           names member1     member1      all (1 batch)  5m    health, error-rate < 0.05, policy
          2  europe           labels region=eu  eu1,eu2,eu3  2 (2 batches)  10m   health, p99-latency <= 0.3, approval
          3  everything-else  the rest          us1          10 (1 batch)   -     health
    "#);
    let mut without_rest = spec.clone();
    without_rest.stages.pop();
    insta::assert_snapshot!(
        stages_text(&without_rest, &assign(&without_rest, &clusters)),
        @r#"
        Staged rollout: onFailure Rollback, progressDeadline 10m
          #  STAGE   SELECTS           CLUSTERS     AT ONCE        SOAK  GATES
          1  canary  names member1     member1      all (1 batch)  5m    health, error-rate < 0.05, policy
          2  europe  labels region=eu  eu1,eu2,eu3  2 (2 batches)  10m   health, p99-latency <= 0.3, approval
          Not in any stage (keep their revision): us1
    "#
    );
}

#[test]
fn values_are_short() {
    assert_eq!(value_text(0.1 + 0.2), "0.3");
    assert_eq!(value_text(0.12), "0.12");
    assert_eq!(value_text(3.0), "3");
    assert_eq!(value_text(1234.56789), "1234.5679");
    assert_eq!(value_text(0.0), "0");
    assert_eq!(value_text(0.000123), "1.23e-4");
    assert_eq!(value_text(f64::NAN), "NaN");
}
