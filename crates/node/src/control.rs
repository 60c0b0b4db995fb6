//! The fault-injection control endpoint, for the scenario runner only.
//!
//! Scenarios in cluster mode act on real traffic: a partition or an isolated validator
//! is a set of peers whose frames this node's transport drops (both directions), and a
//! traitor's time window switches its behaviour on and off. The runner drives that over
//! a line-based TCP connection on loopback; the node accepts it only when started with
//! `--control ADDR`, which the command line allows only under the runner's environment
//! variable (like `--traitor`).
//!
//! Commands, one per line, each answered with `ok` or `error <reason>`:
//!
//! ```text
//! ping                 -> ok
//! block 1 3            -> drop all frames to and from validators 1 and 3
//! block                -> drop nothing (heal)
//! traitor on|off       -> switch this validator's traitor behaviour (if it has one)
//! loss 0.01 0.02       -> lose 1% of the frames sent to validators, send 2% twice
//!                         (`loss 0 0` turns it off)
//! crash-at-checkpoint  -> abort the process inside the next checkpoint it takes,
//!                         after the ledger snapshot and before it is announced
//! ```

use pbft_transport::Transport;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Longest command line accepted.
const MAX_LINE: usize = 256;

/// What a control command changes.
#[derive(Clone)]
pub struct Controls {
    /// This node's transport (its blocked set).
    pub transport: Transport,
    /// Whether the traitor behaviour is active.
    pub traitor_active: Arc<AtomicBool>,
    /// Whether to abort inside the next checkpoint.
    pub crash_next_checkpoint: Arc<AtomicBool>,
    /// Number of validators (ids 0..n).
    pub n: u32,
    /// Seed of the loss stream (the validator id: each node draws its own).
    pub seed: u64,
}

/// One parsed command.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Liveness check.
    Ping,
    /// Replace the blocked set.
    Block(BTreeSet<u32>),
    /// Switch the traitor on or off.
    Traitor(bool),
    /// Abort inside the next checkpoint.
    CrashAtCheckpoint,
    /// Lose and duplicate outgoing frames at these rates.
    Loss {
        /// Probability a frame is lost.
        drop: f64,
        /// Probability a frame is sent twice.
        duplicate: f64,
    },
}

/// Parses one command line; `n` bounds validator ids.
pub fn parse(line: &str, n: u32) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ping") => Ok(Command::Ping),
        Some("block") => {
            let mut set = BTreeSet::new();
            for w in words {
                let id: u32 = w
                    .parse()
                    .map_err(|_| format!("{w:?} is not a validator id"))?;
                if id >= n {
                    return Err(format!("validator {id} does not exist (n = {n})"));
                }
                set.insert(id);
            }
            Ok(Command::Block(set))
        }
        Some("traitor") => match (words.next(), words.next()) {
            (Some("on"), None) => Ok(Command::Traitor(true)),
            (Some("off"), None) => Ok(Command::Traitor(false)),
            _ => Err("expected `traitor on` or `traitor off`".into()),
        },
        Some("loss") => {
            let mut rate = |what: &str| -> Result<f64, String> {
                let w = words
                    .next()
                    .ok_or_else(|| format!("`loss` needs a {what} rate"))?;
                match w.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                    _ => Err(format!("{what} rate {w:?} is not a number in [0, 1]")),
                }
            };
            let drop = rate("drop")?;
            let duplicate = rate("duplicate")?;
            match words.next() {
                None => Ok(Command::Loss { drop, duplicate }),
                Some(_) => Err("`loss` takes two rates".into()),
            }
        }
        Some("crash-at-checkpoint") => match words.next() {
            None => Ok(Command::CrashAtCheckpoint),
            Some(_) => Err("`crash-at-checkpoint` takes no argument".into()),
        },
        Some(other) => Err(format!("unknown command {other:?}")),
        None => Err("empty command".into()),
    }
}

impl Controls {
    fn apply(&self, cmd: Command) {
        match cmd {
            Command::Ping => {}
            Command::Block(set) => {
                tracing::warn!(blocked = ?set, "fault injection: traffic with these validators is dropped");
                self.transport.set_blocked(set);
            }
            Command::Traitor(on) => {
                tracing::warn!(on, "fault injection: traitor behaviour switched");
                self.traitor_active.store(on, Ordering::SeqCst);
            }
            Command::Loss { drop, duplicate } => {
                tracing::warn!(
                    drop,
                    duplicate,
                    "fault injection: frames to validators are lost and duplicated at these rates"
                );
                self.transport.set_loss(drop, duplicate, self.seed);
            }
            Command::CrashAtCheckpoint => {
                tracing::warn!("fault injection: the process aborts inside its next checkpoint");
                self.crash_next_checkpoint.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Binds the control endpoint (so a port in use is reported before the node starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves control connections until the task is aborted.
pub async fn serve(listener: TcpListener, controls: Controls) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let controls = controls.clone();
        tokio::spawn(async move {
            let (read, mut write) = sock.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = if line.len() > MAX_LINE {
                    "error line too long\n".to_string()
                } else {
                    match parse(&line, controls.n) {
                        Ok(cmd) => {
                            controls.apply(cmd);
                            "ok\n".to_string()
                        }
                        Err(e) => format!("error {e}\n"),
                    }
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_and_rejects_the_rest() {
        assert_eq!(parse("ping", 4), Ok(Command::Ping));
        assert_eq!(parse("block", 4), Ok(Command::Block(BTreeSet::new())));
        assert_eq!(
            parse(" block 3 1 3 ", 4),
            Ok(Command::Block(BTreeSet::from([1, 3])))
        );
        assert_eq!(parse("traitor on", 4), Ok(Command::Traitor(true)));
        assert_eq!(parse("traitor off", 4), Ok(Command::Traitor(false)));
        assert_eq!(
            parse("loss 0.01 0.5", 4),
            Ok(Command::Loss {
                drop: 0.01,
                duplicate: 0.5
            })
        );
        assert_eq!(
            parse("crash-at-checkpoint", 4),
            Ok(Command::CrashAtCheckpoint)
        );
        for bad in [
            "",
            "block 4",
            "block x",
            "traitor",
            "traitor maybe",
            "crash-at-checkpoint 8",
            "loss",
            "loss 0.1",
            "loss 1.5 0",
            "loss x 0",
            "loss 0 0 0",
            "reboot",
        ] {
            assert!(parse(bad, 4).is_err(), "{bad:?} was accepted");
        }
    }
}
