//! The client core: its acceptance rule (f+1 distinct validators with one answer, in
//! replies that bind the request's digest, each validator counted once, by its latest
//! answer, kept in bounded size), the view it believes in, where requests go, the
//! window and in-flight limits, retransmission, the deadline; and a property test in
//! which up to f traitors reply in random orders, repeat themselves, lie, answer
//! another request and forge the replica field.

use pbft_crypto::{Keypair, PublicKey};
use pbft_protocol::client::{
    Accepted, ClientConfig, ClientConfigError, ClientCore, Recipients, ReplyOutcome, SubmitError,
    Transmit, CLAIM_PREVIEW_BYTES,
};
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{
    Duration, Instant, Message, ReplicaId, Reply, Request, RequestId, Seq, Signed, SignedRequest,
    View,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, RngSeed, TestRunner};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

fn client_key(i: u8) -> Keypair {
    Keypair::from_seed(&[100 + i; 32]).expect("valid seed")
}

fn request(key: &Keypair, id: RequestId) -> SignedRequest {
    Signed::sign(body(key.public(), id), key)
}

fn reply(
    replica: ReplicaId,
    client: PublicKey,
    id: RequestId,
    result: &[u8],
    seq: Seq,
    view: View,
) -> Reply {
    Reply {
        view,
        seq,
        client,
        request_id: id,
        request: body(client, id).digest(),
        replica,
        result: result.to_vec(),
    }
}

/// The body of request `id` of `client`, as [`request`] signs it.
fn body(client: PublicKey, id: RequestId) -> Request {
    Request {
        client,
        request_id: id,
        op: vec![id as u8, 7],
    }
}

fn ms(x: u64) -> Instant {
    Instant(x * 1000)
}

/// A core for `n` validators with f = (n-1)/3.
fn core(n: usize, window: u64, max_in_flight: usize) -> ClientCore {
    let mut cfg = ClientConfig::new(n, Duration::from_millis(100));
    cfg.window = window;
    cfg.max_in_flight = max_in_flight;
    ClientCore::new(cfg).expect("valid config")
}

fn transmits(c: &mut ClientCore) -> Vec<Transmit> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn accepted(c: &mut ClientCore) -> Vec<Accepted> {
    std::iter::from_fn(|| c.poll_accepted()).collect()
}

fn sent_ids(ts: &[Transmit]) -> Vec<(PublicKey, RequestId)> {
    ts.iter().map(|t| (t.client, t.request_id)).collect()
}

// ---------------------------------------------------------------- the rule

#[test]
fn f_plus_one_matching_replies_from_distinct_validators_accept() {
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(10)).expect("submit");
    let r = |v| reply(v, a.public(), 1, b"ok", 9, 0);
    assert_eq!(c.on_reply(0, &r(0), ms(20)), ReplyOutcome::Counted);
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.on_reply(2, &r(2), ms(35)), ReplyOutcome::Accepted);
    let acc = accepted(&mut c);
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].client, a.public());
    assert_eq!(acc[0].request_id, 1);
    assert_eq!(acc[0].request, request(&a, 1));
    assert_eq!(acc[0].result, b"ok".to_vec());
    assert_eq!(acc[0].seq, 9);
    assert_eq!(acc[0].at, ms(35));
    assert_eq!(acc[0].latency, Duration::from_millis(25));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.accepted_count(), 1);
    assert!(c.is_idle());
    // more replies for it change nothing
    assert_eq!(c.on_reply(3, &r(3), ms(40)), ReplyOutcome::NotInFlight);
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.accepted_count(), 1);
}

#[test]
fn f_matching_replies_do_not_accept() {
    // n = 7, f = 2: two matching replies are not enough, whatever else arrives
    let a = client_key(0);
    let mut c = core(7, 4, 4);
    assert_eq!(c.needed(), 3);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    for v in [0, 4] {
        assert_eq!(
            c.on_reply(v, &reply(v, a.public(), 1, b"ok", 3, 0), ms(1)),
            ReplyOutcome::Counted
        );
    }
    // other answers do not add up with these
    assert_eq!(
        c.on_reply(1, &reply(1, a.public(), 1, b"other", 3, 0), ms(1)),
        ReplyOutcome::Counted
    );
    assert_eq!(
        c.on_reply(2, &reply(2, a.public(), 1, b"ok", 4, 0), ms(1)),
        ReplyOutcome::Counted
    );
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.in_flight(), 1);
    assert_eq!(
        c.on_reply(6, &reply(6, a.public(), 1, b"ok", 3, 0), ms(2)),
        ReplyOutcome::Accepted
    );
    assert_eq!(accepted(&mut c)[0].result, b"ok".to_vec());
}

