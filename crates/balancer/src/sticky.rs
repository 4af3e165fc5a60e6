//! Sticky sessions: a cookie the gateway inserts that names the backend a
//! client was sent to, signed with the cluster secret.
//!
//! The value is `<id>.<mac>`: the backend's sticky id (a hash of its
//! address, see [`Backend::sticky_id`](crate::Backend::sticky_id)) and the
//! first 16 bytes of HMAC-SHA256(secret, id), both in hex. Without the
//! secret a client cannot make a valid cookie for another backend, so it
//! cannot choose (or overload) a node of its liking. A cookie that does not
//! verify, or names a backend that is gone, ejected or draining, is ignored:
//! the request is balanced as usual and the answer carries a new cookie —
//! that is the session's failover.

use hmac::{Hmac, Mac};
use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use sha2::Sha256;

/// Bytes of the MAC kept in the cookie.
const MAC_BYTES: usize = 16;

/// How a pool's sticky cookie is made.
#[derive(Clone)]
pub struct Sticky {
    /// Cookie name.
    pub cookie: String,
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl Sticky {
    /// Cookies named `cookie`, signed with `secret`.
    pub fn new(cookie: &str, secret: &[u8]) -> Sticky {
        Sticky {
            cookie: cookie.to_owned(),
            // HMAC takes keys of any length.
            key: Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!()),
        }
    }

    fn mac(&self, id: u64) -> Hmac<Sha256> {
        let mut m = self.key.clone();
        m.update(&id.to_be_bytes());
        m
    }

    /// The cookie value for backend `id`.
    pub fn value(&self, id: u64) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        let mut s = format!("{id:016x}.");
        for b in &tag[..MAC_BYTES] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The backend id a cookie value names, if its MAC verifies.
    pub fn verify(&self, value: &str) -> Option<u64> {
        let (id, mac) = value.split_once('.')?;
        if id.len() != 16 || mac.len() != MAC_BYTES * 2 {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        let mut tag = [0u8; MAC_BYTES];
        for (i, t) in tag.iter_mut().enumerate() {
            *t = u8::from_str_radix(mac.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        // Constant-time comparison of the truncated tag.
        self.mac(id).verify_truncated_left(&tag).ok()?;
        Some(id)
    }

    /// The verified backend id in a request's cookies, if any.
    pub fn from_request(&self, headers: &HeaderMap) -> Option<u64> {
        self.from_cookies(
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }

    /// The verified backend id among `Cookie` header values, if any.
    pub fn from_cookies<'a>(&self, values: impl Iterator<Item = &'a str>) -> Option<u64> {
        values
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, _)| *k == self.cookie)
            .find_map(|(_, v)| self.verify(v.trim()))
    }

    /// The `Set-Cookie` header that pins a client to backend `id`.
    pub fn set_cookie(&self, id: u64) -> HeaderValue {
        let v = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie,
            self.value(id)
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_verifies_only_with_its_own_secret_and_id() {
        let s = Sticky::new("strata_node", b"secret one");
        let v = s.value(42);
        assert_eq!(s.verify(&v), Some(42));
        // Another secret, a changed id, a changed MAC, junk: refused.
        assert_eq!(Sticky::new("strata_node", b"secret two").verify(&v), None);
        let forged = format!("{:016x}{}", 43, &v[16..]);
        assert_eq!(s.verify(&forged), None);
        let mut flipped = v.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(s.verify(std::str::from_utf8(&flipped).unwrap()), None);
        for junk in ["", ".", "zz.zz", "0000000000000001.", &v[..v.len() - 2]] {
            assert_eq!(s.verify(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let s = Sticky::new("strata_node", b"k");
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=b; strata_node=bad"));
        h.append(
            COOKIE,
            HeaderValue::from_str(&format!("x=y; strata_node={}", s.value(7))).unwrap(),
        );
        assert_eq!(s.from_request(&h), Some(7));
        let c = s.set_cookie(7);
        let c = c.to_str().unwrap();
        assert!(
            c.starts_with("strata_node=") && c.contains("HttpOnly"),
            "{c}"
        );
    }
}
