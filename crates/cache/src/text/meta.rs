//! Parsing memcached's meta commands (`mg`, `ms`, `md`, `ma`): their
//! flags, base64 keys, and the data block of `ms`. Running them is
//! `crate::meta`.

use std::borrow::Cow;

use super::{Cmd, Parsed, BAD_FORMAT, KEY_MAX};

/// A meta command's flags, in the order given: (flag char, token).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags<'a>(pub(crate) Vec<(u8, &'a [u8])>);

impl<'a> Flags<'a> {
    pub(crate) fn has(&self, c: u8) -> bool {
        self.0.iter().any(|f| f.0 == c)
    }
    pub(crate) fn token(&self, c: u8) -> Option<&'a [u8]> {
        self.0.iter().find(|f| f.0 == c).map(|f| f.1)
    }
    /// A numeric token; `Err` when present but not a number.
    pub(crate) fn num<T: std::str::FromStr>(&self, c: u8) -> Result<Option<T>, ()> {
        match self.token(c) {
            None => Ok(None),
            Some(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or(()),
        }
    }
}

/// Which meta command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOp {
    /// mg
    Get,
    /// ms
    Set,
    /// md
    Delete,
    /// ma
    Arith,
}

/// A parsed meta command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCmd<'a> {
    /// Command.
    pub op: MetaOp,
    /// The key (decoded when `b` was given).
    pub key: Cow<'a, [u8]>,
    /// The key token as sent (echoed by `k`).
    pub raw_key: &'a [u8],
    /// Flags in order.
    pub flags: Flags<'a>,
    /// `ms` data.
    pub data: &'a [u8],
}

fn allowed(op: MetaOp) -> &'static [u8] {
    match op {
        MetaOp::Get => b"bcfhklOqstuvENRT",
        MetaOp::Set => b"bcCEFIkOqTMN",
        MetaOp::Delete => b"bCEIkOqTx",
        MetaOp::Arith => b"bCENJDTMqOtcvk",
    }
}

/// Standard base64 that takes keys with or without padding, as
/// memcached's meta commands do.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes standard base64 (with or without padding).
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    base64::Engine::decode(&BASE64, s).ok()
}

/// Parses a meta command line (`name` and the tokens after it).
pub fn parse<'a>(
    name: &[u8],
    args: &[&'a [u8]],
    buf: &'a [u8],
    used: usize,
    item_max: usize,
) -> Parsed<'a> {
    let reply = |r: &'static [u8]| Parsed::Cmd(Cmd::Reply(r, false), used);
    let op = match name {
        b"mg" => MetaOp::Get,
        b"ms" => MetaOp::Set,
        b"md" => MetaOp::Delete,
        _ => MetaOp::Arith,
    };
    let Some((&raw_key, mut rest)) = args.split_first() else {
        return reply(if op == MetaOp::Set {
            BAD_FORMAT
        } else {
            b"ERROR\r\n"
        });
    };
    // ms: the data length comes before the flags.
    let mut datalen = 0usize;
    if op == MetaOp::Set {
        let Some((&len, more)) = rest.split_first() else {
            return reply(BAD_FORMAT);
        };
        match std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        {
            Some(n) if n <= i32::MAX as usize - 2 => datalen = n,
            _ => return reply(BAD_FORMAT),
        }
        rest = more;
    }
    if raw_key.len() > KEY_MAX || raw_key.iter().any(|c| c.is_ascii_control()) {
        return reply(BAD_FORMAT);
    }
    // From here on an error in an `ms` line still has its data block to
    // discard, as memcached does.
    let fail = |msg: &'static [u8]| {
        if op == MetaOp::Set {
            Parsed::Cmd(Cmd::Swallow(msg, datalen + 2), used)
        } else {
            Parsed::Cmd(Cmd::Reply(msg, false), used)
        }
    };
    let mut flags = Vec::with_capacity(rest.len());
    let mut seen = 0u128;
    for t in rest {
        let c = t[0];
        if !allowed(op).contains(&c) {
            return fail(b"CLIENT_ERROR invalid flag\r\n");
        }
        if seen & (1 << c) != 0 {
            return fail(b"CLIENT_ERROR duplicate flag\r\n");
        }
        seen |= 1 << c;
        flags.push((c, &t[1..]));
    }
    let flags = Flags(flags);
    let key: Cow<'a, [u8]> = if flags.has(b'b') {
        match base64_decode(raw_key) {
            Some(k) if !k.is_empty() && k.len() <= KEY_MAX => Cow::Owned(k),
            _ => return fail(b"CLIENT_ERROR error decoding key\r\n"),
        }
    } else {
        Cow::Borrowed(raw_key)
    };
    if op == MetaOp::Set {
        if let Some(m) = flags.token(b'M') {
            if m.len() != 1 || !b"EAPRSeaprs".contains(&m[0]) {
                return fail(b"CLIENT_ERROR invalid mode for ms M token\r\n");
            }
        }
        if datalen > item_max {
            return Parsed::Cmd(
                Cmd::Swallow(b"SERVER_ERROR object too large for cache\r\n", datalen + 2),
                used,
            );
        }
        if buf.len() < used + datalen + 2 {
            return Parsed::Incomplete;
        }
        let total = used + datalen + 2;
        if &buf[used + datalen..total] != b"\r\n" {
            return Parsed::Cmd(Cmd::Reply(b"CLIENT_ERROR bad data chunk\r\n", false), total);
        }
        let data = &buf[used..used + datalen];
        return Parsed::Cmd(
            Cmd::Meta(MetaCmd {
                op,
                key,
                raw_key,
                flags,
                data,
            }),
            total,
        );
    }
    if op == MetaOp::Arith {
        if let Some(m) = flags.token(b'M') {
            if m.len() != 1 || !b"IiDd+-".contains(&m[0]) {
                return fail(b"CLIENT_ERROR invalid mode for ma M token\r\n");
            }
        }
    }
    Parsed::Cmd(
        Cmd::Meta(MetaCmd {
            op,
            key,
            raw_key,
            flags,
            data: &[],
        }),
        used,
    )
}
