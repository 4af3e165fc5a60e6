//! `Procs` itself, on what a test cannot see from a member: a member is
//! restarted on its own port, and when something else took the port while
//! the member was down, the restart fails and says which port.

use testkit::{Procs, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_port_taken_meanwhile_fails_naming_it_and_works_once_it_is_free() {
    let bin = testkit::strata_bin().expect("strata binary");
    let mut p = Procs::serve(&bin).await.expect("serve");
    let addr = p.addr("serve");
    p.kill("serve").expect("kill");
    // Another process's listener on the member's port.
    let squatter = std::net::TcpListener::bind(addr).expect("take the port");
    let e = p.start("serve").expect_err("the port is taken");
    assert!(
        e.to_string()
            .contains(&format!("member serve: cannot bind {addr} again")),
        "{e}"
    );
    drop(squatter);
    p.restart("serve").await.expect("restart on the freed port");
    let r = p.client().get("/healthz").await.expect("health");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(p.addr("serve"), addr);
}
