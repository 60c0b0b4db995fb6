//! The control endpoint of a fault-injected validator, for the scenario runner only.
//!
//! Scenarios in cluster mode act on real traffic: a partition or an isolated validator
//! is a set of peers whose messages this validator's hooks drop (both ways), and a
//! traitor's time window switches its behaviour on and off. The runner drives that over
//! a line-based TCP connection on loopback, one [`Command`] per line, each answered
//! with `ok` or `error <reason>`.

use crate::command::{Command, MAX_LINE};
use crate::scripted::Switchboard;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Binds the endpoint (so a port in use is reported before the validator starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The answer line to one command line, after applying it; `n` bounds validator ids.
/// (A line longer than [`crate::command::MAX_LINE`] is refused by the parser.)
pub fn answer(line: &str, n: u32, switches: &Switchboard) -> String {
    let cmd = line.parse::<Command>().and_then(|c| c.check(n).map(|()| c));
    match cmd {
        Ok(cmd) => {
            switches.apply(&cmd);
            "ok\n".to_string()
        }
        Err(e) => format!("error {e}\n"),
    }
}

/// Most bytes one control connection may send: the runner sends a command or two per
/// connection, and the line reader buffers a line whole before its length is checked.
const MAX_CONNECTION_BYTES: u64 = 64 * MAX_LINE as u64;

/// Serves control connections until the task is aborted.
pub async fn serve(listener: TcpListener, switches: Switchboard, n: u32) {
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                // out of file descriptors, for one: wait rather than spin
                tracing::warn!(error = %e, "control endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let switches = switches.clone();
        tokio::spawn(async move {
            let (read, mut write) = sock.into_split();
            let mut lines = BufReader::new(read.take(MAX_CONNECTION_BYTES)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = answer(&line, n, &switches);
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
    use crate::Scripted;

    #[test]
    fn answers_ok_or_the_reason() {
        let s = Scripted::new(0, 4, 1);
        let board = s.switchboard();
        assert_eq!(answer("ping", 4, &board), "ok\n");
        assert_eq!(answer("block 1 2", 4, &board), "ok\n");
        assert_eq!(
            answer("block 4", 4, &board),
            "error validator 4 does not exist (n = 4)\n"
        );
        assert!(answer("reboot", 4, &board).starts_with("error unknown command"));
    }

    #[tokio::test]
    async fn serves_commands_over_tcp() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let s = Scripted::new(0, 4, 1);
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, s.switchboard(), 4));
        let sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (read, mut write) = sock.into_split();
        let mut lines = BufReader::new(read).lines();
        for (cmd, want) in [
            ("ping", "ok"),
            (
                "traitor maybe",
                "error expected `traitor on` or `traitor off`",
            ),
        ] {
            write
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .expect("write");
            let got = lines.next_line().await.expect("read").expect("a line");
            assert_eq!(got, want);
        }
        server.abort();
    }
}
