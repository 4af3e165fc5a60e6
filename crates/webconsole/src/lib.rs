//! The web console under `/_strata/`: a person's view of a cluster and its
//! images. Plain HTML, CSS and JavaScript embedded in the binary (no build
//! step, no CDN); the pages call the public data APIs (`/v1/blobs`,
//! `/v1/search`, `/v1/jobs`) for browsing, uploads and search, and this
//! crate's own JSON for the rest:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/_strata/`, `/_strata/console.js`, `/_strata/console.css` | the pages |
//! | GET | `/_strata/api/cluster` | every member: role, state, figures, the last 15 minutes |
//! | GET | `/_strata/api/queues` | jobs by state per queue, with the dead letters |
//! | POST | `/_strata/api/jobs/{id}/kick` | a dead job back to ready (admin token) |
//! | DELETE | `/_strata/api/jobs/{id}` | deletes a job (admin token) |
//!
//! Seams: the members come from whoever starts the console ([`Member`]:
//! the cluster file's members, or `serve`'s in-process roles) and are read
//! the way Prometheus would read them ([`scrape`]), so the console needs
//! nothing from the roles but their metrics pages; the queue is a
//! [`queue::Handle`]; the HTTP server in front calls [`Console::handle`]
//! with the request's head and a small body (the balancer's `Pages` hook,
//! or a node's router).

mod assets;
mod sample;
pub mod scrape;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::sample::{lock, Watch};

/// What a member does; decides how it is read and what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The balancer in front (`/_strata/metrics`).
    Gateway,
    /// A request node (`/metrics`).
    Node,
    /// A blob store (`/metrics`).
    Store,
    /// The index (`/metrics`).
    Index,
    /// The job queue (`/metrics`).
    Queue,
    /// A search shard (`/metrics`).
    Search,
    /// A memcached-protocol cache member (`stats`).
    Cache,
}

impl Role {
    /// The role's name as the cluster file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Node => "node",
            Role::Store => "store",
            Role::Index => "index",
            Role::Queue => "queue",
            Role::Search => "search",
            Role::Cache => "cache",
        }
    }

    fn metrics_path(self) -> &'static str {
        match self {
            Role::Gateway => "/_strata/metrics",
            _ => "/metrics",
        }
    }
}

/// One member the console watches.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name (the cluster file's, or `serve`'s).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// `host:port` its metrics (or memcached `stats`) answer on; for a
    /// node, the address its gateway balances to, so the two are matched.
    pub addr: String,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// How often every member is read.
    pub sample_every: Duration,
    /// How much history is kept (15 minutes).
    pub window: Duration,
    /// Token the job actions need (`auth.admin_token`); none: actions off.
    pub admin_token: Option<String>,
    /// Whether writes need a token (the upload page asks for one).
    pub write_token_required: bool,
    /// The cluster's name on every page.
    pub title: String,
    /// memcached credential of the cache members (`strata <secret>`).
    pub cache_auth: Option<Vec<u8>>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            sample_every: Duration::from_secs(5),
            window: Duration::from_secs(15 * 60),
            admin_token: None,
            write_token_required: false,
            title: "strata".into(),
            cache_auth: None,
        }
    }
}

/// Dead letters listed per queue.
const DEAD_LISTED: usize = 100;
/// Largest request body the console's own API takes.
pub const MAX_BODY: usize = 64 * 1024;

/// The console: its members' figures and the handler of its paths.
#[derive(Clone)]
pub struct Console {
    watches: Arc<Mutex<Vec<Watch>>>,
    opts: Arc<ConsoleOptions>,
    jobs: Option<queue::Handle>,
}

impl Console {
    /// A console over `members` (read only once [`Console::spawn_sampler`]
    /// runs), acting on `jobs` when given.
    pub fn new(members: Vec<Member>, opts: ConsoleOptions, jobs: Option<queue::Handle>) -> Console {
        Console {
            watches: Arc::new(Mutex::new(members.into_iter().map(Watch::new).collect())),
            opts: Arc::new(opts),
            jobs,
        }
    }

