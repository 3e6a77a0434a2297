use std::convert::Infallible;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
    client::Body,
};
use kurator_api::{Application, flux::Kustomization};
use tower::{ServiceExt as _, service_fn};

use super::*;

fn info(verb: &'static str, group: &str, resource: &str) -> RequestInfo {
    RequestInfo {
        verb,
        group: group.into(),
        resource: resource.into(),
    }
}

#[test]
fn paths_are_classified_as_the_api_server_does() {
    let k = "kustomize.toolkit.fluxcd.io";
    let cases = [
        // (method, path, query, expected)
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/ns/kustomizations",
            None,
            info("list", k, "kustomizations"),
        ),
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/ns/kustomizations",
            Some("labelSelector=a%3Db&watch=true&resourceVersion=5"),
            info("watch", k, "kustomizations"),
        ),
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations",
            Some("watch=1"),
            info("watch", k, "kustomizations"),
        ),
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations",
            Some("watch=false"),
            info("list", k, "kustomizations"),
        ),
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/watch/namespaces/ns/kustomizations",
            None,
            info("watch", k, "kustomizations"),
        ),
        (
            Method::GET,
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/ns/kustomizations/k0",
            None,
            info("get", k, "kustomizations"),
        ),
        (
            Method::PATCH,
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/ns/kustomizations/k0",
            Some("fieldManager=kurator&force=true"),
            info("patch", k, "kustomizations"),
        ),
        (
            Method::PATCH,
            "/apis/apps.kurator.dev/v1alpha1/namespaces/ns/applications/a/status",
            None,
            info("patch", "apps.kurator.dev", "applications/status"),
        ),
        (
            Method::PUT,
            "/apis/apps.kurator.dev/v1alpha1/namespaces/ns/applications/a",
            None,
            info("update", "apps.kurator.dev", "applications"),
        ),
        (
            Method::POST,
            "/api/v1/namespaces/ns/events",
            None,
            info("create", "", "events"),
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/ns/secrets/s",
            None,
            info("delete", "", "secrets"),
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/ns/secrets",
            None,
            info("deletecollection", "", "secrets"),
        ),
        (
            Method::GET,
            "/api/v1/secrets",
            None,
            info("list", "", "secrets"),
        ),
        // Namespaces themselves, and their subresources.
        (
            Method::GET,
            "/api/v1/namespaces",
            None,
            info("list", "", "namespaces"),
        ),
        (
            Method::GET,
            "/api/v1/namespaces/ns",
            None,
            info("get", "", "namespaces"),
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/ns/finalize",
            None,
            info("update", "", "namespaces/finalize"),
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/ns/status",
            None,
            info("patch", "", "namespaces/status"),
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kurator-controller",
            None,
            info("update", "coordination.k8s.io", "leases"),
        ),
        // Outside resources: discovery, version.
        (Method::GET, "/version", None, info("get", "", "")),
        (Method::GET, "/apis", None, info("get", "", "")),
        (Method::GET, "/api/v1", None, info("get", "", "")),
        (
            Method::GET,
            "/apis/fleet.kurator.dev/v1alpha1",
            None,
            info("get", "", ""),
        ),
    ];
    for (method, path, query, want) in cases {
        assert_eq!(
            classify(&method, path, query),
            want,
            "{method} {path}?{query:?}"
        );
    }
}

/// An API server that answers 404 to everything (500 for Secrets): enough to see what kube's
/// own request builders send through the layer.
async fn fake_api(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let status = if request.uri().path().contains("/secrets") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NOT_FOUND
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": status.as_u16(), "message": "not here",
    });
    Ok(Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap())
}

fn count(metrics: &Metrics, line: &str) -> u64 {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
}

#[tokio::test]
async fn counts_kube_requests_by_verb_resource_and_code() {
    let metrics = Metrics::default();
    let layer = CountRequestsLayer::new(metrics.api_requests().clone());
    let client = Client::new(layer.layer(service_fn(fake_api)), "default");

    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), "ns");
    let _ = kustomizations.list(&ListParams::default()).await;
    let _ = kustomizations.list(&ListParams::default()).await;
    let _ = kustomizations.get("k0").await;
    let _ = kustomizations
        .watch(&WatchParams::default(), "0")
        .await
        .map(|_| ());
    let patch = Patch::Apply(serde_json::json!({}));
    let _ = kustomizations
        .patch("k0", &PatchParams::apply("kurator"), &patch)
        .await;
    let _ = kustomizations.delete("k0", &DeleteParams::default()).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), "ns");
    let _ = apps
        .patch_status("a", &PatchParams::apply("kurator"), &patch)
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &Namespace::default())
        .await;
    let _ = Api::<Secret>::namespaced(client.clone(), "ns")
        .get("s")
        .await;

    let k = r#"group="kustomize.toolkit.fluxcd.io",resource="kustomizations",code="4xx"}"#;
    for (verb, n) in [
        ("list", 2),
        ("get", 1),
        ("watch", 1),
        ("patch", 1),
        ("delete", 1),
    ] {
        assert_eq!(
            count(
                &metrics,
                &format!("kurator_api_requests_total{{verb=\"{verb}\",{k}")
            ),
            n,
            "{verb}"
        );
    }
    assert_eq!(
        count(
            &metrics,
            r#"kurator_api_requests_total{verb="patch",group="apps.kurator.dev",resource="applications/status",code="4xx"}"#
        ),
        1
    );
    assert_eq!(
        count(
            &metrics,
            r#"kurator_api_requests_total{verb="create",group="",resource="namespaces",code="4xx"}"#
        ),
        1
    );
    assert_eq!(
        count(
            &metrics,
            r#"kurator_api_requests_total{verb="get",group="",resource="secrets",code="5xx"}"#
        ),
        1
    );
}

#[tokio::test]
async fn a_request_without_a_response_counts_as_error() {
    let metrics = Metrics::default();
    let mut service = CountRequestsLayer::new(metrics.api_requests().clone()).layer(service_fn(
        |_: Request<Body>| async { Err::<Response<Body>, _>(std::io::Error::other("refused")) },
    ));
    let request = Request::get("/api/v1/namespaces/ns/configmaps/c")
        .body(Body::empty())
        .unwrap();
    assert!(service.ready().await.unwrap().call(request).await.is_err());
    assert_eq!(
        count(
            &metrics,
            r#"kurator_api_requests_total{verb="get",group="",resource="configmaps",code="error"}"#
        ),
        1
    );
}
