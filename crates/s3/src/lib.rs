//! strata's S3-compatible API over the request node.
//!
//! The protocol layer (SigV4 in headers and presigned URLs, aws-chunked
//! payloads, the XML types and S3's error bodies) is the `s3s` crate;
//! this crate maps S3 onto strata's name index and stores:
//!
//! - [`names`]: a bucket is the key prefix `{bucket}/`, so the native
//!   `/v1/blobs` API sees the same objects; bucket records, multipart
//!   uploads and their parts live under reserved `_s3/` keys.
//! - [`Strata`] implements `s3s::S3` on a [`node::Node`], one module per
//!   kind of operation (`buckets`, `objects`, `listing`, `multipart`);
//!   [`list`] walks the index for ListObjects with a delimiter on any
//!   index backend; [`body`] maps node errors and reads ranges of objects
//!   in chunks.
//! - [`auth`]: access keys ([`Credentials`]), and anonymous reads of
//!   buckets made `public-read`.
//! - [`serve`] answers one listener; [`service`] builds the `s3s` service
//!   for a caller that brings its own.
//!
//! Errors of this crate are one enum, [`Error`].

pub mod auth;
pub mod body;
mod buckets;
mod error;
pub mod list;
mod listing;
mod multipart;
pub mod names;
mod objects;
mod service;

pub use auth::Credentials;
pub use error::Error;
pub use multipart::{spawn_sweeper, sweep_uploads};
pub use service::{serve, service, Options, Strata, HEALTH_PATH, MAX_PUT};
