//! Framing on a QUIC stream, the connection hello, and dialing.
//!
//! A stream starts with the dialer's hello: 4 magic bytes and the 32-byte
//! genesis digest of its cluster file; a client follows it with its bind section
//! (the accounts it acts for, see `bind.rs`). The server answers with a 1-byte
//! acknowledgement once it has accepted the connection (same genesis, key
//! pinned, not banned, room for a client), or with a refusal byte followed by
//! its own genesis digest when the digests differ, so that both ends can say
//! which cluster files disagree. After that, each direction carries frames: a
//! `u32` big-endian length, then that many bytes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pbft_crypto::Keypair;
use quinn::{Connection, RecvStream, SendStream};

use crate::tls::SERVER_NAME;

/// What the dialer writes first on its stream, followed by its genesis digest.
pub(crate) const HELLO: [u8; 4] = *b"pbf3";
/// The server's acceptance.
pub(crate) const ACK: u8 = 0x01;
/// The server's refusal of a dialer with another genesis, followed by its own.
pub(crate) const OTHER_GENESIS: u8 = 0x02;

/// Why a dial failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// The server runs another cluster file: its genesis digest.
    Genesis([u8; 32]),
    /// Anything else (unreachable, handshake, timeout), described.
    Other(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Genesis(theirs) => {
                write!(f, "another genesis: {}", hex_short(theirs))
            }
            DialError::Other(s) => f.write_str(s),
        }
    }
}

/// The first 8 bytes of a digest in hex, for logs.
pub(crate) fn hex_short(d: &[u8; 32]) -> String {
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// How the server's side of the hello ended.
pub(crate) enum Hello {
    /// The dialer's hello, with our genesis: go on with the stream.
    Ok(SendStream, RecvStream),
    /// A hello with another genesis digest (the refusal was sent).
    Genesis([u8; 32]),
    /// No hello in time, or not ours.
    Bad,
}

/// Why reading a frame stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The announced length exceeds the limit.
    Oversize(usize),
    /// The stream or connection ended in the middle of a frame, or failed.
    Closed,
    /// No frame began within the idle timeout.
    Idle,
    /// A frame began and did not end within the frame deadline.
    Slow,
}

/// Checks an announced frame length against the limit.
pub(crate) fn check_len(header: [u8; 4], max: usize) -> Result<usize, ReadError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        Err(ReadError::Oversize(len))
    } else {
        Ok(len)
    }
}

/// Reads one frame. `Ok(None)` when the stream was finished cleanly between
/// frames. Memory grows with the bytes that actually arrive, never to the
/// announced length up front.
pub(crate) async fn read(recv: &mut RecvStream, max: usize) -> Result<Option<Bytes>, ReadError> {
    let mut header = [0u8; 4];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(ReadError::Closed),
    }
    let len = check_len(header, max)?;
    let mut buf = BytesMut::new();
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => {
                if buf.is_empty() && chunk.bytes.len() == len {
                    // The whole frame in one chunk: no copy.
                    return Ok(Some(chunk.bytes));
                }
                buf.extend_from_slice(&chunk.bytes);
            }
            Ok(None) | Err(_) => return Err(ReadError::Closed),
        }
    }
    Ok(Some(buf.freeze()))
}

/// Reads one frame from a client: none may begin for `idle` (the connection is
/// then idle), and one that began must end within `deadline`, so that a client
/// cannot hold a slot or a buffer by announcing a frame it never finishes.
pub(crate) async fn read_client(
    recv: &mut RecvStream,
    max: usize,
    idle: Duration,
    deadline: Duration,
) -> Result<Option<Bytes>, ReadError> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(idle, recv.read(&mut first)).await {
        Err(_) => return Err(ReadError::Idle),
        Ok(Ok(Some(1))) => {}
        Ok(Ok(None)) => return Ok(None),
        Ok(Ok(Some(_)) | Err(_)) => return Err(ReadError::Closed),
    }
    let rest = async {
        let mut header = [first[0], 0, 0, 0];
        recv.read_exact(&mut header[1..])
            .await
            .map_err(|_| ReadError::Closed)?;
        let len = check_len(header, max)?;
        let mut buf = vec![0u8; len];
        recv.read_exact(&mut buf)
            .await
            .map_err(|_| ReadError::Closed)?;
        Ok(Some(Bytes::from(buf)))
    };
    match tokio::time::timeout(deadline, rest).await {
        Err(_) => Err(ReadError::Slow),
        Ok(r) => r,
    }
}

/// Most queued frames a writer hands to QUIC in one call.
pub(crate) const WRITE_GULP: usize = 64;

/// Writes one frame; the payload is handed to QUIC without copying. The
/// caller has checked `frame.len() <= u32::MAX`.
pub(crate) async fn write(send: &mut SendStream, frame: &Bytes) -> Result<(), quinn::WriteError> {
    write_many(send, std::slice::from_ref(frame)).await
}

/// Writes several frames in one call, so QUIC's connection task is woken once for
/// all of them (and a length prefix never leaves in a packet of its own). Payloads
/// are not copied.
pub(crate) async fn write_many(
    send: &mut SendStream,
    frames: &[Bytes],
) -> Result<(), quinn::WriteError> {
    let mut chunks = Vec::with_capacity(frames.len() * 2);
    for frame in frames {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        chunks.push(Bytes::copy_from_slice(&len.to_be_bytes()));
        chunks.push(frame.clone());
    }
    send.write_all_chunks(&mut chunks).await
}

