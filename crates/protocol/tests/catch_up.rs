//! Catch-up from a single peer that is ahead. A commit certificate proves itself (q
//! signed commits and the batch they name), so a replica that stalls below a peer asks
//! that peer even when it is the only one ahead: with a validator still recovering from
//! a wiped disk, the one honest replica that collected a certificate may be the only
//! one that has it, and the others (one of them the primary) then wait for ever for a
//! commit that was lost on the way (found by the long sweep, seed 438).

mod common;

use common::*;
use pbft_protocol::{Action, Batch, CommittedProof, Message, ReplicaId, Seq};

fn fetches(actions: &[Action]) -> Vec<(ReplicaId, Seq, Seq)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: Message::FetchCommitted { from_seq, to_seq },
            } => Some((*to, *from_seq, *to_seq)),
            _ => None,
        })
        .collect()
}

fn batch(seq: Seq) -> Batch {
    Batch {
        requests: vec![request(1, seq, vec![])],
    }
}

/// Replica 2, a backup of view 0, that executed 1..=2, prepared 3 and sent its commit,
/// but got only the primary's commit for it: replica 3's was lost.
fn stalled_at_two() -> Probe {
    let mut p = Probe::new(2);
    for seq in 1..=3 {
        let b = batch(seq);
        let d = b.digest();
        p.deliver(0, pre_prepare_msg(0, seq, b.clone()));
        p.deliver(3, Message::Prepare(prepare(0, seq, d, 3)));
        p.deliver(0, Message::Commit(commit(0, seq, d, 0)));
        if seq < 3 {
            p.deliver(3, Message::Commit(commit(0, seq, d, 3)));
            p.execute(seq, &b);
        }
    }
    assert_eq!(p.r.last_executed(), 2);
    p
}

#[test]
fn a_stalled_replica_asks_the_one_peer_that_is_ahead_and_executes_its_certificate() {
    let mut p = stalled_at_two();
    // replica 1 executed 3: it says so in its heartbeat; nobody else is ahead
    p.deliver(
        1,
        Message::Status {
            view: 0,
            last_executed: 3,
        },
    );
    let mut asked = Vec::new();
    for tick in 1..=4 {
        asked.extend(fetches(&p.at(tick * 100)));
    }
    assert!(
        asked.contains(&(1, 3, 3)),
        "the stalled replica asks the only peer ahead for seq 3: {asked:?}"
    );

    // the answer: replica 1's certificate for 3 (commits of 0, 1 and 3)
    let b = batch(3);
    let d = b.digest();
    let proof = CommittedProof {
        pre_prepare: signed_pp(0, 3, d),
        batch: b,
        commits: vec![commit(0, 3, d, 0), commit(0, 3, d, 1), commit(0, 3, d, 3)],
    };
    let a = p.deliver(
        1,
        Message::Committed {
            stable_proof: vec![],
            proofs: vec![proof],
        },
    );
    assert_eq!(executed(&a), vec![3], "the certificate is executed");
}

/// A peer that claims to be far ahead and answers nothing does not keep the replica
/// from asking an honest one: the peers ahead are asked in turn.
#[test]
fn a_peer_that_lies_about_its_progress_does_not_monopolise_the_asks() {
    let mut p = stalled_at_two();
    p.deliver(
        3,
        Message::Status {
            view: 0,
            last_executed: 1_000_000,
        },
    );
    p.deliver(
        1,
        Message::Status {
            view: 0,
            last_executed: 3,
        },
    );
    let mut asked = Vec::new();
    for tick in 1..=8 {
        asked.extend(fetches(&p.at(tick * 100)));
    }
    let to_one: Vec<_> = asked.iter().filter(|(to, ..)| *to == 1).collect();
    let to_three: Vec<_> = asked.iter().filter(|(to, ..)| *to == 3).collect();
    assert!(!to_one.is_empty(), "the honest peer is asked: {asked:?}");
    assert!(!to_three.is_empty(), "so is the liar: {asked:?}");
    assert!(
        to_one.iter().all(|(_, from, to)| (*from, *to) == (3, 3)),
        "the honest peer is asked only for what it claims: {asked:?}"
    );
    assert!(
        asked.iter().all(|(_, from, to)| to - from < L),
        "no ask spans more than a window: {asked:?}"
    );
}
