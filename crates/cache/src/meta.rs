//! memcached's meta protocol (`mg`, `ms`, `md`, `ma`, `mn`) run against
//! the cache, and its replies (parsing is `crate::text::meta`). Replies
//! were checked against memcached 1.6.18: return flags come back in the
//! order they were asked, then `b` (when the key was base64), then `Z`,
//! `X`, `W`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::engine::{Cache, StoreMode, StoreResult};
use crate::engine_meta::{MetaArith, MetaDeleted, MetaGet};
pub use crate::text::meta::{base64_decode, Flags, MetaCmd, MetaOp};

/// Appends the requested return flags (in request order) and the `b`.
fn ret_flags(
    out: &mut BytesMut,
    m: &MetaCmd<'_>,
    which: &[u8],
    value: impl Fn(u8) -> Option<String>,
) {
    for &(c, tok) in &m.flags.0 {
        if !which.contains(&c) {
            continue;
        }
        out.put_u8(b' ');
        out.put_u8(c);
        match c {
            b'k' => out.put_slice(m.raw_key),
            b'O' => out.put_slice(tok),
            _ => {
                if let Some(v) = value(c) {
                    out.put_slice(v.as_bytes());
                }
            }
        }
    }
    if m.flags.has(b'b') && m.flags.has(b'k') {
        out.put_slice(b" b");
    }
}

const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";

