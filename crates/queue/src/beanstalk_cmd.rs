//! beanstalkd command lines: parsing, no I/O.
//!
//! Kept apart from the connection loop so that the fuzz targets and the
//! property tests can drive it with arbitrary lines. [`Command`] prints
//! back as the exact line a client sends, which gives those tests a
//! round-trip property.

use std::fmt;

use crate::job::check_queue;

/// One command line, parsed (the `put` body is read by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `put <pri> <delay> <ttr> <bytes>`; delay and ttr in seconds.
    Put {
        pri: u32,
        delay: u64,
        ttr: u64,
        bytes: u64,
    },
    /// `use <tube>`
    Use(&'a str),
    /// `reserve`
    Reserve,
    /// `reserve-with-timeout <seconds>`
    ReserveWithTimeout(u64),
    /// `delete <id>`
    Delete(u64),
    /// `release <id> <pri> <delay>`
    Release { id: u64, pri: u32, delay: u64 },
    /// `bury <id> <pri>`
    Bury { id: u64, pri: u32 },
    /// `touch <id>`
    Touch(u64),
    /// `watch <tube>`
    Watch(&'a str),
    /// `ignore <tube>`
    Ignore(&'a str),
    /// `peek <id>`
    Peek(u64),
    /// `peek-ready`
    PeekReady,
    /// `peek-delayed`
    PeekDelayed,
    /// `peek-buried`
    PeekBuried,
    /// `kick <bound>`
    Kick(u64),
    /// `kick-job <id>`
    KickJob(u64),
    /// `stats-job <id>`
    StatsJob(u64),
    /// `stats-tube <tube>`
    StatsTube(&'a str),
    /// `stats`
    Stats,
    /// `list-tubes`
    ListTubes,
    /// `list-tube-used`
    ListTubeUsed,
    /// `list-tubes-watched`
    ListTubesWatched,
    /// `quit`
    Quit,
}

/// Why a line is not a command, as beanstalkd words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A known command with wrong or malformed arguments: `BAD_FORMAT`.
    BadFormat,
    /// Not a command at all: `UNKNOWN_COMMAND`.
    UnknownCommand,
}

impl Refused {
    /// The reply line, without its CRLF.
    pub fn reply(self) -> &'static str {
        match self {
            Refused::BadFormat => "BAD_FORMAT",
            Refused::UnknownCommand => "UNKNOWN_COMMAND",
        }
    }
}

/// Parses one command line (without its CRLF). Arguments are separated by
/// single spaces, numbers are unsigned decimals, priorities fit in 32 bits
/// and tube names follow beanstalkd's rules, as beanstalkd checks them.
pub fn parse(line: &str) -> Result<Command<'_>, Refused> {
    use Command as C;
    let args: Vec<&str> = line.split(' ').collect();
    let num = |i: usize| -> Result<u64, Refused> {
        let a = args[i];
        // `u64::from_str` takes a leading '+', beanstalkd does not.
        if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refused::BadFormat);
        }
        a.parse().map_err(|_| Refused::BadFormat)
    };
    let pri = |i: usize| u32::try_from(num(i)?).map_err(|_| Refused::BadFormat);
    let tube = |i: usize| match check_queue(args[i]) {
        Ok(()) => Ok(args[i]),
        Err(_) => Err(Refused::BadFormat),
    };
    let want = match args[0] {
        "put" => 5,
        "release" => 4,
        "bury" => 3,
        "use"
        | "reserve-with-timeout"
        | "delete"
        | "touch"
        | "watch"
        | "ignore"
        | "peek"
        | "kick"
        | "kick-job"
        | "stats-job"
        | "stats-tube" => 2,
        "reserve" | "peek-ready" | "peek-delayed" | "peek-buried" | "stats" | "list-tubes"
        | "list-tube-used" | "list-tubes-watched" | "quit" => 1,
        _ => return Err(Refused::UnknownCommand),
    };
    if args.len() != want {
        return Err(Refused::BadFormat);
    }
    Ok(match args[0] {
        "put" => C::Put {
            pri: pri(1)?,
            delay: num(2)?,
            ttr: num(3)?,
            bytes: num(4)?,
        },
        "use" => C::Use(tube(1)?),
        "reserve" => C::Reserve,
        "reserve-with-timeout" => C::ReserveWithTimeout(num(1)?),
        "delete" => C::Delete(num(1)?),
        "release" => C::Release {
            id: num(1)?,
            pri: pri(2)?,
            delay: num(3)?,
        },
        "bury" => C::Bury {
            id: num(1)?,
            pri: pri(2)?,
        },
        "touch" => C::Touch(num(1)?),
        "watch" => C::Watch(tube(1)?),
        "ignore" => C::Ignore(args[1]),
        "peek" => C::Peek(num(1)?),
        "peek-ready" => C::PeekReady,
        "peek-delayed" => C::PeekDelayed,
        "peek-buried" => C::PeekBuried,
        "kick" => C::Kick(num(1)?),
        "kick-job" => C::KickJob(num(1)?),
        "stats-job" => C::StatsJob(num(1)?),
        "stats-tube" => C::StatsTube(args[1]),
        "stats" => C::Stats,
        "list-tubes" => C::ListTubes,
        "list-tube-used" => C::ListTubeUsed,
        "list-tubes-watched" => C::ListTubesWatched,
        _ => C::Quit,
    })
}

