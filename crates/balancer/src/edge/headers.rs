//! Header rules: set, add and remove headers, in the order given, and the
//! request id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One change to a header map.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderOp {
    /// Replace every value of the header with this one.
    Set(HeaderName, HeaderValue),
    /// Add a value, keeping those already there.
    Add(HeaderName, HeaderValue),
    /// Remove the header.
    Remove(HeaderName),
}

/// Changes applied in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps(pub Vec<HeaderOp>);

impl HeaderOps {
    /// From configuration lists: `remove` names first, then `set` and `add`
    /// entries of the form `Name: value`. `what` names the setting in
    /// errors.
    pub fn parse(
        what: &str,
        set: &[String],
        add: &[String],
        remove: &[String],
    ) -> Result<HeaderOps, Error> {
        let name = |n: &str| {
            n.trim()
                .parse::<HeaderName>()
                .map_err(|_| Error::Config(format!("{what}: bad header name `{n}`")))
        };
        let pair = |e: &String| -> Result<(HeaderName, HeaderValue), Error> {
            let (n, v) = e
                .split_once(':')
                .ok_or_else(|| Error::Config(format!("{what}: `{e}` is not `Name: value`")))?;
            let n = name(n)?;
            if crate::h1::HOP_BY_HOP.contains(&n.as_str()) || n == hyper::header::HOST {
                // The proxy owns framing and connection headers; a rule that
                // set them would break the exchange, not shape it.
                return Err(Error::Config(format!(
                    "{what}: `{n}` is managed by the gateway"
                )));
            }
            let v = HeaderValue::from_str(v.trim())
                .map_err(|_| Error::Config(format!("{what}: bad value in `{e}`")))?;
            Ok((n, v))
        };
        let mut ops = Vec::new();
        for n in remove {
            ops.push(HeaderOp::Remove(name(n)?));
        }
        for e in set {
            let (n, v) = pair(e)?;
            ops.push(HeaderOp::Set(n, v));
        }
        for e in add {
            let (n, v) = pair(e)?;
            ops.push(HeaderOp::Add(n, v));
        }
        Ok(HeaderOps(ops))
    }

    /// No changes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These changes followed by `then`'s (gateway-wide rules, then a
    /// route's own).
    pub fn then(&self, then: &HeaderOps) -> HeaderOps {
        HeaderOps(self.0.iter().chain(&then.0).cloned().collect())
    }

    /// Applies the changes to `h`.
    pub fn apply(&self, h: &mut HeaderMap) {
        for op in &self.0 {
            match op {
                HeaderOp::Set(n, v) => {
                    h.insert(n.clone(), v.clone());
                }
                HeaderOp::Add(n, v) => {
                    h.append(n.clone(), v.clone());
                }
                HeaderOp::Remove(n) => {
                    h.remove(n);
                }
            }
        }
    }
}

/// A new request id: 32 hex digits, unique per process (a counter) and
/// unlikely to repeat across processes (a random per-process key mixed in).
pub fn new_request_id() -> HeaderValue {
    static KEY: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; one hash of the time gives a
        // key that differs per process without a rand crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = xxhash_rust::xxh3::xxh3_128_with_seed(&n.to_le_bytes(), key);
    HeaderValue::from_str(&format!("{id:032x}")).unwrap_or(HeaderValue::from_static("0"))
}

/// The request's id: the client's `X-Request-Id` when it sent a usable one
/// (at most 128 visible ASCII characters), else a new one.
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    match h.get(&REQUEST_ID) {
        Some(v)
            if !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic) =>
        {
            v.clone()
        }
        _ => new_request_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order_and_refuse_framing_headers() {
        let ops = HeaderOps::parse(
            "t",
            &["Cache-Control: public, max-age=60".into()],
            &["Via: strata".into()],
            &["server".into()],
        )
        .expect("parse");
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("nginx"));
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        h.insert("via", HeaderValue::from_static("1.1 a"));
        ops.apply(&mut h);
        assert!(h.get("server").is_none());
        assert_eq!(h["cache-control"], "public, max-age=60");
        assert_eq!(h.get_all("via").iter().count(), 2);
        for bad in [
            "Transfer-Encoding: chunked",
            "Host: x",
            "Nope",
            "Bad Name: v",
        ] {
            assert!(
                HeaderOps::parse("t", &[bad.into()], &[], &[]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_ids_are_kept_or_made_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