    /// Replaces the members watched (their history starts over); for a
    /// process that learns its own roles' addresses after it made the
    /// console.
    pub fn set_members(&self, members: Vec<Member>) {
        *lock(&self.watches) = members.into_iter().map(Watch::new).collect();
    }

    /// Reads every member now, then every `sample_every`, until `stop`
    /// says true or its sender goes.
    pub fn spawn_sampler(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let (watches, opts) = (self.watches.clone(), self.opts.clone());
        let timeout = opts.sample_every.min(Duration::from_secs(2));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(opts.sample_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => sample::pass(&watches, opts.cache_auth.as_deref(), timeout, opts.window).await,
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                }
            }
        });
    }

    /// Whether `path` is one of the console's (the server in front sends
    /// only those here).
    pub fn owns(path: &str) -> bool {
        matches!(
            path,
            "/_strata" | "/_strata/" | "/_strata/console.js" | "/_strata/console.css"
        ) || path.starts_with("/_strata/api/")
    }

    /// Answers one request for a console path.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET | &Method::HEAD, "/_strata") => {
                let mut r = text(StatusCode::PERMANENT_REDIRECT, "text/plain", Bytes::new());
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/_strata/"));
                r
            }
            (&Method::GET | &Method::HEAD, "/_strata/") => {
                let page = assets::INDEX.replace("{{title}}", &escape(&self.opts.title));
                text(StatusCode::OK, "text/html; charset=utf-8", page.into())
            }
            (&Method::GET | &Method::HEAD, "/_strata/console.js") => text(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                assets::JS.into(),
            ),
            (&Method::GET | &Method::HEAD, "/_strata/console.css") => text(
                StatusCode::OK,
                "text/css; charset=utf-8",
                assets::CSS.into(),
            ),
            (&Method::GET, "/_strata/api/cluster") => self.cluster(),
            (&Method::GET, "/_strata/api/queues") => self.queues().await,
            _ => match path.strip_prefix("/_strata/api/jobs/") {
                Some(rest) => self.job_action(&method, rest, &req).await,
                None => error(StatusCode::NOT_FOUND, "not_found", "no such console path"),
            },
        }
    }

    fn cluster(&self) -> Response<Bytes> {
        let ws = lock(&self.watches);
        let v = serde_json::json!({
            "title": self.opts.title,
            "now_ms": sample::unix_ms(),
            "sample_ms": self.opts.sample_every.as_millis() as u64,
            "window_ms": self.opts.window.as_millis() as u64,
            "write_token_required": self.opts.write_token_required,
            "actions": self.opts.admin_token.is_some() && self.jobs.is_some(),
            "members": sample::views(&ws),
        });
        json(StatusCode::OK, &v)
    }

    async fn queues(&self) -> Response<Bytes> {
        let Some(jobs) = &self.jobs else {
            return json(StatusCode::OK, &serde_json::json!({ "queues": [] }));
        };
        match jobs.overview(DEAD_LISTED).await {
            Ok(v) => json(StatusCode::OK, &serde_json::json!({ "queues": v })),
            Err(e) => error(StatusCode::BAD_GATEWAY, "queue_unreachable", e.to_string()),
        }
    }

    async fn job_action(
        &self,
        method: &Method,
        rest: &str,
        req: &Request<Bytes>,
    ) -> Response<Bytes> {
        let (id, op) = match rest.split_once('/') {
            Some((id, op)) => (id, Some(op)),
            None => (rest, None),
        };
        let Ok(id) = id.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_job_id",
                "job ids are integers",
            );
        };
        let kick = match (method, op) {
            (&Method::POST, Some("kick")) => true,
            (&Method::DELETE, None) => false,
            _ => return error(StatusCode::NOT_FOUND, "not_found", "no such console path"),
        };
        if let Some(refused) = self.check_admin(req) {
            return refused;
        }
        let Some(jobs) = &self.jobs else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this cluster has no queue",
            );
        };
        let r = if kick {
            jobs.kick_job(id).await
        } else {
            jobs.delete(id).await
        };
        match r {
            Ok(()) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Bytes::new())
                .expect("static response"),
            Err(queue::Error::NotFound(_)) => {
                error(StatusCode::NOT_FOUND, "not_found", "no such job")
            }
            Err(e @ queue::Error::NotReserved(_)) => {
                error(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            Err(e) => error(StatusCode::BAD_GATEWAY, "queue_error", e.to_string()),
        }
    }

    /// 401/403 unless the request carries the admin token; 403 when the
    /// cluster has none (actions are off).
    fn check_admin(&self, req: &Request<Bytes>) -> Option<Response<Bytes>> {
        let Some(want) = &self.opts.admin_token else {
            return Some(error(
                StatusCode::FORBIDDEN,
                "actions_off",
                "console actions are off: set auth.admin_token",
            ));
        };
        let Some(given) = req.headers().get(header::AUTHORIZATION) else {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "actions need Authorization: Bearer <admin token>",
            ));
        };
        let token = given
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .unwrap_or_default();
        let same: bool = subtle::ConstantTimeEq::ct_eq(token, want.as_bytes()).into();
        (!same).then(|| error(StatusCode::FORBIDDEN, "forbidden", "wrong admin token"))
    }
}

