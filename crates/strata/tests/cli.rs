//! The binary's command line: help text and config errors that name the key.

use std::process::Command;

fn strata(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn help_lists_every_role() {
    let (ok, text) = strata(&["--help"]);
    assert!(ok);
    for role in ["serve", "store", "index", "node"] {
        assert!(text.contains(role), "{text}");
    }
    let (ok, text) = strata(&["serve", "--help"]);
    assert!(ok);
    assert!(
        text.contains("--data") && text.contains("--listen"),
        "{text}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("[limits]\nmax_body_byts = 5\n", "max_body_byts"),
        (
            "[store]\ncompact_garbage_ratio = 2.0\n",
            "store.compact_garbage_ratio",
        ),
        (
            "[[member]]\nname = \"s\"\nrole = \"store\"\naddr = \"127.0.0.1:1\"\n",
            "member[0].data_dir",
        ),
        (
            "[[member]]\nname = \"s\"\nrole = \"stor\"\naddr = \"127.0.0.1:1\"\n",
            "stor",
        ),
    ];
    for (text, key) in cases {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).expect("write");
        let (ok, out) = strata(&[
            "store",
            "--config",
            p.to_str().expect("path"),
            "--name",
            "s",
        ]);
        assert!(!ok, "accepted bad config {text:?}");
        assert!(
            out.contains(key),
            "error for {text:?} does not name `{key}`: {out}"
        );
    }
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, "[[member]]\nname = \"i\"\nrole = \"index\"\naddr = \"127.0.0.1:1\"\ndata_dir = \"/tmp/x\"\n").expect("write");
    let (ok, out) = strata(&[
        "node",
        "--config",
        p.to_str().expect("path"),
        "--name",
        "nobody",
    ]);
    assert!(!ok);
    assert!(out.contains("nobody"), "{out}");
    let (ok, out) = strata(&["serve", "--config", "/does/not/exist.toml"]);
    assert!(!ok);
    assert!(out.contains("/does/not/exist.toml"), "{out}");
}

#[test]
fn gateway_rejects_an_unknown_algorithm() {
    let (ok, out) = strata(&[
        "gateway",
        "--backend",
        "127.0.0.1:1",
        "--algorithm",
        "fastest",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(out.contains("fastest"), "{out}");
    let (ok, out) = strata(&["gateway", "--listen", "127.0.0.1:0"]);
    assert!(!ok, "backends are required: {out}");
    let (ok, out) = strata(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1",
        "--route",
        "/x=nowhere",
    ]);
    assert!(!ok && out.contains("nowhere"), "{out}");
    let (ok, out) = strata(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--pool",
        "w=not-an-addr",
    ]);
    assert!(!ok && out.contains("not-an-addr"), "{out}");
}