#[test]
fn one_validator_replying_twice_with_the_same_answer_counts_once() {
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    let r = reply(1, a.public(), 1, b"ok", 5, 0);
    assert_eq!(c.on_reply(1, &r, ms(1)), ReplyOutcome::Counted);
    for _ in 0..5 {
        assert_eq!(c.on_reply(1, &r, ms(2)), ReplyOutcome::AlreadyCounted);
    }
    assert!(c.poll_accepted().is_none());
    assert_eq!(
        c.on_reply(3, &reply(3, a.public(), 1, b"ok", 5, 0), ms(3)),
        ReplyOutcome::Accepted
    );
}

#[test]
fn a_validator_that_changes_its_answer_replaces_it() {
    let a = client_key(0);
    let honest = |v| reply(v, a.public(), 1, b"ok", 5, 0);
    let lie = |v| reply(v, a.public(), 1, b"stolen", 5, 0);

    // garbage first, then the honest answer: the honest answer counts for it
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    assert_eq!(c.on_reply(3, &lie(3), ms(1)), ReplyOutcome::Counted);
    assert_eq!(c.on_reply(3, &honest(3), ms(1)), ReplyOutcome::Replaced);
    assert_eq!(
        c.on_reply(3, &honest(3), ms(1)),
        ReplyOutcome::AlreadyCounted
    );
    assert_eq!(
        c.on_reply(0, &honest(0), ms(2)),
        ReplyOutcome::Accepted,
        "validator 3's latest answer is the honest one"
    );
    assert_eq!(accepted(&mut c)[0].result, b"ok".to_vec());

    // the honest answer first, then garbage: the garbage replaces it, it does not add
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    assert_eq!(c.on_reply(3, &honest(3), ms(1)), ReplyOutcome::Counted);
    assert_eq!(c.on_reply(3, &lie(3), ms(1)), ReplyOutcome::Replaced);
    assert_eq!(c.on_reply(0, &honest(0), ms(2)), ReplyOutcome::Counted);
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.on_reply(1, &honest(1), ms(3)), ReplyOutcome::Accepted);
    assert_eq!(accepted(&mut c)[0].result, b"ok".to_vec());

    // however many answers a traitor sends, one is kept, and one lie never accepts
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    for i in 0..100u8 {
        c.on_reply(2, &reply(2, a.public(), 1, &[i], 5, u64::from(i)), ms(1));
    }
    let kept: Vec<usize> = c.in_flight_claims().map(|(_, _, cl)| cl.len()).collect();
    assert_eq!(kept, vec![1]);
    assert!(c.poll_accepted().is_none());
}

#[test]
fn what_the_client_keeps_of_an_answer_is_bounded_in_size() {
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    // a traitor answers with a result of a mebibyte (a reply frame may hold 16)
    let huge = vec![0xab; 1 << 20];
    c.on_reply(3, &reply(3, a.public(), 1, &huge, 5, 0), ms(1));
    let (_, _, claims) = c.in_flight_claims().next().expect("in flight");
    assert_eq!(claims[&3].result_len, 1 << 20);
    assert_eq!(claims[&3].preview, huge[..CLAIM_PREVIEW_BYTES].to_vec());
    let kept = claims[&3].preview.len() + std::mem::size_of_val(&claims[&3].result_digest);
    assert!(
        kept <= 64,
        "the client keeps {kept} bytes of one validator's answer"
    );
    // a result that f+1 validators agree on is accepted whole, whatever its size
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 1, &big, 5, 0), ms(2));
    }
    let acc = accepted(&mut c);
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].result, big);
}

#[test]
fn f_traitors_agreeing_on_a_lie_never_beat_f_plus_one_honest() {
    // n = 7, f = 2: both traitors reply first, with the same lie, several times
    let a = client_key(0);
    let mut c = core(7, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    for _ in 0..3 {
        for t in [5, 6] {
            let o = c.on_reply(t, &reply(t, a.public(), 1, b"stolen", 2, 0), ms(1));
            assert!(matches!(
                o,
                ReplyOutcome::Counted | ReplyOutcome::AlreadyCounted
            ));
            // and try to speak for an honest validator
            assert_eq!(
                c.on_reply(t, &reply(0, a.public(), 1, b"stolen", 2, 0), ms(1)),
                ReplyOutcome::WrongReplica
            );
        }
    }
    assert!(c.poll_accepted().is_none());
    for v in [0, 1] {
        assert_eq!(
            c.on_reply(v, &reply(v, a.public(), 1, b"ok", 2, 0), ms(2)),
            ReplyOutcome::Counted
        );
    }
    assert_eq!(
        c.on_reply(2, &reply(2, a.public(), 1, b"ok", 2, 0), ms(3)),
        ReplyOutcome::Accepted
    );
    let acc = accepted(&mut c);
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].result, b"ok".to_vec());
}

