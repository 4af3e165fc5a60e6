//! The cluster file: parsing, defaults and every validation error.

use super::*;

const GOOD: &str = r#"
replicas = 2
[auth]
write_token = "s3cret"
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
name = "s2"
role = "store"
addr = "127.0.0.1:7002"
data_dir = "/tmp/s2"
[[member]]
name = "n1"
role = "node"
addr = "127.0.0.1:8080"
"#;

#[test]
fn parses_a_good_file() {
    let c = ClusterConfig::parse(GOOD).expect("parse");
    assert_eq!(c.members.len(), 4);
    assert_eq!(c.effective_replicas(), 2);
    assert_eq!(c.limits.max_body_bytes, 5 << 40);
    assert_eq!(c.limits.chunk_mb, 64);
    assert_eq!(c.member("s2").expect("s2").role, Role::Store);
    assert!(matches!(c.member("zz"), Err(Error::UnknownMember(_))));
}

#[test]
fn unknown_key_is_named() {
    let text = GOOD.replace("write_token", "write_tokn");
    let err = ClusterConfig::parse(&text)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("write_tokn"), "{err}");
}

#[test]
fn unknown_top_level_key_is_named() {
    let text = format!("colour = 3\n{GOOD}");
    let err = ClusterConfig::parse(&text)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (GOOD.replace("replicas = 2", "replicas = 3"), "replicas"),
        (
            format!(
                "[limits]\nmax_body_bytes = 0\n{}",
                GOOD.replace("replicas = 2\n", "")
            ),
            "limits.max_body_bytes",
        ),
        (GOOD.replace("role = \"node\"", "role = \"nod\""), "nod"),
        (GOOD.replace("127.0.0.1:7002", "not-an-addr"), "addr"),
        (
            GOOD.replace("name = \"s2\"", "name = \"s1\""),
            "member[2].name",
        ),
        (
            GOOD.replace("data_dir = \"/tmp/s1\"\n", ""),
            "member[1].data_dir",
        ),
    ];
    for (text, key) in cases {
        let err = ClusterConfig::parse(&text).expect_err(key).to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
}
#[test]
fn bad_limits_and_member_settings_are_named() {
    let body = GOOD.replace("replicas = 2\n", "");
    let cases = [
        (
            format!("[limits]\nmax_connections = 0\n{body}"),
            "limits.max_connections",
        ),
        (
            format!("[limits]\nheader_timeout_ms = 0\n{body}"),
            "limits.header_timeout_ms",
        ),
        (
            format!("[limits]\nmax_header_bytes = 100\n{body}"),
            "limits.max_header_bytes",
        ),
        (
            format!("[limits]\nmax_headers = 0\n{body}"),
            "limits.max_headers",
        ),
        (
            format!("[limits]\nmax_conections = 5\n{body}"),
            "max_conections",
        ),
        (format!("[store]\nscrub_every = 5\n{body}"), "scrub_every"),
        (format!("[limits]\nchunk_mb = 0\n{body}"), "limits.chunk_mb"),
        (
            format!("[limits]\nchunk_mb = 200\n{body}"),
            "limits.chunk_mb",
        ),
        (
            format!("[s3]\nabandoned_upload_secs = 0\n{body}"),
            "s3.abandoned_upload_secs",
        ),
        (
            body.replace(
                "role = \"node\"",
                "role = \"node\"\ns3_addr = \"127.0.0.1:9000\"",
            ),
            "needs at least one [[s3.credentials]]",
        ),
        (
            format!("[[s3.credentials]]\naccess_key = \"K\"\n{body}"),
            "needs exactly one of secret_env and secret_file",
        ),
        (
            format!(
                "[[s3.credentials]]\naccess_key = \"K\"\nsecret_env = \"E\"\n{body}\
                 [[member]]\nname = \"g\"\nrole = \"gateway\"\naddr = \"127.0.0.1:80\"\n\
                 s3_addr = \"127.0.0.1:9000\"\n"
            ),
            "no node member has an s3_addr to balance across",
        ),
        (
            format!(
                "[[s3.credentials]]\naccess_key = \"K\"\nsecret_env = \"E\"\n{}",
                body.replace(
                    "role = \"store\"",
                    "role = \"store\"\ns3_addr = \"127.0.0.1:9000\"",
                )
            ),
            "only node members serve the S3 API, and gateways balance it",
        ),
        (format!("[s3]\nchunk_mb = 8\n{body}"), "chunk_mb"),
        (
            body.replace("role = \"node\"", "role = \"node\"\nmax_bytes = 10"),
            "max_bytes",
        ),
        (
            body.replace(
                "data_dir = \"/tmp/s1\"",
                "data_dir = \"/tmp/s1\"\nbind = \"0.0.0.0:7001\"",
            ),
            "auth.secret",
        ),
    ];
    for (text, key) in cases {
        let err = ClusterConfig::parse(&text).expect_err(key).to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
    // With the secret, the public bind is accepted.
    let ok = body
        .replace(
            "data_dir = \"/tmp/s1\"",
            "data_dir = \"/tmp/s1\"\nbind = \"0.0.0.0:7001\"",
        )
        .replace("[auth]\n", "[auth]\nsecret = \"k\"\n");
    assert!(ClusterConfig::parse(&ok).is_ok());
}

#[test]
fn bad_queue_session_and_idle_values_are_named() {
    let body = GOOD.replace("replicas = 2\n", "");
    let queue_member = "\n[[member]]\nname = \"q\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\n";
    let cases = [
        (
            format!("[queue]\nmax_payload_mb = 0\n{body}"),
            "queue.max_payload_mb",
        ),
        (
            format!("[queue]\nmax_payload_mb = 2048\n{body}"),
            "queue.max_payload_mb",
        ),
        (format!("[queue]\nattempts = 0\n{body}"), "queue.attempts"),
        (
            format!("[queue]\nthumbnail_widths = [128, 0]\n{body}"),
            "queue.thumbnail_widths",
        ),
        (
            format!("[queue]\nthumbnail_widths = [9000]\n{body}"),
            "queue.thumbnail_widths",
        ),
        (format!("[queue]\nworkerz = 2\n{body}"), "workerz"),
        (
            format!("[cache]\nsession_ttl_secs = 0\n{body}"),
            "cache.session_ttl_secs",
        ),
        (
            format!("[gateway]\nidle_timeout_ms = 0\n{body}"),
            "idle_timeout_ms",
        ),
        // A queue member needs a data directory, and there is one at most.
        (format!("{body}{queue_member}"), "data_dir"),
        (
            format!(
                "{body}{queue_member}data_dir = \"/q1\"\n{}data_dir = \"/q2\"\n",
                queue_member.replace("\"q\"", "\"q2\"")
            ),
            "queue",
        ),
    ];
    for (text, key) in cases {
        let err = ClusterConfig::parse(&text).expect_err(key).to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
    // The defaults hold together.
    let ok =
        ClusterConfig::parse(&format!("{body}{queue_member}data_dir = \"/q\"\n")).expect("valid");
    assert_eq!(ok.queue.thumbnail_widths, vec![128, 512]);
}

#[test]
fn bad_search_values_are_named() {
    let body = GOOD.replace("replicas = 2\n", "");
    let member = "\n[[member]]\nname = \"shard-1\"\nrole = \"search\"\naddr = \"127.0.0.1:7800\"\n";
    let cases = [
        ("[search]\ntimeout_ms = 0\n", "search.timeout_ms"),
        ("[search]\nwriter_threads = 0\n", "search.writer_threads"),
        ("[search]\nwriter_threads = 17\n", "search.writer_threads"),
        ("[search]\nwriter_mb = 8\n", "search.writer_mb"),
        (
            "[search]\nwriter_threads = 4\nwriter_mb = 32\n",
            "search.writer_mb",
        ),
        ("[search]\nserve_shards = 0\n", "search.serve_shards"),
        ("[search]\nreplicas = 0\n", "search.replicas"),
        ("[search]\nshards = 2\n", "shards"),
    ];
    for (head, key) in cases {
        let err = ClusterConfig::parse(&format!("{head}{body}"))
            .expect_err(key)
            .to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
    // A search member needs a data directory, and a queue member.
    let queue = "\n[[member]]\nname = \"q\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\ndata_dir = \"/q\"\n";
    let err = ClusterConfig::parse(&format!("{body}{queue}{member}"))
        .expect_err("no data_dir")
        .to_string();
    assert!(err.contains("data_dir"), "{err}");
    let err = ClusterConfig::parse(&format!("{body}{member}data_dir = \"/s\"\n"))
        .expect_err("no queue")
        .to_string();
    assert!(err.contains("queue"), "{err}");
    let ok =
        ClusterConfig::parse(&format!("{body}{queue}{member}data_dir = \"/s\"\n")).expect("valid");
    assert_eq!(ok.members_with(Role::Search).count(), 1);
    assert_eq!(ok.search, SearchConfig::default());
    assert_eq!(ok.search.replicas_among(1), 1);
    assert_eq!(ok.search.replicas_among(3), 2);
    // More replicas than search members cannot be placed.
    let err = ClusterConfig::parse(&format!(
        "[search]\nreplicas = 2\n{body}{queue}{member}data_dir = \"/s\"\n"
    ))
    .expect_err("too many replicas")
    .to_string();
    assert!(err.contains("search.replicas"), "{err}");
}

/// `GOOD` with the index in PostgreSQL: its index member removed.
fn pg_index(extra: &str) -> String {
    let without_member = GOOD.replace(
        "[[member]]\nname = \"idx\"\nrole = \"index\"\naddr = \"127.0.0.1:7000\"\ndata_dir = \"/tmp/idx\"\n",
        "",
    );
    format!("{without_member}\n{extra}")
}

#[test]
fn postgres_backends_are_checked_and_errors_name_the_key() {
    let url = "postgres://strata@db1:5432,db2:5432/strata?target_session_attrs=read-write";
    let ok = ClusterConfig::parse(&pg_index(&format!(
        "[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"PGPW\"\n"
    )))
    .expect("valid");
    assert_eq!(ok.index.backend, IndexBackend::Postgres);
    assert_eq!(ok.index.pg().url, Some(url));
    assert_eq!(ok.index.pool_size, 16);
    let cases = [
        ("[index]\nbackend = \"postgres\"\n".to_owned(), "index.url"),
        (
            "[index]\nbackend = \"postgres\"\nurl = \"postgres://strata:pw@db1/strata\"\n".to_owned(),
            "index.url",
        ),
        (
            "[index]\nbackend = \"postgres\"\nurl = \"postgres://strata@db1/strata?password=pw\"\n".to_owned(),
            "index.url",
        ),
        (
            "[index]\nbackend = \"postgres\"\nurl = \"mysql://db1/x\"\n".to_owned(),
            "index.url",
        ),
        (
            format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"A\"\npassword_file = \"/f\"\n"),
            "index.password_env",
        ),
        (
            format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 0\n"),
            "index.pool_size",
        ),
        (
            format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\nfailover_wait_ms = 0\n"),
            "index.failover_wait_ms",
        ),
        ("[index]\nbackend = \"sqlite\"\n".to_owned(), "backend"),
        (
            format!("[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\ncall_timeout_ms = 0\n"),
            "queue.call_timeout_ms",
        ),
        ("[queue]\nbackend = \"postgres\"\n".to_owned(), "queue.url"),
    ];
    for (head, key) in cases {
        let err = ClusterConfig::parse(&pg_index(&format!(
            "{head}{}",
            if head.starts_with("[queue]") {
                format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
            } else {
                String::new()
            }
        )))
        .expect_err(key)
        .to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
    // With PostgreSQL there is no index member; with redb, no URL.
    let err = ClusterConfig::parse(&format!(
        "{GOOD}\n[index]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ))
    .expect_err("index member")
    .to_string();
    assert!(err.contains("remove the `index` member"), "{err}");
    let err = ClusterConfig::parse(&format!("{GOOD}\n[index]\nurl = \"{url}\"\n"))
        .expect_err("url with redb")
        .to_string();
    assert!(err.contains("index.url"), "{err}");
    let err = ClusterConfig::parse(&pg_index(""))
        .expect_err("no index")
        .to_string();
    assert!(err.contains("index.backend"), "{err}");
    // Queue fronts over PostgreSQL: several, no data directory.
    let fronts = "\n[[member]]\nname = \"q1\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\n\
                  [[member]]\nname = \"q2\"\nrole = \"queue\"\naddr = \"127.0.0.1:7701\"\n";
    let ok = ClusterConfig::parse(&format!(
        "{GOOD}{fronts}\n[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ))
    .expect("fronts");
    assert_eq!(ok.members_with(Role::Queue).count(), 2);
    let err = ClusterConfig::parse(&format!("{GOOD}{fronts}"))
        .expect_err("two brokers")
        .to_string();
    assert!(err.contains("at most one `queue` member"), "{err}");
}
