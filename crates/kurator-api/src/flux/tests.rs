use super::*;
use kube::Resource;

#[test]
fn resources_address_flux_apis() {
    assert_eq!(
        GitRepository::url_path(&(), Some("default")),
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories"
    );
    assert_eq!(
        OCIRepository::url_path(&(), Some("ns")),
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/ns/ocirepositories"
    );
    assert_eq!(
        HelmRepository::url_path(&(), None),
        "/apis/source.toolkit.fluxcd.io/v1/helmrepositories"
    );
    assert_eq!(
        Kustomization::url_path(&(), Some("default")),
        "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations"
    );
    assert_eq!(
        HelmRelease::url_path(&(), Some("default")),
        "/apis/helm.toolkit.fluxcd.io/v2/namespaces/default/helmreleases"
    );
    assert_eq!(OCIRepository::kind(&()), "OCIRepository");
    assert_eq!(
        FluxKind::of::<OCIRepository>(),
        Some(FluxKind::OciRepository)
    );
    assert_eq!(FluxKind::of::<crate::Fleet>(), None);
}

/// Compiles only if the types work with typed Apis and reflector stores.
#[allow(dead_code)]
fn usable_with_kube(client: kube::Client) {
    let _: kube::Api<GitRepository> = kube::Api::namespaced(client.clone(), "default");
    let _: kube::Api<HelmRepository> = kube::Api::namespaced(client.clone(), "default");
    let _: kube::Api<OCIRepository> = kube::Api::namespaced(client.clone(), "default");
    let _: kube::Api<HelmRelease> = kube::Api::all(client.clone());
    let api: kube::Api<Kustomization> = kube::Api::all(client);
    let _ = kube::runtime::reflector(
        kube::runtime::reflector::store::Writer::<Kustomization>::default(),
        kube::runtime::watcher(api, Default::default()),
    );
}

#[test]
fn flux_kinds_are_not_our_crds() {
    let ours: Vec<String> = crate::crds::all()
        .iter()
        .map(|c| c.spec.group.clone())
        .collect();
    assert!(ours.iter().all(|g| !g.ends_with("fluxcd.io")));
}

#[test]
fn serialisation_writes_type_meta_and_omits_unset_fields() {
    let k = Kustomization::new(
        "demo",
        KustomizationSpec {
            source_ref: CrossNamespaceSourceReference {
                kind: "GitRepository".into(),
                name: "demo".into(),
                ..Default::default()
            },
            interval: "5m".into(),
            prune: true,
            ..Default::default()
        },
    );
    insta::assert_snapshot!(serde_json::to_string(&k).unwrap(), @r#"{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"demo"},"spec":{"sourceRef":{"kind":"GitRepository","name":"demo"},"interval":"5m","prune":true}}"#);
    let back: Kustomization = serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
    assert_eq!(back, k);
}

#[test]
fn decodes_flux_objects_with_status_and_unknown_fields() {
    let yaml = r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: demo-0-attachedcluster-kurator-member1
  namespace: default
  generation: 2
spec:
  interval: 5m0s
  path: ./deploy/webapp
  prune: true
  sourceRef:
    kind: GitRepository
    name: demo
  kubeConfig:
    secretRef:
      name: kurator-member1
      key: kurator-member1.config
  healthChecks: []
  deletionPolicy: MirrorPrune
status:
  observedGeneration: 2
  lastAppliedRevision: master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2
  lastAttemptedRevision: master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2
  conditions:
  - type: Ready
    status: "True"
    reason: ReconciliationSucceeded
    message: "Applied revision: master@sha1:dc830d02"
    lastTransitionTime: "2024-01-11T02:40:40Z"
  inventory:
    entries:
    - id: default_podinfo_apps_Deployment
      v: v1
"#;
    let k: Kustomization = serde_saphyr::from_str(yaml).unwrap();
    let status = k.status.as_ref().unwrap();
    assert_eq!(
        readiness(k.metadata.generation, Some(status)),
        FluxReadiness::Ready
    );
    assert_eq!(
        status.revision(),
        Some("master@sha1:dc830d02a6e0bcbf63bcc387e8bde57d5627aec2")
    );
    assert!(status.rest.contains_key("inventory"));
    assert_eq!(
        k.spec.kube_config.unwrap().secret_ref.key.as_deref(),
        Some("kurator-member1.config")
    );

    let git = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: demo, namespace: default, generation: 3}
spec: {interval: 3m0s, url: "https://github.com/stefanprodan/podinfo", ref: {branch: master}}
status:
  observedGeneration: 2
  artifact:
    revision: master@sha1:dc830d02
    digest: sha256:abc
    url: http://source-controller/gitrepository/default/demo/dc830d02.tar.gz
    lastUpdateTime: "2024-01-11T02:40:00Z"
    size: 1234
  conditions:
  - {type: Ready, status: Unknown, reason: Progressing}
"#;
    let g: GitRepository = serde_saphyr::from_str(git).unwrap();
    let status = g.status.as_ref().unwrap();
    // Generation 3, observed 2.
    assert!(matches!(
        readiness(g.metadata.generation, Some(status)),
        FluxReadiness::Progressing { reason: None, .. }
    ));
    assert_eq!(status.revision(), Some("master@sha1:dc830d02"));
    let copied = serde_json::to_value(status).unwrap();
    assert_eq!(copied["artifact"]["size"], 1234);
}

