//! The scenario vocabulary of traitor behaviours.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A traitor behaviour from the scenario vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behavior {
    /// Sends nothing at all.
    Silent,
    /// As primary, proposes two different batches for one slot to different replicas.
    Equivocate,
    /// Signs pre-prepares and votes whose digest does not match the batch.
    BadDigest,
    /// As primary, tampers with a client request inside its own batch.
    ForgeRequest,
    /// Votes twice, for two different digests, in every prepare and commit.
    DoubleVote,
    /// As primary, proposes sequence numbers beyond the window or with gaps.
    OutOfWindow,
    /// Re-sends old messages alongside new ones.
    Replay,
    /// Announces checkpoints with a false state digest.
    CheckpointLie,
    /// Sends view changes that hide or invent prepared certificates.
    ForgeViewChange,
    /// As new primary, sends a new view whose `O` set is wrong.
    BadNewView,
    /// As primary, delays every pre-prepare to just under the view timeout.
    SlowPrimary,
    /// Sends votes and checkpoints in another replica's name.
    Impersonate,
    /// Floods every replica with garbage frames and badly signed messages.
    Flood,
    /// Serves corrupted snapshot chunks and committed-batch proofs.
    PoisonState,
    /// Sends unsolicited, large, conflicting snapshot chunks and state requests to
    /// every peer.
    StateSpam,
    /// Pairs each genuine pre-prepare header it receives with another batch, and relays
    /// the pair and sends it as evidence against the primary.
    Frame,
    /// Sends every peer bursts of status messages naming old views.
    StatusSpam,
    /// As primary, never orders the requests of one client and keeps its pipeline
    /// full with null batches; as a backup, honest.
    Censor,
    /// Sends requests of made-up keys, and replays of requests it has seen, to the
    /// backups only.
    Inject,
    /// As primary, when a validator comes back on a wiped disk, proposes to it alone a
    /// different batch for every sequence number it proposed before in its view, and
    /// turns any contradicting vote into evidence against it.
    ExploitWipe,
}

impl Behavior {
    /// Every behaviour, in declaration order.
    pub const ALL: [Behavior; 20] = [
        Behavior::Silent,
        Behavior::Equivocate,
        Behavior::BadDigest,
        Behavior::ForgeRequest,
        Behavior::DoubleVote,
        Behavior::OutOfWindow,
        Behavior::Replay,
        Behavior::CheckpointLie,
        Behavior::ForgeViewChange,
        Behavior::BadNewView,
        Behavior::SlowPrimary,
        Behavior::Impersonate,
        Behavior::Flood,
        Behavior::PoisonState,
        Behavior::StateSpam,
        Behavior::Frame,
        Behavior::StatusSpam,
        Behavior::Censor,
        Behavior::Inject,
        Behavior::ExploitWipe,
    ];

    /// The snake_case name used in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Behavior::Silent => "silent",
            Behavior::Equivocate => "equivocate",
            Behavior::BadDigest => "bad_digest",
            Behavior::ForgeRequest => "forge_request",
            Behavior::DoubleVote => "double_vote",
            Behavior::OutOfWindow => "out_of_window",
            Behavior::Replay => "replay",
            Behavior::CheckpointLie => "checkpoint_lie",
            Behavior::ForgeViewChange => "forge_view_change",
            Behavior::BadNewView => "bad_new_view",
            Behavior::SlowPrimary => "slow_primary",
            Behavior::Impersonate => "impersonate",
            Behavior::Flood => "flood",
            Behavior::PoisonState => "poison_state",
            Behavior::StateSpam => "state_spam",
            Behavior::Frame => "frame",
            Behavior::StatusSpam => "status_spam",
            Behavior::Censor => "censor",
            Behavior::Inject => "inject",
            Behavior::ExploitWipe => "exploit_wipe",
        }
    }

    /// One line saying what the traitor does.
    pub fn describe(self) -> &'static str {
        match self {
            Behavior::Silent => "sends nothing: every outgoing message is dropped",
            Behavior::Equivocate => {
                "as primary, sends one batch to even replicas and a different batch for the same slot to odd ones"
            }
            Behavior::BadDigest => {
                "signs pre-prepares, prepares and commits with a digest that does not match the batch"
            }
            Behavior::ForgeRequest => {
                "as primary, alters the first client request of each batch so its client signature fails"
            }
            Behavior::DoubleVote => {
                "sends every prepare and commit together with a second vote for another digest"
            }
            Behavior::OutOfWindow => {
                "as primary, proposes alternately beyond the high watermark and with a sequence gap"
            }
            Behavior::Replay => "sends each message together with two old messages it sent before",
            Behavior::CheckpointLie => "announces checkpoints with a false state digest",
            Behavior::ForgeViewChange => {
                "sends view changes that alternately drop all prepared certificates or invent a forged one"
            }
            Behavior::BadNewView => {
                "as new primary, sends a new view whose pre-prepare set O does not follow from V"
            }
            Behavior::SlowPrimary => {
                "as primary, delays every pre-prepare to 90% of the view timeout"
            }
            Behavior::Impersonate => {
                "sends a copy of each prepare, commit and checkpoint claiming another replica's id"
            }
            Behavior::Flood => {
                "sends 8 garbage frames (random bytes, bad bodies, badly signed messages) per message"
            }
            Behavior::PoisonState => {
                "corrupts snapshot chunks and the batches of committed-slot proofs it serves"
            }
            Behavior::StateSpam => {
                "with each vote and checkpoint, sends every peer unsolicited 16 KiB snapshot chunks for its latest checkpoint, each announcing a different chunk count, and a request for that snapshot"
            }
            Behavior::Frame => {
                "pairs each pre-prepare header it receives with another batch (reordered, null, or with a forged request) and sends the pair to every peer, as a relay and as evidence against the primary"
            }
            Behavior::StatusSpam => {
                "with each message it sends, sends every peer 32 status messages naming old views (view 0 and every view below the highest it has seen)"
            }
            Behavior::Censor => {
                "as primary, never orders the requests of the client with the lowest index, orders the others' in batches of its own, and fills every free slot of its pipeline with a null batch; as a backup, honest"
            }
            Behavior::Inject => {
                "with each vote and status it sends, sends the backups (never the primary) a request signed by a made-up key and a replay of a request it has seen"
            }
            Behavior::ExploitWipe => {
                "as primary, when a validator restarts on a wiped disk (its progress goes back, or it asks the recovery question), re-proposes to it alone a different batch for every sequence number it proposed before in its current view, up to where that validator had executed (slots it surely voted on and has not been offered since), and sends every peer any two prepares or commits of that validator that contradict each other as evidence"
            }
        }
    }

    /// The valid names, comma separated.
    pub fn valid_names() -> String {
        Behavior::ALL
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A behaviour name that is not in the vocabulary.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown traitor behaviour {name:?}; valid behaviours are: {valid}", valid = Behavior::valid_names())]
pub struct UnknownBehavior {
    /// The name that was given.
    pub name: String,
}

impl FromStr for Behavior {
    type Err = UnknownBehavior;

    /// Parses a behaviour name; case-insensitive, and `-` is accepted for `_`.
    fn from_str(s: &str) -> Result<Behavior, UnknownBehavior> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Behavior::ALL
            .into_iter()
            .find(|b| b.name() == wanted)
            .ok_or_else(|| UnknownBehavior {
                name: s.to_string(),
            })
    }
}