/// Runs a meta command against `cache`, appending its reply.
pub fn execute(cache: &Cache, m: MetaCmd<'_>, out: &mut BytesMut) {
    let q = m.flags.has(b'q');
    match m.op {
        MetaOp::Get => {
            let (Ok(vivify), Ok(recache), Ok(ttl)) = (
                m.flags.num::<i64>(b'N'),
                m.flags.num::<u32>(b'R'),
                m.flags.num::<i64>(b'T'),
            ) else {
                out.put_slice(BAD_TOKEN);
                return;
            };
            let o = MetaGet {
                vivify,
                recache_below: recache,
                ttl,
                bump: !m.flags.has(b'u'),
            };
            match cache.meta_get(&m.key, &o) {
                None => {
                    if !q {
                        out.put_slice(b"EN");
                        ret_flags(out, &m, b"kO", |_| None);
                        out.put_slice(b"\r\n");
                    }
                }
                Some(g) => {
                    let with_value = m.flags.has(b'v');
                    if with_value {
                        out.put_slice(format!("VA {}", g.item.value.len()).as_bytes());
                    } else {
                        out.put_slice(b"HD");
                    }
                    ret_flags(out, &m, b"cfhklOst", |c| {
                        Some(match c {
                            b'c' => g.item.cas.to_string(),
                            b'f' => g.item.flags.to_string(),
                            b'h' => u8::from(g.hit_before).to_string(),
                            b'l' => g.idle_secs.to_string(),
                            b's' => g.item.value.len().to_string(),
                            b't' => g.ttl_left.to_string(),
                            _ => return None,
                        })
                    });
                    if g.win_already_sent {
                        out.put_slice(b" Z");
                    }
                    if g.stale {
                        out.put_slice(b" X");
                    }
                    if g.won {
                        out.put_slice(b" W");
                    }
                    out.put_slice(b"\r\n");
                    if with_value {
                        out.put_slice(&g.item.value);
                        out.put_slice(b"\r\n");
                    }
                }
            }
        }
        MetaOp::Set => {
            let (Ok(flags), Ok(ttl), Ok(cas), Ok(new_cas)) = (
                m.flags.num::<u32>(b'F'),
                m.flags.num::<i64>(b'T'),
                m.flags.num::<u64>(b'C'),
                m.flags.num::<u64>(b'E'),
            ) else {
                out.put_slice(BAD_TOKEN);
                return;
            };
            let mut mode = match m.flags.token(b'M').map(|t| t[0].to_ascii_uppercase()) {
                Some(b'E') => StoreMode::Add,
                Some(b'A') => StoreMode::Append,
                Some(b'P') => StoreMode::Prepend,
                Some(b'R') => StoreMode::Replace,
                _ => StoreMode::Set,
            };
            let mut stale = false;
            if let Some(c) = cas {
                // With `I`, a write carrying an older CAS still lands but
                // is marked stale (memcached's invalidation protocol).
                let current = cache.peek(&m.key).map(|i| i.cas);
                if m.flags.has(b'I') && current.is_some_and(|cur| c < cur) {
                    stale = true;
                } else {
                    mode = StoreMode::Cas(c);
                }
            }
            let res = cache.store_with(
                mode,
                &m.key,
                Bytes::copy_from_slice(m.data),
                flags.unwrap_or(0),
                ttl.unwrap_or(0),
                new_cas,
            );
            if stale && matches!(res, StoreResult::Stored(_)) {
                cache.mark_stale(&m.key);
            }
            let (code, cas_now): (&[u8], u64) = match res {
                StoreResult::Stored(c) => (b"HD", c),
                StoreResult::NotStored => (b"NS", 0),
                StoreResult::Exists => (b"EX", 0),
                StoreResult::NotFound => (b"NF", 0),
                StoreResult::TooLarge => {
                    out.put_slice(b"SERVER_ERROR object too large for cache\r\n");
                    return;
                }
            };
            if q && code == b"HD" {
                return;
            }
            out.put_slice(code);
            ret_flags(out, &m, b"ckO", |c| {
                (c == b'c').then(|| cas_now.to_string())
            });
            out.put_slice(b"\r\n");
        }
        MetaOp::Delete => {
            let (Ok(cas), Ok(ttl)) = (m.flags.num::<u64>(b'C'), m.flags.num::<i64>(b'T')) else {
                out.put_slice(BAD_TOKEN);
                return;
            };
            let code: &[u8] =
                match cache.meta_delete(&m.key, cas, m.flags.has(b'I'), ttl, m.flags.has(b'x')) {
                    MetaDeleted::Done => b"HD",
                    MetaDeleted::NotFound => b"NF",
                    MetaDeleted::Exists => b"EX",
                };
            if q && code == b"HD" {
                return;
            }
            out.put_slice(code);
            ret_flags(out, &m, b"kO", |_| None);
            out.put_slice(b"\r\n");
        }
        MetaOp::Arith => {
            let (Ok(viv), Ok(initial), Ok(delta), Ok(cas), Ok(ttl)) = (
                m.flags.num::<i64>(b'N'),
                m.flags.num::<u64>(b'J'),
                m.flags.num::<u64>(b'D'),
                m.flags.num::<u64>(b'C'),
                m.flags.num::<i64>(b'T'),
            ) else {
                out.put_slice(BAD_TOKEN);
                return;
            };
            let incr = !matches!(m.flags.token(b'M').map(|t| t[0]), Some(b'D' | b'd' | b'-'));
            let res = cache.meta_arith(
                &m.key,
                incr,
                delta.unwrap_or(1),
                viv.map(|t| (t, initial.unwrap_or(0))),
                cas,
                ttl,
            );
            match res {
                MetaArith::Value(v, item, left) => {
                    let with_value = m.flags.has(b'v');
                    if q && !with_value {
                        return;
                    }
                    let text = v.to_string();
                    if with_value {
                        out.put_slice(format!("VA {}", text.len()).as_bytes());
                    } else {
                        out.put_slice(b"HD");
                    }
                    ret_flags(out, &m, b"ctkO", |c| match c {
                        b'c' => Some(item.cas.to_string()),
                        b't' => Some(left.to_string()),
                        _ => None,
                    });
                    out.put_slice(b"\r\n");
                    if with_value {
                        out.put_slice(text.as_bytes());
                        out.put_slice(b"\r\n");
                    }
                }
                MetaArith::NotFound => {
                    if !q {
                        out.put_slice(b"NF");
                        ret_flags(out, &m, b"kO", |_| None);
                        out.put_slice(b"\r\n");
                    }
                }
                MetaArith::Exists => {
                    out.put_slice(b"EX");
                    ret_flags(out, &m, b"kO", |_| None);
                    out.put_slice(b"\r\n");
                }
                MetaArith::NonNumeric => out
                    .put_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64() {
        assert_eq!(base64_decode(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(base64_decode(b"Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode(b"Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode(b"Zm9vYg").as_deref(), Some(&b"foob"[..]));
        assert!(base64_decode(b"!!!").is_none());
        assert!(base64_decode(b"Z").is_none());
    }
}
