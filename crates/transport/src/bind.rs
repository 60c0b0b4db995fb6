//! Client accounts bound to a connection.
//!
//! A client connection presents no certificate, so by itself it is anyone's. Right
//! after the hello, a client names the accounts it acts for: for each, the account's
//! public key and its signature over keying material exported from this connection's
//! TLS session (RFC 5705/8446 exporter). Only the holder of the account key can make
//! that signature, and it is worth nothing on any other connection, so a stranger who
//! replays a client's signed requests cannot claim its account. The validator checks
//! each binding against the cluster's client accounts before it gives the connection a
//! slot: bound connections are kept when strangers' anonymous ones are evicted, and the
//! node sends an account's replies to the connections bound to it first.
//!
//! The bind section on the stream: a `u16` big-endian count (0 for an anonymous
//! connection, at most [`MAX_BINDS`]), then per account its 32-byte key and 64-byte
//! signature (domain `ClientBind`), keys in strictly increasing order. Entries are read
//! and checked one at a time: a key out of order or not an account is refused before
//! its signature is checked, and the first bad signature ends the check, so a hello
//! costs a stranger's validator at most one verification and 96 bytes of buffer.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use pbft_crypto::{verify, Domain, Keypair, PublicKey, Signature};
use quinn::{Connection, RecvStream};

/// Most accounts one connection may be bound to (a load generator acts for many).
pub const MAX_BINDS: usize = 256;
/// The exporter label of the bound material.
const LABEL: &[u8] = b"EXPORTER-pbft-client-bind";
/// Bytes per binding: key and signature.
const ENTRY: usize = 32 + 64;

/// The client accounts a validator accepts bindings for: the cluster's clients. Clones
/// share one set, so that the node can change it while the transport runs.
#[derive(Clone, Default)]
pub struct ClientAccounts(Arc<RwLock<HashSet<[u8; 32]>>>);

impl ClientAccounts {
    /// A set holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> ClientAccounts {
        let set = keys.into_iter().map(|k| k.to_bytes()).collect();
        ClientAccounts(Arc::new(RwLock::new(set)))
    }

    /// Whether `key` is a client account.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Adds an account (connections may bind it from now on).
    pub fn insert(&self, key: PublicKey) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_bytes());
    }

    /// Removes an account (connections already bound keep their binding).
    pub fn remove(&self, key: &PublicKey) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key.as_bytes());
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ClientAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientAccounts({} keys)", self.len())
    }
}

/// The accounts a client connection was bound to, sorted. Empty for an anonymous
/// connection. Cheap to clone: every frame from the connection carries it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bound(Arc<[[u8; 32]]>);

impl Bound {
    /// Bound to these keys (sorted and deduplicated here).
    pub fn new(mut keys: Vec<[u8; 32]>) -> Bound {
        keys.sort_unstable();
        keys.dedup();
        Bound(keys.into())
    }

    /// Whether the connection proved it holds `key`.
    pub fn holds(&self, key: &PublicKey) -> bool {
        self.0.binary_search(key.as_bytes()).is_ok()
    }

    /// Whether the connection is bound to no account.
    pub fn is_anonymous(&self) -> bool {
        self.0.is_empty()
    }

    /// The bound keys.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.0
    }
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bound({} accounts)", self.0.len())
    }
}

/// Why a bind section was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BindError {
    /// The stream ended or the exporter failed.
    Read,
    /// More than [`MAX_BINDS`] accounts.
    TooMany(usize),
    /// A key that is not a client account.
    Unlisted,
    /// A key not above the one before it (named twice, or out of order).
    Unordered,
    /// A signature that does not verify.
    BadSignature,
}

fn material(conn: &Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, LABEL, b"").ok()?;
    Some(out)
}

/// The bind section for `accounts` on `conn` (sorted by key, each once); `None` if the
/// session exports nothing (not a TLS 1.3 session).
pub(crate) fn encode(conn: &Connection, accounts: &[Keypair]) -> Option<Vec<u8>> {
    let m = material(conn)?;
    let mut sorted: Vec<&Keypair> = accounts.iter().collect();
    sorted.sort_unstable_by_key(|k| k.public().to_bytes());
    sorted.dedup_by_key(|k| k.public().to_bytes());
    let count = u16::try_from(sorted.len()).ok()?;
    let mut out = Vec::with_capacity(2 + sorted.len() * ENTRY);
    out.extend_from_slice(&count.to_be_bytes());
    for k in sorted {
        out.extend_from_slice(k.public().as_bytes());
        out.extend_from_slice(&k.sign(Domain::ClientBind, &m).to_bytes());
    }
    Some(out)
}

