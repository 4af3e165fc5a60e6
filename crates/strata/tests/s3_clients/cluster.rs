//! Every client scenario again through a cluster's gateway, with a node
//! killed under load.

use super::*;

#[test]
fn every_node_of_a_cluster_serves_the_same_objects_over_s3_and_the_gateway_balances_them() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // Held from now and handed to the members with their main sockets.
    let s3 = |member: &str| (member.to_owned(), testkit::Socket::free().expect("socket"));
    let sockets = vec![s3("node-1"), s3("node-2"), s3("gateway")];
    let (a1, a2, g) = (
        sockets[0].1.addr(),
        sockets[1].1.addr(),
        sockets[2].1.addr(),
    );
    let layout = testkit::Layout {
        stores: 2,
        replicas: 2,
        nodes: 2,
        member_lines: vec![
            ("node-1".into(), format!("s3_addr = \"{a1}\"")),
            ("node-2".into(), format!("s3_addr = \"{a2}\"")),
            ("gateway".into(), format!("s3_addr = \"{g}\"")),
        ],
        sockets,
        ..Default::default()
    };
    let extra =
        "[[s3.credentials]]\naccess_key = \"CLUSTERKEY\"\nsecret_env = \"STRATA_TEST_S3_SECRET\"\n";
    let mut procs = rt
        .block_on(testkit::Procs::launch_with_env(
            bin(),
            layout,
            extra,
            &[("STRATA_TEST_S3_SECRET", "cluster-secret-1")],
        ))
        .expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path();
    let as_node = |addr: std::net::SocketAddr, args: &[&str]| {
        let mut c = Command::new("aws");
        c.args(["--endpoint-url", &format!("http://{addr}")])
            .args(args)
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", home.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("none"))
            .env("AWS_ACCESS_KEY_ID", "CLUSTERKEY")
            .env("AWS_SECRET_ACCESS_KEY", "cluster-secret-1")
            .env("AWS_DEFAULT_REGION", "us-east-1");
        c
    };
    ok(as_node(a1, &["s3", "mb", "s3://shared"]));
    let f = dir.path().join("f.bin");
    let data = testkit::blob(11, 70_000);
    std::fs::write(&f, &data).expect("write");
    ok(as_node(
        a1,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            f.to_str().expect("path"),
            "s3://shared/x/f.bin",
        ],
    ));
    // Another node's S3 endpoint and the gateway's native API see it.
    let back = dir.path().join("back.bin");
    ok(as_node(
        a2,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            "s3://shared/x/f.bin",
            back.to_str().expect("path"),
        ],
    ));
    assert_eq!(std::fs::read(&back).expect("read"), data);
    let ls = ok(as_node(a2, &["s3", "ls", "s3://shared/x/"]));
    assert!(ls.contains("70000 f.bin"), "{ls}");
    let (code, body) = http_get(&format!(
        "http://{}/v1/blobs/shared/x/f.bin",
        procs.addr("gateway")
    ));
    assert_eq!((code, body), (200, data.clone()));

    // The gateway's S3 listener: signatures made for its address verify
    // on the nodes (the Host header passes), a multipart upload with
    // `Expect: 100-continue` (aws-cli above 8 MiB) goes through, and a
    // presigned URL works.
    let big = dir.path().join("big.bin");
    let big_data = testkit::blob(12, 20 << 20);
    std::fs::write(&big, &big_data).expect("write");
    let big_s = big.to_str().expect("path");
    ok(as_node(
        g,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            big_s,
            "s3://shared/big.bin",
        ],
    ));
    let head = ok(as_node(
        g,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "shared",
            "--key",
            "big.bin",
        ],
    ));
    assert!(head.contains("-3\\\""), "three parts: {head}");
    let url = ok(as_node(g, &["s3", "presign", "s3://shared/x/f.bin"]));
    let (code, body) = http_get(url.trim());
    assert_eq!((code, body), (200, data));
    // Every client's whole scenario, through the gateway.
    let gw = S3Endpoint {
        http: procs.addr("gateway"),
        s3: g,
        access_key: "CLUSTERKEY".into(),
        secret_key: "cluster-secret-1".into(),
    };
    let scenarios: [(&str, Scenario); 4] = [
        ("aws-cli", aws_cli_scenario),
        ("boto3", boto3_scenario),
        ("rclone", rclone_scenario),
        ("s3cmd", s3cmd_scenario),
    ];
    for (name, scenario) in scenarios {
        let w = dir.path().join(name);
        std::fs::create_dir_all(&w).expect("mkdir");
        scenario(&gw, &w);
    }
    // A node dies: the gateway's S3 keeps answering from the other one.
    procs.kill("node-1").expect("kill");
    for i in 0..6 {
        let back = dir.path().join(format!("big-{i}.bin"));
        ok(as_node(
            g,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                "s3://shared/big.bin",
                back.to_str().expect("path"),
            ],
        ));
        assert!(std::fs::read(&back).expect("read") == big_data, "round {i}");
        std::fs::remove_file(&back).expect("rm");
    }
    let ls = ok(as_node(g, &["s3", "ls", "s3://shared/"]));
    assert!(ls.contains("big.bin") && ls.contains("PRE x/"), "{ls}");
}
