//! Pure: the text of `kurator rollout status` and the stages section of
//! `kurator describe application` (snapshot tested).

use kurator_api::rollout::{
    GateOutcome, GateResult, RolloutStage, RunPhase, StagePhase, StagedRolloutSpec,
    StagedRolloutStatus,
};
use kurator_controller::rollout::stages::{Assignment, batches};

use crate::tables::{short_revision, text_table};

fn revision(r: Option<&str>) -> String {
    r.map_or_else(|| "-".into(), short_revision)
}

fn outcome(o: GateOutcome) -> &'static str {
    match o {
        GateOutcome::Pending => "pending",
        GateOutcome::Passed => "passed",
        GateOutcome::Failed => "failed",
    }
}

/// A measured value short enough for a table: four decimals at most, tiny ones in scientific
/// notation (a query's `0.30000000000000004` is `0.3`).
fn value_text(value: f64) -> String {
    if value != 0.0 && value.abs() < 0.001 {
        return format!("{value:.2e}");
    }
    let text = format!("{value:.4}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `error-rate 0.12 (< 0.05) failed`; a result without a value says why it has none.
fn gate_text(g: &GateResult) -> String {
    let mut out = g.gate.clone();
    if let Some(value) = g.value {
        out.push_str(&format!(" {}", value_text(value)));
    }
    match (g.comparison, g.threshold) {
        (Some(c), Some(t)) => out.push_str(&format!(" ({} {t})", c.as_str())),
        (None, Some(t)) => out.push_str(&format!(" (threshold {t})")),
        _ => {}
    }
    out.push(' ');
    out.push_str(outcome(g.outcome));
    if g.value.is_none()
        && let Some(message) = &g.message
    {
        out.push_str(&format!(": {message}"));
    }
    out
}

fn stage_phase(p: StagePhase) -> &'static str {
    match p {
        StagePhase::Updating => "Updating",
        StagePhase::Soaking => "Soaking",
        StagePhase::Verifying => "Verifying",
        StagePhase::AwaitingApproval => "AwaitingApproval",
    }
}

fn run_phase(p: RunPhase) -> &'static str {
    match p {
        RunPhase::Progressing => "Progressing",
        RunPhase::Paused => "Paused",
        RunPhase::Succeeded => "Succeeded",
        RunPhase::RolledBack => "RolledBack",
        RunPhase::Aborted => "Aborted",
        RunPhase::Superseded => "Superseded",
    }
}

/// Pure: the text of `kurator rollout status APP`: the run, every cluster with its gate
/// results, the history. `status` is `status.stagedRollout` (none before the controller acted).
pub fn status_text(spec: &StagedRolloutSpec, status: Option<&StagedRolloutStatus>) -> String {
    let Some(status) = status else {
        return "No rollout status yet: the controller has not acted on spec.stagedRollout.\n"
            .into();
    };
    const INDENT: &str = "       ";
    let mut out = String::new();
    match &status.run {
        None => out.push_str(&format!(
            "No run in progress. Stable revision: {}\n",
            revision(status.stable_revision.as_deref())
        )),
        Some(run) => {
            let mut phase = run_phase(run.phase).to_string();
            if let Some(paused) = &run.paused {
                phase.push_str(&format!(": {}", paused.reason));
            }
            out.push_str(&format!(
                "RUN {}  {} → {}  {phase}\n",
                run.id,
                revision(run.from_revision.as_deref()),
                short_revision(&run.to_revision),
            ));
            out.push_str(&format!(
                "{INDENT}stage {} ({}/{}) started {}: {}\n",
                run.stage.name,
                run.stage.index + 1,
                spec.stages.len(),
                run.stage.started_at.0,
                stage_phase(run.stage.phase),
            ));
            if let Some(paused) = &run.paused {
                out.push_str(&format!("{INDENT}{}\n", paused.message));
            }
            let stage_gates: Vec<String> = run
                .stage
                .gates
                .iter()
                .filter(|g| g.cluster.is_none())
                .map(gate_text)
                .collect();
            if !stage_gates.is_empty() {
                out.push_str(&format!("{INDENT}{}\n", stage_gates.join(", ")));
            }
        }
    }
    if !status.clusters.is_empty() {
        out.push('\n');
        out.push_str(&clusters_table(spec, status));
    }
    if !status.history.is_empty() {
        out.push('\n');
        let rows = status
            .history
            .iter()
            .map(|h| {
                let mut why: Vec<String> = h
                    .failed_gates
                    .iter()
                    .map(|g| match &g.cluster {
                        Some(cluster) => format!("{cluster}: {}", gate_text(g)),
                        None => gate_text(g),
                    })
                    .collect();
                if why.is_empty()
                    && let Some(message) = &h.message
                {
                    why.push(message.clone());
                }
                vec![
                    String::new(),
                    h.id.to_string(),
                    short_revision(&h.to_revision),
                    run_phase(h.phase).to_string(),
                    h.stage.clone(),
                    h.finished_at.0.to_string(),
                    why.join(", "),
                ]
            })
            .collect();
        out.push_str(&text_table(
            &["HISTORY", "RUN", "TO", "PHASE", "STAGE", "FINISHED", "WHY"],
            rows,
            "",
        ));
    }
    out
}

