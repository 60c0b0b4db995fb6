//! The [`Traitor`]: what a faulty replica really sends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_protocol::envelope::{self, Limits, MAGIC, WIRE_VERSION};
use pbft_protocol::{
    Batch, Checkpoint, Commit, Config, Dest, Duration, Evidence, Instant, Message, NewView,
    Outgoing, Payload, PrePrepare, Prepare, PreparedCert, ReplicaId, Request, RequestId, Seq,
    Signable, Signed, SignedRequest, View, ViewChange,
};

use crate::behavior::Behavior;
use crate::rng::Rng;

/// How many sent messages `replay` remembers.
const HISTORY: usize = 256;
/// How many old messages `replay` adds to each send.
const REPLAYS: usize = 2;
/// How many garbage frames `flood` adds to each send.
const FLOOD_FRAMES: usize = 8;
/// Random garbage is `1..MAX_GARBAGE` bytes long.
const MAX_GARBAGE: u64 = 2048;
/// Bodies of frames with a valid header are `1..=MAX_BAD_BODY` bytes long.
const MAX_BAD_BODY: u64 = 256;
/// Unsolicited snapshot chunks `state_spam` sends each peer per trigger.
const SPAM_CHUNKS: u32 = 4;
/// Bytes of each of them.
const SPAM_CHUNK_BYTES: usize = 16 << 10;
/// How many requests seen `inject` remembers for replaying.
const SEEN_REQUESTS: usize = 64;
/// Bytes of the operation of each request `inject` makes up.
const INJECTED_OP_BYTES: usize = 16;
/// Number of variants of [`Message`] (its postcard tags are `0..MESSAGE_TAGS`).
const MESSAGE_TAGS: u64 = 20;
/// Status messages `status_spam` sends each peer per message of its own.
const STATUS_BURST: u64 = 32;
/// Slots `frame` remembers having framed (to frame each once).
const FRAMED: usize = 1024;
/// Own proposals `exploit_wipe` remembers (the most recent ones).
const PROPOSALS: usize = 1024;

/// A replica's traitor: it sees every message the honest replica code wants to send and
/// decides what really goes out.
#[derive(Clone)]
pub struct Traitor {
    behavior: Behavior,
    id: ReplicaId,
    key: Keypair,
    cfg: Config,
    rng: Rng,
    /// Messages sent so far (only kept by `replay`), oldest first.
    history: VecDeque<Message>,
    /// Alternation flag (`out_of_window`, `forge_view_change`): which variant comes next.
    alternate: bool,
    /// Calls to [`Traitor::mutate`].
    calls: u64,
    /// Calls whose output differed from the honest message.
    altered: u64,
    /// Other traitors this one colludes with (beyond the fault model only).
    accomplices: Vec<ReplicaId>,
    /// As an equivocating primary: the alternative digest sent for each (view, seq).
    alternatives: BTreeMap<(View, Seq), Digest>,
    /// As an accomplice: the proposals seen per (view, seq), and the slots voted on.
    seen: BTreeMap<(View, Seq), Vec<Batch>>,
    voted: BTreeSet<(View, Seq)>,
    /// As `state_spam`: the latest checkpoint it announced, whose snapshot a replica
    /// that is behind would be fetching.
    spam_seq: Option<Seq>,
    /// As `frame`: the slots framed so far, most recent last (bounded by [`FRAMED`]).
    framed: VecDeque<(View, Seq)>,
    /// As `status_spam`: the highest view seen in its own messages.
    high_view: View,
    /// The highest view it has seen its replica or a peer's pre-prepare or new view in
    /// (`censor` and `inject` act on who is primary there).
    view: View,
    /// As `censor`: its own ordering while it is primary.
    censor: Censorship,
    /// As `inject`: the latest requests it has seen, to replay.
    seen_requests: VecDeque<SignedRequest>,
    /// As `exploit_wipe`: what it knows to exploit a validator that lost its disk.
    wipe: WipeExploit,
}

/// What `exploit_wipe` remembers: its own proposals, the votes peers sent for them, and
/// how far each peer said it got (a peer whose progress goes back lost its disk).
#[derive(Clone, Debug, Default)]
struct WipeExploit {
    /// Its own proposals by (view, seq), the most recent [`PROPOSALS`].
    proposals: BTreeMap<(View, Seq), Batch>,
    /// Each peer's first prepare and commit for each remembered proposal, by (peer,
    /// view, seq).
    prepares: BTreeMap<(ReplicaId, View, Seq), Signed<Prepare>>,
    commits: BTreeMap<(ReplicaId, View, Seq), Signed<Commit>>,
    /// The highest sequence number each peer said it executed.
    executed: BTreeMap<ReplicaId, Seq>,
    /// Slots re-proposed to a peer, by (peer, view, seq), with the batch's digest.
    reproposed: BTreeMap<(ReplicaId, View, Seq), Digest>,
    /// Slots a peer was already exposed for (evidence sent once per slot).
    exposed: BTreeSet<(ReplicaId, View, Seq)>,
}

/// A censoring primary's own ordering of its view: its replica's proposals are not
/// sent but taken apart, and the requests of every client but the censored one go out
/// in batches of the traitor's, at sequence numbers of its own, with every free slot of
/// the pipeline filled by a null batch.
#[derive(Clone, Debug, Default)]
struct Censorship {
    /// The view it orders (none while it is not primary).
    view: Option<View>,
    /// The next sequence number it proposes.
    next: Seq,
    /// The sequence number up to which q-1 peers committed every slot of `view`.
    committed: Seq,
    /// The highest checkpoint q-1 peers announced.
    stable: Seq,
    /// Requests to order, oldest first.
    queue: VecDeque<SignedRequest>,
    /// Every request queued in this view (a proposal seen twice is queued once).
    queued: BTreeSet<(PublicKey, RequestId)>,
    /// Its pre-prepares not yet committed, with its commits for them, by sequence
    /// number, for retransmission.
    in_flight: BTreeMap<Seq, [Message; 2]>,
    /// When it last sent pre-prepares.
    last_sent: Option<Instant>,
    /// Committers of each sequence number above `committed`, and announcers of each
    /// checkpoint above `stable`, by state digest.
    commits: BTreeMap<Seq, BTreeSet<ReplicaId>>,
    checkpoints: BTreeMap<Seq, BTreeMap<Digest, BTreeSet<ReplicaId>>>,
}