fn text(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        // The pages change with the binary; the API with every sample.
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .expect("static response")
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Bytes> {
    text(status, "application/json", v.to_string().into())
}

fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response<Bytes> {
    json(
        status,
        &serde_json::json!({"error": code, "detail": detail.into()}),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, auth: Option<&str>) -> Request<Bytes> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Bytes::new()).expect("request")
    }

    fn console(admin: Option<&str>) -> Console {
        let opts = ConsoleOptions {
            admin_token: admin.map(str::to_owned),
            ..ConsoleOptions::default()
        };
        Console::new(Vec::new(), opts, None)
    }

    #[tokio::test]
    async fn actions_need_the_admin_token_and_refuse_clearly_without_one() {
        let kick = "/_strata/api/jobs/7/kick";
        // No admin token configured: actions are off, whatever is sent.
        let off = console(None)
            .handle(req(Method::POST, kick, Some("Bearer x")))
            .await;
        assert_eq!(off.status(), StatusCode::FORBIDDEN);
        assert!(String::from_utf8_lossy(off.body()).contains("actions_off"));

        let c = console(Some("tok"));
        let none = c.handle(req(Method::POST, kick, None)).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        let wrong = c.handle(req(Method::POST, kick, Some("Bearer nope"))).await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        // The right token, but this console has no queue.
        let right = c.handle(req(Method::POST, kick, Some("Bearer tok"))).await;
        assert_eq!(right.status(), StatusCode::NOT_FOUND);

        let bad_id = c
            .handle(req(
                Method::POST,
                "/_strata/api/jobs/x/kick",
                Some("Bearer tok"),
            ))
            .await;
        assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
        let bad_op = c
            .handle(req(
                Method::GET,
                "/_strata/api/jobs/7/kick",
                Some("Bearer tok"),
            ))
            .await;
        assert_eq!(bad_op.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pages_and_api_answer_without_members_and_never_carry_the_token() {
        let c = console(Some("secret-admin-token"));
        for path in [
            "/_strata/",
            "/_strata/console.js",
            "/_strata/console.css",
            "/_strata/api/cluster",
            "/_strata/api/queues",
        ] {
            assert!(Console::owns(path), "{path}");
            let r = c.handle(req(Method::GET, path, None)).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(
                !String::from_utf8_lossy(r.body()).contains("secret-admin-token"),
                "{path} shows the token"
            );
        }
        assert!(!Console::owns("/_strata/metrics"));
        let v: serde_json::Value = serde_json::from_slice(
            c.handle(req(Method::GET, "/_strata/api/cluster", None))
                .await
                .body(),
        )
        .expect("json");
        assert_eq!(v["actions"], false, "no queue: no actions");
        assert_eq!(v["members"], serde_json::json!([]));
    }
}
