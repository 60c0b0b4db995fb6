//! The validator transport's shared state: who is connected, counters,
//! strikes and bans.
//!
//! One `std::sync::Mutex` guards it; it is never held across an `.await`,
//! and connections are closed only after the lock is released.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bind::Bound;
use crate::config::TransportConfig;
use crate::stats::{reason, Source, TransportStats};
use crate::{ClientId, Origin};

/// QUIC application close codes.
pub(crate) mod code {
    /// Normal end of a connection.
    pub(crate) const DONE: u32 = 0;
    /// The endpoint is shutting down.
    pub(crate) const SHUTDOWN: u32 = 1;
    /// A frame exceeded the maximum size.
    pub(crate) const OVERSIZE: u32 = 2;
    /// The peer is banned (strike limit reached).
    pub(crate) const BANNED: u32 = 3;
    /// A newer connection from the same validator replaced this one.
    pub(crate) const SUPERSEDED: u32 = 4;
    /// The stream did not start with the hello.
    pub(crate) const BAD_HELLO: u32 = 5;
    /// Too many client connections.
    pub(crate) const BUSY: u32 = 6;
    /// The connection is being closed on purpose (misbehaving client).
    pub(crate) const KICKED: u32 = 7;
    /// The dialer's genesis digest is not ours (another cluster file).
    pub(crate) const GENESIS: u32 = 8;
    /// An idle client connection closed to make room for a new one.
    pub(crate) const EVICTED: u32 = 9;
    /// A client connection silent for longer than the idle timeout, or slower
    /// than the frame deadline to finish a frame.
    pub(crate) const IDLE: u32 = 10;
    /// The client's account binding was refused.
    pub(crate) const BAD_BIND: u32 = 11;
}

/// An open client connection: where its replies go.
struct ClientSlot {
    conn: quinn::Connection,
    replies: mpsc::Sender<Bytes>,
    /// The address it came from (for the limit per address and bans).
    ip: IpAddr,
    /// The accounts it is bound to (empty: anonymous).
    bound: Bound,
    /// When it last delivered a frame (or opened), for eviction of idle ones.
    last_active: Arc<ActivityClock>,
}

/// When a client connection was last active, in milliseconds since the registry
/// started: written by the connection's reader, read when a slot must be freed.
pub(crate) struct ActivityClock {
    start: Instant,
    last_ms: AtomicU64,
}

impl ActivityClock {
    fn new(start: Instant) -> ActivityClock {
        let c = ActivityClock {
            start,
            last_ms: AtomicU64::new(0),
        };
        c.touch();
        c
    }

    /// The connection delivered a frame now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.duration_since(self.start).saturating_sub(last)
    }
}

/// What the limits per address count a remote address as: an IPv4 address as itself
/// (IPv4-mapped IPv6 addresses too), an IPv6 address as its /64 prefix, since one host
/// is commonly given a whole /64 and could otherwise take a fresh address for every
/// connection.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// An incoming connection counted as pending; dropping it ends the count.
pub(crate) struct Pending {
    registry: Arc<Registry>,
    ip: IpAddr,
    serial: u64,
    kick: Arc<tokio::sync::Notify>,
}

impl Pending {
    /// Completes when the connection was evicted to make room for another: its
    /// handshake, hello or binding must stop.
    pub(crate) async fn kicked(&self) {
        self.kick.notified().await
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.registry.end_pending(self.ip, self.serial);
    }
}

/// What to do with an incoming connection (see [`Registry::begin_pending`]).
pub(crate) enum Admit {
    /// Go on with the handshake, counted as pending.
    Go(Pending),
    /// Ask the remote to prove its address first (a QUIC Retry).
    Retry,
    /// Refuse it.
    Refuse,
}

/// A pending connection: its serial and how to stop it.
struct PendingEntry {
    serial: u64,
    kick: Arc<tokio::sync::Notify>,
}

impl Refusal {
    /// The close code and reason the refused connection is closed with.
    pub(crate) fn close(&self) -> (u32, &'static [u8]) {
        match self {
            // its address, or an account it binds
            Refusal::Banned => (code::BANNED, b"banned"),
            Refusal::TooManyFromAddress => (code::BUSY, b"too many from this address"),
            Refusal::TooManyForAccount => (code::BUSY, b"too many for this account"),
            Refusal::Busy => (code::BUSY, b"too many clients"),
        }
    }
}

