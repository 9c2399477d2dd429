//! Prometheus metrics of the gateway, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<KindLabel, Counter>,
    pub(crate) errors: Family<CodeLabel, Counter>,
    pub(crate) latency: Family<KindLabel, Histogram>,
    pub(crate) rows: Counter,
    pub(crate) bytes: Counter,
    pub(crate) active_queries: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshgate");
        let requests = Family::<KindLabel, Counter>::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let latency = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let rows = Counter::default();
        let bytes = Counter::default();
        let active_queries = Gauge::default();
        registry.register("requests", "Flight SQL requests by kind", requests.clone());
        registry.register(
            "errors",
            "Failed requests by gRPC status code",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency by kind, planning to last batch",
            latency.clone(),
        );
        registry.register("rows", "Rows streamed to clients", rows.clone());
        registry.register(
            "bytes",
            "Arrow IPC bytes streamed to clients",
            bytes.clone(),
        );
        registry.register(
            "active_queries",
            "Queries executing now",
            active_queries.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            latency,
            rows,
            bytes,
            active_queries,
        }
    }
}

impl Metrics {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
