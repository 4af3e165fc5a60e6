//! strata's collapsed forwarding (the `[proxy]` settings of the cluster
//! file; the crate was called `proxy`, a name now left to the gateway's
//! reverse proxy, `balancer::proxy`).
//!
//! [`Collapser`] makes N concurrent misses of one key cost one origin
//! fetch. The first request for a key becomes the leader: its fetch runs in
//! a task of its own, so the leader's client going away does not cancel it
//! for the others. Later requests follow: they wait on a `watch` channel
//! (woken by notification, no polling) and get the same value or the same
//! error. An error is handed only to requests already waiting; the next
//! request starts a new fetch. Edge rules, each configurable
//! ([`CollapseOptions`]):
//!
//! - a flight older than `max_age` gets no new followers: the next request
//!   leads a new fetch (a stuck origin read does not hold everyone);
//! - a follower that waited `wait_timeout` fetches by itself;
//! - at most `max_waiters` follow one flight; a request beyond that fetches
//!   directly rather than queueing without bound.
//!
//! [`SharedBody`] streams one origin body to many readers as it arrives.
//!
//! Errors are one enum, [`Error`].

mod collapse;
mod shared;

pub use collapse::{CollapseMetrics, CollapseOptions, Collapser, Error};
pub use shared::{SharedBody, SharedReader};