/// Why a client connection was not given a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address is banned (a connection from it reached the strike limit).
    Banned,
    /// Its address holds `max_clients_per_ip` connections already.
    TooManyFromAddress,
    /// An account it binds holds `max_clients_per_account` connections already.
    TooManyForAccount,
    /// `max_clients` are open and none has been idle long enough to evict.
    Busy,
}

#[derive(Default)]
struct State {
    counters: BTreeMap<(Source, &'static str), u64>,
    connected: BTreeSet<u32>,
    established: BTreeMap<u32, u64>,
    /// The accepted inbound connection of each validator, with a serial
    /// number so that an old connection's cleanup does not remove a newer one.
    inbound: HashMap<u32, (u64, quinn::Connection)>,
    clients: HashMap<ClientId, ClientSlot>,
    peer_strikes: HashMap<u32, VecDeque<Instant>>,
    /// Open anonymous client connections per address.
    client_ips: HashMap<IpAddr, usize>,
    /// Open client connections per bound account.
    client_accounts: HashMap<[u8; 32], usize>,
    /// Incoming connections not yet admitted or refused, per address, oldest first.
    pending: HashMap<IpAddr, VecDeque<PendingEntry>>,
    /// Their total.
    pending_total: usize,
    /// Ban expiry per client address (a connection from it was kicked).
    client_bans: HashMap<IpAddr, Option<Instant>>,
    /// Strikes against client addresses (reports about their anonymous connections,
    /// and connections closed for breaking the framing rules).
    address_strikes: HashMap<IpAddr, VecDeque<Instant>>,
    /// Strikes against client accounts (the same, about connections bound to them).
    account_strikes: HashMap<[u8; 32], VecDeque<Instant>>,
    /// Ban expiry per client account: its connections are refused until then.
    account_bans: HashMap<[u8; 32], Option<Instant>>,
    /// Ban expiry per validator; `None` means until restart (the duration
    /// did not fit an `Instant`).
    bans: HashMap<u32, Option<Instant>>,
}

pub(crate) struct Registry {
    me: u32,
    keys: HashMap<[u8; 32], u32>,
    strike_limit: usize,
    strike_window: Duration,
    ban_duration: Duration,
    max_clients: usize,
    max_clients_per_ip: usize,
    max_clients_per_account: usize,
    max_pending: usize,
    evict_idle_after: Duration,
    start: Instant,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    next_serial: AtomicU64,
    state: Mutex<State>,
}

fn close_all(conns: Vec<quinn::Connection>, code: u32, why: &[u8]) {
    for conn in conns {
        conn.close(quinn::VarInt::from_u32(code), why);
    }
}

/// Drops strikes older than `window` and records one at `now`; returns how
/// many remain.
fn strike(strikes: &mut VecDeque<Instant>, now: Instant, window: Duration) -> usize {
    while strikes
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        strikes.pop_front();
    }
    strikes.push_back(now);
    strikes.len()
}

