//! The pages, embedded in the binary: no build step, nothing fetched from
//! anywhere but the server that serves them.

/// The one HTML page; `{{title}}` is replaced with the cluster's name.
pub const INDEX: &str = include_str!("../assets/index.html");
/// Every view's code.
pub const JS: &str = include_str!("../assets/console.js");
/// The style sheet.
pub const CSS: &str = include_str!("../assets/console.css");
