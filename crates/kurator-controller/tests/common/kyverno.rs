//! Two members with the real Kyverno: the real charts served on loopback (mirroring
//! Kyverno's chart repository), the controller running, and a `KyvernoStandIn` per member.

use std::time::Duration;

use kurator_controller::{Settings, plugins::render::ChartMirrors};
use kurator_testenv::{
    HelmRepo, KyvernoStandIn, KyvernoStandInParams, add_kyverno_charts, ensure_kyverno_binaries,
};

use super::Harness;

/// The chart repository Kyverno's charts are mirrored from.
const KYVERNO: &str = "https://kyverno.github.io/kyverno";

pub struct WithKyverno {
    pub h: Harness,
    /// Without cluster and kubeconfig: [`stand_in`] fills them in.
    pub params: KyvernoStandInParams,
    /// One per member, in member order.
    pub stand_ins: Vec<KyvernoStandIn>,
    /// Serves the charts while it lives.
    pub charts: (HelmRepo, tempfile::TempDir),
}

/// Starts the harness with `members` attached under these names and a stand-in per member.
pub async fn start(members: &[&str], timeout: Duration) -> WithKyverno {
    let binaries = tokio::task::spawn_blocking(ensure_kyverno_binaries)
        .await
        .unwrap()
        .expect("Kyverno binaries");
    let charts_dir = tempfile::tempdir().expect("temporary directory");
    let repo = HelmRepo::start(charts_dir.path().join("charts")).expect("chart repository");
    add_kyverno_charts(&repo).expect("the real Kyverno charts");
    let settings = Settings {
        health_interval: Duration::from_secs(10),
        chart_mirrors: ChartMirrors(vec![(KYVERNO.to_string(), repo.url())]),
        ..Default::default()
    };
    let h = Harness::start_with_settings(members.len(), true, settings).await;
    for (index, name) in members.iter().enumerate() {
        h.attach_member(name, index + 1).await;
    }
    let params = KyvernoStandInParams {
        binaries,
        cluster: String::new(),
        kubeconfig: Default::default(),
        state_dir: h.env.state_dir().to_path_buf(),
        timeout,
    };
    let mut stand_ins = Vec::new();
    for member in h.env.members() {
        stand_ins.push(stand_in(&params, member.name(), member.kubeconfig_path()).await);
    }
    WithKyverno {
        h,
        params,
        stand_ins,
        charts: (repo, charts_dir),
    }
}

/// A stand-in following `cluster`'s Deployments.
pub async fn stand_in(
    params: &KyvernoStandInParams,
    cluster: &str,
    kubeconfig: &std::path::Path,
) -> KyvernoStandIn {
    KyvernoStandIn::spawn(KyvernoStandInParams {
        cluster: cluster.to_string(),
        kubeconfig: kubeconfig.to_path_buf(),
        ..params.clone()
    })
    .await
    .expect("the Kyverno stand-in starts")
}
