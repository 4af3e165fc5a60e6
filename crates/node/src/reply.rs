//! The JSON error body every answer of the node's HTTP surface uses
//! (`{error, detail}`), shared by the API and the session routes.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A JSON `{error, detail}` response.
pub fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": code, "detail": detail.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
