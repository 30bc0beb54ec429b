//! The extender's request counters, exported on `GET /metrics` by `prometheus-client` in the OpenMetrics text format.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `sovra_extender_requests_total{verb}` | counter | calls of `filter` / `prioritize` / `preempt` / `bind` |
//! | `sovra_extender_bind_errors_total` | counter | bind calls answered with an `Error` |
//! | `sovra_extender_bad_requests_total` | counter | requests refused with HTTP 4xx (bad JSON, too large) |
//!
//! Counters are registered without the `_total` suffix: `prometheus-client` appends it to the samples (OpenMetrics
//! naming), so the sample names above are what a scrape sees.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: &'static str,
}

/// Request counters. Each field is a handle on a registered counter: `inc()` it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Filter calls.
    pub filter: Counter,
    /// Prioritize calls.
    pub prioritize: Counter,
    /// Preempt calls.
    pub preempt: Counter,
    /// Bind calls.
    pub bind: Counter,
    /// Bind calls answered with an error.
    pub bind_errors: Counter,
    /// Requests refused with HTTP 4xx (bad JSON, too large).
    pub bad_requests: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every counter, at zero (each verb's series exists before its first call).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<VerbLabel, Counter>::default();
        // A counter of the family, created now so that it is exported at 0; the clone shares its value.
        let verb = |verb| requests.get_or_create(&VerbLabel { verb }).clone();
        let (filter, prioritize, preempt, bind) = (verb("filter"), verb("prioritize"), verb("preempt"), verb("bind"));
        let (bind_errors, bad_requests) = (Counter::default(), Counter::default());
        registry.register("sovra_extender_requests", "Extender calls by verb", requests.clone());
        registry.register("sovra_extender_bind_errors", "Bind calls answered with an Error", bind_errors.clone());
        registry.register("sovra_extender_bad_requests", "Requests refused with HTTP 4xx", bad_requests.clone());
        Metrics { registry, filter, prioritize, preempt, bind, bind_errors, bad_requests }
    }

    /// The counters in the OpenMetrics text format (serve with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn exposed_names_keep_their_total_suffix_once() {
        let m = Metrics::new();
        m.filter.inc();
        m.bind.inc_by(2);
        m.bad_requests.inc_by(5);
        let text = m.render();
        for line in [
            "sovra_extender_requests_total{verb=\"filter\"} 1\n",
            "sovra_extender_requests_total{verb=\"prioritize\"} 0\n",
            "sovra_extender_requests_total{verb=\"preempt\"} 0\n",
            "sovra_extender_requests_total{verb=\"bind\"} 2\n",
            "sovra_extender_bind_errors_total 0\n",
            "sovra_extender_bad_requests_total 5\n",
            "# TYPE sovra_extender_requests counter\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