#[test]
fn a_reply_naming_another_validator_is_ignored() {
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    transmits(&mut c);
    // validator 1 sends a reply that claims to be validator 2's, then its own
    assert_eq!(
        c.on_reply(1, &reply(2, a.public(), 1, b"ok", 5, 0), ms(1)),
        ReplyOutcome::WrongReplica
    );
    assert_eq!(
        c.on_reply(1, &reply(1, a.public(), 1, b"ok", 5, 0), ms(1)),
        ReplyOutcome::Counted
    );
    // validator 2 was not counted by the forged reply: its own reply is its first
    assert_eq!(
        c.on_reply(2, &reply(2, a.public(), 1, b"ok", 5, 0), ms(2)),
        ReplyOutcome::Accepted
    );
    // the forged reply did not mark validator 2 as a replier, the real one did
    c.submit(request(&a, 2), ms(3)).expect("submit");
    assert_eq!(transmits(&mut c)[0].to, Recipients::Only(vec![0, 3]));
}

#[test]
fn a_reply_from_outside_the_validator_set_is_ignored() {
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    assert_eq!(
        c.on_reply(4, &reply(4, a.public(), 1, b"ok", 5, 0), ms(1)),
        ReplyOutcome::UnknownValidator
    );
    assert_eq!(
        c.on_reply(9, &reply(9, a.public(), 1, b"ok", 5, 0), ms(1)),
        ReplyOutcome::UnknownValidator
    );
    assert_eq!(
        c.on_reply(0, &reply(0, a.public(), 1, b"ok", 5, 0), ms(1)),
        ReplyOutcome::Counted
    );
    assert!(c.poll_accepted().is_none());
}

#[test]
fn replies_for_requests_not_in_flight_are_ignored() {
    let (a, b) = (client_key(0), client_key(1));
    let mut c = core(4, 4, 1);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&a, 2), ms(0)).expect("submit");
    assert_eq!((c.in_flight(), c.queued()), (1, 1));
    // request 2 is queued, request 3 was never submitted, b is no client of ours
    for (client, id) in [(a.public(), 2), (a.public(), 3), (b.public(), 1)] {
        for v in 0..4 {
            assert_eq!(
                c.on_reply(v, &reply(v, client, id, b"early", 1, 0), ms(1)),
                ReplyOutcome::NotInFlight
            );
        }
    }
    assert!(c.poll_accepted().is_none());
    // request 2 goes in flight once 1 is accepted, and the early replies do not count
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 1, b"one", 1, 0), ms(2));
    }
    assert_eq!(accepted(&mut c).len(), 1);
    assert_eq!((c.in_flight(), c.queued()), (1, 0));
    assert_eq!(
        c.on_reply(3, &reply(3, a.public(), 2, b"two", 2, 0), ms(3)),
        ReplyOutcome::Counted
    );
    assert!(c.poll_accepted().is_none());
}

#[test]
fn replies_bound_to_another_request_do_not_count() {
    // f+1 validators answer request 1 of a, but for another operation signed under
    // that id: whatever they say, it is not the outcome of the request a signed
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    let other = Request {
        client: a.public(),
        request_id: 1,
        op: vec![0xee],
    }
    .digest();
    for v in [0, 1, 2] {
        let mut r = reply(v, a.public(), 1, b"applied", 5, 0);
        r.request = other;
        let o = c.on_reply(v, &r, ms(1));
        assert_ne!(o, ReplyOutcome::Accepted, "validator {v}");
    }
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.in_flight(), 1);
    // replies bound to its own request accept it
    for v in [0, 3] {
        c.on_reply(v, &reply(v, a.public(), 1, b"refused", 6, 0), ms(2));
    }
    let acc = accepted(&mut c);
    assert_eq!(acc.len(), 1);
    assert_eq!(acc[0].result, b"refused".to_vec());
}

#[test]
fn the_answer_includes_the_sequence_number() {
    // same result at different sequence numbers: a lie about where it executed
    let a = client_key(0);
    let mut c = core(4, 4, 4);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    assert_eq!(
        c.on_reply(3, &reply(3, a.public(), 1, b"ok", 1, 0), ms(1)),
        ReplyOutcome::Counted
    );
    assert_eq!(
        c.on_reply(0, &reply(0, a.public(), 1, b"ok", 40, 0), ms(1)),
        ReplyOutcome::Counted
    );
    assert!(c.poll_accepted().is_none());
    assert_eq!(
        c.on_reply(1, &reply(1, a.public(), 1, b"ok", 40, 0), ms(2)),
        ReplyOutcome::Accepted
    );
    assert_eq!(accepted(&mut c)[0].seq, 40);
}

