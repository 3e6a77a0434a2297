//! Counts the controller's own requests to the host API server: a tower [`Layer`] around the
//! host client's HTTP service, feeding `kurator_api_requests_total{verb, group, resource,
//! code}` (see [`crate::metrics::Metrics`]).
//!
//! - `verb` as the API server's audit log names it, from the method and the path: `get` (one
//!   object), `list` (a collection), `watch` (`?watch=true`, or the legacy `/watch/` prefix),
//!   `create`, `update`, `patch`, `delete`, `deletecollection`; for paths outside a resource
//!   (discovery, `/version`) the method in lower case.
//! - `group`: the API group, empty for the core group.
//! - `resource`: the resource's plural, with the subresource after a slash
//!   (`kustomizations`, `applications/status`); empty outside a resource.
//! - `code`: the response's class (`2xx`, `3xx`, `4xx`, `5xx`), or `error` when no response
//!   came (connection refused, timeout). A watch counts once, when its response starts.
//!
//! The layer sits outside kube's own stack, so a request kube retried internally counts once,
//! with its last answer.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use kube::{Client, Config, client::ClientBuilder};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Labels of `kurator_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub code: &'static str,
}

/// What a request does, from its method, path and query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: &'static str,
    pub group: String,
    /// `plural` or `plural/subresource`; empty for non-resource paths.
    pub resource: String,
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn instrumented_client(config: Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountRequestsLayer::new(metrics.api_requests().clone()))
        .build())
}

/// Counts every request that passes through it.
#[derive(Clone)]
pub struct CountRequestsLayer {
    counter: Family<RequestLabels, Counter>,
}

impl CountRequestsLayer {
    pub fn new(counter: Family<RequestLabels, Counter>) -> Self {
        Self { counter }
    }
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            counter: self.counter.clone(),
        }
    }
}

/// The service [`CountRequestsLayer`] wraps around the client's.
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    counter: Family<RequestLabels, Counter>,
}

impl<S, B, RB> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let info = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let counter = self.counter.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => status_class(response.status()),
                Err(_) => "error",
            };
            counter
                .get_or_create(&RequestLabels {
                    verb: info.verb,
                    group: info.group,
                    resource: info.resource,
                    code,
                })
                .inc();
            result
        })
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Subresources of a namespace (`/api/v1/namespaces/NAME/status`), as the API server's
/// request-info parser knows them: anything else after a namespace's name is a resource in it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The verb and resource of a request, parsed as the API server parses request paths:
/// `/api/v1/...` (core) or `/apis/GROUP/VERSION/...`, then optionally `namespaces/NS/`, then
/// `RESOURCE[/NAME[/SUBRESOURCE]]`.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, mut rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return non_resource(method),
    };
    let mut watch = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    });
    if let ["watch", tail @ ..] = rest {
        watch = true;
        rest = tail;
    }
    if let ["namespaces", _namespace, tail @ ..] = rest
        && tail
            .first()
            .is_some_and(|next| !NAMESPACE_SUBRESOURCES.contains(next))
    {
        rest = tail;
    }
    let (resource, named, subresource) = match rest {
        [] => return non_resource(method),
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, subresource, ..] => (*resource, true, Some(*subresource)),
    };
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    RequestInfo {
        verb,
        group: group.to_string(),
        resource: match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        },
    }
}

fn non_resource(method: &Method) -> RequestInfo {
    let verb = match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    RequestInfo {
        verb,
        group: String::new(),
        resource: String::new(),
    }
}

#[cfg(test)]
mod tests;
