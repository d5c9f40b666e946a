//! Registering a component's metric catalog, with a cardinality guard on every labeled family.
//!
//! A component builds its catalog once at start-up through a [`CatalogBuilder`], which puts each
//! metric into the component's prefixed registry (`manager_`, `gateway_`, `agent_`). Labeled
//! families come back as [`CappedFamily`]: past a configured number of distinct label sets, new
//! series are dropped, counted in `<component>_metrics_series_dropped_total{family}` and logged
//! once per family, so a flood of BMCs or sensor names cannot grow memory or the scrape without
//! bound (RFD 021, "Metric Cardinality Management").
//!
//! Names are given as the RFD writes them, except that counters are registered without their
//! `_total` suffix: prometheus-client appends it itself.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

/// Default cap on distinct label sets per family.
///
/// Large enough for a few hundred BMCs times a handful of sensors or operations, small enough
/// that a scrape of a full family stays well under a millisecond to encode.
pub const DEFAULT_SERIES_LIMIT: usize = 2000;

/// A gauge holding a float (sensor readings, timestamps).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Creates histograms with a fixed bucket set; the constructor of a histogram [`CappedFamily`].
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A labeled family registered so that it is always listed: prometheus-client leaves families
/// without series out of the exposition entirely, but our contract is that every catalog family
/// shows its `# HELP`/`# TYPE` from the first scrape, samples following once real events occur.
#[derive(Debug)]
struct Listed<F>(F);

impl<F: EncodeMetric> EncodeMetric for Listed<F> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The single label of `<component>_metrics_series_dropped_total`: the full family name.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FamilyLabel(String);

impl EncodeLabelSet for FamilyLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("family", self.0.as_str()).encode(encoder.encode_label())
    }
}

/// A labeled metric family with a cap on its number of series.
#[derive(Debug)]
pub struct CappedFamily<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    limit: usize,
    name: String,
    dropped: Family<FamilyLabel, Counter>,
    warned: AtomicBool,
    // Series count: Family::len is test-only in prometheus-client 0.26.
    len: AtomicUsize,
    // Serializes series creation so that the limit holds exactly under concurrency; the hot path
    // (an existing series) only takes the family's read lock.
    create: Mutex<()>,
}

impl<S, M, C> CappedFamily<S, M, C>
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    /// This family with its own series limit instead of the component's (per-agent families
    /// are sized to the fleet, not to the default).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// Runs `f` on the series for `labels`, creating it if the family is under its limit.
    ///
    /// Returns `None` (and counts the drop) when the series does not exist and the family is
    /// full.
    pub fn with<R>(&self, labels: &S, f: impl FnOnce(&M) -> R) -> Option<R> {
        if let Some(metric) = self.family.get(labels) {
            return Some(f(&metric));
        }
        let guard = self.create.lock().unwrap_or_else(|e| e.into_inner());
        if self.family.get(labels).is_some() || self.len.load(Ordering::Relaxed) < self.limit {
            if self.family.get(labels).is_none() {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            let metric = self.family.get_or_create(labels);
            drop(guard);
            return Some(f(&metric));
        }
        drop(guard);
        self.dropped
            .get_or_create(&FamilyLabel(self.name.clone()))
            .inc();
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "metric family {} reached its limit of {} series: new series are dropped \
                 (counted in *_metrics_series_dropped_total)",
                self.name,
                self.limit
            );
        }
        None
    }

    /// An owned handle on the series for `labels` (created under the cap), for hot paths that
    /// then count with one atomic operation and no lock.
    pub fn handle(&self, labels: &S) -> Option<M>
    where
        M: Clone,
    {
        self.with(labels, M::clone)
    }

    /// Whether the series for `labels` exists (without creating it).
    pub fn contains(&self, labels: &S) -> bool {
        self.family.get(labels).is_some()
    }

    /// Removes the series for `labels` (a server that left the inventory, a closed session).
    pub fn remove(&self, labels: &S) -> bool {
        let _guard = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let removed = self.family.remove(labels);
        if removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Number of series currently in the family.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when the family has no series yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Full exposed family name (with the component prefix).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<S, C> CappedFamily<S, Counter, C>
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<Counter>,
{
    /// Increments the counter for `labels` by one.
    pub fn inc(&self, labels: &S) {
        self.with(labels, |c| c.inc());
    }

    /// Increments the counter for `labels` by `v`.
    pub fn inc_by(&self, labels: &S, v: u64) {
        self.with(labels, |c| c.inc_by(v));
    }
}

impl<S, C> CappedFamily<S, Histogram, C>
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<Histogram>,
{
    /// Records one observation for `labels`.
    pub fn observe(&self, labels: &S, v: f64) {
        self.with(labels, |h| h.observe(v));
    }
}

/// Registers one component's metrics under its prefix.
#[derive(Debug)]
pub struct CatalogBuilder<'r> {
    registry: &'r mut Registry,
    prefix: &'static str,
    limit: usize,
    dropped: Family<FamilyLabel, Counter>,
}