/// One row per cluster, in stage order (clusters no stage selects last), with the current
/// stage's gate results of that cluster.
fn clusters_table(spec: &StagedRolloutSpec, status: &StagedRolloutStatus) -> String {
    let stage_index = |name: Option<&str>| {
        name.and_then(|n| spec.stages.iter().position(|s| s.name == n))
            .unwrap_or(usize::MAX)
    };
    let mut clusters: Vec<_> = status.clusters.iter().collect();
    clusters.sort_by(|a, b| {
        (stage_index(a.stage.as_deref()), &a.name).cmp(&(stage_index(b.stage.as_deref()), &b.name))
    });
    let gates = status.run.as_ref().map_or(&[][..], |r| &r.stage.gates[..]);
    let rows: Vec<(Vec<String>, Option<String>)> = clusters
        .into_iter()
        .map(|c| {
            let cluster_gates: Vec<String> = gates
                .iter()
                .filter(|g| g.cluster.as_deref() == Some(c.name.as_str()))
                .map(gate_text)
                .collect();
            // Why a cluster is stuck or failed (Flux's error, the gate that failed it), unless
            // its gate results on the row say so already.
            let message = c.message.clone().filter(|_| cluster_gates.is_empty());
            let row = vec![
                c.stage.clone().unwrap_or_else(|| "-".into()),
                c.name.clone(),
                revision(c.revision.as_deref()),
                format!("{:?}", c.state),
                cluster_gates.join(", "),
            ];
            (row, message)
        })
        .collect();
    // A MESSAGE column only when a row has one: the usual table stays narrow.
    let with_message = rows.iter().any(|(_, message)| message.is_some());
    let rows = rows
        .into_iter()
        .map(|(mut row, message)| {
            if with_message {
                row.push(message.unwrap_or_default());
            }
            row
        })
        .collect();
    let mut header = vec!["STAGE", "CLUSTER", "REVISION", "STATE", "GATES"];
    if with_message {
        header.push("MESSAGE");
    }
    text_table(&header, rows, "")
}

/// How a stage selects its clusters, in words.
fn selector_text(stage: &RolloutStage) -> String {
    if let Some(selector) = &stage.cluster_selector {
        let labels: Vec<String> = selector
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return format!("labels {}", labels.join(","));
    }
    if let Some(names) = &stage.clusters {
        return format!("names {}", names.join(","));
    }
    if stage.rest == Some(true) {
        return "the rest".into();
    }
    "nothing".into()
}

fn gates_summary(stage: &RolloutStage) -> String {
    let mut gates = vec!["health".to_string()];
    gates.extend(
        stage
            .gates
            .metrics
            .iter()
            .map(|m| format!("{} {} {}", m.name, m.comparison.as_str(), m.threshold)),
    );
    if stage.gates.policy == Some(true) {
        gates.push("policy".into());
    }
    if stage.gates.approval == Some(true) {
        gates.push("approval".into());
    }
    gates.join(", ")
}

/// Pure: the `Staged rollout:` section of `kurator describe application`: each stage, how it
/// selects, which clusters of the destination it holds now, its batches and gates.
pub fn stages_text(spec: &StagedRolloutSpec, assignment: &Assignment) -> String {
    let rows = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let clusters = assignment.clusters_of(i);
            let batches = batches(stage, clusters).len();
            vec![
                (i + 1).to_string(),
                stage.name.clone(),
                selector_text(stage),
                if clusters.is_empty() {
                    "(none)".into()
                } else {
                    clusters.join(",")
                },
                stage
                    .max_concurrent
                    .map_or_else(|| "all".into(), |m| m.to_string())
                    + &format!(" ({batches} batch{})", if batches == 1 { "" } else { "es" }),
                stage.soak.clone().unwrap_or_else(|| "-".into()),
                gates_summary(stage),
            ]
        })
        .collect();
    let mut out = format!(
        "Staged rollout: onFailure {:?}, progressDeadline {}\n",
        spec.on_failure,
        spec.progress_deadline.as_deref().unwrap_or("10m")
    );
    out.push_str(&text_table(
        &[
            "#", "STAGE", "SELECTS", "CLUSTERS", "AT ONCE", "SOAK", "GATES",
        ],
        rows,
        "  ",
    ));
    if !assignment.unassigned.is_empty() {
        out.push_str(&format!(
            "  Not in any stage (keep their revision): {}\n",
            assignment.unassigned.join(",")
        ));
    }
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
