//! The gateway as a cluster member, with real processes: sticky sessions
//! that survive the death of their node and of a cache member, and a
//! SIGHUP reload that swaps the pool under load without a failed request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::{Client, Method, Procs, Resp, StatusCode};

mod common;
use common::bin;

/// The cookies a response sets, as `name=value` pairs.
fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .collect()
}

/// A cookie jar of one client: later cookies replace earlier ones of the
/// same name.
#[derive(Default)]
struct Jar(Vec<String>);

impl Jar {
    fn take(&mut self, r: &Resp) {
        for c in set_cookies(r) {
            let name = c.split('=').next().unwrap_or("").to_owned();
            self.0.retain(|x| !x.starts_with(&format!("{name}=")));
            self.0.push(c);
        }
    }
    fn header(&self) -> String {
        self.0.join("; ")
    }
}

/// `GET /v1/session` with the jar's cookies.
async fn get_session(gw: &Client, jar: &Jar, what: &str) -> Resp {
    gw.send(
        Method::GET,
        "/v1/session",
        &[("cookie", &jar.header())],
        vec![],
    )
    .await
    .expect(what)
}

/// Requests the gateway has sent to each node, from its own metrics.
async fn per_node(gw: &Client, p: &Procs, nodes: &[&str]) -> Vec<u64> {
    let text =
        String::from_utf8_lossy(&gw.get("/_strata/metrics").await.expect("m").body).into_owned();
    nodes
        .iter()
        .map(|n| {
            testkit::metric_value(
                &text,
                &format!(
                    "strata_gateway_backend_requests_total{{pool=\"nodes\",backend=\"{}\"}}",
                    p.addr(n)
                ),
            )
            .unwrap_or(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_session_survives_its_node_and_a_cache_member() {
    let extra = "[auth]\nsecret = \"cluster-secret\"\n\
                 [gateway]\nsticky = true\ncheck_interval_ms = 200\nconsecutive_failures = 1\n\
                 [cache]\nhot_replicas = 2\n";
    let mut p = Procs::cluster_with_gateway(bin(), 1, 1, 2, 2, extra)
        .await
        .expect("cluster");
    let gw = p.client();
    let nodes = ["node-1", "node-2"];
    let mut jar = Jar::default();

    // Create the cart: the gateway pins the client, the node names the
    // session; both come back as cookies.
    let r = gw
        .send(
            Method::PUT,
            "/v1/session",
            &[("content-type", "application/json")],
            r#"{"cart":["tabby.jpg"]}"#,
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    jar.take(&r);
    let names: Vec<&str> = jar
        .0
        .iter()
        .map(|c| c.split('=').next().unwrap_or(""))
        .collect();
    assert!(
        names.contains(&"strata_node_nodes") && names.contains(&"strata_session"),
        "{names:?}"
    );
    // Find the home node: the one whose count one pinned request raises.
    let probe = per_node(&gw, &p, &nodes).await;
    get_session(&gw, &jar, "probe").await;
    let before = per_node(&gw, &p, &nodes).await;
    let home = if before[0] > probe[0] { 0 } else { 1 };
    assert_eq!(before[home], probe[home] + 1, "{probe:?} -> {before:?}");

    // Pinned: every request goes to the same node.
    for _ in 0..10 {
        let r = get_session(&gw, &jar, "get").await;
        assert_eq!(&r.body[..], br#"{"cart":["tabby.jpg"]}"#);
        assert_eq!(r.header("content-type"), "application/json");
        jar.take(&r);
    }
    let after = per_node(&gw, &p, &nodes).await;
    assert_eq!(after[home], before[home] + 10, "{before:?} -> {after:?}");
    assert_eq!(after[1 - home], before[1 - home], "{before:?} -> {after:?}");

    // Its node dies: the session moves to the other node, with its data.
    p.kill(nodes[home]).expect("kill");
    let r = get_session(&gw, &jar, "get after kill").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(&r.body[..], br#"{"cart":["tabby.jpg"]}"#);
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("strata_node_nodes=")),
        "re-pinned to the survivor"
    );
    jar.take(&r);

    // The cart grows on the new node; then one cache member dies too: the
    // other replica still has it.
    let r = gw
        .send(
            Method::PUT,
            "/v1/session",
            &[
                ("cookie", &jar.header()),
                ("content-type", "application/json"),
            ],
            r#"{"cart":["tabby.jpg","siamese.jpg"]}"#,
        )
        .await
        .expect("put 2");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        !set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("strata_session=")),
        "same session"
    );
    p.kill("cache-1").expect("kill cache");
    for _ in 0..5 {
        let r = get_session(&gw, &jar, "get after cache kill").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], br#"{"cart":["tabby.jpg","siamese.jpg"]}"#);
    }

    // Bad input: an oversized session is refused and the old one stays; a
    // request without a session cookie finds nothing.
    let r = gw
        .send(
            Method::PUT,
            "/v1/session",
            &[("cookie", &jar.header())],
            vec![b'x'; (64 << 10) + 1],
        )
        .await
        .expect("put big");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = get_session(&gw, &jar, "get").await;
    assert_eq!(&r.body[..], br#"{"cart":["tabby.jpg","siamese.jpg"]}"#);
    let r = gw.get("/v1/session").await.expect("no cookie");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_pools_without_a_failed_request() {
    let extra = "[gateway]\ncheck_interval_ms = 200\n\
                 [[gateway.pool]]\nname = \"nodes\"\nbackends = [\"node-1\"]\n";
    let p = Procs::cluster_with_gateway(bin(), 1, 1, 0, 2, extra)
        .await
        .expect("cluster");
    let gw = p.client();
    assert_eq!(
        gw.put("/v1/blobs/cat.jpg", testkit::blob(1, 20_000))
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    let (n1, n2) = (p.client_of("node-1"), p.client_of("node-2"));
    assert_eq!(n2.metric("strata_node_gets_total").await.expect("m"), 0);

    // Clients read without pause while the gateway reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, bad) = (gw.clone(), stop.clone(), ok.clone(), bad.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match gw.get("/v1/blobs/cat.jpg").await {
                    Ok(r) if r.status == StatusCode::OK && r.body.len() == 20_000 => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let wait = |c: Client, series: &'static str, above: u64| async move {
        let what = format!("{series} passes {above}");
        testkit::until_async(&what, Duration::from_secs(10), async || {
            match c.metric(series).await.expect("metric") {
                n if n > above => Ok(()),
                n => Err(n.to_string()),
            }
        })
        .await
    };
    wait(n1.clone(), "strata_node_gets_total", 50).await;

    // Swap node-1 for node-2 in the file; SIGHUP.
    let text = std::fs::read_to_string(p.cfg_path()).expect("read cfg");
    let swapped = text.replace("backends = [\"node-1\"]", "backends = [\"node-2\"]");
    assert_ne!(text, swapped);
    std::fs::write(p.cfg_path(), &swapped).expect("write cfg");
    p.hangup("gateway").expect("hup");
    wait(n2.clone(), "strata_node_gets_total", 50).await;
    let n1_after = n1.metric("strata_node_gets_total").await.expect("m");

    // A broken file is refused; the running pool stays.
    std::fs::write(p.cfg_path(), format!("{swapped}\n[gateway.oops]\n")).expect("write bad");
    p.hangup("gateway").expect("hup");
    let n2_now = n2.metric("strata_node_gets_total").await.expect("m");
    wait(n2.clone(), "strata_node_gets_total", n2_now + 50).await;

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    assert_eq!(bad.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 150);
    // node-1 left the pool: at most the requests in flight at the swap
    // reached it afterwards.
    let n1_end = n1.metric("strata_node_gets_total").await.expect("m");
    assert!(n1_end <= n1_after + 4, "{n1_after} -> {n1_end}");
}