impl<'r> CatalogBuilder<'r> {
    /// Opens the `prefix`ed sub-registry of `root` and registers the guard's own
    /// `<prefix>_metrics_series_dropped_total{family}` in it.
    pub fn new(root: &'r mut Registry, prefix: &'static str, series_limit: usize) -> Self {
        let registry = root.sub_registry_with_prefix(prefix);
        let dropped = Family::<FamilyLabel, Counter>::default();
        registry.register(
            "metrics_series_dropped",
            "New metric series dropped because their family reached its series limit",
            Listed(dropped.clone()),
        );
        CatalogBuilder {
            registry,
            prefix,
            limit: series_limit.max(1),
            dropped,
        }
    }

    /// The component prefix, e.g. `agent`.
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    fn put(&mut self, name: &str, help: &str, metric: impl Metric) {
        debug_assert!(
            !name.starts_with(self.prefix),
            "{name}: give names without prefix"
        );
        self.registry.register(name, help, metric);
    }

    fn capped<S, M, C>(&mut self, name: &str, family: Family<S, M, C>) -> CappedFamily<S, M, C> {
        CappedFamily {
            family,
            limit: self.limit,
            name: format!("{}_{}", self.prefix, name),
            dropped: self.dropped.clone(),
            warned: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            create: Mutex::new(()),
        }
    }

    /// A collector whose metrics are read at scrape time, under the component prefix.
    pub fn collector(&mut self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry.register_collector(collector);
    }

    /// An unlabeled counter; `name` without prefix and without `_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.put(name, help, c.clone());
        c
    }

    /// An unlabeled integer gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.put(name, help, g.clone());
        g
    }

    /// An unlabeled histogram with the given bucket set (see [`crate::buckets`]).
    pub fn histogram(&mut self, name: &str, help: &str, buckets: &'static [f64]) -> Histogram {
        let h = Buckets(buckets).new_metric();
        self.put(name, help, h.clone());
        h
    }

    /// A labeled counter family; `name` without prefix and without `_total`.
    pub fn counter_family<S>(&mut self, name: &str, help: &str) -> CappedFamily<S, Counter>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<S, Counter>::default();
        self.put(name, help, Listed(f.clone()));
        self.capped(name, f)
    }

    /// A labeled integer gauge family.
    pub fn gauge_family<S>(&mut self, name: &str, help: &str) -> CappedFamily<S, Gauge>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<S, Gauge>::default();
        self.put(name, help, Listed(f.clone()));
        self.capped(name, f)
    }

    /// A labeled float gauge family.
    pub fn float_gauge_family<S>(&mut self, name: &str, help: &str) -> CappedFamily<S, FloatGauge>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<S, FloatGauge>::default();
        self.put(name, help, Listed(f.clone()));
        self.capped(name, f)
    }

    /// A labeled family of ages (seconds since an event, computed at scrape time).
    pub fn age_family<S>(&mut self, name: &str, help: &str) -> CappedFamily<S, crate::age::Age>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<S, crate::age::Age>::default();
        self.put(name, help, Listed(f.clone()));
        self.capped(name, f)
    }

    /// A labeled histogram family with the given bucket set.
    pub fn histogram_family<S>(
        &mut self,
        name: &str,
        help: &str,
        buckets: &'static [f64],
    ) -> CappedFamily<S, Histogram, Buckets>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<S, Histogram, Buckets>::new_with_constructor(Buckets(buckets));
        self.put(name, help, Listed(f.clone()));
        self.capped(name, f)
    }
}

