//! The gateway's edge settings in `[gateway]`: header rules, request ids,
//! compression, the access log and TLS.
//!
//! ```toml
//! [gateway]
//! request_id = true                    # X-Request-Id, made when absent
//! response_headers = { remove = ["Server"] }
//!
//! [gateway.compression]
//! enabled = true                       # gzip and brotli for text types
//!
//! [gateway.access_log]
//! path = "/var/log/strata/access.log"  # "-" = stdout
//! format = "json"                      # or "combined"
//!
//! [gateway.tls]
//! listen = "0.0.0.0:8443"
//! redirect_http = true                 # the plain listener answers 308
//! [[gateway.tls.cert]]
//! cert = "certs/img.example.com.pem"
//! key = "certs/img.example.com.key"
//!
//! [[gateway.route]]
//! prefix = "/v1/blobs/"
//! pool = "reads"
//! response_headers = { set = ["Cache-Control: public, max-age=31536000, immutable"] }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Header changes: `remove` first, then `set` (replace), then `add`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// `Name: value` entries that replace any value the header had.
    #[serde(default)]
    pub set: Vec<String>,
    /// `Name: value` entries added next to existing values.
    #[serde(default)]
    pub add: Vec<String>,
    /// Header names removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// No changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), Error> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
        };
        for (list, entries) in [("set", &self.set), ("add", &self.add)] {
            for (i, e) in entries.iter().enumerate() {
                let ok = e.split_once(':').is_some_and(|(n, v)| {
                    name_ok(n.trim()) && !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
                });
                if !ok {
                    return Err(invalid(
                        format!("{key}.{list}[{i}]"),
                        "must be `Name: value`".into(),
                    ));
                }
            }
        }
        for (i, n) in self.remove.iter().enumerate() {
            if !name_ok(n.trim()) {
                return Err(invalid(
                    format!("{key}.remove[{i}]"),
                    "must be a header name".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `[gateway.compression]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress responses of routes that do not say otherwise. Default
    /// false.
    pub enabled: bool,
    /// Smallest body compressed, bytes. Default 1024.
    pub min_size: u64,
    /// Content types compressed (exact, or a prefix ending in `/`);
    /// default text, JSON, JavaScript, XML and SVG. Raster images are
    /// never on it: they are compressed already.
    pub types: Option<Vec<String>>,
    /// Codings offered, preferred first: `br`, `gzip`. Default both.
    pub codings: Vec<String>,
    /// gzip level 1..=9. Default 5.
    pub gzip_level: u32,
    /// brotli quality 0..=11. Default 4.
    pub brotli_quality: u32,
}

impl Default for CompressionConfig {
    /// An empty `[gateway.compression]` table: off, 1 KiB and up, brotli
    /// then gzip.
    fn default() -> Self {
        CompressionConfig {
            enabled: false,
            min_size: 1024,
            types: None,
            codings: vec!["br".into(), "gzip".into()],
            gzip_level: 5,
            brotli_quality: 4,
        }
    }
}

/// `[gateway.access_log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// File appended to, or `-` for stdout.
    pub path: String,
    /// `combined` (default) or `json`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Bytes of lines that may wait for the writer; beyond that, lines
    /// are dropped (and counted) rather than slow requests down. Default
    /// 1 MiB (about a second of lines at 4,000 requests/s).
    #[serde(default = "default_buffer")]
    pub buffer_bytes: usize,
}

impl AccessLogConfig {
    /// A log to `path` (`-` = stdout) in `format`, default buffer.
    pub fn new(path: String, format: String) -> AccessLogConfig {
        AccessLogConfig {
            path,
            format,
            buffer_bytes: default_buffer(),
        }
    }
}

/// `[gateway.tls]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the TLS listener.
    pub listen: SocketAddr,
    /// The plain listener answers every request (but `/_strata/` pages)
    /// with 308 to the same URL over HTTPS. Default false.
    #[serde(default)]
    pub redirect_http: bool,
    /// Certificates; the first is the default for clients whose SNI name
    /// no certificate is valid for.
    #[serde(rename = "cert")]
    pub certs: Vec<CertConfig>,
}

/// `[[gateway.tls.cert]]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn default_format() -> String {
    "combined".into()
}
fn default_buffer() -> usize {
    1 << 20
}

fn invalid(key: String, reason: String) -> Error {
    Error::Invalid { key, reason }
}
