//! prom: how every strata role speaks Prometheus, through the `prometheus`
//! client library (its data model, its per-instance [`Registry`] and its
//! text encoder), so no role writes exposition text by hand.
//!
//! Seams and main types:
//! - [`Family`] builds one metric family (counter, gauge or histogram)
//!   with HELP, TYPE and labelled samples.
//! - [`Section`] is a `prometheus` collector whose families are read at
//!   scrape time from state its owner keeps. Hot paths keep bumping their
//!   own relaxed atomics (a request costs no lock, no label lookup); a
//!   scrape turns them into families. This is client_golang's "const
//!   metrics" pattern for exporting state a program already has.
//! - [`Group`] bundles a part's collectors; [`register`] puts a collector in an instance's registry (two roles in
//!   one process, or two stores in one test, keep separate registries);
//!   [`render`] gathers a registry into the text format `promtool check
//!   metrics` reads ([`response`]: as a `/metrics` answer), and
//!   [`render_families`] does the same for families
//!   gathered without one (the queue reads its counts asynchronously).
//!
//! Plain counters that need nothing at scrape time use the library's own
//! [`IntCounter`] (see `store::StoreMetrics`).

use prometheus::core::Desc;
use prometheus::proto::{self, MetricType};
use prometheus::TextEncoder;

pub use prometheus::core::Collector;
pub use prometheus::proto::MetricFamily;
pub use prometheus::{IntCounter, Registry};

/// The `Content-Type` of the text format (0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// One metric family being built: its name, HELP, TYPE and samples.
#[derive(Debug, Clone)]
pub struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_owned());
        mf.set_help(help.to_owned());
        mf.set_field_type(kind);
        Family(mf)
    }

    /// A counter family (`name` ends in `_total`).
    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    /// A gauge family.
    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    /// A histogram family.
    pub fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::HISTOGRAM)
    }

    /// Samples so far.
    pub fn len(&self) -> usize {
        self.0.get_metric().len()
    }

    /// True without samples (a scrape leaves such a family out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a counter or gauge sample with `labels` (name, value).
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        debug_assert!(
            self.0.get_field_type() != MetricType::HISTOGRAM,
            "{}: a histogram takes add_histogram",
            self.0.name()
        );
        let mut m = proto::Metric::from_label(label_pairs(labels));
        if self.0.get_field_type() == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.0.mut_metric().push(m);
        self
    }

    /// The family with one unlabelled sample.
    pub fn with(mut self, value: f64) -> Self {
        self.add(&[], value);
        self
    }

    /// Adds a histogram sample: `buckets` are (upper bound, observations
    /// in that bucket alone), ascending; observations above the last bound
    /// go in a bucket bounded by `f64::INFINITY`. Cumulative counts and
    /// the total are worked out here.
    pub fn add_histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (f64, u64)>,
        sum: f64,
    ) -> &mut Self {
        let mut cumulative = 0;
        let mut out = Vec::new();
        for (le, n) in buckets {
            cumulative += n;
            // The encoder writes the `+Inf` bucket itself from the total;
            // given one, it would spell the bound `inf`.
            if le.is_infinite() {
                continue;
            }
            let mut b = proto::Bucket::default();
            b.set_upper_bound(le);
            b.set_cumulative_count(cumulative);
            out.push(b);
        }
        let mut h = proto::Histogram::default();
        h.set_bucket(out);
        h.set_sample_count(cumulative);
        h.set_sample_sum(sum);
        let mut m = proto::Metric::from_label(label_pairs(labels));
        m.set_histogram(h);
        self.0.mut_metric().push(m);
        self
    }

    fn describe(&self) -> Desc {
        let labels = self
            .0
            .get_metric()
            .first()
            .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
            .unwrap_or_default();
        Desc::new(
            self.0.name().to_owned(),
            self.0.help().to_owned(),
            labels,
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("metric family {}: {e}", self.0.name()))
    }
}