// ---------------------------------------------------------------- view and recipients

#[test]
fn new_requests_go_to_the_primary_and_to_validators_that_have_not_replied() {
    let (a, b) = (client_key(0), client_key(1));
    let mut c = core(4, 8, 8);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    let ts = transmits(&mut c);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].to, Recipients::All, "nobody has replied to a yet");
    assert!(!ts[0].retransmission);
    for v in [0, 2] {
        c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(1));
    }
    assert_eq!(accepted(&mut c).len(), 1);
    // the primary (0) always, and 1 and 3 that have not replied to a
    c.submit(request(&a, 2), ms(2)).expect("submit");
    c.submit(request(&b, 1), ms(2)).expect("submit");
    let ts = transmits(&mut c);
    assert_eq!(ts[0].to, Recipients::Only(vec![0, 1, 3]));
    assert_eq!(
        ts[1].to,
        Recipients::All,
        "replies to a say nothing about b"
    );
    // once everyone replied to a, only the primary gets a's new requests
    for v in [1, 3] {
        c.on_reply(v, &reply(v, a.public(), 2, b"ok", 2, 0), ms(3));
    }
    c.submit(request(&a, 3), ms(4)).expect("submit");
    assert_eq!(transmits(&mut c)[0].to, Recipients::Only(vec![0]));
    assert!(Recipients::Only(vec![0]).includes(0));
    assert!(!Recipients::Only(vec![0]).includes(1));
}

#[test]
fn the_view_is_one_that_f_plus_one_accepted_replies_reached() {
    let a = client_key(0);
    let mut c = core(4, 8, 8);
    for v in 0..4 {
        // make everyone a replier, so recipients show the primary alone
        c.submit(request(&a, 1), ms(0)).ok();
        c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(0));
    }
    accepted(&mut c);
    transmits(&mut c);
    assert_eq!(c.view(), 0);

    // a traitor claims view 7 in a matching reply; an honest one says view 1
    c.submit(request(&a, 2), ms(1)).expect("submit");
    c.on_reply(3, &reply(3, a.public(), 2, b"ok", 2, 7), ms(2));
    c.on_reply(1, &reply(1, a.public(), 2, b"ok", 2, 1), ms(2));
    assert_eq!(accepted(&mut c).len(), 1);
    assert_eq!(
        c.view(),
        1,
        "a view only the traitor claims is not believed"
    );
    assert_eq!(c.primary(), 1);
    transmits(&mut c);
    c.submit(request(&a, 3), ms(3)).expect("submit");
    assert_eq!(transmits(&mut c)[0].to, Recipients::Only(vec![1]));

    // replies from an older view do not move the client back
    c.on_reply(0, &reply(0, a.public(), 3, b"ok", 3, 0), ms(4));
    c.on_reply(2, &reply(2, a.public(), 3, b"ok", 3, 0), ms(4));
    assert_eq!(accepted(&mut c).len(), 1);
    assert_eq!(c.view(), 1);

    // two validators in view 5 move it
    c.submit(request(&a, 4), ms(5)).expect("submit");
    c.on_reply(2, &reply(2, a.public(), 4, b"ok", 4, 5), ms(6));
    c.on_reply(3, &reply(3, a.public(), 4, b"ok", 4, 6), ms(6));
    assert_eq!(c.view(), 5);
    assert_eq!(c.primary(), 1);

    // replies that are not accepted (a lone traitor) never move the view
    c.submit(request(&a, 5), ms(7)).expect("submit");
    c.on_reply(3, &reply(3, a.public(), 5, b"ok", 5, 99), ms(8));
    assert_eq!(c.view(), 5);
}

#[test]
fn transmissions_carry_the_encoded_request() {
    let a = client_key(0);
    let mut c = core(4, 8, 8);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    let t = transmits(&mut c).pop().expect("a transmission");
    let m = envelope::decode(&t.bytes, &Limits::default()).expect("decodes");
    assert_eq!(m, Message::Request(request(&a, 1)));
}

// ---------------------------------------------------------------- limits

