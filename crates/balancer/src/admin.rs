//! The admin API: add, remove and drain backends at run time, without
//! dropping requests in flight. Every call needs `Authorization: Bearer
//! <admin token>`; without a configured token the API is off (403).
//!
//! | method | path | effect |
//! |---|---|---|
//! | GET | `/_strata/admin/pools` | pools and backends as JSON |
//! | POST | `/_strata/admin/pools/{pool}/backends/{addr}?weight=N` | add (201; 409 if present) |
//! | DELETE | `/_strata/admin/pools/{pool}/backends/{addr}` | remove (204; 409 for the last one) |
//! | POST | `/_strata/admin/pools/{pool}/backends/{addr}/drain` | no new requests (200) |
//! | POST | `/_strata/admin/pools/{pool}/backends/{addr}/undrain` | back in service (200) |
//!
//! A removed backend's requests in flight finish on the pool snapshot they
//! started with (see [`Gateway::set_backends`]); draining first lets an
//! operator watch its in-flight count reach zero on the status page. Runtime
//! changes last until the next reload, which puts the file's backends back
//! (HAProxy's runtime API behaves the same way).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{plain, UpBody};
use crate::gateway::Gateway;
use crate::router::Live;
use crate::Backend;

/// Answers one admin request.
pub async fn handle(live: &Live, req: Request<Incoming>) -> Response<UpBody> {
    let Some(token) = &live.admin_token else {
        return json(
            StatusCode::FORBIDDEN,
            r#"{"error":"forbidden","detail":"the admin API is off (no admin token configured)"}"#,
        );
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !cluster::auth::ct_eq(given.as_bytes(), token.as_bytes()) {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","detail":"Authorization: Bearer <admin token> required"}"#,
        );
    }
    let path = req.uri().path().trim_start_matches("/_strata/admin/");
    let parts: Vec<&str> = path.split('/').collect();
    let method = req.method().clone();
    let _g = live.changes.lock().await;
    let router = live.router();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["pools"]) => json(StatusCode::OK, &describe(&router.pools)),
        (_, ["pools", pool, "backends", addr, rest @ ..]) => {
            let Some((_, gw)) = router.pools.iter().find(|(n, _)| &**n == *pool) else {
                return error(StatusCode::NOT_FOUND, "no such pool");
            };
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                return error(StatusCode::BAD_REQUEST, "backend must be IP:PORT");
            };
            let weight = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("weight=")))
                .map(str::parse::<u32>);
            let weight = match weight {
                None => 1,
                Some(Ok(w)) if w > 0 => w,
                Some(_) => {
                    return error(StatusCode::BAD_REQUEST, "weight must be a positive integer")
                }
            };
            change(gw, &method, addr, weight, rest)
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

fn change(
    gw: &Gateway,
    method: &Method,
    addr: SocketAddr,
    weight: u32,
    rest: &[&str],
) -> Response<UpBody> {
    let pool = gw.pool();
    let at = pool.position(addr);
    match (method, rest, at) {
        (&Method::POST, [], Some(_)) => error(StatusCode::CONFLICT, "backend already in the pool"),
        (&Method::POST, [], None) => {
            let mut list = pool.backends.clone();
            list.push(Arc::new(Backend::new(addr, weight)));
            match gw.set_backends(list) {
                Ok(()) => {
                    tracing::info!(%addr, "backend added");
                    json(StatusCode::CREATED, r#"{"added":true}"#)
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::DELETE, [], Some(i)) => {
            if pool.backends.len() == 1 {
                return error(StatusCode::CONFLICT, "cannot remove a pool's last backend");
            }
            let mut list = pool.backends.clone();
            list.remove(i);
            match gw.set_backends(list) {
                Ok(()) => {
                    tracing::info!(%addr, "backend removed");
                    Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .body(empty())
                        .unwrap_or_else(|_| plain(StatusCode::NO_CONTENT, ""))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::POST, [verb @ ("drain" | "undrain")], Some(i)) => {
            let b = &pool.backends[i];
            b.draining.store(*verb == "drain", Ordering::Relaxed);
            tracing::info!(%addr, verb, "backend drain state changed");
            json(
                StatusCode::OK,
                &format!(
                    r#"{{"draining":{},"in_flight":{}}}"#,
                    b.is_draining(),
                    b.in_flight.load(Ordering::Relaxed)
                ),
            )
        }
        (_, _, None) => error(StatusCode::NOT_FOUND, "no such backend in the pool"),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// Pools and backends as JSON.
fn describe(pools: &[(Arc<str>, Arc<Gateway>)]) -> String {
    let now = Instant::now();
    let mut out = String::from(r#"{"pools":["#);
    for (pi, (name, gw)) in pools.iter().enumerate() {
        let pool = gw.pool();
        if pi > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"name":{},"algorithm":"{:?}","backends":["#,
            quote(name),
            pool.algorithm
        ));
        for (i, b) in pool.backends.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let state = if b.is_draining() {
                "draining"
            } else if pool.is_ejected(i, now) {
                "ejected"
            } else {
                "up"
            };
            out.push_str(&format!(
                r#"{{"addr":"{}","weight":{},"state":"{state}","in_flight":{},"requests":{},"ejections":{}}}"#,
                b.addr,
                b.weight,
                b.in_flight.load(Ordering::Relaxed),
                b.requests.load(Ordering::Relaxed),
                b.ejections.load(Ordering::Relaxed),
            ));
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if (c as u32) < 0x20 => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn empty() -> UpBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

fn json(status: StatusCode, body: &str) -> Response<UpBody> {
    let mut r = plain(status, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, detail: &str) -> Response<UpBody> {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    json(
        status,
        &format!(r#"{{"error":"{code}","detail":{}}}"#, quote(detail)),
    )
}
