//! Sessions (the seed's shopping cart): `GET/PUT/DELETE /v1/session`.
//!
//! A session is a small value (at most [`MAX_SESSION_BYTES`]) named by a
//! random 128-bit id in the `strata_session` cookie, which a PUT without
//! one creates. The data lives in the replicated global cache tier, never
//! in a node's memory alone: when the gateway moves a client to another
//! node (its node died or was drained), that node reads the same session.
//! A session lives `session_ttl_secs` after its last write.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::reply::error;
use crate::Node;

/// Largest session value, bytes.
pub const MAX_SESSION_BYTES: usize = 64 << 10;
/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "strata_session";

/// The session id in the request's cookies, if well formed.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == SESSION_COOKIE && is_id(v))
        .map(|(_, v)| v.to_owned())
}

fn is_id(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `bytes` random bytes from the OS's random source, in hex: session ids
/// here, and the gateway's default cookie secret in the binary.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `/v1/session`.
pub async fn session(State(node): State<Arc<Node>>, req: Request) -> Response {
    let Some(caching) = node.caching.as_ref().filter(|c| c.has_sessions()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_session_store",
            "sessions live in the global cache tier; this node has none",
        );
    };
    let id = session_id(req.headers());
    match *req.method() {
        Method::GET | Method::HEAD => {
            let Some(id) = id else {
                return error(StatusCode::NOT_FOUND, "no_session", "no session cookie");
            };
            match caching.get_session(&id).await {
                Some(raw) => {
                    let (ctype, data) = split(&raw);
                    let body = if req.method() == Method::HEAD {
                        Body::empty()
                    } else {
                        Body::from(data)
                    };
                    let mut r = Response::new(body);
                    if let Ok(v) = HeaderValue::from_str(&ctype) {
                        r.headers_mut().insert(header::CONTENT_TYPE, v);
                    }
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "no_session",
                    "session expired or unknown",
                ),
            }
        }
        Method::PUT => {
            let ctype = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.contains('\n'))
                .unwrap_or("application/octet-stream")
                .to_owned();
            let data = match Limited::new(req.into_body(), MAX_SESSION_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("a session holds at most {MAX_SESSION_BYTES} bytes"),
                    )
                }
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, "bad_body", "the body was cut off")
                }
            };
            let (id, created) = match id {
                Some(id) => (id, false),
                None => match random_hex(16) {
                    Ok(id) => (id, true),
                    Err(e) => {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "no_random",
                            e.to_string(),
                        )
                    }
                },
            };
            let mut raw = Vec::with_capacity(ctype.len() + 1 + data.len());
            raw.extend_from_slice(ctype.as_bytes());
            raw.push(b'\n');
            raw.extend_from_slice(&data);
            if !caching
                .put_session(&id, Bytes::from(raw), node.opts.session_ttl_secs)
                .await
            {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "no cache member took the session",
                );
            }
            let mut r = StatusCode::NO_CONTENT.into_response();
            if created {
                let c = format!(
                    "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
                    node.opts.session_ttl_secs
                );
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            r
        }
        Method::DELETE => {
            if let Some(id) = id {
                caching.delete_session(&id).await;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET, HEAD, PUT or DELETE",
        ),
    }
}

/// Stored form: content type, a newline, the data.
fn split(raw: &Bytes) -> (String, Bytes) {
    match raw.iter().position(|&b| b == b'\n') {
        Some(n) => (
            String::from_utf8_lossy(&raw[..n]).into_owned(),
            raw.slice(n + 1..),
        ),
        None => ("application/octet-stream".into(), raw.clone()),
    }
}
