//! TLS identities and pinned-key certificate verification.
//!
//! A validator's certificate is self-signed and its key pair IS the
//! validator's ed25519 key, so "who is this?" is answered by the key in the
//! certificate alone: names, issuers and validity dates are ignored. Both
//! verifiers below (1) take the raw ed25519 key out of the end-entity
//! certificate's SubjectPublicKeyInfo, (2) compare it with the pinned key(s)
//! and (3) check the TLS 1.3 handshake signature with the ring provider.
//! Only TLS 1.3 and ed25519 signatures are accepted, and session resumption
//! is off, so every connection proves possession of the key afresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pbft_crypto::Keypair;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::TransportError;
use crate::registry::Registry;
use crate::stats::{reason, Source};

/// The ALPN protocol both ends must agree on.
pub(crate) const ALPN: &[u8] = b"pbft/1";

/// The server name used when dialing. It is not checked: the key is.
pub(crate) const SERVER_NAME: &str = "pbft";

/// PKCS#8 v1 (RFC 8410) prefix of an Ed25519 private key: SEQUENCE, version
/// 0, AlgorithmIdentifier 1.3.101.112, OCTET STRING { OCTET STRING (32) }.
/// The 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER of an Ed25519 SubjectPublicKeyInfo's content up to the key:
/// AlgorithmIdentifier 1.3.101.112, then BIT STRING of 33 bytes with no
/// unused bits. The 32 key bytes follow.
const SPKI_ED25519_PREFIX: [u8; 10] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The ring crypto provider, built explicitly (no process-wide default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// A certificate and private key made from a validator's ed25519 key pair.
pub(crate) struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Builds the self-signed certificate whose key is `keypair`.
    pub(crate) fn new(keypair: &Keypair) -> Result<Identity, TransportError> {
        let mut der = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&keypair.seed());
        let key = PrivatePkcs8KeyDer::from(der);
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .map_err(tls_err)?;
        let mut params =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(tls_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pbft validator {}", keypair.public().to_hex()),
        );
        let cert = params.self_signed(&signer).map_err(tls_err)?.der().clone();
        // The whole scheme rests on this: the certificate carries our key.
        if cert_key(&cert) != Some(*keypair.public().as_bytes()) {
            return Err(TransportError::Tls(
                "the generated certificate does not carry the validator's key".into(),
            ));
        }
        Ok(Identity { cert, key })
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// One DER element: `(tag, content, rest)`. Only single-byte tags and
/// definite lengths of up to 4 bytes; `None` on anything else or on
/// truncation.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The raw ed25519 key of an X.509 certificate, or `None` if the DER is
/// malformed or the key is not ed25519.
///
/// Walks `Certificate { tbsCertificate { [0] version?, serial, signature,
/// issuer, validity, subject, subjectPublicKeyInfo, .. }, .. }`.
pub(crate) fn cert_key(der: &[u8]) -> Option<[u8; 32]> {
    let (tag, cert, trailing) = der_next(der)?;
    if tag != 0x30 || !trailing.is_empty() {
        return None;
    }
    let (tag, tbs, _) = der_next(cert)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject
    for expected in [0x02, 0x30, 0x30, 0x30, 0x30] {
        let (tag, _, after) = der_next(rest)?;
        if tag != expected {
            return None;
        }
        rest = after;
    }
    let (tag, spki, _) = der_next(rest)?;
    if tag != 0x30 || spki.len() != SPKI_ED25519_PREFIX.len() + 32 {
        return None;
    }
    let (prefix, key) = spki.split_at(SPKI_ED25519_PREFIX.len());
    if prefix != SPKI_ED25519_PREFIX {
        return None;
    }
    key.try_into().ok()
}

/// What a connection's peer presented.
pub(crate) enum PeerCert {
    /// No certificate: a client.
    None,
    /// A certificate with this ed25519 key.
    Key([u8; 32]),
    /// A certificate we cannot read (the verifier should have refused it).
    Unreadable,
}

/// The key of the certificate the remote end of `conn` presented.
pub(crate) fn peer_cert(conn: &quinn::Connection) -> PeerCert {
    let Some(identity) = conn.peer_identity() else {
        return PeerCert::None;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return PeerCert::Unreadable;
    };
    match chain.first() {
        None => PeerCert::None,
        Some(cert) => match cert_key(cert) {
            Some(key) => PeerCert::Key(key),
            None => PeerCert::Unreadable,
        },
    }
}

fn refuse() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Checks a TLS 1.3 CertificateVerify signature: ed25519 only, made by a key
/// that `pinned` accepts, verified with the provider's algorithms.
fn check_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    pinned: impl Fn(&[u8; 32]) -> bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::General(
            "only ed25519 handshake signatures are accepted".into(),
        ));
    }
    match cert_key(cert) {
        Some(key) if pinned(&key) => {}
        _ => return Err(refuse()),
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted".into())
}