impl fmt::Debug for Traitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traitor")
            .field("behavior", &self.behavior)
            .field("id", &self.id)
            .field("calls", &self.calls)
            .field("altered", &self.altered)
            .finish_non_exhaustive()
    }
}

/// A different digest derived from `d`: `H(d)`.
fn skew(d: Digest) -> Digest {
    Digest::of(d.as_bytes())
}

/// A batch other than `batch` (reversed if it has two requests or more, else the null
/// batch), or `None` if `batch` is already null.
fn alternative_batch(batch: &Batch) -> Option<Batch> {
    let original = batch.digest();
    let mut candidates = Vec::with_capacity(2);
    if batch.requests.len() >= 2 {
        let mut reversed = batch.clone();
        reversed.requests.reverse();
        candidates.push(reversed);
    }
    candidates.push(Batch::null());
    candidates.into_iter().find(|b| b.digest() != original)
}

impl Traitor {
    /// A traitor for replica `id`, signing with `key`, drawing randomness from `seed`.
    pub fn new(behavior: Behavior, id: ReplicaId, key: Keypair, cfg: Config, seed: u64) -> Traitor {
        Traitor {
            behavior,
            id,
            key,
            cfg,
            rng: Rng::new(seed),
            history: VecDeque::new(),
            alternate: false,
            calls: 0,
            altered: 0,
            accomplices: Vec::new(),
            alternatives: BTreeMap::new(),
            seen: BTreeMap::new(),
            voted: BTreeSet::new(),
            spam_seq: None,
            framed: VecDeque::new(),
            high_view: 0,
            view: 0,
            censor: Censorship::default(),
            seen_requests: VecDeque::new(),
            wipe: WipeExploit::default(),
        }
    }

    /// Makes this traitor collude with `accomplices` (other traitors). Only `equivocate`
    /// uses it: the primary sends both proposals to its accomplices and splits its
    /// commits like its pre-prepares, and an accomplice votes for every proposal of a
    /// colluding primary. With more than f traitors this breaks agreement, which is what
    /// the negative control must detect.
    pub fn with_accomplices(mut self, accomplices: Vec<ReplicaId>) -> Traitor {
        self.accomplices = accomplices.into_iter().filter(|a| *a != self.id).collect();
        self
    }

    /// Sees a verified incoming message before the replica does. Returns what to send,
    /// and whether the replica should still receive the message. An `equivocate`
    /// accomplice votes (prepare and commit) for every proposal of a colluding primary,
    /// and hides those proposals from its own replica so that the honest code does not
    /// notice the equivocation; `frame` pairs each header it receives with another
    /// batch; `censor` and `inject` watch here too (see [`Behavior::Censor`] and
    /// [`Behavior::Inject`]).
    pub fn observe(
        &mut self,
        from: ReplicaId,
        msg: &Message,
        now: Instant,
    ) -> (Vec<Outgoing>, bool) {
        match self.behavior {
            Behavior::Frame => return (self.frame(msg), true),
            Behavior::Censor => {
                self.note_view(msg, false);
                return self.censor_observe(from, msg, now);
            }
            Behavior::Inject => {
                self.note_view(msg, false);
                self.inject_observe(msg);
                return (Vec::new(), true);
            }
            Behavior::ExploitWipe => {
                self.note_view(msg, false);
                return (self.exploit_wipe_observe(from, msg), true);
            }
            _ => {}
        }
        if self.behavior != Behavior::Equivocate || self.accomplices.is_empty() {
            return (Vec::new(), true);
        }
        let Message::PrePrepare { pre_prepare, batch } = msg else {
            return (Vec::new(), true);
        };
        let PrePrepare { view, seq, .. } = pre_prepare.body;
        let primary = self.primary(view);
        if primary == self.id || !self.accomplices.contains(&primary) {
            return (Vec::new(), true);
        }
        let seen = self.seen.entry((view, seq)).or_default();
        if !seen.iter().any(|b| b == batch) {
            seen.push(batch.clone());
        }
        // Work out which proposal went to which half: the alternative is derived from
        // the original. Vote for each half's proposal only to that half, so that no
        // honest replica ever sees two votes from us for one slot.
        let original = seen
            .iter()
            .find(|b| match alternative_batch(b) {
                None => true,
                Some(alt) => seen.contains(&alt),
            })
            .cloned();
        let Some(original) = original else {
            return (Vec::new(), false);
        };
        if !self.voted.insert((view, seq)) {
            return (Vec::new(), false);
        }
        let alt = alternative_batch(&original).unwrap_or_else(|| original.clone());
        let replica = self.id;
        let mut out = Vec::new();
        for r in (0..self.n()).filter(|r| *r != self.id && *r != primary) {
            if self.accomplices.contains(&r) {
                continue;
            }
            let digest = if r & 1 == 0 {
                original.digest()
            } else {
                alt.digest()
            };
            let prepare = self.sign(Prepare {
                view,
                seq,
                digest,
                replica,
            });
            let commit = self.sign(Commit {
                view,
                seq,
                digest,
                replica,
            });
            out.push(Outgoing::now(Dest::Replica(r), Message::Prepare(prepare)));
            out.push(Outgoing::now(Dest::Replica(r), Message::Commit(commit)));
        }
        (out, false)
    }

    /// The behaviour.
    pub fn behavior(&self) -> Behavior {
        self.behavior
    }

    /// The replica this traitor speaks for.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// How many messages were handed to [`Traitor::mutate`].
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// How many of them did not go out exactly as the honest replica wanted.
    pub fn altered(&self) -> u64 {
        self.altered
    }