impl From<Family> for MetricFamily {
    fn from(f: Family) -> Self {
        f.0
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value((*v).to_owned());
            p
        })
        .collect()
}

type Read = Box<dyn Fn() -> Vec<Family> + Send + Sync>;

/// A collector whose families are read at scrape time by a closure over
/// the owner's state.
pub struct Section {
    descs: Vec<Desc>,
    read: Read,
}

impl Section {
    /// A section over `read`. It is called once here to describe the
    /// families (names, HELP, label names) for the registry's checks, so
    /// it must return every family it will ever return, empty or not.
    ///
    /// # Panics
    /// On a family name the library refuses: names are constants in the
    /// code, and every role's page is checked by tests.
    pub fn new(read: impl Fn() -> Vec<Family> + Send + Sync + 'static) -> Self {
        let descs = read().iter().map(Family::describe).collect();
        Section {
            descs,
            read: Box::new(read),
        }
    }
}

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.descs.iter().map(|d| d.fq_name.as_str()).collect();
        f.debug_struct("Section").field("families", &names).finish()
    }
}

impl Collector for Section {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.read)().into_iter().map(MetricFamily::from).collect()
    }
}

/// Several collectors as one: what a part hands to the registry of the
/// role it is built into (a store's counters and gauges into `serve`'s
/// node page, for instance).
#[derive(Default)]
pub struct Group(Vec<Box<dyn Collector>>);

impl Group {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `c`.
    pub fn with(mut self, c: impl Collector + 'static) -> Self {
        self.0.push(Box::new(c));
        self
    }

    /// Adds each of `counters` (clones share the count with the owner's).
    pub fn with_counters<'a>(mut self, counters: impl IntoIterator<Item = &'a IntCounter>) -> Self {
        for c in counters {
            self.0.push(Box::new(c.clone()));
        }
        self
    }
}

impl From<Vec<Box<dyn Collector>>> for Group {
    fn from(cs: Vec<Box<dyn Collector>>) -> Self {
        Group(cs)
    }
}

impl Collector for Group {
    fn desc(&self) -> Vec<&Desc> {
        self.0.iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.iter().flat_map(|c| c.collect()).collect()
    }
}

/// A library counter, for fields built in a `Default`.
///
/// # Panics
/// On a name the library refuses (names are constants in the code).
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("counter {name}: {e}"))
}

/// Adds `c` to `registry`.
///
/// # Panics
/// When a family of `c` is already registered there: two parts of one
/// role claiming one name is a wiring mistake, caught by every role's
/// metrics test rather than left to produce a page `promtool` rejects.
pub fn register(registry: &Registry, c: impl Collector + 'static) {
    let names: Vec<String> = c.desc().iter().map(|d| d.fq_name.clone()).collect();
    if let Err(e) = registry.register(Box::new(c)) {
        panic!("metrics {names:?} cannot be registered: {e}");
    }
}

/// The registry's families in the text format, sorted by name.
pub fn render(registry: &Registry) -> String {
    encode(&registry.gather())
}

/// A `/metrics` answer: the registry rendered, with the text format's
/// content type. Every role's server framework takes an `http::Response`
/// (axum as it is; the gateway after boxing the body).
pub fn response(registry: &Registry) -> http::Response<String> {
    let mut r = http::Response::new(render(registry));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// `families` in the text format, in the order given, leaving out those
/// without samples.
pub fn render_families(families: impl IntoIterator<Item = Family>) -> String {
    let mfs: Vec<MetricFamily> = families
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(MetricFamily::from)
        .collect();
    encode(&mfs)
}

fn encode(mfs: &[MetricFamily]) -> String {
    let mut out = String::new();
    // The encoder refuses only a family without samples or without a name;
    // both are filtered out or impossible above.
    if let Err(e) = TextEncoder::new().encode_utf8(mfs, &mut out) {
        return format!("# metrics could not be encoded: {e}\n");
    }
    out
}

#[cfg(test)]
mod tests;
