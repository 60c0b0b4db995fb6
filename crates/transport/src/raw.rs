//! Bare client connections, for tests and for the hostile strangers of scenario
//! files: a connection that says the hello and then writes whatever bytes it is
//! told to (half a frame, nothing at all), from a chosen local address.
//! [`ClientTransport`](crate::ClientTransport) is what real clients use.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use crate::config::PeerInfo;
use crate::error::TransportError;
use crate::frame::{self, DialError};
use crate::registry::code;
use crate::tls::{self, PinnedServer};

/// An anonymous dialing configuration pinned to `validator`'s key.
fn dial_config(validator: &PeerInfo) -> Result<quinn::ClientConfig, String> {
    let provider = tls::provider();
    let quic = tls::quic_transport(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let pin = PinnedServer::new(
        *validator.key.as_bytes(),
        provider.clone(),
        Arc::new(|_| {}),
    );
    tls::client_config(None, Arc::new(pin), provider, quic).map_err(|e| e.to_string())
}

/// A QUIC endpoint that opens bare client connections.
pub struct RawEndpoint {
    endpoint: Endpoint,
}

impl RawEndpoint {
    /// Binds an ephemeral UDP port on `ip` (any address of the host, for example
    /// one of loopback's 127.0.0.0/8, so that a test can play another host).
    pub fn bind(ip: IpAddr) -> Result<RawEndpoint, TransportError> {
        let (endpoint, _) = crate::client::dialing_endpoint(SocketAddr::new(ip, 0))?;
        Ok(RawEndpoint { endpoint })
    }

    /// Opens a connection to `validator` (its key pinned) and says the hello with
    /// `genesis`, within `limit`. An error says why the validator did not accept it.
    pub async fn open(
        &self,
        validator: &PeerInfo,
        genesis: [u8; 32],
        limit: Duration,
    ) -> Result<RawConnection, String> {
        let config = dial_config(validator)?;
        match frame::dial(
            &self.endpoint,
            &config,
            validator.addr,
            &genesis,
            Some(&[]),
            limit,
        )
        .await
        {
            Ok((conn, send, recv)) => Ok(RawConnection { conn, send, recv }),
            Err(DialError::Genesis(_)) => Err("refused: another genesis".into()),
            Err(DialError::Other(e)) => Err(e),
        }
    }

    /// Completes a QUIC handshake with `validator` (its key pinned) within `limit`,
    /// and then says nothing: no stream, no hello. An error says why the handshake
    /// failed.
    pub async fn handshake_only(
        &self,
        validator: &PeerInfo,
        limit: Duration,
    ) -> Result<SilentConnection, String> {
        let config = dial_config(validator)?;
        let connecting = self
            .endpoint
            .connect_with(config, validator.addr, tls::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(conn)) => Ok(SilentConnection { conn }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no handshake within {limit:?}")),
        }
    }

    /// Closes every connection of the endpoint.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(code::SHUTDOWN), b"shutdown");
    }
}

/// A connection that completed its handshake and says nothing.
pub struct SilentConnection {
    conn: Connection,
}

impl SilentConnection {
    /// Whether the connection is closed already (and why).
    pub fn close_reason(&self) -> Option<String> {
        self.conn.close_reason().map(|e| e.to_string())
    }
}

/// An accepted bare client connection.
pub struct RawConnection {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
}

impl RawConnection {
    /// Writes `bytes` as they are (no framing).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.send.write_all(bytes).await.map_err(|e| e.to_string())
    }

    /// Writes one frame (length prefix and payload).
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), String> {
        frame::write(&mut self.send, &frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next frame the validator sends, or `None` once the connection ends.
    pub async fn next_frame(&mut self, max: usize) -> Option<Bytes> {
        frame::read(&mut self.recv, max).await.ok().flatten()
    }

    /// Waits until the connection is closed, and says by whom and why.
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }

    /// Whether the connection is closed already (and why).
    pub fn close_reason(&self) -> Option<String> {
        self.conn.close_reason().map(|e| e.to_string())
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(VarInt::from_u32(code::DONE), b"");
    }
}