#[test]
fn derived_types_agree_with_flux_kind() {
    fn check<K: Resource<DynamicType = ()>>(kind: FluxKind) {
        assert_eq!(K::kind(&()), kind.as_str());
        assert_eq!(K::group(&()), kind.group());
        assert_eq!(K::version(&()), kind.version());
        assert_eq!(K::api_version(&()), kind.api_version());
        assert_eq!(FluxKind::of::<K>(), Some(kind));
    }
    check::<GitRepository>(GitRepository::KIND);
    check::<HelmRepository>(HelmRepository::KIND);
    check::<OCIRepository>(OCIRepository::KIND);
    check::<HelmChart>(HelmChart::KIND);
    check::<Kustomization>(Kustomization::KIND);
    check::<HelmRelease>(HelmRelease::KIND);
    assert_eq!(
        FluxKind::ALL.map(|k| k.as_str()),
        [
            GitRepository::kind(&()),
            HelmRepository::kind(&()),
            OCIRepository::kind(&()),
            HelmChart::kind(&()),
            Kustomization::kind(&()),
            HelmRelease::kind(&()),
        ]
    );
}

#[test]
fn status_is_written_only_when_set() {
    let mut r = HelmRelease::new(
        "r",
        HelmReleaseSpec {
            interval: "1m".into(),
            ..Default::default()
        },
    );
    insta::assert_snapshot!(serde_json::to_string(&r).unwrap(), @r#"{"apiVersion":"helm.toolkit.fluxcd.io/v2","kind":"HelmRelease","metadata":{"name":"r"},"spec":{"interval":"1m"}}"#);
    r.status = Some(FluxStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    insta::assert_snapshot!(serde_json::to_string(&r).unwrap(), @r#"{"apiVersion":"helm.toolkit.fluxcd.io/v2","kind":"HelmRelease","metadata":{"name":"r"},"spec":{"interval":"1m"},"status":{"observedGeneration":1}}"#);

    let g = GitRepository::new(
        "g",
        GitRepositorySpec {
            url: "https://example.com/repo".into(),
            interval: "5m".into(),
            ..Default::default()
        },
    );
    insta::assert_snapshot!(serde_json::to_string(&g).unwrap(), @r#"{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"GitRepository","metadata":{"name":"g"},"spec":{"url":"https://example.com/repo","interval":"5m"}}"#);
}

#[test]
fn missing_null_or_unknown_status_decodes() {
    let object = |status: &str| {
        format!(
            r#"{{"apiVersion":"helm.toolkit.fluxcd.io/v2","kind":"HelmRelease","metadata":{{"name":"r"}},"spec":{{"interval":"1m"}}{status}}}"#
        )
    };
    let none: HelmRelease = serde_json::from_str(&object("")).unwrap();
    assert_eq!(none.status, None);
    assert_eq!(none.spec.interval, "1m");
    let null: HelmRelease = serde_json::from_str(&object(r#","status":null"#)).unwrap();
    assert_eq!(null.status, None);
    let odd: HelmRelease = serde_json::from_str(&object(
        r#","status":{"phase":"Weird","conditions":[{"type":"Ready"},{"status":"True"}],"history":[{"x":1}]}"#,
    ))
    .unwrap();
    let status = odd.status.unwrap();
    assert_eq!(status.rest["phase"], "Weird");
    assert_eq!(status.conditions.len(), 2);
    assert!(matches!(
        readiness(None, Some(&status)),
        FluxReadiness::Progressing { .. }
    ));
}
