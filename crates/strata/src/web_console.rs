//! The web console's wiring: which members it watches (a cluster file's,
//! or `serve`'s in-process roles), where its jobs view acts, and its pages
//! on a gateway's listener or, with no gateway, on a node's router.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use cluster::{ClusterConfig, Role};
use http_body_util::BodyExt;
use webconsole::{Console, ConsoleOptions, Member};

/// The console's settings from the cluster file.
pub fn options(cfg: &ClusterConfig, title: &str) -> ConsoleOptions {
    ConsoleOptions {
        sample_every: Duration::from_millis(cfg.console.sample_ms),
        admin_token: cfg.auth.admin_token.clone(),
        write_token_required: cfg.auth.write_token.is_some(),
        title: title.to_owned(),
        cache_auth: crate::cache_credential(cfg),
        ..ConsoleOptions::default()
    }
}

fn role_of(r: Role) -> webconsole::Role {
    match r {
        Role::Store => webconsole::Role::Store,
        Role::Index => webconsole::Role::Index,
        Role::Node => webconsole::Role::Node,
        Role::Cache => webconsole::Role::Cache,
        Role::Gateway => webconsole::Role::Gateway,
        Role::Queue => webconsole::Role::Queue,
        Role::Search => webconsole::Role::Search,
    }
}

/// Every member of the cluster file, at the address the others reach it.
pub fn cluster_members(cfg: &ClusterConfig) -> Vec<Member> {
    cfg.members
        .iter()
        .map(|m| Member {
            name: m.name.clone(),
            role: role_of(m.role),
            addr: m.addr.to_string(),
        })
        .collect()
}

/// The cluster's jobs: its queue member (with the cluster secret), else
/// PostgreSQL when the jobs live there, else none.
pub async fn cluster_jobs(cfg: &ClusterConfig) -> anyhow::Result<Option<queue::Handle>> {
    if let Some(q) = cfg.members.iter().find(|m| m.role == Role::Queue) {
        return Ok(Some(queue::Handle::Remote(crate::queue_client(cfg, q))));
    }
    if cfg.queue.backend == cluster::QueueBackend::Postgres {
        return Ok(Some(queue::Handle::Local(crate::pg_queue(cfg).await?)));
    }
    Ok(None)
}

/// A cluster's console, reading every member of the cluster file from
/// now until `stop`. A queue it cannot reach leaves the jobs view empty,
/// not the gateway down.
pub async fn start(
    cfg: &ClusterConfig,
    title: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Console {
    let jobs = match cluster_jobs(cfg).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "the console's jobs view is off");
            None
        }
    };
    let c = Console::new(cluster_members(cfg), options(cfg, title), jobs);
    c.spawn_sampler(stop);
    c
}

/// The console as the balancer's extra pages.
pub fn pages(c: &Console) -> balancer::edge::Pages {
    let c = c.clone();
    balancer::edge::Pages {
        owns: Console::owns,
        max_body: webconsole::MAX_BODY,
        serve: Arc::new(move |req| {
            let c = c.clone();
            Box::pin(async move { c.handle(req).await })
        }),
    }
}

/// The console on a node's router, for a public port with no gateway.
pub fn on_node(api: axum::Router, c: &Console) -> axum::Router {
    let c = c.clone();
    let route = move |req: Request| {
        let c = c.clone();
        async move {
            if !Console::owns(req.uri().path()) {
                return (axum::http::StatusCode::NOT_FOUND, "no such page\n").into_response();
            }
            let (parts, body) = req.into_parts();
            let body = match http_body_util::Limited::new(body, webconsole::MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body refused\n")
                        .into_response()
                }
            };
            let r = c.handle(Request::from_parts(parts, body)).await;
            Response::from(r.map(Body::from))
        }
    };
    api.route("/_strata/", axum::routing::any(route.clone()))
        .route("/_strata/{*rest}", axum::routing::any(route))
}
