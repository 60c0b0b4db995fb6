//! The transport's error type.

use std::net::SocketAddr;

/// Why the transport could not start.
///
/// Runtime problems (a peer that is down, a bad frame, a refused handshake)
/// are never errors of the API: they are counted in the stats and handled by
/// reconnecting or disconnecting.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound, typically because another process
    /// already uses the port.
    #[error("cannot bind the QUIC endpoint to {addr}: {source} (is another process using this address?)")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is inconsistent (for example two validators with the
    /// same id, or our own entry with a different key than our key pair).
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// Building the certificate or the TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The QUIC endpoint could not be created on the bound socket.
    #[error("cannot create the QUIC endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
}
