//! Prometheus metrics of the gateway, served on `/metrics`.

use std::sync::atomic::AtomicU64;

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

/// Who a product's series page: the alert rules in contracts/alerts/ route on `owner`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProductLabels {
    pub(crate) product: String,
    pub(crate) version: String,
    pub(crate) domain: String,
    pub(crate) owner: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// The data products' service levels, as the last evaluation measured them.
#[derive(Default)]
pub(crate) struct ProductMetrics {
    pub(crate) freshness_age: Family<ProductLabels, F64Gauge>,
    pub(crate) freshness_sla: Family<ProductLabels, F64Gauge>,
    pub(crate) quality: Family<ProductLabels, F64Gauge>,
    pub(crate) quality_sla: Family<ProductLabels, F64Gauge>,
    pub(crate) conformant: Family<ProductLabels, Gauge>,
    pub(crate) rows: Family<ProductLabels, Gauge>,
    pub(crate) pii_findings: Family<ProductLabels, Gauge>,
    pub(crate) checked_at: Family<ProductLabels, F64Gauge>,
    /// Derived products only: 1 while the last refresh failed.
    pub(crate) refresh_failed: Family<ProductLabels, Gauge>,
}

impl ProductMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("product");
        r.register(
            "freshness_age_seconds",
            "Age of the product's newest data",
            self.freshness_age.clone(),
        );
        r.register(
            "freshness_sla_seconds",
            "The contract's sla.freshness",
            self.freshness_sla.clone(),
        );
        r.register(
            "quality_ratio",
            "Share of rows passing every column check of the contract",
            self.quality.clone(),
        );
        r.register(
            "quality_sla_ratio",
            "The contract's sla.quality",
            self.quality_sla.clone(),
        );
        r.register(
            "conformant",
            "1 when the product is served, 0 when it is quarantined",
            self.conformant.clone(),
        );
        r.register("rows", "Rows in the product", self.rows.clone());
        r.register(
            "pii_findings",
            "Non-PII columns whose values look like PII",
            self.pii_findings.clone(),
        );
        r.register(
            "checked_timestamp_seconds",
            "When the product was last evaluated (Unix time)",
            self.checked_at.clone(),
        );
        r.register(
            "refresh_failed",
            "Derived products: 1 when the last refresh failed (the last good data stays served)",
            self.refresh_failed.clone(),
        );
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<KindLabel, Counter>,
    pub(crate) errors: Family<CodeLabel, Counter>,
    pub(crate) latency: Family<KindLabel, Histogram>,
    pub(crate) rows: Counter,
    pub(crate) bytes: Counter,
    pub(crate) active_queries: Gauge,
    pub(crate) products: ProductMetrics,
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
        let products = ProductMetrics::default();
        products.register(&mut registry);
        Metrics {
            registry,
            products,
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