impl Registry {
    pub(crate) fn new(cfg: &TransportConfig) -> Registry {
        let keys = cfg
            .peers
            .iter()
            .filter(|p| p.id != cfg.me)
            .map(|p| (*p.key.as_bytes(), p.id))
            .collect();
        Registry {
            me: cfg.me,
            keys,
            strike_limit: usize::try_from(cfg.strike_limit).unwrap_or(usize::MAX),
            strike_window: cfg.strike_window,
            ban_duration: cfg.ban_duration,
            max_clients: cfg.max_clients,
            max_clients_per_ip: cfg.max_clients_per_ip,
            max_clients_per_account: cfg.max_clients_per_account,
            max_pending: cfg.max_pending,
            evict_idle_after: cfg.evict_idle_after,
            start: Instant::now(),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            next_serial: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the transport down with it: the
        // state stays consistent because every update is a single step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one event.
    pub(crate) fn count(&self, source: Source, reason: &'static str) {
        *self.lock().counters.entry((source, reason)).or_default() += 1;
    }

    /// The id of the other validator holding `key`.
    pub(crate) fn peer_of_key(&self, key: &[u8; 32]) -> Option<u32> {
        self.keys.get(key).copied()
    }

    fn banned_now(st: &mut State, id: u32, now: Instant) -> bool {
        match st.bans.get(&id) {
            None => false,
            Some(None) => true,
            Some(Some(until)) if *until > now => true,
            Some(Some(_)) => {
                st.bans.remove(&id);
                false
            }
        }
    }

    /// Whether `id` is banned right now.
    pub(crate) fn is_banned(&self, id: u32) -> bool {
        Self::banned_now(&mut self.lock(), id, Instant::now())
    }

    /// Marks the outgoing connection to `id` as up or down.
    pub(crate) fn set_connected(&self, id: u32, up: bool) {
        let mut st = self.lock();
        if up {
            st.connected.insert(id);
            *st.established.entry(id).or_default() += 1;
        } else {
            st.connected.remove(&id);
        }
    }

    /// Records the accepted inbound connection of `id`, replacing (and
    /// closing) an older one. `None` if `id` is banned (counted).
    pub(crate) fn add_inbound(&self, id: u32, conn: quinn::Connection) -> Option<u64> {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let old = {
            let mut st = self.lock();
            if Self::banned_now(&mut st, id, Instant::now()) {
                *st.counters
                    .entry((Source::Peer(id), reason::BANNED))
                    .or_default() += 1;
                drop(st);
                close_all(vec![conn], code::BANNED, b"banned");
                return None;
            }
            st.inbound.insert(id, (serial, conn))
        };
        if let Some((_, old)) = old {
            close_all(vec![old], code::SUPERSEDED, b"superseded");
        }
        Some(serial)
    }

    /// Forgets the inbound connection `serial` of `id` (if still current).
    pub(crate) fn remove_inbound(&self, id: u32, serial: u64) {
        let mut st = self.lock();
        if st.inbound.get(&id).is_some_and(|(s, _)| *s == serial) {
            st.inbound.remove(&id);
        }
    }

    /// Gives a client connection from `ip`, bound to `bound`, a slot, or says why not.
    ///
    /// Anonymous connections are limited per address and refused while the address is
    /// banned; bound ones are limited per account instead (only the account's holder
    /// can bind it, and honest clients may share an address with a stranger). With
    /// every slot taken, a bound newcomer closes the anonymous connection idle the
    /// longest, however recently it spoke: strangers that keep their connections
    /// busy cannot keep account holders out. Otherwise the connection idle the longest
    /// is closed if it has been idle for `evict_idle_after` (anonymous newcomers only
    /// ever evict anonymous connections). Returns the slot's activity clock.
    pub(crate) fn add_client(
        &self,
        id: ClientId,
        conn: quinn::Connection,
        replies: mpsc::Sender<Bytes>,
        ip: IpAddr,
        bound: Bound,
    ) -> Result<Arc<ActivityClock>, Refusal> {
        let now = Instant::now();
        let anonymous = bound.is_anonymous();
        let mut evicted = None;
        let outcome = {
            let mut st = self.lock();
            st.client_bans
                .retain(|_, until| until.is_none_or(|t| t > now));
            st.account_bans
                .retain(|_, until| until.is_none_or(|t| t > now));
            // an anonymous connection answers for its address, a bound one for its
            // accounts
            let banned = if anonymous {
                st.client_bans.contains_key(&ip)
            } else {
                bound.keys().iter().any(|k| st.account_bans.contains_key(k))
            };
            let refusal = if banned {
                Some((Refusal::Banned, reason::BANNED))
            } else if anonymous
                && st.client_ips.get(&ip).copied().unwrap_or(0) >= self.max_clients_per_ip
            {
                Some((Refusal::TooManyFromAddress, reason::TOO_MANY_FROM_ADDRESS))
            } else if bound.keys().iter().any(|k| {
                st.client_accounts.get(k).copied().unwrap_or(0) >= self.max_clients_per_account
            }) {
                Some((Refusal::TooManyForAccount, reason::TOO_MANY_FOR_ACCOUNT))
            } else if st.clients.len() >= self.max_clients {
                match self.victim(&st, &bound, now) {
                    Some((c, why)) => {
                        if let Some(slot) = Self::drop_client(&mut st, c) {
                            evicted = Some(slot.conn);
                        }
                        *st.counters.entry((Source::Client, why)).or_default() += 1;
                        None
                    }
                    None => Some((Refusal::Busy, reason::TOO_MANY_CLIENTS)),
                }
            } else {
                None
            };
            match refusal {
                Some((r, why)) => {
                    *st.counters.entry((Source::Client, why)).or_default() += 1;
                    Err(r)
                }
                None => {
                    let last_active = Arc::new(ActivityClock::new(self.start));
                    if anonymous {
                        *st.client_ips.entry(ip).or_default() += 1;
                    }
                    for k in bound.keys() {
                        *st.client_accounts.entry(*k).or_default() += 1;
                    }
                    st.clients.insert(
                        id,
                        ClientSlot {
                            conn,
                            replies,
                            ip,
                            bound,
                            last_active: last_active.clone(),
                        },
                    );
                    Ok(last_active)
                }
            }
        };
        if let Some(conn) = evicted {
            conn.close(quinn::VarInt::from_u32(code::EVICTED), b"evicted");
        }
        outcome
    }

    /// The connection to close for a newcomer when every slot is taken, and the
    /// reason it is counted under. An anonymous newcomer may take the slot of an
    /// anonymous connection idle for `evict_idle_after`. A bound newcomer takes the
    /// idlest anonymous slot; with every slot bound, the idlest slot of the account
    /// holding the most connections if it holds two more than the newcomer's; else a
    /// slot idle for `evict_idle_after` of an account holding more than the newcomer's.
    fn victim(
        &self,
        st: &State,
        newcomer: &Bound,
        now: Instant,
    ) -> Option<(ClientId, &'static str)> {
        // the idlest of the slots `keep` selects
        let idlest = |keep: &dyn Fn(&ClientSlot) -> bool| {
            st.clients
                .iter()
                .filter(|(_, slot)| keep(slot))
                .map(|(c, slot)| (slot.last_active.idle_for(now), *c))
                .max()
        };
        let anonymous = |slot: &ClientSlot| slot.bound.is_anonymous();
        if newcomer.is_anonymous() {
            return idlest(&anonymous)
                .filter(|(idle, _)| *idle >= self.evict_idle_after)
                .map(|(_, c)| (c, reason::EVICTED_IDLE));
        }
        if let Some((_, c)) = idlest(&anonymous) {
            return Some((c, reason::EVICTED_ANONYMOUS));
        }
        // every slot is bound. The most connections an account of a slot (or of the
        // newcomer) holds:
        let held = |keys: &[[u8; 32]]| {
            keys.iter()
                .map(|k| st.client_accounts.get(k).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        };
        let mine = held(newcomer.keys());
        // an account holding two connections more than the newcomer's gives up its
        // idlest at once, so that a holder of many accounts cannot keep the others out
        let busiest = st
            .client_accounts
            .iter()
            .max_by_key(|(_, n)| **n)
            .filter(|(_, n)| **n > mine + 1)
            .map(|(k, _)| *k);
        if let Some(k) = busiest {
            if let Some((_, c)) = idlest(&|slot: &ClientSlot| slot.bound.keys().contains(&k)) {
                return Some((c, reason::EVICTED_BUSIEST_ACCOUNT));
            }
        }
        // otherwise an idle slot, of an account holding more connections than the
        // newcomer's
        idlest(&|slot: &ClientSlot| held(slot.bound.keys()) > mine)
            .filter(|(idle, _)| *idle >= self.evict_idle_after)
            .map(|(_, c)| (c, reason::EVICTED_IDLE))
    }

    /// Decides on an incoming connection from `ip` before any handshake work, and
    /// counts it as pending until the returned guard is dropped (once it is admitted or
    /// refused). `validated` says QUIC has seen the remote answer at that address (a
    /// Retry, or an earlier connection); `validator` that the address is a validator's.
    ///
    /// An address that is not validated is never refused, only asked to prove itself
    /// with a Retry when anything is tight (half of `max_pending` taken, its share
    /// taken, or it is banned), so a spoofed source can neither take places nor use up
    /// a real address's share. A validated newcomer is never refused for room either:
    /// over its address's share (`max_clients_per_ip`, 1 while the address is banned;
    /// validators' addresses have none) the address's oldest pending connection is
    /// evicted, and with `max_pending` taken the oldest of the address holding the
    /// most. A stranger's stalled connections thus make room for anyone else's, and
    /// never keep a validator or a client out.
    pub(crate) fn begin_pending(
        self: &Arc<Self>,
        ip: IpAddr,
        validated: bool,
        validator: bool,
    ) -> Admit {
        let now = Instant::now();
        let mut evict = None;
        let admit = {
            let mut st = self.lock();
            let banned = st
                .client_bans
                .get(&ip)
                .is_some_and(|until| until.is_none_or(|t| t > now));
            let share = if validator {
                usize::MAX
            } else if banned {
                1
            } else {
                self.max_clients_per_ip
            };
            let here = st.pending.get(&ip).map_or(0, VecDeque::len);
            let over_share = here >= share;
            let full = st.pending_total >= self.max_pending;
            let busy = st.pending_total > self.max_pending / 2;
            if !validated && (over_share || full || busy || banned) {
                *st.counters
                    .entry((Source::Unknown, reason::RETRY_SENT))
                    .or_default() += 1;
                return Admit::Retry;
            }
            let victim = if over_share {
                Some(ip)
            } else if full {
                st.pending
                    .iter()
                    .max_by_key(|(_, q)| q.len())
                    .map(|(a, _)| *a)
            } else {
                None
            };
            if let Some(v) = victim {
                match st.pending.get_mut(&v).and_then(VecDeque::pop_front) {
                    Some(entry) => {
                        if st.pending.get(&v).is_some_and(VecDeque::is_empty) {
                            st.pending.remove(&v);
                        }
                        st.pending_total = st.pending_total.saturating_sub(1);
                        *st.counters
                            .entry((Source::Unknown, reason::EVICTED_PENDING))
                            .or_default() += 1;
                        evict = Some(entry.kick);
                    }
                    None => {
                        *st.counters
                            .entry((Source::Unknown, reason::TOO_MANY_PENDING))
                            .or_default() += 1;
                        return Admit::Refuse;
                    }
                }
            }
            let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
            let kick = Arc::new(tokio::sync::Notify::new());
            st.pending.entry(ip).or_default().push_back(PendingEntry {
                serial,
                kick: kick.clone(),
            });
            st.pending_total += 1;
            Admit::Go(Pending {
                registry: self.clone(),
                ip,
                serial,
                kick,
            })
        };
        if let Some(kick) = evict {
            kick.notify_one();
        }
        admit
    }

    fn end_pending(&self, ip: IpAddr, serial: u64) {
        let mut st = self.lock();
        let Some(q) = st.pending.get_mut(&ip) else {
            return;
        };
        let before = q.len();
        q.retain(|e| e.serial != serial);
        let gone = before - q.len();
        if q.is_empty() {
            st.pending.remove(&ip);
        }
        st.pending_total = st.pending_total.saturating_sub(gone);
    }

    /// Removes a client slot and its counts against its address and accounts.
    fn drop_client(st: &mut State, id: ClientId) -> Option<ClientSlot> {
        let slot = st.clients.remove(&id)?;
        if slot.bound.is_anonymous() {
            if let Some(n) = st.client_ips.get_mut(&slot.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.client_ips.remove(&slot.ip);
                }
            }
        }
        for k in slot.bound.keys() {
            if let Some(n) = st.client_accounts.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.client_accounts.remove(k);
                }
            }
        }
        Some(slot)
    }

