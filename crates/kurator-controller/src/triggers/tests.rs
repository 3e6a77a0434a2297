use std::collections::BTreeSet;

use kurator_api::{Application, AttachedCluster};

use super::*;
use crate::index::{
    Indexed, key_of,
    tests::{self as fixtures, fleet},
};

/// An AttachedCluster reading its kubeconfig from `<name>-kubeconfig`.
fn attached(name: &str, fleet: Option<&str>) -> AttachedCluster {
    fixtures::attached(name, &format!("{name}-kubeconfig"), fleet)
}

fn application(name: &str, fleet: &str) -> Application {
    let yaml = format!(
        "apiVersion: apps.kurator.dev/v1alpha1\nkind: Application\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  source:\n    gitRepository:\n      url: https://example.com/repo\n      interval: 1m\n  syncPolicies:\n  - destination:\n      fleet: {fleet}\n    kustomization:\n      interval: 5m\n      path: ./\n      prune: true\n"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

/// Everything the trigger table wakes for `change`, as (controller, object name).
fn woken(index: &Indexes, change: &Change) -> BTreeSet<(Controller, String)> {
    TRIGGERS
        .iter()
        .filter(|t| t.watched == change.key.kind)
        .flat_map(|t| {
            map(index, t, change)
                .into_iter()
                .map(move |k| (t.wakes, k.name))
        })
        .collect()
}

fn applied<T: Indexed>(index: &Indexes, obj: &T) -> Change {
    let before = index.applied(obj);
    Change {
        key: key_of(obj),
        before,
        after: Some(obj.summary()),
        fleet: None,
    }
}

fn deleted<T: Indexed>(index: &Indexes, obj: &T) -> Change {
    let key = key_of(obj);
    Change {
        before: index.deleted(&key),
        key,
        after: None,
        fleet: None,
    }
}

fn world() -> (Indexes, AttachedCluster) {
    let index = Indexes::default();
    index.applied(&fleet("quickstart", &["m1"]));
    index.applied(&application("app", "quickstart"));
    index.applied(&application("elsewhere", "other"));
    let m1 = attached("m1", Some("quickstart"));
    index.applied(&m1);
    (index, m1)
}

#[test]
fn a_deleted_attached_cluster_reaches_its_fleet_and_applications() {
    let (index, m1) = world();
    let change = deleted(&index, &m1);
    let woken = woken(&index, &change);
    assert!(woken.contains(&(Controller::Fleet, "quickstart".into())));
    assert!(woken.contains(&(Controller::Plugins, "quickstart".into())));
    assert!(woken.contains(&(Controller::Application, "app".into())));
    assert!(!woken.contains(&(Controller::Application, "elsewhere".into())));
}

#[test]
fn a_cluster_readiness_change_reaches_applications_of_its_fleet() {
    let (index, m1) = world();
    let change = applied(&index, &m1);
    let woken = woken(&index, &change);
    assert!(woken.contains(&(Controller::AttachedCluster, "m1".into())));
    assert!(woken.contains(&(Controller::Application, "app".into())));
}

#[test]
fn a_listed_but_unlabelled_cluster_reaches_the_fleets_listing_it() {
    let (index, _) = world();
    let m2 = attached("m2", None);
    index.applied(&fleet("second", &["m2"]));
    let woken = woken(&index, &applied(&index, &m2));
    assert!(woken.contains(&(Controller::Fleet, "second".into())));
    assert!(!woken.contains(&(Controller::Fleet, "quickstart".into())));
}

#[test]
fn a_label_moved_to_another_fleet_wakes_both() {
    let (index, _) = world();
    let moved = attached("m1", Some("other"));
    let woken = woken(&index, &applied(&index, &moved));
    assert!(woken.contains(&(Controller::Fleet, "quickstart".into())));
    assert!(woken.contains(&(Controller::Fleet, "other".into())));
    assert!(woken.contains(&(Controller::Application, "elsewhere".into())));
}

#[test]
fn a_kubeconfig_secret_wakes_the_clusters_reading_it() {
    let (index, _) = world();
    let change = Change {
        key: Key::new(Kind::Secret, "ns", "m1-kubeconfig"),
        before: None,
        after: None,
        fleet: None,
    };
    let woken = woken(&index, &change);
    assert_eq!(
        woken,
        [(Controller::AttachedCluster, "m1".to_string())].into()
    );
}

#[test]
fn a_fleet_change_wakes_membership_plugins_and_its_applications() {
    let (index, _) = world();
    let woken = woken(
        &index,
        &applied(&index, &fleet("quickstart", &["m1", "m2"])),
    );
    assert_eq!(
        woken,
        [
            (Controller::Fleet, "quickstart".to_string()),
            (Controller::Plugins, "quickstart".to_string()),
            (Controller::Application, "app".to_string()),
        ]
        .into()
    );
}

#[test]
fn a_member_policy_report_wakes_the_fleet_watching_it() {
    let index = Indexes::default();
    let change = Change {
        key: Key::new(Kind::MemberPolicyReport, "ns", "m1"),
        before: None,
        after: None,
        fleet: Some("quickstart".into()),
    };
    assert_eq!(
        woken(&index, &change),
        [(Controller::Plugins, "quickstart".to_string())].into()
    );
}

#[test]
fn every_watched_kind_wakes_some_controller_and_every_controller_its_own_kind() {
    for kind in Kind::ALL {
        assert!(TRIGGERS.iter().any(|t| t.watched == kind), "{kind:?}");
    }
    for c in [
        Controller::AttachedCluster,
        Controller::Fleet,
        Controller::Plugins,
        Controller::Application,
    ] {
        assert!(
            TRIGGERS
                .iter()
                .any(|t| t.wakes == c && t.watched == c.kind() && t.via == Mapper::Itself),
            "{c:?}"
        );
    }
}
