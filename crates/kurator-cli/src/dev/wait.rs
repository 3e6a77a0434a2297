//! Waiting for the quickstart fleet, with visible progress.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use kurator_api::{Application, Fleet, conditions, rollout::RunPhase};

/// Polls the fleet until `expected` members are ready; shows a spinner on a terminal and
/// one line per change elsewhere.
pub async fn fleet_ready(
    api: &Api<Fleet>,
    name: &str,
    expected: i32,
    timeout: Duration,
) -> anyhow::Result<Fleet> {
    let bar = ProgressBar::new_spinner();
    if bar.is_hidden() {
        println!("Waiting for fleet {name} to become ready...");
    } else {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let fleet = api.get_opt(name).await?;
        let (line, done) = describe(fleet.as_ref(), name, expected);
        if line != last {
            if bar.is_hidden() {
                println!("  {line}");
            } else {
                bar.set_message(line.clone());
            }
            last = line.clone();
        }
        if done && let Some(fleet) = fleet {
            bar.finish_and_clear();
            println!("Fleet {name} is ready: {expected}/{expected} clusters.");
            return Ok(fleet);
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            bail!(
                "fleet {name} not ready after {}s: {line}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn describe(fleet: Option<&Fleet>, name: &str, expected: i32) -> (String, bool) {
    let Some(status) = fleet.and_then(|f| f.status.as_ref()) else {
        return (format!("fleet {name}: waiting for the controller"), false);
    };
    let ready = conditions::find(&status.conditions, conditions::READY);
    // A status written for an older spec (e.g. before plugins were added) does not count.
    let current = status.observed_generation == fleet.and_then(|f| f.metadata.generation);
    let done = current
        && status.ready_clusters == expected
        && ready.is_some_and(|c| c.status == conditions::TRUE);
    let why = ready.map(|c| c.message.clone()).unwrap_or_default();
    (
        format!(
            "fleet {name}: {}/{expected} clusters ready, phase {} ({why})",
            status.ready_clusters,
            status.phase.as_deref().unwrap_or("-")
        ),
        done,
    )
}

/// Polls the Application until its `Ready` condition is True, showing synced x/y.
pub async fn application_synced(
    api: &Api<kurator_api::Application>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<kurator_api::Application> {
    println!("Waiting for application {name} to sync...");
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let app = api.get_opt(name).await?;
        let status = app.as_ref().and_then(|a| a.status.as_ref());
        let ready = status.and_then(|s| conditions::find(&s.conditions, conditions::READY));
        let line = match (status, ready) {
            (Some(s), Some(c)) => format!(
                "application {name}: {} synced, {} ({})",
                s.synced.as_deref().unwrap_or("-"),
                c.reason,
                c.message
            ),
            _ => format!("application {name}: waiting for the controller"),
        };
        if line != last {
            println!("  {line}");
            last = line.clone();
        }
        if let (Some(app), Some(c)) = (app.clone(), ready)
            && c.status == conditions::TRUE
        {
            println!("Application {name} is synced on every cluster.");
            return Ok(app);
        }
        if Instant::now() > deadline {
            bail!(
                "application {name} not synced after {}s: {line}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls each member (name, client) until its Deployment `namespace/name` is Available, as
/// the member itself reports it; one line per change. Returns the last line of each member.
pub async fn deployment_available(
    members: &[(String, Client)],
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    println!("Waiting for Deployment {namespace}/{name} to be Available in every member...");
    let width = members.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
    let deadline = Instant::now() + timeout;
    let mut last = vec![String::new(); members.len()];
    loop {
        let mut all_available = true;
        for ((member, client), last) in members.iter().zip(last.iter_mut()) {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let (line, available) = match deployments.get_opt(name).await {
                Ok(deployment) => availability(deployment.as_ref()),
                Err(e) => (format!("unreachable: {e}"), false),
            };
            let line = format!("{member:<width$}  {line}");
            if line != *last {
                println!("  {line}");
                *last = line;
            }
            all_available &= available;
        }
        if all_available {
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!(
                "Deployment {namespace}/{name} not Available in every member after {}s: {}",
                timeout.as_secs(),
                last.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What a Deployment's status says about its availability (for its current spec), and
/// whether it is Available.
fn availability(deployment: Option<&Deployment>) -> (String, bool) {
    let Some(deployment) = deployment else {
        return ("no Deployment yet".into(), false);
    };
    let status = deployment.status.clone().unwrap_or_default();
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = format!("{}/{wanted} ready", status.ready_replicas.unwrap_or(0));
    // A status about an older spec says nothing about this one.
    let current = status.observed_generation >= deployment.metadata.generation;
    let condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available");
    match condition {
        Some(c) if current && c.status == conditions::TRUE => (format!("Available  {ready}"), true),
        Some(c) if current => {
            let reason = c.reason.as_deref().unwrap_or("NotAvailable");
            let message = c.message.as_deref().unwrap_or_default();
            (
                format!("not Available  {ready} ({reason}: {message})"),
                false,
            )
        }
        _ => (format!("not Available yet  {ready}"), false),
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn port_open(addr: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Polls the Application until its first staged run succeeded (every stage has the
/// revision) or ended otherwise (an error then, with the run's reason).
pub async fn first_rollout(
    api: &Api<Application>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Application> {
    println!("Waiting for Application {name}'s first staged rollout (soak and gates per stage)...");
    let deadline = Instant::now() + timeout;
    loop {
        let app = api.get_opt(name).await?;
        let state = app
            .as_ref()
            .and_then(|a| a.status.as_ref())
            .and_then(|s| s.staged_rollout.as_ref());
        let finished = state
            .filter(|s| s.run.is_none())
            .and_then(|s| s.history.first());
        match finished {
            Some(run) if run.phase == RunPhase::Succeeded => {
                return app.context("the Application was deleted");
            }
            Some(run) => bail!(
                "Application {name}: run {} ended {:?} at stage {}: {}",
                run.id,
                run.phase,
                run.stage,
                run.message.as_deref().unwrap_or("no message")
            ),
            None => {}
        }
        if Instant::now() > deadline {
            let paused = state
                .and_then(|s| s.run.as_ref())
                .and_then(|r| r.paused.as_ref())
                .map(|p| format!(" (paused: {})", p.message))
                .unwrap_or_default();
            bail!(
                "Application {name}: the first staged rollout did not finish within {}s{paused}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `file` exists, and returns its text, trimmed.
pub async fn file_text(file: &std::path::Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_string());
        }
        if Instant::now() > deadline {
            bail!("no {} after {}s", file.display(), timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the fleet until its policy summary counts results from `members` clusters and
/// `failing` fails in one of them.
pub async fn policy_summary(
    api: &Api<Fleet>,
    name: &str,
    members: usize,
    failing: &str,
    timeout: Duration,
) -> anyhow::Result<Fleet> {
    println!("Waiting for Kyverno's reports in fleet {name}'s policy summary...");
    let deadline = Instant::now() + timeout;
    loop {
        let fleet = api.get_opt(name).await?;
        let reported = fleet
            .as_ref()
            .and_then(|f| f.status.as_ref())
            .and_then(|s| s.policy_report.as_ref())
            .map_or(0, |r| {
                r.clusters
                    .iter()
                    .filter(|c| c.pass + c.fail + c.warn + c.error + c.skip > 0)
                    .count()
            });
        let fails = fleet
            .as_ref()
            .and_then(|f| f.status.as_ref())
            .and_then(|s| s.policy_report.as_ref())
            .is_some_and(|r| r.top_failing.iter().any(|p| p.policy == failing));
        if reported >= members
            && fails
            && let Some(fleet) = fleet
        {
            return Ok(fleet);
        }
        if Instant::now() > deadline {
            bail!(
                "fleet {name}: policy reports from {reported} of {members} clusters after {}s (waiting for a failing {failing} result too)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls the fleet-wide `promql` through Thanos Query at the URL the plugin support writes
/// (`url()`: `None` until it does) until every cluster of fleet `name` has series.
pub async fn fleet_query(
    host: kube::Config,
    name: &str,
    promql: &str,
    url: impl Fn() -> Option<String>,
    timeout: Duration,
) -> anyhow::Result<crate::metrics::render::QueryResult> {
    println!("Waiting for `{promql}` to answer from every cluster through Thanos Query...");
    let deadline = Instant::now() + timeout;
    loop {
        let last = match url() {
            None => "Thanos Query is not running yet".to_string(),
            Some(url) => {
                match crate::metrics::fleet_query(host.clone(), None, name, promql, Some(&url))
                    .await
                {
                    Ok(result)
                        if !result.series.is_empty()
                            && result.clusters_without_series.is_empty() =>
                    {
                        return Ok(result);
                    }
                    Ok(result) if result.series.is_empty() => "no series yet".to_string(),
                    Ok(result) => format!(
                        "no series from {} yet",
                        result.clusters_without_series.join(", ")
                    ),
                    Err(e) => format!("{e:#}"),
                }
            }
        };
        if Instant::now() > deadline {
            bail!(
                "fleet {name}: `{promql}` did not answer from every cluster after {}s: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(yaml: &str) -> Deployment {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    #[test]
    fn a_deployment_is_available_only_by_its_current_status() {
        assert_eq!(availability(None), ("no Deployment yet".to_string(), false));
        let available = deployment(
            "metadata: {name: webapp, generation: 2}
spec: {replicas: 1, selector: {}, template: {}}
status:
  observedGeneration: 2
  readyReplicas: 1
  conditions: [{type: Available, status: 'True', reason: MinimumReplicasAvailable}]
",
        );
        assert_eq!(
            availability(Some(&available)),
            ("Available  1/1 ready".to_string(), true)
        );
        let mut older = available.clone();
        older.metadata.generation = Some(3);
        assert_eq!(
            availability(Some(&older)),
            ("not Available yet  1/1 ready".to_string(), false)
        );
        let unavailable = deployment(
            "metadata: {name: webapp, generation: 1}
spec: {replicas: 2, selector: {}, template: {}}
status:
  observedGeneration: 1
  conditions:
  - {type: Available, status: 'False', reason: MinimumReplicasUnavailable, message: Deployment does not have minimum availability.}
",
        );
        assert_eq!(
            availability(Some(&unavailable)),
            (
                "not Available  0/2 ready (MinimumReplicasUnavailable: Deployment does not have minimum availability.)"
                    .to_string(),
                false
            )
        );
    }
}