    pub(crate) fn remove_client(&self, id: ClientId) {
        let mut st = self.lock();
        Self::drop_client(&mut st, id);
    }

    /// The reply queue of an open client connection.
    pub(crate) fn client_queue(&self, id: ClientId) -> Option<mpsc::Sender<Bytes>> {
        self.lock().clients.get(&id).map(|c| c.replies.clone())
    }

    /// A client connection from `ip` (the address it was admitted with) broke the
    /// framing rules (an oversize frame, a frame not finished in time) and was closed.
    /// Such closes count against the address: at the strike limit within the window
    /// it is refused new connections, so that a stranger cannot make the validator
    /// accept, handshake and close connections for ever.
    pub(crate) fn strike_address(&self, ip: IpAddr) {
        let now = Instant::now();
        let banned = {
            let mut st = self.lock();
            self.strike_address_locked(&mut st, ip, now)
        };
        if banned {
            tracing::warn!(%ip, "client address banned: too many broken frames");
        }
    }

    /// A client connection admitted from `ip`, bound to `bound`, broke the framing rules
    /// and was closed: a strike against its accounts if it is bound (only their holder
    /// can bind them; a ban of the address would punish anonymous neighbours behind
    /// the same NAT), else against its address.
    pub(crate) fn strike_client(&self, ip: IpAddr, bound: &Bound) {
        let now = Instant::now();
        let banned = {
            let mut st = self.lock();
            self.strike_client_locked(&mut st, ip, bound, now)
        };
        if banned {
            tracing::warn!(%ip, accounts = bound.keys().len(), "client banned: too many broken frames");
        }
    }

