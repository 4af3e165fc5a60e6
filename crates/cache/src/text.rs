//! memcached's text protocol: framing and parsing, no I/O.
//!
//! [`parse`] looks at the bytes buffered on a connection and says whether a
//! whole command (line plus data block for storage commands) is there. The
//! replies to malformed input are memcached's own strings, byte for byte.

pub mod meta;

/// Longest key (memcached's KEY_MAX_LENGTH).
pub const KEY_MAX: usize = 250;
/// Longest command line we buffer before giving up on the connection.
/// Multi-key gets may be long; anything else is short.
pub const LINE_MAX: usize = 1 << 20;

/// `CLIENT_ERROR bad command line format`
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd<'a> {
    /// get/gets/gat/gats. `touch` carries gat's exptime.
    Get {
        keys: Vec<&'a [u8]>,
        cas: bool,
        touch: Option<i64>,
    },
    /// set/add/replace/append/prepend/cas.
    Store {
        op: StoreOp,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        data: &'a [u8],
        cas: u64,
        noreply: bool,
    },
    /// Value over the item limit: the connection must discard the next
    /// `skip` bytes (data block and its `\r\n`) as they arrive.
    TooLarge {
        key: &'a [u8],
        set: bool,
        noreply: bool,
        skip: usize,
    },
    /// The data block did not end in `\r\n`.
    BadChunk { noreply: bool },
    /// delete.
    Delete { key: &'a [u8], noreply: bool },
    /// incr / decr.
    Arith {
        key: &'a [u8],
        delta: u64,
        incr: bool,
        noreply: bool,
    },
    /// touch.
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    /// flush_all.
    FlushAll { delay: i64, noreply: bool },
    /// version.
    Version,
    /// verbosity.
    Verbosity { noreply: bool },
    /// stats \[group\].
    Stats { group: Option<String> },
    /// quit.
    Quit,
    /// mn (meta no-op).
    MetaNoop,
    /// A reply to send as is (an error), then carry on.
    Reply(&'static [u8], bool),
    /// An error reply, then discard this many bytes of data as they arrive.
    Swallow(&'static [u8], usize),
    /// A meta command (mg, ms, md, ma).
    Meta(meta::MetaCmd<'a>),
}

/// Storage command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// set
    Set,
    /// add
    Add,
    /// replace
    Replace,
    /// append
    Append,
    /// prepend
    Prepend,
    /// cas
    Cas,
}

/// What the buffer holds.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Not a whole command yet.
    Incomplete,
    /// A command and how many bytes it used.
    Cmd(Cmd<'a>, usize),
    /// Unrecoverable framing problem: send this and close.
    Close(&'static [u8]),
}

fn valid_key(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= KEY_MAX && !k.iter().any(|c| c.is_ascii_control())
}

fn num<T: std::str::FromStr>(t: &[u8]) -> Option<T> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Parses the first command in `buf`. `item_max` is the largest value
/// accepted; a larger one is consumed and reported as [`Cmd::TooLarge`].
pub fn parse(buf: &[u8], item_max: usize) -> Parsed<'_> {
    let Some(nl) = buf.iter().position(|&c| c == b'\n') else {
        return if buf.len() > LINE_MAX {
            Parsed::Close(b"CLIENT_ERROR line too long\r\n")
        } else {
            Parsed::Incomplete
        };
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let used = nl + 1;
    let mut tokens = line.split(|&c| c == b' ').filter(|t| !t.is_empty());
    let Some(name) = tokens.next() else {
        return Parsed::Cmd(Cmd::Reply(b"ERROR\r\n", false), used);
    };
    // Retrieval commands take any number of keys; every other command
    // takes at most 7 arguments, so a fixed array (no allocation) holds
    // them, and a longer line still has too many to be valid.
    let many: Vec<&[u8]>;
    let mut few: [&[u8]; 8] = [&[]; 8];
    let args: &[&[u8]] =
        if name.starts_with(b"get") || name.starts_with(b"gat") || name.first() == Some(&b'm') {
            many = tokens.collect();
            &many
        } else {
            let mut n = 0;
            for t in tokens.take(8) {
                few[n] = t;
                n += 1;
            }
            &few[..n]
        };
    let noreply = args.last().is_some_and(|t| *t == b"noreply");
    let reply = |r: &'static [u8]| Parsed::Cmd(Cmd::Reply(r, false), used);
    let quiet = |r: &'static [u8]| Parsed::Cmd(Cmd::Reply(r, noreply), used);
    match name {
        b"get" | b"gets" | b"gat" | b"gats" => {
            let touch = name.starts_with(b"gat");
            let (exptime, keys) = if touch {
                match args.split_first() {
                    Some((e, k)) => match num::<i64>(e) {
                        Some(e) => (Some(e), k),
                        None => return reply(b"CLIENT_ERROR invalid exptime argument\r\n"),
                    },
                    None => return reply(b"ERROR\r\n"),
                }
            } else {
                (None, args)
            };
            if keys.is_empty() {
                // memcached: `get` alone is an unknown command, `gat 10`
                // with no keys is an empty result.
                return reply(if touch { b"END\r\n" } else { b"ERROR\r\n" });
            }
            if !keys.iter().all(|k| valid_key(k)) {
                return reply(BAD_FORMAT);
            }
            let keys = keys.to_vec();
            Parsed::Cmd(
                Cmd::Get {
                    keys,
                    cas: name.ends_with(b"s"),
                    touch: exptime,
                },
                used,
            )
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let op = match name {
                b"set" => StoreOp::Set,
                b"add" => StoreOp::Add,
                b"replace" => StoreOp::Replace,
                b"append" => StoreOp::Append,
                b"prepend" => StoreOp::Prepend,
                _ => StoreOp::Cas,
            };
            let want = if op == StoreOp::Cas { 5 } else { 4 };
            if args.len() != want && !(args.len() == want + 1 && noreply) {
                // A wrong token count is not a storage command at all.
                return reply(b"ERROR\r\n");
            }
            if !valid_key(args[0]) {
                return quiet(BAD_FORMAT);
            }
            // Flags are parsed as memcached does (strtoul into 64 bits, then
            // kept as 32).
            let (Some(flags), Some(exptime), Some(len)) = (
                num::<u64>(args[1]),
                num::<i64>(args[2]),
                num::<i64>(args[3]),
            ) else {
                return quiet(BAD_FORMAT);
            };
            let flags = flags as u32;
            let cas = if op == StoreOp::Cas {
                match num::<u64>(args[4]) {
                    Some(c) => c,
                    None => return quiet(BAD_FORMAT),
                }
            } else {
                0
            };
            if len < 0 || len > i64::from(i32::MAX) - 2 {
                return quiet(BAD_FORMAT);
            }
            let len = len as usize;
            let key = args[0];
            if len > item_max {
                // Answer at once and discard the data as it streams in,
                // rather than buffering a value we will not keep.
                return Parsed::Cmd(
                    Cmd::TooLarge {
                        key,
                        set: op == StoreOp::Set,
                        noreply,
                        skip: len + 2,
                    },
                    used,
                );
            }
            if buf.len() < used + len + 2 {
                return Parsed::Incomplete;
            }
            let total = used + len + 2;
            if &buf[used + len..total] != b"\r\n" {
                return Parsed::Cmd(Cmd::BadChunk { noreply }, total);
            }
            let data = &buf[used..used + len];
            Parsed::Cmd(
                Cmd::Store {
                    op,
                    key,
                    flags,
                    exptime,
                    data,
                    cas,
                    noreply,
                },
                total,
            )
        }
        b"delete" => {
            // memcached still accepts the legacy `delete <key> 0`.
            let ok_shape = match args.len() {
                1 => true,
                2 => noreply || args[1] == b"0",
                3 => args[1] == b"0" && noreply,
                _ => false,
            };
            if !ok_shape {
                return quiet(
                    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
                );
            }
            if !valid_key(args[0]) {
                return quiet(BAD_FORMAT);
            }
            Parsed::Cmd(
                Cmd::Delete {
                    key: args[0],
                    noreply,
                },
                used,
            )
        }
        b"incr" | b"decr" => {
            if args.len() != 2 && !(args.len() == 3 && noreply) {
                return reply(b"ERROR\r\n");
            }
            if !valid_key(args[0]) {
                return quiet(BAD_FORMAT);
            }
            let Some(delta) = num::<u64>(args[1]) else {
                return quiet(b"CLIENT_ERROR invalid numeric delta argument\r\n");
            };
            Parsed::Cmd(
                Cmd::Arith {
                    key: args[0],
                    delta,
                    incr: name == b"incr",
                    noreply,
                },
                used,
            )
        }
        b"touch" => {
            if args.len() != 2 && !(args.len() == 3 && noreply) {
                return reply(b"ERROR\r\n");
            }
            if !valid_key(args[0]) {
                return quiet(BAD_FORMAT);
            }
            let Some(exptime) = num::<i64>(args[1]) else {
                return quiet(b"CLIENT_ERROR invalid exptime argument\r\n");
            };
            Parsed::Cmd(
                Cmd::Touch {
                    key: args[0],
                    exptime,
                    noreply,
                },
                used,
            )
        }
        b"flush_all" => {
            let rest = if noreply {
                &args[..args.len() - 1]
            } else {
                args
            };
            // Extra tokens after the delay are ignored, as memcached does.
            let delay = match rest.first() {
                None => 0,
                Some(d) => match num::<i64>(d) {
                    Some(d) => d,
                    None => return quiet(b"CLIENT_ERROR invalid exptime argument\r\n"),
                },
            };
            Parsed::Cmd(Cmd::FlushAll { delay, noreply }, used)
        }
        b"version" => Parsed::Cmd(Cmd::Version, used),
        b"verbosity" => {
            if args.is_empty() || args.len() > 2 {
                return reply(b"ERROR\r\n");
            }
            if num::<u32>(args[0]).is_none() {
                return quiet(BAD_FORMAT);
            }
            Parsed::Cmd(Cmd::Verbosity { noreply }, used)
        }
        b"stats" => {
            let group = args
                .first()
                .map(|g| String::from_utf8_lossy(g).into_owned());
            Parsed::Cmd(Cmd::Stats { group }, used)
        }
        b"quit" => Parsed::Cmd(Cmd::Quit, used),
        b"mn" => Parsed::Cmd(Cmd::MetaNoop, used),
        b"mg" | b"ms" | b"md" | b"ma" => meta::parse(name, args, buf, used, item_max),
        _ => reply(b"ERROR\r\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Cmd<'_> {
        match parse(s.as_bytes(), 1 << 20) {
            Parsed::Cmd(c, n) => {
                assert_eq!(n, s.len(), "consumed all of {s:?}");
                c
            }
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn framing() {
        assert!(matches!(parse(b"get a", 100), Parsed::Incomplete));
        assert!(matches!(
            parse(b"set a 0 0 5\r\nhel", 100),
            Parsed::Incomplete
        ));
        assert!(matches!(
            parse(b"set a 0 0 5\r\nhello\r", 100),
            Parsed::Incomplete
        ));
        assert!(matches!(cmd("set a 0 0 5\r\nhello\r\n"), Cmd::Store { .. }));
        assert!(matches!(
            cmd("set a 0 0 5\r\nhelloXY"),
            Cmd::BadChunk { .. }
        ));
        assert!(matches!(
            parse(&vec![b'x'; LINE_MAX + 1], 100),
            Parsed::Close(_)
        ));
    }

    #[test]
    fn errors() {
        let long = "k".repeat(251);
        assert_eq!(
            cmd(&format!("get {long}\r\n")),
            Cmd::Reply(BAD_FORMAT, false)
        );
        assert_eq!(cmd("get a\u{7}b\r\n"), Cmd::Reply(BAD_FORMAT, false));
        assert_eq!(cmd("bogus\r\n"), Cmd::Reply(b"ERROR\r\n", false));
        assert_eq!(cmd("\r\n"), Cmd::Reply(b"ERROR\r\n", false));
        assert_eq!(cmd("get\r\n"), Cmd::Reply(b"ERROR\r\n", false));
        assert_eq!(cmd("set a x 0 1\r\n"), Cmd::Reply(BAD_FORMAT, false));
        assert_eq!(cmd("set a 0 0\r\n"), Cmd::Reply(b"ERROR\r\n", false));
        assert_eq!(cmd("gat 10\r\n"), Cmd::Reply(b"END\r\n", false));
        assert_eq!(cmd("set a 0 0 -1\r\n"), Cmd::Reply(BAD_FORMAT, false));
        assert_eq!(
            cmd("incr a x\r\n"),
            Cmd::Reply(b"CLIENT_ERROR invalid numeric delta argument\r\n", false)
        );
        assert_eq!(
            cmd("touch a x\r\n"),
            Cmd::Reply(b"CLIENT_ERROR invalid exptime argument\r\n", false)
        );
        assert!(matches!(
            cmd("set a 0 0 3 noreply\r\nabc\r\n"),
            Cmd::Store { noreply: true, .. }
        ));
        assert!(matches!(
            parse(b"set a 0 0 3\r\n", 2),
            Parsed::Cmd(
                Cmd::TooLarge {
                    set: true,
                    skip: 5,
                    ..
                },
                13
            )
        ));
    }
}