    /// Mutates one outgoing message. Returns what is actually sent (possibly nothing,
    /// possibly many).
    pub fn mutate(&mut self, dest: Dest, msg: Message, now: Instant) -> Vec<Outgoing> {
        self.calls += 1;
        self.note_view(&msg, true);
        let honest = Outgoing::now(dest.clone(), msg.clone());
        let out = match self.behavior {
            Behavior::Silent => Vec::new(),
            Behavior::Equivocate => self.equivocate(dest, msg),
            Behavior::BadDigest => self.bad_digest(dest, msg),
            Behavior::ForgeRequest => self.forge_request(dest, msg),
            Behavior::DoubleVote => self.double_vote(dest, msg),
            Behavior::OutOfWindow => self.out_of_window(dest, msg),
            Behavior::Replay => self.replay(dest, msg),
            Behavior::CheckpointLie => self.checkpoint_lie(dest, msg),
            Behavior::ForgeViewChange => self.forge_view_change(dest, msg),
            Behavior::BadNewView => self.bad_new_view(dest, msg),
            Behavior::SlowPrimary => self.slow_primary(dest, msg),
            Behavior::Impersonate => self.impersonate(dest, msg),
            Behavior::Flood => self.flood(dest, msg),
            Behavior::PoisonState => self.poison_state(dest, msg),
            Behavior::StateSpam => self.state_spam(dest, msg),
            // it acts on what it receives ([`Traitor::observe`]) and sends honestly
            Behavior::Frame => vec![Outgoing::now(dest, msg)],
            Behavior::StatusSpam => self.status_spam(dest, msg),
            Behavior::Censor => self.censor(dest, msg, now),
            Behavior::Inject => self.inject(dest, msg),
            Behavior::ExploitWipe => self.exploit_wipe(dest, msg),
        };
        if out.len() != 1 || out[0] != honest {
            self.altered += 1;
        }
        out
    }

    /// n, never 0 (so modular arithmetic cannot panic on a broken config).
    fn n(&self) -> u32 {
        self.cfg.n().max(1)
    }

    /// `primary(v) = v mod n`.
    fn primary(&self, view: View) -> ReplicaId {
        (view % u64::from(self.n())) as ReplicaId
    }

    /// Whether this traitor is the primary that signs `pp`.
    fn mine(&self, pp: &Signed<PrePrepare>) -> bool {
        self.primary(pp.body.view) == self.id
    }