    fn strike_client_locked(
        &self,
        st: &mut State,
        ip: IpAddr,
        bound: &Bound,
        now: Instant,
    ) -> bool {
        if bound.is_anonymous() {
            return self.strike_address_locked(st, ip, now);
        }
        let window = self.strike_window;
        let mut banned = false;
        for k in bound.keys() {
            let n = strike(st.account_strikes.entry(*k).or_default(), now, window);
            if n >= self.strike_limit {
                st.account_strikes.remove(k);
                st.account_bans
                    .insert(*k, now.checked_add(self.ban_duration));
                banned = true;
            }
        }
        if banned {
            *st.counters
                .entry((Source::Client, reason::BAN_IMPOSED))
                .or_default() += 1;
        }
        if st.account_strikes.len() > 4 * self.max_clients {
            st.account_strikes
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
        }
        banned
    }

    /// Records a strike against client address `ip`; at the strike limit within the
    /// window the address is refused new connections for the ban duration (true).
    fn strike_address_locked(&self, st: &mut State, ip: IpAddr, now: Instant) -> bool {
        let window = self.strike_window;
        let n = strike(st.address_strikes.entry(ip).or_default(), now, window);
        let banned = n >= self.strike_limit;
        if banned {
            st.address_strikes.remove(&ip);
            st.client_bans
                .insert(ip, now.checked_add(self.ban_duration));
            *st.counters
                .entry((Source::Client, reason::BAN_IMPOSED))
                .or_default() += 1;
        }
        // an address that stopped misbehaving is forgotten once its strikes are old
        if st.address_strikes.len() > 4 * self.max_clients {
            st.address_strikes
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
        }
        banned
    }