/// Called with a reason when a pinned-server check refuses a handshake.
pub(crate) type RejectHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Client side of a handshake: the server must hold exactly one pinned key.
pub(crate) struct PinnedServer {
    key: [u8; 32],
    provider: Arc<CryptoProvider>,
    on_reject: RejectHook,
}

impl PinnedServer {
    pub(crate) fn new(key: [u8; 32], provider: Arc<CryptoProvider>, on_reject: RejectHook) -> Self {
        PinnedServer {
            key,
            provider,
            on_reject,
        }
    }
}

impl fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PinnedServer({:02x}{:02x}{:02x}{:02x})",
            self.key[0], self.key[1], self.key[2], self.key[3]
        )
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if cert_key(end_entity) == Some(self.key) {
            Ok(ServerCertVerified::assertion())
        } else {
            (self.on_reject)(reason::UNPINNED_KEY);
            Err(refuse())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls13(&self.provider, message, cert, dss, |k| *k == self.key).inspect_err(|_| {
            (self.on_reject)(reason::BAD_HANDSHAKE_SIGNATURE);
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side of a handshake: a certificate is optional (clients have
/// none), but one that is presented must carry the key of a validator of the
/// cluster that is not banned.
pub(crate) struct PeerAuth {
    registry: Arc<Registry>,
    provider: Arc<CryptoProvider>,
}

impl PeerAuth {
    pub(crate) fn new(registry: Arc<Registry>, provider: Arc<CryptoProvider>) -> Self {
        PeerAuth { registry, provider }
    }
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerAuth")
    }
}

impl ClientCertVerifier for PeerAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let Some(id) = cert_key(end_entity).and_then(|k| self.registry.peer_of_key(&k)) else {
            self.registry.count(Source::Unknown, reason::UNPINNED_KEY);
            tracing::debug!("refused a connection whose certificate key is not in the cluster");
            return Err(refuse());
        };
        if self.registry.is_banned(id) {
            self.registry.count(Source::Peer(id), reason::BANNED);
            return Err(refuse());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_tls13(&self.provider, message, cert, dss, |k| {
            self.registry.peer_of_key(k).is_some()
        })
        .inspect_err(|_| {
            self.registry
                .count(Source::Unknown, reason::BAD_HANDSHAKE_SIGNATURE);
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The RTT assumed before the first measurement. QUIC's default (333 ms)
/// suits the open internet; validators and their clients are expected to be
/// closer, and a smaller estimate makes a dial to a peer that just restarted
/// retry its first packet sooner, and an abandoned dial drain in about a
/// second instead of three. Once a handshake completes, the measured RTT
/// takes over.
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The QUIC endpoint configuration of a validator: its stateless-reset key and the key
/// of its connection-ID check, both derived from its secret key (each under its own
/// domain), so they are the same in every process of the validator.
///
/// A restarted validator then recognises the connection IDs its previous process
/// issued and answers their packets with a reset its peers accept (RFC 9000, section
/// 10.3), so they redial at once instead of writing into a dead connection until the
/// idle timeout. The keys stay secret: only the key holder can reset its connections.
pub(crate) fn endpoint_config(keypair: &Keypair) -> quinn::EndpointConfig {
    let derive = |domain: &[u8]| {
        let mut material = Vec::with_capacity(domain.len() + 32);
        material.extend_from_slice(domain);
        material.extend_from_slice(&keypair.seed());
        ring::digest::digest(&ring::digest::SHA256, &material)
    };
    let reset = derive(b"pbft/v1/quic-stateless-reset\0");
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref());
    let cid = derive(b"pbft/v1/quic-connection-id\0");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// QUIC settings shared by every connection: idle timeout with keep-alives,
/// one bidirectional stream per connection, no unidirectional streams or
/// datagrams.
pub(crate) fn quic_transport(
    idle: Duration,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    Ok(Arc::new(quic_settings(idle)?))
}

fn quic_settings(idle: Duration) -> Result<quinn::TransportConfig, TransportError> {
    let idle_timeout = quinn::IdleTimeout::try_from(idle)
        .map_err(|_| TransportError::Config("idle_timeout is too large".into()))?;
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(Some(idle / 4))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .initial_rtt(INITIAL_RTT);
    Ok(t)
}

/// QUIC settings for connections from addresses that are no validator's: those of
/// [`quic_transport`], with flow-control windows of `window` bytes (received data the
/// remote may have in flight, and our unacknowledged replies), so that the memory a
/// stranger's connection can make us hold is bounded by its client limits rather than
/// by QUIC's defaults (over a megabyte per connection).
pub(crate) fn quic_transport_for_clients(
    idle: Duration,
    window: u32,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut t = quic_settings(idle)?;
    t.stream_receive_window(quinn::VarInt::from_u32(window))
        .receive_window(quinn::VarInt::from_u32(window))
        .send_window(u64::from(window));
    Ok(Arc::new(t))
}

/// The server configuration: our certificate, optional pinned client
/// authentication, TLS 1.3 only, ALPN `pbft/1`, no session tickets.
pub(crate) fn server_config(
    identity: &Identity,
    verifier: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.private_key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// A dialing configuration pinned to one server key; with `identity`, our
/// certificate is presented (validator to validator), without, none is
/// (client to validator).
pub(crate) fn client_config(
    identity: Option<&Identity>,
    verifier: Arc<PinnedServer>,
    provider: Arc<CryptoProvider>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain(), id.private_key())
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(b: u8) -> Keypair {
        Keypair::from_seed(&[b; 32]).expect("seed")
    }

    #[test]
    fn certificate_carries_the_validator_key() {
        for b in 1..5u8 {
            let kp = keypair(b);
            let id = Identity::new(&kp).expect("identity");
            assert_eq!(cert_key(&id.cert), Some(*kp.public().as_bytes()));
        }
    }

    #[test]
    fn private_key_loads_with_the_ring_provider() {
        let kp = keypair(7);
        let id = Identity::new(&kp).expect("identity");
        let key = provider()
            .key_provider
            .load_private_key(id.private_key())
            .expect("load");
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ED25519);
        assert!(key.choose_scheme(&[SignatureScheme::ED25519]).is_some());
        let spki = key.public_key().expect("spki");
        let expected = [
            &[0x30, 0x2a][..],
            &SPKI_ED25519_PREFIX,
            kp.public().as_bytes(),
        ]
        .concat();
        assert_eq!(spki.as_ref(), &expected[..]);
    }

    #[test]
    fn malformed_certificates_never_panic() {
        let id = Identity::new(&keypair(3)).expect("identity");
        let der: &[u8] = &id.cert;
        for cut in 0..der.len() {
            assert_eq!(cert_key(&der[..cut]), None, "truncated at {cut}");
        }
        let mut mutated = der.to_vec();
        for i in 0..mutated.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                mutated[i] ^= flip;
                let _ = cert_key(&mutated);
                mutated[i] ^= flip;
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = cert_key(&bytes);
        }
        assert_eq!(cert_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(cert_key(&[0x3f, 0x00]), None);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            der_next(&[0x02, 0x01, 0x05]),
            Some((0x02, &[0x05][..], &[][..]))
        );
        assert_eq!(
            der_next(&[0x04, 0x81, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(der_next(&[0x04, 0x80]), None);
        assert_eq!(der_next(&[0x04, 0x02, 0x00]), None);
        assert_eq!(der_next(&[]), None);
    }
}