#[test]
fn the_client_window_holds_per_key_as_validators_count_it() {
    let (a, b) = (client_key(0), client_key(1));
    let mut c = core(4, 2, 100);
    for id in 1..=5 {
        c.submit(request(&a, id), ms(0)).expect("submit");
    }
    c.submit(request(&b, 1), ms(0)).expect("submit");
    let ts = transmits(&mut c);
    assert_eq!(
        sent_ids(&ts),
        vec![(a.public(), 1), (a.public(), 2), (b.public(), 1)],
        "a key at its window does not hold up other keys"
    );
    assert_eq!(c.in_flight_for(&a.public()), 2);
    assert_eq!(c.queued(), 3);

    // 2 accepted while 1 is not: 3 would put ids 1..3 in flight, beyond a window of 2
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 2, b"ok", 2, 0), ms(1));
    }
    assert_eq!(accepted(&mut c).len(), 1);
    assert!(transmits(&mut c).is_empty());
    assert_eq!(c.in_flight_for(&a.public()), 1);

    // 1 accepted: 3 and 4 go
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(2));
    }
    assert_eq!(
        sent_ids(&transmits(&mut c)),
        vec![(a.public(), 3), (a.public(), 4)]
    );
    assert_eq!(c.in_flight_for(&a.public()), 2);
    assert_eq!(c.queued(), 1);
}

#[test]
fn the_in_flight_limit_holds_across_keys_oldest_submission_first() {
    let (a, b) = (client_key(0), client_key(1));
    let mut c = core(4, 10, 2);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&b, 1), ms(0)).expect("submit");
    c.submit(request(&a, 2), ms(0)).expect("submit");
    c.submit(request(&b, 2), ms(0)).expect("submit");
    assert_eq!(
        sent_ids(&transmits(&mut c)),
        vec![(a.public(), 1), (b.public(), 1)]
    );
    assert_eq!((c.in_flight(), c.queued()), (2, 2));
    // b's first acceptance frees a slot; a's 2 was submitted before b's 2
    for v in [2, 3] {
        c.on_reply(v, &reply(v, b.public(), 1, b"ok", 1, 0), ms(1));
    }
    assert_eq!(sent_ids(&transmits(&mut c)), vec![(a.public(), 2)]);
    assert_eq!((c.in_flight(), c.queued()), (2, 1));
    // more room later: the rest goes at the next input
    c.set_max_in_flight(5);
    c.on_timeout(ms(2));
    assert_eq!(sent_ids(&transmits(&mut c)), vec![(b.public(), 2)]);
    assert_eq!((c.in_flight(), c.queued()), (3, 0));
}

#[test]
fn a_request_already_queued_or_in_flight_is_refused() {
    let a = client_key(0);
    let mut c = core(4, 1, 1);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&a, 2), ms(0)).expect("submit");
    for id in [1, 2] {
        assert_eq!(
            c.submit(request(&a, id), ms(0)),
            Err(SubmitError::Duplicate {
                client: a.public(),
                request_id: id
            })
        );
    }
    assert_eq!((c.in_flight(), c.queued()), (1, 1));
    // once accepted it may be submitted again (its replies are cached)
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(1));
    }
    c.submit(request(&a, 1), ms(2)).expect("resubmit");
    assert_eq!(c.queued(), 1);
}

#[test]
fn unusable_configurations_are_refused() {
    let d = Duration::from_millis(1);
    assert_eq!(
        ClientCore::new(ClientConfig::new(0, d)).err(),
        Some(ClientConfigError::NoValidators)
    );
    let mut cfg = ClientConfig::new(2, d);
    cfg.f = 2;
    assert_eq!(
        ClientCore::new(cfg).err(),
        Some(ClientConfigError::QuorumTooLarge {
            needed: 3,
            validators: 2
        })
    );
    // zero limits mean one
    let mut cfg = ClientConfig::new(4, Duration::ZERO);
    cfg.window = 0;
    cfg.max_in_flight = 0;
    let c = ClientCore::new(cfg).expect("valid");
    assert_eq!(c.config().window, 1);
    assert_eq!(c.config().max_in_flight, 1);
    assert!(c.config().retransmit > Duration::ZERO);
}

// ---------------------------------------------------------------- time