impl fmt::Display for Command<'_> {
    /// The line a client sends for this command, without its CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Command as C;
        match self {
            C::Put {
                pri,
                delay,
                ttr,
                bytes,
            } => write!(f, "put {pri} {delay} {ttr} {bytes}"),
            C::Use(t) => write!(f, "use {t}"),
            C::Reserve => f.write_str("reserve"),
            C::ReserveWithTimeout(s) => write!(f, "reserve-with-timeout {s}"),
            C::Delete(id) => write!(f, "delete {id}"),
            C::Release { id, pri, delay } => write!(f, "release {id} {pri} {delay}"),
            C::Bury { id, pri } => write!(f, "bury {id} {pri}"),
            C::Touch(id) => write!(f, "touch {id}"),
            C::Watch(t) => write!(f, "watch {t}"),
            C::Ignore(t) => write!(f, "ignore {t}"),
            C::Peek(id) => write!(f, "peek {id}"),
            C::PeekReady => f.write_str("peek-ready"),
            C::PeekDelayed => f.write_str("peek-delayed"),
            C::PeekBuried => f.write_str("peek-buried"),
            C::Kick(n) => write!(f, "kick {n}"),
            C::KickJob(id) => write!(f, "kick-job {id}"),
            C::StatsJob(id) => write!(f, "stats-job {id}"),
            C::StatsTube(t) => write!(f, "stats-tube {t}"),
            C::Stats => f.write_str("stats"),
            C::ListTubes => f.write_str("list-tubes"),
            C::ListTubeUsed => f.write_str("list-tube-used"),
            C::ListTubesWatched => f.write_str("list-tubes-watched"),
            C::Quit => f.write_str("quit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_refusals() {
        assert_eq!(
            parse("put 1 2 3 4"),
            Ok(Command::Put {
                pri: 1,
                delay: 2,
                ttr: 3,
                bytes: 4
            })
        );
        assert_eq!(parse("put 4294967296 0 1 1"), Err(Refused::BadFormat));
        assert_eq!(parse("put +1 0 1 1"), Err(Refused::BadFormat));
        assert_eq!(parse("put 1 0 1"), Err(Refused::BadFormat));
        assert_eq!(parse("use -bad"), Err(Refused::BadFormat));
        assert_eq!(parse("delete  7"), Err(Refused::BadFormat));
        assert_eq!(parse("frobnicate"), Err(Refused::UnknownCommand));
        assert_eq!(parse(""), Err(Refused::UnknownCommand));
        for l in [
            "release 5 0 10",
            "stats-tube x y",
            "list-tubes-watched",
            "quit",
        ] {
            if let Ok(c) = parse(l) {
                assert_eq!(c.to_string(), l);
            }
        }
    }
}