    /// Signs `body` with the traitor's own key.
    fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        Signed::sign(body, &self.key)
    }

    fn equivocate(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        if let Message::Commit(c) = &msg {
            if let Some(alt) = self.alternatives.get(&(c.body.view, c.body.seq)).copied() {
                return self.split_commit(dest, c.body, alt);
            }
        }
        let (header, alt_batch) = match &msg {
            Message::PrePrepare { pre_prepare, batch } if self.mine(pre_prepare) => {
                match alternative_batch(batch) {
                    Some(alt) => (pre_prepare.body, alt),
                    None => return vec![Outgoing::now(dest, msg)],
                }
            }
            _ => return vec![Outgoing::now(dest, msg)],
        };
        let alt = Message::PrePrepare {
            pre_prepare: self.sign(PrePrepare {
                digest: alt_batch.digest(),
                ..header
            }),
            batch: alt_batch.clone(),
        };
        if !self.accomplices.is_empty() {
            self.alternatives
                .insert((header.view, header.seq), alt_batch.digest());
            let accomplices = self.accomplices.clone();
            let targets: Vec<ReplicaId> = match dest {
                Dest::AllReplicas => (0..self.n()).filter(|r| *r != self.id).collect(),
                Dest::Replica(r) => vec![r],
                Dest::Client(_) => return vec![Outgoing::now(dest, msg)],
            };
            let mut out = Vec::new();
            for r in &targets {
                if accomplices.contains(r) {
                    out.push(Outgoing::now(Dest::Replica(*r), msg.clone()));
                    out.push(Outgoing::now(Dest::Replica(*r), alt.clone()));
                } else {
                    let m = if r & 1 == 0 { &msg } else { &alt };
                    out.push(Outgoing::now(Dest::Replica(*r), m.clone()));
                }
            }
            // commit at once, each half for its own proposal
            let commit = Commit {
                view: header.view,
                seq: header.seq,
                digest: header.digest,
                replica: self.id,
            };
            for r in targets {
                out.extend(self.split_commit(Dest::Replica(r), commit, alt_batch.digest()));
            }
            return out;
        }
        let pick = |r: ReplicaId| if r & 1 == 0 { &msg } else { &alt };
        match dest {
            Dest::AllReplicas => (0..self.n())
                .filter(|r| *r != self.id)
                .map(|r| Outgoing::now(Dest::Replica(r), pick(r).clone()))
                .collect(),
            Dest::Replica(r) => vec![Outgoing::now(dest, pick(r).clone())],
            Dest::Client(_) => vec![Outgoing::now(dest, msg)],
        }
    }

    /// As a colluding equivocating primary: commit the original to the replicas that got
    /// it and the alternative to the others (accomplices get both).
    fn split_commit(&mut self, dest: Dest, c: Commit, alt: Digest) -> Vec<Outgoing> {
        let original = Message::Commit(self.sign(c));
        let other = Message::Commit(self.sign(Commit { digest: alt, ..c }));
        let targets: Vec<ReplicaId> = match dest {
            Dest::AllReplicas => (0..self.n()).filter(|r| *r != self.id).collect(),
            Dest::Replica(r) => vec![r],
            Dest::Client(_) => return vec![Outgoing::now(dest, original)],
        };
        let mut out = Vec::new();
        for r in targets {
            if self.accomplices.contains(&r) {
                out.push(Outgoing::now(Dest::Replica(r), original.clone()));
                out.push(Outgoing::now(Dest::Replica(r), other.clone()));
            } else {
                let m = if r & 1 == 0 { &original } else { &other };
                out.push(Outgoing::now(Dest::Replica(r), m.clone()));
            }
        }
        out
    }

    fn bad_digest(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        match &mut msg {
            Message::PrePrepare { pre_prepare, .. } if self.mine(pre_prepare) => {
                let body = pre_prepare.body;
                *pre_prepare = self.sign(PrePrepare {
                    digest: skew(body.digest),
                    ..body
                });
            }
            Message::Prepare(p) if p.body.replica == self.id => {
                let body = p.body;
                *p = self.sign(Prepare {
                    digest: skew(body.digest),
                    ..body
                });
            }
            Message::Commit(c) if c.body.replica == self.id => {
                let body = c.body;
                *c = self.sign(Commit {
                    digest: skew(body.digest),
                    ..body
                });
            }
            _ => {}
        }
        vec![Outgoing::now(dest, msg)]
    }

    fn forge_request(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        if let Message::PrePrepare { pre_prepare, batch } = &mut msg {
            if self.mine(pre_prepare) {
                if let Some(first) = batch.requests.first_mut() {
                    let op = &mut first.body.op;
                    match op.first_mut() {
                        Some(b) => *b ^= 0xff,
                        None => op.push(0xff),
                    }
                    let body = pre_prepare.body;
                    *pre_prepare = self.sign(PrePrepare {
                        digest: batch.digest(),
                        ..body
                    });
                }
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    fn double_vote(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let extra = match &msg {
            Message::Prepare(p) if p.body.replica == self.id => {
                Some(Message::Prepare(self.sign(Prepare {
                    digest: skew(p.body.digest),
                    ..p.body
                })))
            }
            Message::Commit(c) if c.body.replica == self.id => {
                Some(Message::Commit(self.sign(Commit {
                    digest: skew(c.body.digest),
                    ..c.body
                })))
            }
            _ => None,
        };
        let mut out = vec![Outgoing::now(dest.clone(), msg)];
        out.extend(extra.map(|m| Outgoing::now(dest, m)));
        out
    }

    fn out_of_window(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        if let Message::PrePrepare { pre_prepare, .. } = &mut msg {
            if self.mine(pre_prepare) {
                let body = pre_prepare.body;
                let seq = if !self.alternate {
                    let beyond = self.cfg.log_window.max(1).saturating_mul(4);
                    body.seq.saturating_add(beyond)
                } else {
                    body.seq.saturating_add(1)
                };
                self.alternate = !self.alternate;
                *pre_prepare = self.sign(PrePrepare { seq, ..body });
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    fn replay(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let len = self.history.len() as u64;
        let mut picks = Vec::with_capacity(REPLAYS);
        if len >= 1 {
            let i = self.rng.below(len);
            picks.push(i);
            if len >= 2 {
                // A second, distinct index.
                picks.push((i + 1 + self.rng.below(len - 1)) % len);
            }
        }
        let mut out = vec![Outgoing::now(dest.clone(), msg.clone())];
        for i in picks {
            if let Some(old) = self.history.get(i as usize) {
                out.push(Outgoing::now(dest.clone(), old.clone()));
            }
        }
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(msg);
        out
    }

    fn checkpoint_lie(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        if let Message::Checkpoint(c) = &mut msg {
            if c.body.replica == self.id {
                let body = c.body;
                *c = self.sign(Checkpoint {
                    state_digest: skew(body.state_digest),
                    ..body
                });
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    fn forge_view_change(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        if let Message::ViewChange(vc) = &mut msg {
            if vc.body.replica == self.id {
                let mut body = vc.body.clone();
                if !self.alternate {
                    body.prepared.clear();
                } else if let Some(fake) = self.fake_prepared_proof(&body) {
                    body.prepared.push(fake);
                    body.prepared.sort_by_key(|p| p.pre_prepare.body.seq);
                }
                self.alternate = !self.alternate;
                **vc = self.sign(body);
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    /// A prepared certificate the traitor does not have: the first uncovered slot above
    /// the stable checkpoint, the null batch's digest, a pre-prepare for an earlier view
    /// signed by this traitor (not that view's primary) and 2f prepares claiming other
    /// replicas, all signed with this traitor's key. `None` if no such view or slot
    /// exists.
    fn fake_prepared_proof(&self, vc: &ViewChange) -> Option<PreparedCert> {
        let view = [1u64, 2]
            .into_iter()
            .filter_map(|back| vc.new_view.checked_sub(back))
            .find(|v| self.primary(*v) != self.id)?;
        let top = vc.stable_seq.saturating_add(self.cfg.log_window.max(1));
        let seq = (vc.stable_seq.saturating_add(1)..=top)
            .find(|s| !vc.prepared.iter().any(|p| p.pre_prepare.body.seq == *s))?;
        let digest = Batch::null_digest();
        let primary = self.primary(view);
        let prepares = (0..self.n())
            .filter(|r| *r != self.id && *r != primary)
            .take(2 * self.cfg.f() as usize)
            .map(|replica| {
                self.sign(Prepare {
                    view,
                    seq,
                    digest,
                    replica,
                })
            })
            .collect();
        Some(PreparedCert {
            pre_prepare: self.sign(PrePrepare { view, seq, digest }),
            prepares,
        })
    }

    fn bad_new_view(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        if let Message::NewView(nv) = &mut msg {
            if self.primary(nv.body.view) == self.id {
                let mut body: NewView = nv.body.clone();
                let null = Batch::null_digest();
                match body.pre_prepares.last().map(|pp| pp.body) {
                    Some(last) if last.digest != null => {
                        let forged = self.sign(PrePrepare {
                            digest: null,
                            ..last
                        });
                        if let Some(slot) = body.pre_prepares.last_mut() {
                            *slot = forged;
                        }
                    }
                    Some(_) => {
                        body.pre_prepares.pop();
                    }
                    None => {
                        let stable = body
                            .view_changes
                            .iter()
                            .map(|vc| vc.body.stable_seq)
                            .max()
                            .unwrap_or(0);
                        let bogus = self.sign(PrePrepare {
                            view: body.view,
                            seq: stable.saturating_add(1),
                            digest: Digest::of(b"bogus"),
                        });
                        body.pre_prepares.push(bogus);
                    }
                }
                **nv = self.sign(body);
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    fn slow_primary(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let delay = match &msg {
            Message::PrePrepare { pre_prepare, .. } if self.mine(pre_prepare) => {
                self.cfg.view_timeout / 10 * 9
            }
            _ => Duration::ZERO,
        };
        vec![Outgoing {
            dest,
            payload: Payload::Message(msg),
            delay,
        }]
    }

    fn impersonate(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let other = (self.id.wrapping_add(1)) % self.n();
        let extra = match &msg {
            Message::Prepare(p) if p.body.replica == self.id => {
                Some(Message::Prepare(self.sign(Prepare {
                    replica: other,
                    ..p.body
                })))
            }
            Message::Commit(c) if c.body.replica == self.id => {
                Some(Message::Commit(self.sign(Commit {
                    replica: other,
                    ..c.body
                })))
            }
            Message::Checkpoint(c) if c.body.replica == self.id => {
                Some(Message::Checkpoint(self.sign(Checkpoint {
                    replica: other,
                    ..c.body
                })))
            }
            _ => None,
        };
        let mut out = vec![Outgoing::now(dest.clone(), msg)];
        out.extend(extra.map(|m| Outgoing::now(dest, m)));
        out
    }

    fn flood(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let mut out = Vec::with_capacity(1 + FLOOD_FRAMES);
        out.push(Outgoing::now(dest, msg));
        for i in 0..FLOOD_FRAMES {
            let bytes = match i % 3 {
                0 => self.random_garbage(),
                1 => self.bad_body_frame(),
                _ => self.badly_signed_frame(),
            };
            out.push(Outgoing {
                dest: Dest::AllReplicas,
                payload: Payload::Raw(bytes),
                delay: Duration::ZERO,
            });
        }
        out
    }

    /// `1..MAX_GARBAGE` random bytes that never start with the magic.
    fn random_garbage(&mut self) -> Vec<u8> {
        let len = 1 + self.rng.below(MAX_GARBAGE - 1) as usize;
        let mut bytes = self.rng.bytes(len);
        if let Some(b) = bytes.first_mut() {
            if *b == MAGIC[0] {
                *b = !*b;
            }
        }
        bytes
    }

    /// The right magic and version, then a random body that does not decode. Half the
    /// time the body starts with a valid message tag, to get past the first byte.
    fn bad_body_frame(&mut self) -> Vec<u8> {
        let len = 1 + self.rng.below(MAX_BAD_BODY) as usize;
        let mut body = self.rng.bytes(len);
        if self.rng.below(2) == 0 {
            if let Some(b) = body.first_mut() {
                *b = self.rng.below(MESSAGE_TAGS) as u8;
            }
        }
        let mut frame = Vec::with_capacity(5 + len);
        frame.extend_from_slice(&MAGIC);
        frame.push(WIRE_VERSION);
        frame.extend_from_slice(&body);
        if envelope::decode(&frame, &Limits::default()).is_ok() {
            // By chance a valid message: make the tag an unknown variant.
            frame[5] = 0x7f;
        }
        frame
    }

    /// A well-formed prepare or commit claiming another replica's id, signed with this
    /// traitor's key, so it decodes but fails verification.
    fn badly_signed_frame(&mut self) -> Vec<u8> {
        let n = self.n();
        let offset = 1 + self.rng.below(u64::from(n.saturating_sub(1)).max(1)) as u32;
        let replica = (self.id.wrapping_add(offset)) % n;
        let view = self.rng.below(1 << 20);
        let seq = self.rng.below(1 << 20);
        let digest = Digest(self.rng.array32());
        let msg = if self.rng.below(2) == 0 {
            Message::Prepare(self.sign(Prepare {
                view,
                seq,
                digest,
                replica,
            }))
        } else {
            Message::Commit(self.sign(Commit {
                view,
                seq,
                digest,
                replica,
            }))
        };
        envelope::encode(&msg)
    }

    fn poison_state(&mut self, dest: Dest, mut msg: Message) -> Vec<Outgoing> {
        match &mut msg {
            Message::StateChunk { data, .. } => {
                if data.is_empty() {
                    data.push(0xff);
                } else {
                    data.iter_mut().for_each(|b| *b = !*b);
                }
            }
            Message::Committed { proofs, .. } => {
                for proof in proofs.iter_mut() {
                    if proof.batch.requests.pop().is_none() {
                        let poison = self.sign(Request {
                            client: self.key.public(),
                            request_id: 1,
                            op: b"poison".to_vec(),
                        });
                        proof.batch.requests.push(poison);
                    }
                }
            }
            _ => {}
        }
        vec![Outgoing::now(dest, msg)]
    }

    /// For each genuine pre-prepare header of another primary (alone or inside a new
    /// view), seen for the first time: the same signed header with another batch (in
    /// turn: the batch reordered or the null batch, and the batch with a forged request
    /// added), sent to every peer both as a relayed pre-prepare and as `BadPrePrepare`
    /// evidence against the primary.
    fn frame(&mut self, msg: &Message) -> Vec<Outgoing> {
        match msg {
            Message::PrePrepare { pre_prepare, batch } => {
                self.frame_header(pre_prepare, Some(batch))
            }
            // a new view's pre-prepares come without batches: each is paired with the
            // null batch, or (for a null slot) with a batch holding a forged request
            Message::NewView(nv) => nv
                .body
                .pre_prepares
                .iter()
                .flat_map(|pp| self.frame_header(pp, None))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Frames one header of another primary, the first time it is seen.
    fn frame_header(
        &mut self,
        pre_prepare: &Signed<PrePrepare>,
        batch: Option<&Batch>,
    ) -> Vec<Outgoing> {
        let PrePrepare { view, seq, digest } = pre_prepare.body;
        if self.primary(view) == self.id || self.framed.contains(&(view, seq)) {
            return Vec::new();
        }
        if self.framed.len() == FRAMED {
            self.framed.pop_front();
        }
        self.framed.push_back((view, seq));
        self.alternate = !self.alternate;
        let fake = match batch {
            Some(batch) if self.alternate => {
                alternative_batch(batch).unwrap_or_else(|| self.forged_into(batch))
            }
            Some(batch) => self.forged_into(batch),
            None if digest == Batch::null_digest() => self.forged_into(&Batch::null()),
            None => Batch::null(),
        };
        let mut out = Vec::new();
        for r in (0..self.n()).filter(|r| *r != self.id) {
            out.push(Outgoing::now(
                Dest::Replica(r),
                Message::PrePrepare {
                    pre_prepare: pre_prepare.clone(),
                    batch: fake.clone(),
                },
            ));
            out.push(Outgoing::now(
                Dest::Replica(r),
                Message::Evidence(Box::new(Evidence::BadPrePrepare {
                    pre_prepare: pre_prepare.clone(),
                    batch: fake.clone(),
                })),
            ));
        }
        out
    }

    /// Sends the message, and with it [`STATUS_BURST`] statuses to every peer, each
    /// naming a view below the highest this traitor has seen (view 0 while nothing
    /// is higher): every one of them asks its receiver for the new view it holds.
    fn status_spam(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let view = match &msg {
            Message::Prepare(p) => Some(p.body.view),
            Message::Commit(c) => Some(c.body.view),
            Message::ViewChange(vc) => Some(vc.body.new_view),
            Message::NewView(nv) => Some(nv.body.view),
            Message::PrePrepare { pre_prepare, .. } => Some(pre_prepare.body.view),
            _ => None,
        };
        if let Some(v) = view {
            self.high_view = self.high_view.max(v);
        }
        let mut out = vec![Outgoing::now(dest, msg)];
        for r in (0..self.n()).filter(|r| *r != self.id) {
            for i in 0..STATUS_BURST {
                let status = Message::Status {
                    view: i % self.high_view.max(1),
                    last_executed: 0,
                };
                out.push(Outgoing::now(Dest::Replica(r), status));
            }
        }
        out
    }

    /// `batch` with a request appended whose client signature fails: a copy of its
    /// first request with the operation altered, or (for the null batch) one this
    /// traitor signs in its own name and then alters.
    fn forged_into(&self, batch: &Batch) -> Batch {
        let mut forged = batch.clone();
        let mut extra = batch.requests.first().cloned().unwrap_or_else(|| {
            self.sign(Request {
                client: self.key.public(),
                request_id: 1,
                op: Vec::new(),
            })
        });
        extra.body.op.push(0xff);
        forged.requests.push(extra);
        forged
    }

    /// Sends the message, and with each vote and checkpoint a burst of unsolicited
    /// chunks of its latest checkpoint's snapshot to every peer: random data, each
    /// chunk announcing a different total (2, 3, 64 or the largest allowed), so no two
    /// agree; and a request for that snapshot, so every peer serves it.
    fn state_spam(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        if let Message::Checkpoint(c) = &msg {
            if c.body.replica == self.id {
                self.spam_seq = Some(self.spam_seq.map_or(c.body.seq, |s| s.max(c.body.seq)));
            }
        }
        let trigger = matches!(
            msg,
            Message::Prepare(_) | Message::Commit(_) | Message::Checkpoint(_)
        );
        let mut out = vec![Outgoing::now(dest, msg)];
        let Some(seq) = self.spam_seq.filter(|_| trigger) else {
            return out;
        };
        const TOTALS: [u32; 4] = [2, 3, 64, 1 << 16];
        for r in (0..self.n()).filter(|r| *r != self.id) {
            for i in 0..SPAM_CHUNKS {
                let total = TOTALS[(i as usize) % TOTALS.len()];
                let chunk = Message::StateChunk {
                    seq,
                    index: (self.rng.below(u64::from(total))) as u32,
                    total,
                    data: self.rng.bytes(SPAM_CHUNK_BYTES),
                };
                out.push(Outgoing::now(Dest::Replica(r), chunk));
            }
            out.push(Outgoing::now(
                Dest::Replica(r),
                Message::StateRequest { seq },
            ));
        }
        out
    }

    /// Follows the view: its own votes, view changes, new views and pre-prepares, and
    /// the peers' pre-prepares and new views (`own` says whose message it is).
    fn note_view(&mut self, msg: &Message, own: bool) {
        let view = match msg {
            Message::PrePrepare { pre_prepare, .. } => Some(pre_prepare.body.view),
            Message::NewView(nv) => Some(nv.body.view),
            Message::Prepare(p) if own => Some(p.body.view),
            Message::Commit(c) if own => Some(c.body.view),
            Message::ViewChange(vc) if own => Some(vc.body.new_view),
            _ => None,
        };
        if let Some(v) = view {
            self.view = self.view.max(v);
        }
    }

    /// The client whose requests `censor` never orders: the one with the lowest index
    /// in the cluster's list (none if the configuration admits any key).
    fn censored(&self) -> Option<PublicKey> {
        self.cfg.clients.first()
    }

    /// Whether `censor` orders the current view, starting its ordering of view 0 (as
    /// its primary) the first time it is asked.
    fn censoring(&mut self) -> bool {
        if self.censor.view.is_some_and(|v| v != self.view) {
            self.censor = Censorship::default();
        }
        if self.censor.view.is_none() && self.view == 0 && self.primary(0) == self.id {
            self.censor = Censorship {
                view: Some(0),
                next: 1,
                ..Censorship::default()
            };
        }
        self.censor.view == Some(self.view)
    }

    /// As primary, its replica's pre-prepares are taken apart and not sent; its own
    /// new view goes out as it is and starts its ordering after `O`. Every call also
    /// fills the pipeline. As a backup it is honest.
    fn censor(&mut self, dest: Dest, msg: Message, now: Instant) -> Vec<Outgoing> {
        if let Message::NewView(nv) = &msg {
            if self.primary(nv.body.view) == self.id && nv.body.view == self.view {
                let stable = nv
                    .body
                    .view_changes
                    .iter()
                    .map(|vc| vc.body.stable_seq)
                    .max()
                    .unwrap_or(0);
                let top = nv.body.pre_prepares.last().map_or(stable, |pp| pp.body.seq);
                self.censor = Censorship {
                    view: Some(nv.body.view),
                    next: top.max(stable) + 1,
                    committed: stable,
                    stable,
                    ..Censorship::default()
                };
            }
        }
        if !self.censoring() {
            return vec![Outgoing::now(dest, msg)];
        }
        let mut out = Vec::new();
        match &msg {
            Message::PrePrepare { pre_prepare, batch } if self.mine(pre_prepare) => {
                let censored = self.censored();
                for r in &batch.requests {
                    if Some(r.body.client) != censored && self.censor.queued.insert(r.key()) {
                        self.censor.queue.push_back(r.clone());
                    }
                }
            }
            _ => out.push(Outgoing::now(dest, msg)),
        }
        out.extend(self.censor_fill(now));
        out
    }

    /// As the censoring primary: counts the peers' commits and checkpoints (how far
    /// its pipeline and window reach; it adds its own checkpoint to the q-1 matching
    /// ones, as its replica, which executes nothing of its ordering, cannot), and hides from its replica what would show it
    /// its own double signing (its pre-prepares relayed back, committed-slot proofs),
    /// so that the replica goes on proposing and catches up by snapshots.
    fn censor_observe(
        &mut self,
        from: ReplicaId,
        msg: &Message,
        now: Instant,
    ) -> (Vec<Outgoing>, bool) {
        if !self.censoring() {
            return (Vec::new(), true);
        }
        let need = self.cfg.quorum().saturating_sub(1).max(1);
        let c = &mut self.censor;
        let mut deliver = true;
        let mut own_checkpoint = None;
        match msg {
            Message::Commit(cm) if Some(cm.body.view) == c.view && cm.body.seq > c.committed => {
                c.commits.entry(cm.body.seq).or_default().insert(from);
                // in order: a slot left behind must stay in flight until it commits
                while c
                    .commits
                    .get(&(c.committed + 1))
                    .is_some_and(|v| v.len() >= need)
                {
                    c.committed += 1;
                    c.commits.remove(&c.committed);
                    c.in_flight.remove(&c.committed);
                }
            }
            Message::Checkpoint(cp) if cp.body.seq > c.stable => {
                let Checkpoint {
                    seq, state_digest, ..
                } = cp.body;
                let voters = c
                    .checkpoints
                    .entry(seq)
                    .or_default()
                    .entry(state_digest)
                    .or_default();
                voters.insert(from);
                if voters.len() >= need {
                    c.stable = seq;
                    c.checkpoints = c.checkpoints.split_off(&(seq + 1));
                    // its own checkpoint, matching theirs, makes it stable with q-1
                    // backups, so a lagging backup does not hold the window back
                    own_checkpoint = Some(Checkpoint {
                        seq,
                        state_digest,
                        replica: self.id,
                    });
                }
            }
            Message::PrePrepare { pre_prepare, .. } if Some(pre_prepare.body.view) == c.view => {
                deliver = false;
            }
            Message::Committed { .. } => deliver = false,
            _ => {}
        }
        let mut out: Vec<Outgoing> = own_checkpoint
            .map(|cp| Outgoing::now(Dest::AllReplicas, Message::Checkpoint(self.sign(cp))))
            .into_iter()
            .collect();
        out.extend(self.censor_fill(now));
        (out, deliver)
    }

    /// Proposes, at its own next sequence numbers, batches of the queued requests, or
    /// null batches when none are queued, until the pipeline is full (`pipeline_depth`
    /// above what the peers committed) or the window ends; re-sends what is in flight
    /// when it has sent nothing for a retransmission interval.
    fn censor_fill(&mut self, now: Instant) -> Vec<Outgoing> {
        let Some(view) = self.censor.view else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let c = &self.censor;
        let limit = c
            .committed
            .saturating_add(self.cfg.pipeline_depth)
            .min(c.stable.saturating_add(self.cfg.log_window));
        while self.censor.next <= limit {
            let mut requests = Vec::new();
            while requests.len() < self.cfg.max_batch {
                match self.censor.queue.pop_front() {
                    Some(r) => requests.push(r),
                    None => break,
                }
            }
            let batch = Batch { requests };
            let seq = self.censor.next;
            let pre_prepare = self.sign(PrePrepare {
                view,
                seq,
                digest: batch.digest(),
            });
            let digest = batch.digest();
            let m = Message::PrePrepare { pre_prepare, batch };
            // its commit goes with it: with it, q-1 backups commit the slot, so a
            // backup that missed the pre-prepare does not hold the pipeline back
            let commit = Message::Commit(self.sign(Commit {
                view,
                seq,
                digest,
                replica: self.id,
            }));
            out.push(Outgoing::now(Dest::AllReplicas, m.clone()));
            out.push(Outgoing::now(Dest::AllReplicas, commit.clone()));
            self.censor.in_flight.insert(seq, [m, commit]);
            self.censor.next += 1;
        }
        let quiet = self
            .censor
            .last_sent
            .is_none_or(|t| now >= t.plus(self.cfg.retransmit_interval));
        if out.is_empty() && quiet {
            out.extend(
                self.censor
                    .in_flight
                    .values()
                    .flatten()
                    .map(|m| Outgoing::now(Dest::AllReplicas, m.clone())),
            );
        }
        if !out.is_empty() {
            self.censor.last_sent = Some(now);
        }
        out
    }

    /// Sends the message, and with each of its votes and status messages, a request
    /// signed by a freshly made-up key and a replay of a request it has seen, to every
    /// backup of the current view and never to its primary.
    fn inject(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        let trigger = matches!(
            msg,
            Message::Prepare(_) | Message::Commit(_) | Message::Status { .. }
        );
        let mut out = vec![Outgoing::now(dest, msg)];
        if !trigger {
            return out;
        }
        let primary = self.primary(self.view);
        let backups: Vec<ReplicaId> = (0..self.n())
            .filter(|r| *r != self.id && *r != primary)
            .collect();
        let mut requests = Vec::with_capacity(2);
        if let Ok(key) = Keypair::from_seed(&self.rng.array32()) {
            let body = Request {
                client: key.public(),
                // the first id of a client's window: a new key's request is admitted
                request_id: 1,
                op: self.rng.bytes(INJECTED_OP_BYTES),
            };
            requests.push(Signed::sign(body, &key));
        }
        let seen = self.seen_requests.len() as u64;
        if seen > 0 {
            let i = self.rng.below(seen) as usize;
            requests.extend(self.seen_requests.get(i).cloned());
        }
        for r in requests {
            for b in &backups {
                out.push(Outgoing::now(
                    Dest::Replica(*b),
                    Message::Request(r.clone()),
                ));
            }
        }
        out
    }

    /// Remembers the requests it sees (relayed, or in a pre-prepare's batch), for
    /// `inject` to replay.
    fn inject_observe(&mut self, msg: &Message) {
        let requests: Vec<&SignedRequest> = match msg {
            Message::Request(r) => vec![r],
            Message::PrePrepare { batch, .. } => batch.requests.iter().collect(),
            _ => Vec::new(),
        };
        for r in requests {
            if self.seen_requests.len() >= SEEN_REQUESTS {
                self.seen_requests.pop_front();
            }
            self.seen_requests.push_back(r.clone());
        }
    }
}

impl Traitor {
    /// Sends the message as the honest replica would, remembering its own proposals.
    fn exploit_wipe(&mut self, dest: Dest, msg: Message) -> Vec<Outgoing> {
        if let Message::PrePrepare { pre_prepare, batch } = &msg {
            if self.mine(pre_prepare) {
                let w = &mut self.wipe;
                let key = (pre_prepare.body.view, pre_prepare.body.seq);
                w.proposals.insert(key, batch.clone());
                while w.proposals.len() > PROPOSALS {
                    if let Some((old, _)) = w.proposals.pop_first() {
                        w.prepares.retain(|(_, v, s), _| (*v, *s) != old);
                        w.commits.retain(|(_, v, s), _| (*v, *s) != old);
                        w.reproposed.retain(|(_, v, s), _| (*v, *s) != old);
                        w.exposed.retain(|(_, v, s)| (*v, *s) != old);
                    }
                }
            }
        }
        vec![Outgoing::now(dest, msg)]
    }

    /// Watches peers: a peer whose progress goes back (its status, or its recovery
    /// query) lost its disk, and is sent a different batch for every slot this traitor
    /// proposed in its current view; votes for its proposals are kept, and a peer that
    /// votes two digests for one slot is exposed to every peer with its two votes.
    fn exploit_wipe_observe(&mut self, from: ReplicaId, msg: &Message) -> Vec<Outgoing> {
        match msg {
            Message::Status { last_executed, .. } => {
                let before = self.wipe.executed.get(&from).copied();
                let e = self.wipe.executed.entry(from).or_insert(0);
                *e = (*e).max(*last_executed);
                match before {
                    Some(b) if *last_executed < b => self.repropose_to(from, b),
                    _ => Vec::new(),
                }
            }
            Message::RecoveryQuery { .. } => {
                let upto = self.wipe.executed.get(&from).copied().unwrap_or(0);
                self.repropose_to(from, upto)
            }
            Message::Prepare(p) => {
                let b = p.body;
                let key = (b.replica, b.view, b.seq);
                if !self.wipe.proposals.contains_key(&(b.view, b.seq)) {
                    return Vec::new();
                }
                match first_unless_same(&mut self.wipe.prepares, key, p, |v| v.digest) {
                    Some(a) => self.expose(key, Evidence::DoublePrepare { a, b: p.clone() }),
                    None => Vec::new(),
                }
            }
            Message::Commit(c) => {
                let b = c.body;
                let key = (b.replica, b.view, b.seq);
                if !self.wipe.proposals.contains_key(&(b.view, b.seq)) {
                    return Vec::new();
                }
                match first_unless_same(&mut self.wipe.commits, key, c, |v| v.digest) {
                    Some(a) => self.expose(key, Evidence::DoubleCommit { a, b: c.clone() }),
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// Proposes to `peer` alone, at every sequence number up to `upto` (where the peer
    /// said it had executed before it lost its disk, so it voted there and has not been
    /// offered the slot since) that this traitor proposed at in its current view, a
    /// batch other than the one it proposed there (the batch reversed, the null batch,
    /// or for a null batch one request of another proposal).
    fn repropose_to(&mut self, peer: ReplicaId, upto: Seq) -> Vec<Outgoing> {
        let view = self.view;
        if self.primary(view) != self.id {
            return Vec::new();
        }
        let some_request = self
            .wipe
            .proposals
            .values()
            .find_map(|b| b.requests.first().cloned());
        let slots: Vec<(Seq, Batch)> = self
            .wipe
            .proposals
            .range((view, 0)..=(view, upto))
            .map(|((_, s), b)| (*s, b.clone()))
            .collect();
        let mut out = Vec::new();
        for (seq, batch) in slots {
            if self.wipe.reproposed.contains_key(&(peer, view, seq)) {
                continue;
            }
            let other = alternative_batch(&batch)
                .or_else(|| some_request.clone().map(|r| Batch { requests: vec![r] }));
            let Some(other) = other else {
                continue;
            };
            let digest = other.digest();
            let pre_prepare = self.sign(PrePrepare { view, seq, digest });
            self.wipe.reproposed.insert((peer, view, seq), digest);
            out.push(Outgoing::now(
                Dest::Replica(peer),
                Message::PrePrepare {
                    pre_prepare,
                    batch: other,
                },
            ));
        }
        out
    }

    /// Sends `evidence` against the voter of `slot` to every peer, once per slot.
    fn expose(&mut self, slot: (ReplicaId, View, Seq), evidence: Evidence) -> Vec<Outgoing> {
        if !self.wipe.exposed.insert(slot) {
            return Vec::new();
        }
        let evidence = Box::new(evidence);
        (0..self.n())
            .filter(|r| *r != self.id)
            .map(|r| Outgoing::now(Dest::Replica(r), Message::Evidence(evidence.clone())))
            .collect()
    }
}

/// Keeps the first vote seen for `key`; returns it if `vote` names another digest (the
/// two contradict each other).
fn first_unless_same<T: Clone>(
    votes: &mut BTreeMap<(ReplicaId, View, Seq), Signed<T>>,
    key: (ReplicaId, View, Seq),
    vote: &Signed<T>,
    digest: impl Fn(&T) -> Digest,
) -> Option<Signed<T>> {
    match votes.get(&key) {
        None => {
            votes.insert(key, vote.clone());
            None
        }
        Some(first) if digest(&first.body) != digest(&vote.body) => Some(first.clone()),
        Some(_) => None,
    }
}