    /// Counts a report and applies the strike rule.
    pub(crate) fn report(&self, origin: Origin, why: &'static str) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        let mut code = code::BANNED;
        let mut banned = None;
        let mut peer_banned = None;
        {
            let mut st = self.lock();
            match origin {
                Origin::Peer(id) => {
                    *st.counters.entry((Source::Peer(id), why)).or_default() += 1;
                    if id == self.me || !self.keys.values().any(|v| *v == id) {
                        return;
                    }
                    let window = self.strike_window;
                    let n = strike(st.peer_strikes.entry(id).or_default(), now, window);
                    if n >= self.strike_limit {
                        st.peer_strikes.remove(&id);
                        st.bans.insert(id, now.checked_add(self.ban_duration));
                        *st.counters
                            .entry((Source::Peer(id), reason::BAN_IMPOSED))
                            .or_default() += 1;
                        if let Some((_, conn)) = st.inbound.remove(&id) {
                            to_close.push(conn);
                        }
                        peer_banned = Some(id);
                    }
                }
                Origin::Client(c) => {
                    *st.counters.entry((Source::Client, why)).or_default() += 1;
                    let Some((ip, bound, conn)) = st
                        .clients
                        .get(&c)
                        .map(|s| (s.ip, s.bound.clone(), s.conn.clone()))
                    else {
                        return;
                    };
                    // strikes count against the address (or, for a bound connection,
                    // its accounts), not the connection: a sender that reconnected
                    // would start afresh, and one address may hold many connections.
                    // At the limit the striking connection is closed and the address
                    // (or the accounts) refused new ones; its other connections stay
                    // (honest clients may share the address).
                    if self.strike_client_locked(&mut st, ip, &bound, now) {
                        code = code::KICKED;
                        banned = Some(ip);
                        to_close.push(conn);
                    }
                }
            }
        }
        // logged once the lock is released: a slow log must not hold up the others
        if let Some(id) = peer_banned {
            tracing::warn!(peer = id, reason = why, "strike limit reached: peer banned");
        }
        if let Some(ip) = banned {
            tracing::warn!(%ip, reason = why, "strike limit reached: client banned (its address, or the accounts its connection is bound to)");
        }
        close_all(to_close, code, b"strike limit");
    }

    /// The counters and connection sets (the caller fills `queued`).
    pub(crate) fn snapshot(&self) -> TransportStats {
        let now = Instant::now();
        let mut st = self.lock();
        st.bans.retain(|_, until| until.is_none_or(|t| t > now));
        TransportStats {
            connected: st.connected.clone(),
            inbound: st.inbound.keys().copied().collect(),
            clients: st.clients.len(),
            banned: st.bans.keys().copied().collect(),
            established: st.established.clone(),
            queued: BTreeMap::new(),
            rejections: st.counters.clone(),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
        }
    }

    /// Drops every stored connection handle (at shutdown).
    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        st.inbound.clear();
        st.clients.clear();
        st.connected.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_host_v4_and_by_slash_64_v6() {
        let key = |s: &str| address_key(s.parse().expect("ip"));
        assert_eq!(key("192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
