//! Building Prometheus metric families at scrape time, for the sources that export their own
//! series from counters they keep anyway (cache zones, the Redis link, upstream health,
//! compression, the access log). A source's `metric_families` builds its families fresh from
//! its atomics, so they cost the request path nothing; [`crate::metrics::Metrics::render`]
//! encodes them with the registered series.

use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

/// What building a family can fail with: only a bug (a bad name or label count) gets here.
pub(crate) type Result<T> = std::result::Result<T, prometheus::Error>;

/// One counter family from absolute values (read from counters that only grow).
pub(crate) fn counters<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    values: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
) -> Result<Vec<MetricFamily>> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    for (label_values, v) in values {
        vec.get_metric_with_label_values(&label_values)?.inc_by(v);
    }
    Ok(prometheus::core::Collector::collect(&vec))
}

/// One gauge family.
pub(crate) fn gauges<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    values: impl IntoIterator<Item = (Vec<&'a str>, i64)>,
) -> Result<Vec<MetricFamily>> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    for (label_values, v) in values {
        vec.get_metric_with_label_values(&label_values)?.set(v);
    }
    Ok(prometheus::core::Collector::collect(&vec))
}

/// A byte or object count as a gauge value (saturating: a gauge is an `i64`).
pub(crate) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
