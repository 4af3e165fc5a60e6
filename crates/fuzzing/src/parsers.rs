//! Properties of the wire and config parsers.

use cache::text::{self, Cmd, Parsed};
use queue::beanstalk_cmd;
use store::range::{parse_range, RangeAsk};

use crate::Input;

/// Item limit of the memcached property: small, so that the too-large
/// paths are reached by short inputs.
const ITEM_MAX: usize = 1024;

/// memcached text protocol: walks a pipeline of commands through
/// `text::parse`. Each command consumes between 1 and all of the buffered
/// bytes, parses the same from exactly its own bytes (nothing after it
/// changes it), names only valid keys and carries at most `ITEM_MAX` bytes
/// of data; every reply it asks for is a CRLF-terminated line.
pub fn memcached(data: &[u8]) {
    let mut rest = data;
    for _ in 0..256 {
        match text::parse(rest, ITEM_MAX) {
            Parsed::Incomplete => {
                assert!(rest.len() <= text::LINE_MAX, "incomplete past LINE_MAX");
                return;
            }
            Parsed::Close(reply) => {
                assert!(reply.ends_with(b"\r\n"));
                return;
            }
            Parsed::Cmd(cmd, used) => {
                assert!(
                    used >= 1 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                match text::parse(&rest[..used], ITEM_MAX) {
                    Parsed::Cmd(again, n) => {
                        assert!(again == cmd && n == used, "{cmd:?} vs {again:?}")
                    }
                    other => panic!("{cmd:?} reparsed from its own bytes as {other:?}"),
                }
                check_cmd(&cmd);
                rest = &rest[used..];
            }
        }
    }
}

fn check_cmd(cmd: &Cmd<'_>) {
    let key_ok = |k: &[u8]| {
        assert!(!k.is_empty() && k.len() <= text::KEY_MAX, "bad key {k:?}");
        assert!(
            !k.iter().any(|c| c.is_ascii_control()),
            "control byte in key {k:?}"
        );
    };
    match cmd {
        Cmd::Get { keys, .. } => {
            assert!(!keys.is_empty());
            keys.iter().for_each(|k| key_ok(k));
        }
        Cmd::Store { key, data, .. } => {
            key_ok(key);
            assert!(data.len() <= ITEM_MAX);
        }
        Cmd::TooLarge { skip, .. } => assert!(*skip > ITEM_MAX),
        Cmd::Delete { key, .. } | Cmd::Arith { key, .. } | Cmd::Touch { key, .. } => key_ok(key),
        Cmd::Reply(r, _) | Cmd::Swallow(r, _) => assert!(r.ends_with(b"\r\n")),
        _ => {}
    }
}

/// beanstalkd command lines: any line either is refused or parses to a
/// command that prints back as a line (no longer than the input) which
/// parses to the same command.
pub fn beanstalk(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Ok(cmd) = beanstalk_cmd::parse(&line) {
        let again = cmd.to_string();
        assert_eq!(beanstalk_cmd::parse(&again), Ok(cmd.clone()), "{again:?}");
        assert!(again.len() <= line.len(), "{again:?} longer than {line:?}");
    }
}

/// HTTP `Range`: a part is a non-empty slice inside the blob; a
/// well-formed `bytes=a-b` gets RFC 9110's answer.
pub fn range(data: &[u8]) {
    let mut input = Input::new(data);
    // Mostly small sizes, so ranges land inside, past and across the end.
    let size = match input.byte() % 4 {
        0 => 0,
        1 => u64::from(input.byte()),
        2 => u64::from(input.u16()),
        _ => input.u64(),
    };
    let value = String::from_utf8_lossy(input.rest());
    let got = parse_range(Some(&value), size);
    match got {
        RangeAsk::Part(s, e) => assert!(s < e && e <= size, "{value:?} on {size}: {s}..{e}"),
        RangeAsk::Unsatisfiable => assert!(value.trim().starts_with("bytes=")),
        RangeAsk::Full => {}
    }
    if let Some(want) = model_range(&value, size) {
        assert_eq!(got, want, "{value:?} on {size}");
    }
}

/// The answer for the plain forms `bytes=A-B`, `bytes=A-` and `bytes=-N`
/// (digits only, no spaces); `None` for anything else.
fn model_range(value: &str, size: u64) -> Option<RangeAsk> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if (!a.is_empty() && !digits(a))
        || (!b.is_empty() && !digits(b))
        || (a.is_empty() && b.is_empty())
    {
        return None;
    }
    // A number too big for u64 is left to the invariants above.
    let n = |s: &str| -> Option<Option<u64>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let (a, b) = (n(a)?, n(b)?);
    Some(match (a, b) {
        (None, Some(n)) if n == 0 || size == 0 => RangeAsk::Unsatisfiable,
        (None, Some(n)) => RangeAsk::Part(size - n.min(size), size),
        (Some(s), Some(l)) if l < s => RangeAsk::Full,
        (Some(s), _) if s >= size => RangeAsk::Unsatisfiable,
        (Some(s), None) => RangeAsk::Part(s, size),
        (Some(s), Some(l)) => RangeAsk::Part(s, l.saturating_add(1).min(size)),
        (None, None) => return None,
    })
}

/// The cluster file: any text is refused with an error or accepted; an
/// accepted file written back as TOML parses to the same configuration.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = cluster::ClusterConfig::parse(text) else {
        return;
    };
    let again = toml::to_string(&cfg).expect("an accepted config serialises");
    match cluster::ClusterConfig::parse(&again) {
        Ok(back) => assert_eq!(back, cfg, "round trip changed\n{again}"),
        Err(e) => panic!("written back, it is refused: {e}\n{again}"),
    }
}
