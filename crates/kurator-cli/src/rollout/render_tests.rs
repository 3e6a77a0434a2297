use super::*;
use kurator_controller::rollout::stages::{DestinationCluster, assign};

/// `spec.stagedRollout` of docs/rollout.md's example.
const SPEC: &str = "
onFailure: Rollback
progressDeadline: 10m
stages:
  - name: canary
    clusters: [member1]
    soak: 5m
    gates:
      policy: true
      metrics:
        - name: error-rate
          query: 'sum(rate(http_errors_total{cluster=\"$cluster\"}[2m])) / sum(rate(http_requests_total{cluster=\"$cluster\"}[2m]))'
          comparison: '<'
          threshold: 0.05
  - name: europe
    clusterSelector: {matchLabels: {region: eu}}
    maxConcurrent: 2
    soak: 10m
    gates:
      metrics:
        - name: p99-latency
          query: 'histogram_quantile(0.99, sum by (cluster, le) (rate(http_request_duration_seconds_bucket[5m])))'
          comparison: '<='
          threshold: 0.3
      approval: true
  - name: everything-else
    rest: true
    maxConcurrent: 10
";

/// `status.stagedRollout` of docs/rollout.md's example: run 2 paused at canary.
const PAUSED: &str = "
stableRevision: main@sha1:1111111111111111111111111111111111111111
observedSourceRevision: main@sha1:2222222222222222222222222222222222222222
lastRunId: 2
run:
  id: 2
  fromRevision: main@sha1:1111111111111111111111111111111111111111
  toRevision: main@sha1:2222222222222222222222222222222222222222
  phase: Paused
  startedAt: 2026-12-02T04:00:00Z
  paused:
    reason: GateFailed
    message: 'stage canary: error-rate on member1: 0.12 is not < 0.05'
    since: 2026-12-02T04:06:00Z
  stage:
    index: 0
    name: canary
    phase: Verifying
    startedAt: 2026-12-02T04:00:00Z
    healthySince: 2026-12-02T04:01:00Z
    verifyingSince: 2026-12-02T04:06:00Z
    gates:
      - gate: error-rate
        cluster: member1
        outcome: Failed
        value: 0.12
        comparison: '<'
        threshold: 0.05
        message: 0.12 is not < 0.05
        evaluatedAt: 2026-12-02T04:06:05Z
clusters:
  - name: member1
    stage: canary
    revision: main@sha1:2222222222222222222222222222222222222222
    state: Failed
    since: 2026-12-02T04:06:05Z
    policyFailuresAtStart: 0
    message: 'error-rate: 0.12 is not < 0.05'
  - name: member2
    stage: everything-else
    revision: main@sha1:1111111111111111111111111111111111111111
    state: Pending
    since: 2026-12-02T04:00:00Z
history:
  - id: 1
    toRevision: main@sha1:1111111111111111111111111111111111111111
    phase: Succeeded
    startedAt: 2026-12-01T10:00:00Z
    finishedAt: 2026-12-01T10:30:00Z
    stage: everything-else
handledRequests: {pause: '2026-12-02T03:00:00Z'}
";

fn spec() -> StagedRolloutSpec {
    serde_saphyr::from_str(SPEC).unwrap()
}

fn status(yaml: &str) -> StagedRolloutStatus {
    serde_saphyr::from_str(yaml).unwrap()
}

#[test]
fn the_docs_example_paused_on_a_failed_metric_gate() {
    insta::assert_snapshot!(status_text(&spec(), Some(&status(PAUSED))), @r#"
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
    insta::assert_snapshot!(stages_text(&spec, &assign(&spec, &clusters)), @r#"
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
