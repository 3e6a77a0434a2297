//! Prometheus metrics: reconciles, errors and durations per controller; the controller's own
//! API requests ([`crate::requests`]).

use std::time::Instant;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::{error::Error, requests::RequestLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

/// The controller's metrics, registered once and shared.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    api_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kurator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0])
        });
        registry.register(
            "reconcile",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by controller",
            durations.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the host API server, by verb, group, resource and response class",
            api_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            api_requests,
        }
    }
}

impl Metrics {
    /// Starts timing one reconcile of `controller`; the measure is recorded when dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileMeasure<'_> {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileMeasure {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    pub fn error(&self, controller: &'static str, error: &Error) {
        let category = error.category().as_str();
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }

    /// `kurator_api_requests_total`, fed by [`crate::requests::CountRequestsLayer`].
    pub fn api_requests(&self) -> &Family<RequestLabels, Counter> {
        &self.api_requests
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileMeasure<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileMeasure<'_> {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        self.metrics
            .durations
            .get_or_create(&ControllerLabel {
                controller: self.controller,
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("fleet"));
        metrics.error("fleet", &Error::Internal("x".into()));
        let text = metrics.render();
        assert!(
            text.contains("kurator_reconcile_total{controller=\"fleet\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "kurator_reconcile_errors_total{controller=\"fleet\",category=\"internal\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("kurator_reconcile_duration_seconds_count{controller=\"fleet\"} 1"),
            "{text}"
        );
    }
}
