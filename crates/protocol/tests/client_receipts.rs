//! A receipt is always for the client's own operation. A reply binds the digest of the
//! request it answers; a request id that executed, signed again with another operation,
//! is never answered with the reply of the operation that ran: the replica hands it to
//! the ledger (`Action::ReplyFromLedger` with the new request's digest), whose record
//! of the operation that ran under that id tells the two apart.

mod common;

use common::*;
use pbft_protocol::{Action, Batch, Message, Seq};

/// Backup 1 of view 0 orders and executes `batch` at `seq`; returns the actions.
fn order_and_execute(p: &mut Probe, seq: Seq, batch: &Batch) -> Vec<Action> {
    let d = batch.digest();
    let mut a = p.deliver(0, pre_prepare_msg(0, seq, batch.clone()));
    for r in [2, 3] {
        a.extend(p.deliver(r, Message::Prepare(prepare(0, seq, d, r))));
    }
    for r in [0, 2, 3] {
        a.extend(p.deliver(r, Message::Commit(commit(0, seq, d, r))));
    }
    a.extend(p.execute(seq, batch));
    a
}

fn replies(actions: &[Action]) -> Vec<pbft_protocol::SignedReply> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reused_request_id_is_not_answered_with_the_reply_of_the_operation_that_ran() {
    let mut p = Probe::new(1);
    let ran = request(0, 1, vec![1]);
    let a = order_and_execute(
        &mut p,
        1,
        &Batch {
            requests: vec![ran.clone()],
        },
    );
    let sent = replies(&a);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body.request,
        ran.body.digest(),
        "the reply binds the request that executed"
    );
    // a retransmission of the request that ran gets its cached reply
    let again = replies(&p.client(ran.clone()));
    assert_eq!(again, sent);
    // the same id with another operation does not
    let reused = request(0, 1, vec![9]);
    let a = p.client(reused.clone());
    let wrong: Vec<_> = replies(&a)
        .into_iter()
        .filter(|r| r.body.request != reused.body.digest())
        .collect();
    assert!(
        wrong.is_empty(),
        "a reused id was answered with another request's reply: {wrong:?}"
    );
    let from_ledger: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::ReplyFromLedger {
                client,
                request_id,
                request,
            } => Some((*client, *request_id, *request)),
            _ => None,
        })
        .collect();
    assert_eq!(
        from_ledger,
        vec![(reused.body.client, 1, reused.body.digest())],
        "the ledger, which records the operation that ran, answers it"
    );
    // and it is never ordered or watched
    assert_eq!(p.r.waiting_requests(), 0);
    assert_eq!(p.r.unordered_requests(), 0);
}