#[test]
fn a_request_not_accepted_is_resent_to_everyone_every_interval() {
    let (a, b) = (client_key(0), client_key(1));
    let mut c = core(4, 8, 8); // retransmit every 100 ms
    assert_eq!(c.next_timeout(), None);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&b, 1), ms(30)).expect("submit");
    transmits(&mut c);
    assert_eq!(c.next_timeout(), Some(ms(100)));

    c.on_timeout(ms(99));
    assert!(transmits(&mut c).is_empty());
    c.on_timeout(ms(100));
    let ts = transmits(&mut c);
    assert_eq!(sent_ids(&ts), vec![(a.public(), 1)]);
    assert_eq!(ts[0].to, Recipients::All);
    assert!(ts[0].retransmission);
    assert_eq!(c.retransmitted(), 1);
    assert_eq!(c.next_timeout(), Some(ms(130)));

    // a late wake-up sends each due request once, and the next interval counts from it
    c.on_timeout(ms(250));
    let ts = transmits(&mut c);
    assert_eq!(
        sent_ids(&ts),
        vec![(b.public(), 1), (a.public(), 1)],
        "in the order of their last sends"
    );
    assert_eq!(c.retransmitted(), 3);
    assert_eq!(c.next_timeout(), Some(ms(350)));

    // the retransmitted bytes are the first send's
    let first = request(&a, 1);
    let m = envelope::decode(&ts[1].bytes, &Limits::default()).expect("decodes");
    assert_eq!(m, Message::Request(first));

    // accepted requests stop
    for v in [0, 1] {
        c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(260));
        c.on_reply(v, &reply(v, b.public(), 1, b"ok", 2, 0), ms(260));
    }
    assert_eq!(c.next_timeout(), None);
    c.on_timeout(ms(1000));
    assert!(transmits(&mut c).is_empty());
    assert_eq!(c.retransmitted(), 3);

    // a longer interval applies to requests in flight, from their last send
    c.submit(request(&a, 2), ms(1000)).expect("submit");
    c.set_retransmit(Duration::from_millis(500));
    assert_eq!(c.next_timeout(), Some(ms(1500)));
}

#[test]
fn a_request_past_the_deadline_is_given_up_with_its_replies() {
    let (a, b) = (client_key(0), client_key(1));
    let mut cfg = ClientConfig::new(4, Duration::from_millis(300));
    cfg.window = 8;
    cfg.max_in_flight = 1;
    cfg.deadline = Some(Duration::from_millis(1000));
    let mut c = ClientCore::new(cfg).expect("valid");
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&b, 1), ms(0)).expect("submit");
    c.on_reply(2, &reply(2, a.public(), 1, b"ok", 1, 0), ms(10));
    c.on_reply(3, &reply(3, a.public(), 1, b"lie", 1, 0), ms(10));
    transmits(&mut c);

    for t in [300, 600, 900] {
        assert_eq!(c.next_timeout(), Some(ms(t)));
        c.on_timeout(ms(t));
        assert_eq!(transmits(&mut c).len(), 1);
    }
    assert_eq!(c.next_timeout(), Some(ms(1000)), "the deadline comes first");
    c.on_timeout(ms(999));
    assert!(c.poll_expired().is_none());
    c.on_timeout(ms(1000));
    let e = c.poll_expired().expect("given up");
    assert!(c.poll_expired().is_none());
    assert_eq!((e.client, e.request_id), (a.public(), 1));
    assert_eq!(e.request, request(&a, 1));
    assert_eq!(e.waited, Duration::from_millis(1000));
    assert_eq!(e.replies.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(e.replies[&3].preview, b"lie".to_vec());
    assert_eq!(e.replies[&3].result_digest, pbft_crypto::Digest::of(b"lie"));
    assert_eq!(e.largest_agreement(), 1);
    assert_eq!(c.expired_count(), 1);
    // its slot went to b, whose deadline counts from its own first send
    let ts = transmits(&mut c);
    assert_eq!(sent_ids(&ts), vec![(b.public(), 1)]);
    assert!(!ts[0].retransmission, "a first send, not a retransmission");
    assert_eq!(c.next_timeout(), Some(ms(1300)));
    // late replies for the given-up request are ignored
    for v in [0, 1] {
        assert_eq!(
            c.on_reply(v, &reply(v, a.public(), 1, b"ok", 1, 0), ms(1001)),
            ReplyOutcome::NotInFlight
        );
    }
    assert!(c.poll_accepted().is_none());
    c.on_timeout(ms(2000));
    assert_eq!(c.poll_expired().map(|e| e.client), Some(b.public()));
    assert!(c.is_idle());
}

