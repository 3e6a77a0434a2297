//! docs/rollout.md's walkthrough, as a user runs it in the playground `dev up --plugins`
//! started: its first run (v1) passed the canary's gates and reached production; clone the
//! shop's repository from `$KURATOR_GIT_SERVER` and push v2, whose ConfigMap makes the shop's
//! stand-in answer half its requests with 500: the canary alone gets it, its error-rate gate
//! fails with the measured value and the canary goes back to v1; production never leaves v1.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use super::{KURATOR, text, wait_until};

/// A run takes the GitRepository's interval, Flux's apply and health wait, the canary's 30 s
/// soak and production's apply: generous for a loaded 2-core machine.
const RUN: Duration = Duration::from_secs(180);

/// `status.stagedRollout` of the shop, as `kurator rollout status shop -o json` prints it.
fn rollout(host: &str) -> serde_json::Value {
    let out = Command::new(KURATOR)
        .args([
            "rollout",
            "status",
            "shop",
            "-o",
            "json",
            "--kubeconfig",
            host,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Each cluster's revision (the commit's first 7 hex digits), by name.
fn revisions(state: &serde_json::Value) -> Vec<(String, String)> {
    state["clusters"]
        .as_array()
        .map(|clusters| {
            clusters
                .iter()
                .map(|c| {
                    let revision = c["revision"].as_str().unwrap_or_default();
                    let sha = revision.rsplit(':').next().unwrap_or_default();
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        sha.chars().take(7).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=you",
            "-c",
            "user.email=you@example.invalid",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    out
}

/// Edits deploy/shop.yaml as the walkthrough's `sed` does, commits and pushes; returns the
/// commit's first 7 hex digits.
fn push(clone: &Path, edits: &[(&str, &str)], message: &str) -> String {
    let file = clone.join("deploy/shop.yaml");
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    for (from, to) in edits {
        assert!(yaml.contains(from), "{from:?} in deploy/shop.yaml");
        yaml = yaml.replace(from, to);
    }
    std::fs::write(&file, yaml).unwrap();
    git(clone, &["commit", "-qam", message]);
    git(clone, &["push", "-q"]);
    let head = git(clone, &["rev-parse", "HEAD"]);
    String::from_utf8_lossy(&head.stdout).trim()[..7].to_string()
}

/// The newest history entry, once the run `id` has ended.
fn ended(host: &str, id: i64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(RUN, &format!("run {id} of the shop to end"), || {
        last = rollout(host);
        last["run"].is_null() && last["history"][0]["id"] == id
    });
    last
}

pub fn staged_rollout(dev: &Path, host: &str, out: &str) {
    // The first run (v1) ended before `dev up` did, and its end screen shows the stages.
    assert!(
        out.contains("Application shop, rolled out stage by stage"),
        "{out}"
    );
    let first = rollout(host);
    assert_eq!(first["history"][0]["phase"], "Succeeded", "{first}");
    let v1 = revisions(&first);
    assert_eq!(v1.len(), 2, "{first}");
    assert_eq!(v1[0].1, v1[1].1, "both members on v1: {first}");

    let env = text(&super::kurator(dev, &["dev", "env"]));
    let git_server = env
        .lines()
        .find_map(|l| l.strip_prefix("export KURATOR_GIT_SERVER="))
        .unwrap_or_else(|| panic!("no KURATOR_GIT_SERVER in:\n{env}"));
    let clone = dev.join("walkthrough-shop");
    let cloned = Command::new("git")
        .args(["clone", "-q", &format!("{git_server}/shop.git")])
        .arg(&clone)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(cloned.status.success(), "{}", text(&cloned));

    // v2, a bad release: the canary alone gets it (production stays on v1), its error-rate
    // gate fails with the measured value, and the canary is rolled back to v1.
    let v2 = push(
        &clone,
        &[
            ("version: v1", "version: v2"),
            ("errorRate: \"0\"", "errorRate: \"0.5\""),
        ],
        "v2: a bad release",
    );
    let mut seen = serde_json::Value::Null;
    wait_until(RUN, "the canary alone on v2", || {
        seen = rollout(host);
        revisions(&seen)
            == [
                ("kurator-member1".to_string(), v2.clone()),
                ("kurator-member2".to_string(), v1[1].1.clone()),
            ]
    });
    let run = seen["lastRunId"].as_i64().unwrap();
    let done = ended(host, run);
    let last = &done["history"][0];
    assert_eq!(last["phase"], "RolledBack", "{done}");
    let gate = last["failedGates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["gate"] == "error-rate"))
        .unwrap_or_else(|| panic!("the failed error-rate gate in history: {done}"));
    assert_eq!(gate["cluster"], "kurator-member1", "{gate}");
    let value = gate["value"].as_f64().unwrap_or_else(|| panic!("{gate}"));
    assert!((0.05..=1.0).contains(&value), "measured {value}: {gate}");
    assert_eq!(gate["threshold"], 0.05, "{gate}");
    assert!(
        revisions(&done).iter().all(|(_, r)| *r == v1[0].1),
        "both members back on or still on v1: {done}"
    );

    // The table a user reads says the same.
    let table = Command::new(KURATOR)
        .args(["rollout", "status", "shop", "--kubeconfig", host])
        .output()
        .unwrap();
    let table = text(&table);
    assert!(table.contains("RolledBack"), "{table}");
    assert!(table.contains("error-rate"), "{table}");
}