/// Reads and checks a bind section from `recv`, entry by entry.
pub(crate) async fn read(
    conn: &Connection,
    recv: &mut RecvStream,
    accounts: &ClientAccounts,
) -> Result<Bound, BindError> {
    let mut count = [0u8; 2];
    recv.read_exact(&mut count)
        .await
        .map_err(|_| BindError::Read)?;
    let count = usize::from(u16::from_be_bytes(count));
    if count == 0 {
        return Ok(Bound::default());
    }
    if count > MAX_BINDS {
        return Err(BindError::TooMany(count));
    }
    let m = material(conn).ok_or(BindError::Read)?;
    let mut keys: Vec<[u8; 32]> = Vec::new();
    let mut entry = [0u8; ENTRY];
    for _ in 0..count {
        recv.read_exact(&mut entry)
            .await
            .map_err(|_| BindError::Read)?;
        let key = check_entry(&entry, &m, accounts, keys.last())?;
        keys.push(key);
    }
    Ok(Bound::new(keys))
}

/// Checks one entry against the exported `material`; `previous` is the key before it.
fn check_entry(
    entry: &[u8; ENTRY],
    material: &[u8; 32],
    accounts: &ClientAccounts,
    previous: Option<&[u8; 32]>,
) -> Result<[u8; 32], BindError> {
    let (key, sig) = entry.split_at(32);
    let key: [u8; 32] = key.try_into().map_err(|_| BindError::Read)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| BindError::Read)?;
    if previous.is_some_and(|p| key <= *p) {
        return Err(BindError::Unordered);
    }
    if !accounts.contains(&key) {
        return Err(BindError::Unlisted);
    }
    let pk = PublicKey::from_bytes(&key).map_err(|_| BindError::BadSignature)?;
    verify(
        &pk,
        Domain::ClientBind,
        material,
        &Signature::from_bytes(sig),
    )
    .map_err(|_| BindError::BadSignature)?;
    Ok(key)
}

/// Checks the entries of a whole bind section (see [`read`]).
#[cfg(test)]
fn check(body: &[u8], material: [u8; 32], accounts: &ClientAccounts) -> Result<Bound, BindError> {
    let mut keys: Vec<[u8; 32]> = Vec::new();
    for e in body.chunks_exact(ENTRY) {
        let e: &[u8; ENTRY] = e.try_into().map_err(|_| BindError::Read)?;
        let key = check_entry(e, &material, accounts, keys.last())?;
        keys.push(key);
    }
    Ok(Bound::new(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(b: u8) -> Keypair {
        Keypair::from_seed(&[b; 32]).expect("seed")
    }

    fn entry(k: &Keypair, m: &[u8; 32]) -> Vec<u8> {
        let mut e = k.public().as_bytes().to_vec();
        e.extend_from_slice(&k.sign(Domain::ClientBind, m).to_bytes());
        e
    }

    #[test]
    fn bindings_are_checked_against_accounts_and_material() {
        let (alice, bob, eve) = (kp(1), kp(2), kp(3));
        let accounts = ClientAccounts::new([alice.public(), bob.public()]);
        let m = [7u8; 32];
        let mut pair = [&alice, &bob];
        pair.sort_by_key(|k| k.public().to_bytes());
        let body = [entry(pair[0], &m), entry(pair[1], &m)].concat();
        // the same keys out of order are refused
        let reversed = [entry(pair[1], &m), entry(pair[0], &m)].concat();
        assert_eq!(check(&reversed, m, &accounts), Err(BindError::Unordered));
        let bound = check(&body, m, &accounts).expect("valid");
        assert!(bound.holds(&alice.public()) && bound.holds(&bob.public()));
        assert!(!bound.holds(&eve.public()));
        // a binding made for another connection's material is worthless here
        assert_eq!(
            check(&entry(&alice, &[8u8; 32]), m, &accounts),
            Err(BindError::BadSignature)
        );
        // a key that is no account is refused before any signature is checked
        assert_eq!(
            check(&entry(&eve, &m), m, &accounts),
            Err(BindError::Unlisted)
        );
        // alice's key with eve's signature
        let mut forged = entry(&eve, &m);
        forged[..32].copy_from_slice(alice.public().as_bytes());
        assert_eq!(check(&forged, m, &accounts), Err(BindError::BadSignature));
        // the set is shared and can change
        accounts.insert(eve.public());
        assert!(check(&entry(&eve, &m), m, &accounts).is_ok());
        accounts.remove(&eve.public());
        assert_eq!(
            check(&entry(&eve, &m), m, &accounts),
            Err(BindError::Unlisted)
        );
    }

    /// Review of 935fc4e (finding: duplicate bindings). An account holder may name
    /// its one account [`MAX_BINDS`] times: every copy's signature is verified (256
    /// verifications on the accept task, before the per-account limit is looked at),
    /// and `Bound::new` only then drops the copies. A key named twice should be
    /// refused before any signature is checked (for example: keys strictly increasing).
    #[test]
    fn a_key_named_twice_is_refused_before_any_verification() {
        let alice = kp(1);
        let accounts = ClientAccounts::new([alice.public()]);
        let m = [7u8; 32];
        let body = entry(&alice, &m).repeat(MAX_BINDS);
        assert!(
            check(&body, m, &accounts).is_err(),
            "{MAX_BINDS} copies of one binding were accepted (each verified)"
        );
    }
}
