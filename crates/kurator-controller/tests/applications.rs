//! Application controller against real API servers.

use std::time::Duration;

use crate::common::{Harness, apply, wait_for};
use kube::Api;
use kurator_api::{Application, conditions};

fn app(yaml: &str) -> Application {
    serde_saphyr::from_str(yaml).expect("fixture")
}

const DEMO: &str = "
metadata: {name: demo}
spec:
  source:
    gitRepository: {url: 'http://127.0.0.1:1/repo.git', interval: 1m, ref: {branch: master}}
  destination: {fleet: quickstart}
  syncPolicies:
    - kustomization: {interval: 1m, prune: true, path: ./deploy}
";

#[tokio::test]
async fn without_flux_the_application_says_so_and_waits() {
    let h = Harness::start(0, Duration::from_secs(30)).await;
    let apps: Api<Application> = h.api();
    apply(&apps, "demo", &app(DEMO)).await;
    let a = wait_for(&apps, "demo", Duration::from_secs(30), |a| {
        a.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
    })
    .await;
    let ready = conditions::find(&a.status.unwrap().conditions, "Ready")
        .cloned()
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "FluxNotInstalled")
    );
    assert!(
        ready.message.contains("source.toolkit.fluxcd.io"),
        "{}",
        ready.message
    );

    // Deleting it still works: the finalizer has nothing to clean up.
    apps.delete("demo", &Default::default()).await.unwrap();
    crate::common::wait_gone(&apps, "demo", Duration::from_secs(30)).await;
    h.shutdown().await;
}
