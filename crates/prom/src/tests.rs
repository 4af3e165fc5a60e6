use super::*;

fn registry_of(read: impl Fn() -> Vec<Family> + Send + Sync + 'static) -> Registry {
    let r = Registry::new();
    register(&r, Section::new(read));
    r
}

#[test]
fn a_family_renders_help_type_and_labelled_samples() {
    let mut f = Family::counter("x_requests_total", "Requests, by \"kind\".");
    f.add(&[("kind", "get")], 3.0)
        .add(&[("kind", "p\"ut")], 1.0);
    let text = render_families([f, Family::gauge("x_empty", "Nothing yet.")]);
    assert_eq!(
        text,
        "# HELP x_requests_total Requests, by \"kind\".\n\
         # TYPE x_requests_total counter\n\
         x_requests_total{kind=\"get\"} 3\n\
         x_requests_total{kind=\"p\\\"ut\"} 1\n"
    );
}

#[test]
fn a_histogram_counts_cumulatively_and_ends_in_inf() {
    let mut f = Family::histogram("x_seconds", "Time.");
    f.add_histogram(
        &[("pool", "a")],
        [(0.5, 2), (1.0, 0), (f64::INFINITY, 1)],
        7.25,
    );
    f.add_histogram(&[("pool", "b")], [(0.5, 1), (1.0, 1)], 1.0);
    let text = render_families([f]);
    for line in [
        "x_seconds_bucket{pool=\"a\",le=\"0.5\"} 2\n",
        "x_seconds_bucket{pool=\"a\",le=\"1\"} 2\n",
        "x_seconds_bucket{pool=\"a\",le=\"+Inf\"} 3\n",
        "x_seconds_sum{pool=\"a\"} 7.25\n",
        "x_seconds_count{pool=\"a\"} 3\n",
        "x_seconds_bucket{pool=\"b\",le=\"+Inf\"} 2\n",
        "x_seconds_count{pool=\"b\"} 2\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(!text.contains("le=\"inf\""), "{text}");
}

#[test]
fn a_registry_reads_its_sections_at_every_scrape_in_name_order() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let r = registry_of(move || {
        vec![
            Family::gauge("x_z", "Last.").with(1.0),
            Family::counter("x_a_total", "First.").with(n2.load(Ordering::Relaxed) as f64),
        ]
    });
    n.store(41, Ordering::Relaxed);
    let text = render(&r);
    let a = text.find("x_a_total 41\n").expect(&text);
    assert!(a < text.find("x_z 1\n").expect(&text), "{text}");
    // A second, separate registry: one instance's families never leak
    // into another's.
    let other = registry_of(|| vec![Family::gauge("x_z", "Last.").with(2.0)]);
    assert_eq!(
        render(&other),
        "# HELP x_z Last.\n# TYPE x_z gauge\nx_z 2\n"
    );
}

#[test]
#[should_panic(expected = "cannot be registered")]
fn one_name_claimed_twice_in_a_registry_is_refused() {
    let r = registry_of(|| vec![Family::gauge("x_dup", "One.").with(1.0)]);
    register(
        &r,
        Section::new(|| vec![Family::gauge("x_dup", "One.").with(2.0)]),
    );
}

#[test]
#[should_panic(expected = "metric family x-bad")]
fn a_name_prometheus_refuses_is_caught_when_described() {
    let _ = Section::new(|| vec![Family::gauge("x-bad", "Dash.").with(1.0)]);
}

#[test]
fn a_counter_from_the_library_renders_through_the_same_registry() {
    let r = Registry::new();
    let c = IntCounter::new("x_hits_total", "Hits.").expect("counter");
    r.register(Box::new(c.clone())).expect("register");
    c.inc_by(5);
    assert_eq!(
        render(&r),
        "# HELP x_hits_total Hits.\n# TYPE x_hits_total counter\nx_hits_total 5\n"
    );
}

#[test]
fn a_group_registers_counters_and_sections_together() {
    let c = counter("x_puts_total", "Puts.");
    let g = Group::new().with_counters([&c]).with(Section::new(|| {
        vec![Family::gauge("x_items", "Items.").with(3.0)]
    }));
    let r = Registry::new();
    register(&r, g);
    c.inc();
    let text = render(&r);
    assert!(text.contains("\nx_items 3\n"), "{text}");
    assert!(text.contains("\nx_puts_total 1\n"), "{text}");
}
