//! The binary's command line: help text and config errors that name the key.

use std::process::{Child, Command, Stdio};

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

/// `serve --listen listen` over `data` with `STRATA_LISTENER=stdin` and
/// `stdin` as its standard input, and the lines it printed up to its ready
/// line (all of them if it never got there).
fn serve_handed(data: &std::path::Path, listen: &str, stdin: Stdio) -> (Child, Vec<String>) {
    serve_with(data, listen, "off", |c| {
        c.env("STRATA_LISTENER", "stdin").stdin(stdin);
    })
}

/// `serve --listen listen --s3-listen s3` over `data`, its command
/// finished by `hand` (what it is handed), and the lines it printed up to
/// its ready line.
fn serve_with(
    data: &std::path::Path,
    listen: &str,
    s3: &str,
    hand: impl FnOnce(&mut Command),
) -> (Child, Vec<String>) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["serve", "--threads", "1", "--s3-listen", s3, "--data"])
        .arg(data)
        .args(["--listen", listen])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    hand(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut printed = Vec::new();
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        let ready = line.contains("strata serve: ready");
        printed.push(line);
        if ready {
            break;
        }
    }
    (child, printed)
}

/// Stops `child` and returns what it wrote to stderr.
fn stop(mut child: Child) -> String {
    use std::io::Read;
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// A listening socket handed over as standard input (`STRATA_LISTENER=
/// stdin`) is the one `serve --listen` uses: the port stays bound from the
/// moment the starter chose it, with no window for another process. The
/// starter's copy is closed after the spawn, so if `serve` ignored the
/// socket, its own bind would fail on the port its stdin still holds.
#[test]
fn serve_listens_on_the_socket_it_is_handed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tmp");
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let stdin = Stdio::from(std::os::fd::OwnedFd::from(l));
    let (child, printed) = serve_handed(dir.path(), &addr.to_string(), stdin);
    let ready = printed.iter().any(|l| l.contains("strata serve: ready"));
    if !ready {
        let err = stop(child);
        panic!("serve did not start on the handed socket: {printed:?}\n{err}");
    }
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    stop(child);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// `STRATA_LISTENER=stdin` with a standard input that is no socket is
/// ignored with a warning: the address is bound as usual.
#[test]
fn a_standard_input_that_is_no_socket_is_ignored() {
    let dir = tempfile::tempdir().expect("tmp");
    let (child, printed) = serve_handed(dir.path(), "127.0.0.1:0", Stdio::null());
    let err = stop(child);
    assert!(
        printed.iter().any(|l| l.contains("strata serve: ready")),
        "{printed:?}\n{err}"
    );
    assert!(err.contains("not a listening socket"), "{err}");
}

/// Several sockets handed over at once (`strata::sockets::hand_over`, a
/// Unix socket on standard input carrying them): `serve` takes the one for
/// `--listen` and the one for `--s3-listen`, and closes with a warning the
/// one its configuration does not name, so its clients are refused rather
/// than left waiting on a backlog nobody accepts from.
#[test]
fn serve_takes_each_handed_socket_for_its_address_and_closes_a_stray_one() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tmp");
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (main, s3, stray) = (bind(), bind(), bind());
    let [a_main, a_s3, a_stray] = [&main, &s3, &stray].map(|l| l.local_addr().expect("addr"));
    let (child, printed) = serve_with(dir.path(), &a_main.to_string(), &a_s3.to_string(), |c| {
        strata::sockets::hand_over(c, &[main, s3, stray]).expect("hand over");
    });
    // The starter's copies are gone with the closure: from here only the
    // child holds the ports.
    if !printed.iter().any(|l| l.contains("strata serve: ready")) {
        let err = stop(child);
        panic!("serve did not start on the handed sockets: {printed:?}\n{err}");
    }
    let ask = |addr, path: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    };
    let health = ask(a_main, "/healthz");
    // An unsigned S3 request: the S3 listener answers it with an S3 error.
    let s3_answer = ask(a_s3, "/");
    let refused = std::net::TcpStream::connect(a_stray);
    let err = stop(child);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(s3_answer.starts_with("HTTP/1.1 403"), "{s3_answer}");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    assert!(
        err.contains("not in the configuration") && err.contains(&a_stray.to_string()),
        "{err}"
    );
}