#[test]
fn cancel_all_forgets_the_work_but_not_what_was_learnt() {
    let a = client_key(0);
    let mut c = core(4, 1, 1);
    c.submit(request(&a, 1), ms(0)).expect("submit");
    c.submit(request(&a, 2), ms(0)).expect("submit");
    c.on_reply(1, &reply(1, a.public(), 1, b"ok", 1, 3), ms(1));
    c.on_reply(2, &reply(2, a.public(), 1, b"ok", 1, 3), ms(1));
    assert_eq!(c.view(), 3);
    c.cancel_all();
    assert!(c.is_idle());
    assert!(c.poll_transmit().is_none());
    assert!(c.poll_accepted().is_none());
    assert_eq!(c.next_timeout(), None);
    assert_eq!(c.view(), 3);
    // request 2 may come again; it goes to primary 3 and to those that did not reply
    c.submit(request(&a, 2), ms(5)).expect("resubmit");
    assert_eq!(transmits(&mut c)[0].to, Recipients::Only(vec![0, 3]));
}

// ---------------------------------------------------------------- property

/// One request's honest answer: the same from every honest validator.
fn honest_answer(client: usize, id: RequestId) -> (Vec<u8>, Seq, View) {
    let seq = 10 * id + client as u64;
    (format!("receipt {client}/{id}").into_bytes(), seq, seq % 3)
}

#[derive(Clone, Debug)]
struct Case {
    f: usize,
    traitors: usize,
    clients: usize,
    per_client: u64,
    window: u64,
    max_in_flight: usize,
    deadline: bool,
    seed: u64,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        1usize..=2,
        0usize..=2,
        1usize..=3,
        1u64..=6,
        1u64..=4,
        1usize..=6,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(f, traitors, clients, per_client, window, max_in_flight, deadline, seed)| Case {
                f,
                traitors: traitors.min(f),
                clients,
                per_client,
                window,
                max_in_flight,
                deadline,
                seed,
            },
        )
}

