//! `[gateway]`: pools resolved against members, and every validation error.

use crate::{ClusterConfig, Error};

const MEMBERS: &str = r#"
[[member]]
name = "idx"
role = "index"
addr = "127.0.0.1:7000"
data_dir = "/tmp/idx"
[[member]]
name = "s1"
role = "store"
addr = "127.0.0.1:7001"
data_dir = "/tmp/s1"
[[member]]
name = "n1"
role = "node"
addr = "127.0.0.1:7101"
[[member]]
name = "n2"
role = "node"
addr = "127.0.0.1:7102"
[[member]]
name = "gw"
role = "gateway"
addr = "127.0.0.1:7200"
"#;

fn key_of(text: &str) -> String {
    match ClusterConfig::parse(&format!("{text}\n{MEMBERS}")) {
        Err(Error::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn without_pools_every_node_is_in_one_pool() {
    let c = ClusterConfig::parse(MEMBERS).expect("parse");
    let pools = c.gateway.resolve(&c).expect("resolve");
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "nodes");
    assert_eq!(pools[0].algorithm, "hash");
    let addrs: Vec<String> = pools[0].backends.iter().map(|b| b.0.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:7101", "127.0.0.1:7102"]);
}

#[test]
fn pools_resolve_member_names_and_addresses() {
    let text = r#"
[auth]
secret = "k"
[gateway]
sticky = true
[[gateway.pool]]
name = "reads"
backends = ["n1", "127.0.0.1:9000"]
weights = [3, 1]
[[gateway.pool]]
name = "writes"
backends = ["n2"]
algorithm = "least-conn"
sticky = false
[[gateway.route]]
method = "PUT"
prefix = "/v1/"
pool = "writes"
[[gateway.route]]
header = "X-Tenant: big"
pool = "reads"
"#;
    let c = ClusterConfig::parse(&format!("{text}\n{MEMBERS}")).expect("parse");
    let p = c.gateway.resolve(&c).expect("resolve");
    assert_eq!(p[0].backends[0], ("127.0.0.1:7101".parse().unwrap(), 3));
    assert_eq!(p[0].backends[1], ("127.0.0.1:9000".parse().unwrap(), 1));
    assert!(p[0].sticky && !p[1].sticky);
    assert_eq!(p[1].algorithm, "least-conn");
    assert_eq!(c.gateway.routes[1].prefix, "/");
}

#[test]
fn bad_gateway_settings_name_their_key() {
    assert_eq!(
        key_of("[gateway]\nalgorithm = \"fastest\""),
        "gateway.algorithm"
    );
    assert_eq!(key_of("[gateway]\nsticky = true"), "auth.secret");
    assert_eq!(
        key_of("[[gateway.pool]]\nname = \"a\"\nbackends = []"),
        "gateway.pool[0].backends"
    );
    assert_eq!(
        key_of("[[gateway.pool]]\nname = \"a\"\nbackends = [\"idx\"]"),
        "gateway.pool[0].backends[0]"
    );
    assert_eq!(
        key_of("[[gateway.pool]]\nname = \"a\"\nbackends = [\"nowhere\"]"),
        "gateway.pool[0].backends[0]"
    );
    assert_eq!(
        key_of("[[gateway.pool]]\nname = \"a\"\nbackends = [\"n1\"]\nweights = [1, 2]"),
        "gateway.pool[0].weights"
    );
    assert_eq!(
        key_of(
            "[[gateway.pool]]\nname = \"a\"\nbackends = [\"n1\"]\n[[gateway.route]]\npool = \"b\""
        ),
        "gateway.route[0].pool"
    );
    assert_eq!(
        key_of("[[gateway.pool]]\nname = \"a\"\nbackends = [\"n1\"]\n[[gateway.route]]\npool = \"a\"\nheader = \"novalue\""),
        "gateway.route[0].header"
    );
    assert_eq!(
        key_of("[gateway]\nmax_ejection_percent = 101"),
        "gateway.max_ejection_percent"
    );
    assert_eq!(
        key_of("[gateway]\npanic_threshold_percent = 101"),
        "gateway.panic_threshold_percent"
    );
    assert_eq!(key_of("[gateway]\nrise = 0"), "gateway.rise");
    assert_eq!(
        key_of("[gateway]\ncheck_timeout_ms = 0"),
        "gateway.check_timeout_ms"
    );
    assert_eq!(key_of("[auth]\nadmin_token = \"a b\""), "auth.admin_token");
    // An unknown key is a parse error that names it.
    let e = ClusterConfig::parse("[gateway]\nalgoritm = \"p2c\"").unwrap_err();
    assert!(e.to_string().contains("algoritm"), "{e}");
}

#[test]
fn edge_settings_parse_and_bad_ones_name_their_key() {
    let text = r#"
[gateway]
request_id = true
response_headers = { remove = ["Server"], add = ["Via: strata"] }
[gateway.compression]
enabled = true
min_size = 512
codings = ["gzip"]
[gateway.access_log]
path = "-"
format = "json"
[gateway.tls]
listen = "0.0.0.0:8443"
redirect_http = true
[[gateway.tls.cert]]
cert = "a.pem"
key = "a.key"
[[gateway.route]]
prefix = "/v1/blobs/"
pool = "nodes"
compress = false
response_headers = { set = ["Cache-Control: public, max-age=60"] }
"#;
    let c = ClusterConfig::parse(&format!("{text}\n{MEMBERS}")).expect("parse");
    let g = &c.gateway;
    assert!(g.request_id && g.compression.enabled);
    assert_eq!(g.compression.min_size, 512);
    assert_eq!(g.access_log.as_ref().expect("log").buffer_bytes, 1 << 20);
    let tls = g.tls.as_ref().expect("tls");
    assert!(tls.redirect_http);
    assert_eq!(tls.certs[0].key.to_str(), Some("a.key"));
    assert_eq!(g.routes[0].compress, Some(false));
    assert_eq!(g.routes[0].response_headers.set.len(), 1);
    for (bad, key) in [
        (
            "[gateway.access_log]\npath = \"x\"\nformat = \"xml\"",
            "gateway.access_log.format",
        ),
        (
            "[gateway.access_log]\npath = \"x\"\nbuffer_bytes = 100",
            "gateway.access_log.buffer_bytes",
        ),
        (
            "[gateway.compression]\ngzip_level = 0",
            "gateway.compression.gzip_level",
        ),
        (
            "[gateway.compression]\nbrotli_quality = 12",
            "gateway.compression.brotli_quality",
        ),
        (
            "[gateway.compression]\ncodings = [\"zstd\"]",
            "gateway.compression.codings[0]",
        ),
        (
            "[gateway]\nresponse_headers = { set = [\"NoColon\"] }",
            "gateway.response_headers.set[0]",
        ),
        (
            "[gateway]\nrequest_headers = { remove = [\"bad name\"] }",
            "gateway.request_headers.remove[0]",
        ),
        (
            "[gateway.tls]\nlisten = \"127.0.0.1:1\"\ncert = []",
            "gateway.tls.cert",
        ),
        (
            "[[gateway.route]]\npool = \"nodes\"\nrequest_headers = { add = [\"X: a\\u000d\\u000aEvil: 1\"] }",
            "gateway.route[0].request_headers.add[0]",
        ),
    ] {
        assert_eq!(key_of(bad), key, "{bad}");
    }
    let e = ClusterConfig::parse("[gateway.tls]\nlisten = \"127.0.0.1:1\"\ncert = []\nsni = 1")
        .unwrap_err();
    assert!(e.to_string().contains("sni"), "{e}");
}