/// A label value that is one of a fixed set of names: the enums that keep label values bounded.
pub trait LabelName {
    /// The value as exposed.
    fn label_name(&self) -> &'static str;
}

/// Encodes any [`LabelName`] as a label value. Implement `LabelName` and call
/// [`impl_label_value!`](crate::impl_label_value) to make an enum usable in a label set.
pub fn encode_label_name(
    v: &impl LabelName,
    encoder: &mut prometheus_client::encoding::LabelValueEncoder,
) -> Result<(), std::fmt::Error> {
    EncodeLabelValue::encode(&v.label_name(), encoder)
}

/// Implements `EncodeLabelValue` for enums that implement [`LabelName`].
#[macro_export]
macro_rules! impl_label_value {
    ($($t:ty),* $(,)?) => {$(
        impl ::prometheus_client::encoding::EncodeLabelValue for $t {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder,
            ) -> ::std::result::Result<(), ::std::fmt::Error> {
                $crate::catalog::encode_label_name(self, encoder)
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
    struct Server {
        server_id: String,
    }

    #[test]
    fn family_past_its_limit_drops_and_counts() {
        let mut root = Registry::default();
        let mut b = CatalogBuilder::new(&mut root, "agent", 2);
        let fam = b.counter_family::<Server>("things", "Things");
        for id in ["a", "b", "c", "d"] {
            fam.inc(&Server {
                server_id: id.into(),
            });
        }
        // Existing series keep counting once the family is full.
        fam.inc(&Server {
            server_id: "a".into(),
        });
        assert_eq!(fam.len(), 2);
        let mut out = String::new();
        encode(&mut out, &root).unwrap();
        assert!(
            out.contains("agent_things_total{server_id=\"a\"} 2"),
            "{out}"
        );
        assert!(!out.contains("server_id=\"c\""), "{out}");
        assert!(
            out.contains("agent_metrics_series_dropped_total{family=\"agent_things\"} 2"),
            "{out}"
        );
    }

    // Console byte counters must be exact 64-bit atomics on every target we ship (armv7 has
    // them through ldrexd/strexd); cross/test runs this under qemu for both ARM targets.
    #[cfg(not(target_has_atomic = "64"))]
    compile_error!("conduit needs 64-bit atomics for its byte counters");

    #[test]
    fn counters_are_exact_64_bit_across_threads() {
        let c = Counter::<u64>::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        c.inc_by(3);
                    }
                    // Crosses 2^32 in total: a 32-bit counter would wrap.
                    c.inc_by(1 << 30);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 8 * 20_000 * 3 + 8 * (1 << 30));
        assert!(c.get() > u64::from(u32::MAX));
    }

    #[test]
    fn unlabeled_metrics_show_zero_and_families_show_nothing() {
        let mut root = Registry::default();
        let mut b = CatalogBuilder::new(&mut root, "gateway", 10);
        let _c = b.counter("plain", "Plain");
        let _h = b.histogram("lat_seconds", "Latency", crate::buckets::BMC);
        let _f =
            b.histogram_family::<Server>("by_server_seconds", "By server", crate::buckets::BMC);
        let mut out = String::new();
        encode(&mut out, &root).unwrap();
        assert!(out.contains("gateway_plain_total 0"), "{out}");
        assert!(
            out.contains("gateway_lat_seconds_bucket{le=\"30.0\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE gateway_by_server_seconds histogram"),
            "{out}"
        );
        assert!(!out.contains("gateway_by_server_seconds_"), "{out}");
        assert!(
            out.contains("# TYPE gateway_metrics_series_dropped counter"),
            "{out}"
        );
        assert!(
            !out.contains("gateway_metrics_series_dropped_total{"),
            "{out}"
        );
    }
}