/// Runs one case to the end: every request accepted, with the honest answer.
fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut rng = ChaCha20Rng::seed_from_u64(case.seed);
    let n = 3 * case.f + 1;
    let mut ids: Vec<ReplicaId> = (0..n as ReplicaId).collect();
    ids.shuffle(&mut rng);
    let traitors: BTreeSet<ReplicaId> = ids[..case.traitors].iter().copied().collect();
    let honest: Vec<ReplicaId> = (0..n as ReplicaId)
        .filter(|v| !traitors.contains(v))
        .collect();
    let keys: Vec<Keypair> = (0..case.clients as u8).map(client_key).collect();
    let owner: BTreeMap<PublicKey, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.public(), i))
        .collect();

    let mut cfg = ClientConfig::new(n, Duration::from_millis(50));
    cfg.window = case.window;
    cfg.max_in_flight = case.max_in_flight;
    // a deadline far beyond any case's run: it must never fire while honest
    // replies keep arriving
    cfg.deadline = case.deadline.then(|| Duration::from_secs(3600));
    let mut core = ClientCore::new(cfg).expect("valid config");

    let mut now = Instant::ZERO;
    for id in 1..=case.per_client {
        for k in &keys {
            core.submit(request(k, id), now).expect("fresh request");
        }
    }
    let total = case.per_client as usize * case.clients;
    let mut pending: BTreeMap<PublicKey, VecDeque<RequestId>> = keys
        .iter()
        .map(|k| (k.public(), (1..=case.per_client).collect()))
        .collect();
    let mut in_flight: BTreeSet<(PublicKey, RequestId)> = BTreeSet::new();
    let mut honest_delivered: BTreeMap<(PublicKey, RequestId), BTreeSet<ReplicaId>> =
        BTreeMap::new();
    let mut done: BTreeMap<(PublicKey, RequestId), Accepted> = BTreeMap::new();
    let mut sent_replies: Vec<(ReplicaId, Reply)> = Vec::new();
    let mut max_honest_view = 0;

    let mut steps = 0;
    while done.len() < total {
        steps += 1;
        prop_assert!(steps < 100_000, "no progress");
        while let Some(t) = core.poll_transmit() {
            if !t.retransmission {
                prop_assert!(in_flight.insert((t.client, t.request_id)));
                // each key's requests go out in submission order
                let head = pending.get_mut(&t.client).and_then(|q| q.pop_front());
                prop_assert_eq!(head, Some(t.request_id));
            }
        }
        // the limits hold at every step
        prop_assert!(in_flight.len() <= case.max_in_flight);
        prop_assert_eq!(in_flight.len(), core.in_flight());
        for k in &keys {
            let mine: Vec<RequestId> = in_flight
                .iter()
                .filter(|(c, _)| *c == k.public())
                .map(|(_, id)| *id)
                .collect();
            if let (Some(lo), Some(hi)) = (mine.first(), mine.last()) {
                prop_assert!(hi - lo < case.window, "window: {:?}", mine);
            }
        }
        // and nothing waits that would fit: the queue moves whenever there is room
        if in_flight.len() < case.max_in_flight {
            for k in &keys {
                let Some(&head) = pending[&k.public()].front() else {
                    continue;
                };
                let mine: Vec<RequestId> = in_flight
                    .iter()
                    .filter(|(c, _)| *c == k.public())
                    .map(|(_, id)| *id)
                    .collect();
                let blocked = match (mine.first(), mine.last()) {
                    (Some(lo), Some(hi)) => *hi.max(&head) - *lo.min(&head) >= case.window,
                    _ => false,
                };
                prop_assert!(blocked, "request {} waits with room to spare", head);
            }
        }

        let targets: Vec<(PublicKey, RequestId)> = if rng.gen_bool(0.9) && !in_flight.is_empty() {
            in_flight.iter().copied().collect()
        } else {
            // a reply for something not in flight: queued, accepted, or unknown
            let k = &keys[rng.gen_range(0..keys.len())];
            vec![(k.public(), rng.gen_range(1..=case.per_client + 2))]
        };
        let (client, id) = targets[rng.gen_range(0..targets.len())];
        let (result, seq, view) = honest_answer(owner[&client], id);
        let roll = rng.gen_range(0..10);
        let (from, r) = if roll < 5 {
            let v = honest[rng.gen_range(0..honest.len())];
            (v, reply(v, client, id, &result, seq, view))
        } else if roll < 8 && !traitors.is_empty() {
            let t = *traitors
                .iter()
                .nth(rng.gen_range(0..traitors.len()))
                .expect("a traitor");
            // a lie, the truth with a lie about seq or view, a reply to another
            // request signed under the same id, or a forged replica field
            let r = match rng.gen_range(0..5) {
                0 => reply(t, client, id, b"stolen", seq, view),
                3 => Reply {
                    request: Request {
                        client,
                        request_id: id,
                        op: b"another operation".to_vec(),
                    }
                    .digest(),
                    ..reply(t, client, id, b"stolen", seq, view)
                },
                1 => reply(t, client, id, &result, seq + 1, view),
                2 => reply(t, client, id, &result, seq, rng.gen_range(0..1000)),
                _ => reply(
                    honest[rng.gen_range(0..honest.len())],
                    client,
                    id,
                    b"stolen",
                    seq,
                    view,
                ),
            };
            (t, r)
        } else if roll < 9 && !sent_replies.is_empty() {
            // a duplicate of an earlier reply
            sent_replies[rng.gen_range(0..sent_replies.len())].clone()
        } else {
            now = now.plus(Duration::from_millis(rng.gen_range(1..80)));
            core.on_timeout(now);
            prop_assert!(core.poll_expired().is_none(), "deadline fired");
            continue;
        };
        sent_replies.push((from, r.clone()));
        let was_in_flight = in_flight.contains(&(r.client, r.request_id));
        let outcome = core.on_reply(from, &r, now);
        if r.replica != from {
            prop_assert_eq!(outcome, ReplyOutcome::WrongReplica);
        }
        let key = (r.client, r.request_id);
        if !in_flight.contains(&key) {
            prop_assert!(
                matches!(
                    outcome,
                    ReplyOutcome::NotInFlight | ReplyOutcome::WrongReplica
                ),
                "{:?}",
                outcome
            );
        }
        if honest.contains(&from) && r.replica == from && was_in_flight {
            honest_delivered.entry(key).or_default().insert(from);
            max_honest_view = max_honest_view.max(r.view);
        }
        while let Some(acc) = core.poll_accepted() {
            let key = (acc.client, acc.request_id);
            prop_assert!(in_flight.remove(&key), "accepted twice or never sent");
            let (result, seq, _) = honest_answer(owner[&acc.client], acc.request_id);
            prop_assert_eq!(&acc.result, &result, "accepted a lie");
            prop_assert_eq!(acc.seq, seq, "accepted a wrong seq");
            prop_assert!(done.insert(key, acc).is_none());
        }
        // f+1 honest replies to a request in flight always accept it
        if honest_delivered.get(&key).is_some_and(|s| s.len() > case.f) {
            prop_assert!(done.contains_key(&key), "f+1 honest replies, not accepted");
        }
        prop_assert!(core.view() <= max_honest_view, "a traitor moved the view");
    }
    prop_assert!(core.is_idle());
    prop_assert_eq!(core.accepted_count() as usize, total);
    Ok(())
}

#[test]
fn accepted_results_are_the_honest_ones_and_every_request_is_accepted() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0xc11e),
        ..ProptestConfig::default()
    });
    runner
        .run(&arb_case(), |case| run_case(&case))
        .expect("the client rule holds (the failing case, with its seed, is above)");
}