/// Takes `first` and up to [`WRITE_GULP`] - 1 more frames already queued, without
/// waiting.
pub(crate) fn gulp(first: Bytes, queue: &mut tokio::sync::mpsc::Receiver<Bytes>) -> Vec<Bytes> {
    let mut frames = vec![first];
    while frames.len() < WRITE_GULP {
        match queue.try_recv() {
            Ok(f) => frames.push(f),
            Err(_) => break,
        }
    }
    frames
}

/// Dials `addr`, opens the stream, says hello with our `genesis` and waits for
/// the server's acceptance, all within `limit`. A client passes the accounts it
/// binds the connection to (`Some(&[])` for none); a validator passes `None`.
pub(crate) async fn dial(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addr: SocketAddr,
    genesis: &[u8; 32],
    binds: Option<&[Keypair]>,
    limit: Duration,
) -> Result<(Connection, SendStream, RecvStream), DialError> {
    let other = DialError::Other;
    let connecting = endpoint
        .connect_with(config.clone(), addr, SERVER_NAME)
        .map_err(|e| other(format!("cannot dial {addr}: {e}")))?;
    let attempt = async {
        let conn = connecting
            .await
            .map_err(|e| other(format!("handshake with {addr}: {e}")))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| other(format!("open stream: {e}")))?;
        let mut hello = Vec::with_capacity(36);
        hello.extend_from_slice(&HELLO);
        hello.extend_from_slice(genesis);
        if let Some(accounts) = binds {
            let section = crate::bind::encode(&conn, accounts).ok_or_else(|| {
                other(format!("cannot bind accounts on the connection to {addr}"))
            })?;
            hello.extend_from_slice(&section);
        }
        send.write_all(&hello)
            .await
            .map_err(|e| other(format!("hello: {e}")))?;
        let mut ack = [0u8; 1];
        if let Err(e) = recv.read_exact(&mut ack).await {
            // the server's close says why (busy, banned, a bad binding...)
            let why = conn.close_reason().map_or(e.to_string(), |r| r.to_string());
            return Err(other(format!("not accepted by {addr}: {why}")));
        }
        match ack[0] {
            ACK => Ok((conn, send, recv)),
            OTHER_GENESIS => {
                let mut theirs = [0u8; 32];
                let read = recv.read_exact(&mut theirs).await;
                conn.close(quinn::VarInt::from_u32(0), b"another genesis");
                read.map_err(|e| other(format!("refused by {addr}: {e}")))?;
                Err(DialError::Genesis(theirs))
            }
            b => {
                conn.close(quinn::VarInt::from_u32(0), b"bad ack");
                Err(other(format!(
                    "unexpected acknowledgement {b:#04x} from {addr}"
                )))
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(other(format!("dialing {addr} timed out after {limit:?}"))),
    }
}

/// Server side of the hello: accepts the dialer's stream and checks its hello
/// and genesis digest, within `limit`. A dialer with another genesis is sent
/// the refusal and ours, and given until `limit` to read it.
pub(crate) async fn accept_hello(conn: &Connection, genesis: &[u8; 32], limit: Duration) -> Hello {
    let attempt = async {
        let (send, mut recv) = conn.accept_bi().await.ok()?;
        let mut hello = [0u8; 36];
        recv.read_exact(&mut hello).await.ok()?;
        (hello[..4] == HELLO).then_some((send, recv, hello))
    };
    let Some((mut send, recv, hello)) = tokio::time::timeout(limit, attempt).await.ok().flatten()
    else {
        return Hello::Bad;
    };
    let mut theirs = [0u8; 32];
    theirs.copy_from_slice(&hello[4..]);
    if &theirs == genesis {
        return Hello::Ok(send, recv);
    }
    let mut refusal = [0u8; 33];
    refusal[0] = OTHER_GENESIS;
    refusal[1..].copy_from_slice(genesis);
    let refuse = async {
        if send.write_all(&refusal).await.is_ok() && send.finish().is_ok() {
            // the dialer closes once it has read it
            conn.closed().await;
        }
    };
    let _ = tokio::time::timeout(limit, refuse).await;
    Hello::Genesis(theirs)
}

/// Exponential back-off between reconnection attempts.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; the next one doubles, up to the maximum.
    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Back to the minimum (after a connection that stayed up long enough).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// The maximum delay.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limit() {
        assert_eq!(check_len([0, 0, 0, 0], 10), Ok(0));
        assert_eq!(check_len([0, 0, 0, 10], 10), Ok(10));
        assert_eq!(check_len([0, 0, 0, 11], 10), Err(ReadError::Oversize(11)));
        assert_eq!(check_len([0xff; 4], usize::MAX), Ok(u32::MAX as usize));
        assert_eq!(
            check_len([0xff; 4], 1 << 24),
            Err(ReadError::Oversize(u32::MAX as usize))
        );
    }

    #[test]
    fn backoff_doubles_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let steps: Vec<u64> = (0..6).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(steps, vec![50, 100, 200, 300, 300, 300]);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(50));
    }
}
