//! The runner's side of a node's fault-injection control endpoint: one typed
//! [`Command`] per TCP connection on loopback, written with its `Display` (the line the
//! node's `FromStr` reads) and answered `ok` or `error <reason>`.

use pbft_faults::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long one exchange may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Why a control command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The connection or the exchange failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node answered something other than `ok`.
    #[error("answered {0:?}")]
    Refused(String),
    /// No answer in time.
    #[error("no answer within 3 s")]
    Timeout,
}

/// Sends `command` to the endpoint on loopback `port` and checks the answer.
pub async fn send(port: u16, command: &Command) -> Result<(), ControlError> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await?;
        match line.trim() {
            "ok" => Ok(()),
            other => Err(ControlError::Refused(other.to_string())),
        }
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .map_err(|_| ControlError::Timeout)?
}

/// Sends `command`, retrying every 50 ms while the node comes up, for up to `within`.
pub async fn send_retry(
    port: u16,
    command: &Command,
    within: Duration,
) -> Result<(), ControlError> {
    let until = Instant::now() + within;
    loop {
        match send(port, command).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ready::tests::block_on;
    use std::collections::BTreeSet;
    use tokio::net::TcpListener;

    /// A fake endpoint: answers `answer` to each of `count` connections and returns the
    /// lines it read.
    pub(crate) async fn fake_node(
        count: usize,
        answer: &'static str,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut lines = Vec::new();
            for _ in 0..count {
                let (s, _) = listener.accept().await.expect("accept");
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.expect("read");
                lines.push(line);
                w.write_all(format!("{answer}\n").as_bytes())
                    .await
                    .expect("answer");
            }
            lines
        });
        (port, task)
    }

    #[test]
    fn each_command_goes_out_as_its_line() {
        block_on(async {
            let commands = [
                Command::Ping,
                Command::Block(BTreeSet::from([3, 1])),
                Command::Block(BTreeSet::new()),
                Command::Traitor(true),
                Command::Traitor(false),
                Command::CrashAtCheckpoint,
                Command::Loss {
                    drop: 0.05,
                    duplicate: 0.02,
                },
            ];
            let (port, node) = fake_node(commands.len(), "ok").await;
            for c in &commands {
                send(port, c).await.expect("ok");
            }
            let lines = node.await.expect("fake node");
            assert_eq!(
                lines,
                [
                    "ping\n",
                    "block 1 3\n",
                    "block\n",
                    "traitor on\n",
                    "traitor off\n",
                    "crash-at-checkpoint\n",
                    "loss 0.05 0.02\n"
                ]
            );
        });
    }

    #[test]
    fn a_refusal_is_reported_with_the_answer() {
        block_on(async {
            let (port, _node) = fake_node(1, "error validator 9 does not exist").await;
            let e = send(port, &Command::Block(BTreeSet::from([9])))
                .await
                .expect_err("refused");
            assert_eq!(
                e.to_string(),
                "answered \"error validator 9 does not exist\""
            );
        });
    }

    #[test]
    fn nobody_listening_is_an_error_after_the_retry_window() {
        block_on(async {
            let port = crate::ports::free_tcp_port().expect("port");
            let e = send_retry(port, &Command::Ping, Duration::ZERO)
                .await
                .expect_err("nothing listens");
            assert!(matches!(e, ControlError::Io(_)), "{e}");
        });
    }
}
