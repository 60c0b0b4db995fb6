//! The control command: one line of text per command, answered with `ok` or
//! `error <reason>` by the node's control endpoint.
//!
//! ```text
//! ping                 liveness check
//! block 1 3            drop all traffic to and from validators 1 and 3
//! block                drop nothing (heal)
//! traitor on|off       switch this validator's traitor behaviour (if it has one)
//! loss 0.01 0.02       lose 1% of the messages sent to validators, send 2% twice
//!                      (`loss 0 0` turns it off)
//! crash-at-checkpoint  crash inside the next checkpoint this validator takes
//! ```
//!
//! `Display` writes exactly the line `FromStr` reads: the runner formats a command,
//! the node parses it, and a round trip gives the same command back.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Longest command line the endpoint accepts, bytes.
pub const MAX_LINE: usize = 256;

/// One control command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Liveness check.
    Ping,
    /// Replace the set of validators whose traffic is dropped, both ways.
    Block(BTreeSet<u32>),
    /// Switch the traitor behaviour on or off.
    Traitor(bool),
    /// Crash inside the next checkpoint.
    CrashAtCheckpoint,
    /// Lose and duplicate messages to validators at these rates.
    Loss {
        /// Probability that a message is lost.
        drop: f64,
        /// Probability that a message is sent twice.
        duplicate: f64,
    },
}

/// Why a command line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

fn err(why: impl Into<String>) -> CommandError {
    CommandError(why.into())
}

impl Command {
    /// Checks the validator ids a command names against a cluster of `n` validators.
    pub fn check(&self, n: u32) -> Result<(), CommandError> {
        match self {
            Command::Block(set) => match set.iter().find(|id| **id >= n) {
                Some(id) => Err(err(format!("validator {id} does not exist (n = {n})"))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ping => f.write_str("ping"),
            Command::Block(set) => {
                f.write_str("block")?;
                for id in set {
                    write!(f, " {id}")?;
                }
                Ok(())
            }
            Command::Traitor(on) => write!(f, "traitor {}", if *on { "on" } else { "off" }),
            Command::CrashAtCheckpoint => f.write_str("crash-at-checkpoint"),
            // `{:?}` of an f64 is the shortest text that reads back as the same number
            Command::Loss { drop, duplicate } => write!(f, "loss {drop:?} {duplicate:?}"),
        }
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(line: &str) -> Result<Command, CommandError> {
        if line.len() > MAX_LINE {
            return Err(err(format!("the line is longer than {MAX_LINE} bytes")));
        }
        let mut words = line.split_whitespace();
        let cmd = match words.next() {
            Some("ping") => Command::Ping,
            Some("block") => {
                let mut set = BTreeSet::new();
                for w in words.by_ref() {
                    let id: u32 = w
                        .parse()
                        .map_err(|_| err(format!("{w:?} is not a validator id")))?;
                    set.insert(id);
                }
                Command::Block(set)
            }
            Some("traitor") => match words.next() {
                Some("on") => Command::Traitor(true),
                Some("off") => Command::Traitor(false),
                _ => return Err(err("expected `traitor on` or `traitor off`")),
            },
            Some("loss") => {
                let mut rate = |what: &str| -> Result<f64, CommandError> {
                    let w = words
                        .next()
                        .ok_or_else(|| err(format!("`loss` needs a {what} rate")))?;
                    match w.parse::<f64>() {
                        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                        _ => Err(err(format!("{what} rate {w:?} is not a number in [0, 1]"))),
                    }
                };
                let drop = rate("drop")?;
                let duplicate = rate("duplicate")?;
                Command::Loss { drop, duplicate }
            }
            Some("crash-at-checkpoint") => Command::CrashAtCheckpoint,
            Some(other) => return Err(err(format!("unknown command {other:?}"))),
            None => return Err(err("empty command")),
        };
        match words.next() {
            None => Ok(cmd),
            Some(extra) => Err(err(format!(
                "unexpected {extra:?} after `{}`",
                line.split_whitespace().next().unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, CommandError> {
        s.parse()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("ping"), Ok(Command::Ping));
        assert_eq!(parse("block"), Ok(Command::Block(BTreeSet::new())));
        assert_eq!(
            parse(" block 3 1 3 "),
            Ok(Command::Block(BTreeSet::from([1, 3])))
        );
        assert_eq!(parse("traitor on"), Ok(Command::Traitor(true)));
        assert_eq!(parse("traitor off"), Ok(Command::Traitor(false)));
        assert_eq!(
            parse("loss 0.01 0.5"),
            Ok(Command::Loss {
                drop: 0.01,
                duplicate: 0.5
            })
        );
        assert_eq!(parse("crash-at-checkpoint"), Ok(Command::CrashAtCheckpoint));
    }

    #[test]
    fn refuses_the_rest_with_a_reason() {
        for bad in [
            "",
            "block x",
            "block -1",
            "traitor",
            "traitor maybe",
            "traitor on off",
            "crash-at-checkpoint 8",
            "ping now",
            "loss",
            "loss 0.1",
            "loss 1.5 0",
            "loss x 0",
            "loss NaN 0",
            "loss 0 0 0",
            "reboot",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.0.is_empty(), "{bad:?} was refused without a reason");
        }
        let long = format!("block {}", "1 ".repeat(200));
        assert!(parse(&long).is_err(), "an over-long line is refused");
    }

    #[test]
    fn ids_are_checked_against_the_cluster() {
        let c = parse("block 1 3").expect("parses");
        assert!(c.check(4).is_ok());
        assert!(c.check(3).is_err(), "validator 3 does not exist when n = 3");
        assert!(Command::Ping.check(0).is_ok());
    }

    #[test]
    fn display_writes_what_from_str_reads() {
        let all = [
            Command::Ping,
            Command::Block(BTreeSet::new()),
            Command::Block(BTreeSet::from([0, 2, 9])),
            Command::Traitor(true),
            Command::Traitor(false),
            Command::CrashAtCheckpoint,
            Command::Loss {
                drop: 0.0,
                duplicate: 0.0,
            },
            Command::Loss {
                drop: 0.1 + 0.2,
                duplicate: 1.0 / 3.0,
            },
        ];
        for c in all {
            let line = c.to_string();
            assert_eq!(parse(&line), Ok(c.clone()), "{line:?}");
        }
        assert_eq!(Command::Block(BTreeSet::new()).to_string(), "block");
        assert_eq!(
            Command::Block(BTreeSet::from([3, 1])).to_string(),
            "block 1 3"
        );
    }
}
