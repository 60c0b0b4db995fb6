//! The workload plan of a cluster-mode run: the scenario's client requests, signed
//! before the run starts, with each client's share of every kind.

use pbft_client::Signer;
use pbft_crypto::Keypair;
use pbft_executor::Operation;
use pbft_protocol::SignedRequest;
use pbft_scenario::model::Scenario;

/// The scenario's client requests, signed.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The valid transfers and overdrafts (each must be accepted), in submission
    /// order: round robin across clients, so every client has requests in flight.
    pub valid: Vec<SignedRequest>,
    /// Requests whose signature does not verify.
    pub forged: Vec<SignedRequest>,
}

/// The share of `total` that client `i` of `k` gets: equal shares, the first
/// `total mod k` clients one more.
pub(crate) fn share(total: usize, i: usize, k: usize) -> usize {
    total / k + usize::from(i < total % k)
}

/// Signs the plan of `sc` for the clients `keys`, amounts drawn from `seed`.
///
/// Each client signs its share of the valid transfers (1 to 100 units to the next
/// clients in turn) with its share of overdrafts (ten times the genesis balance) spread
/// evenly among them, starting at request id 1; its forged requests reuse the bodies of
/// its real ones, as an attacker forging "request 7 of client c" would.
pub(crate) fn plan(sc: &Scenario, keys: &[Keypair], seed: u64) -> Plan {
    let w = &sc.workload;
    let k = keys.len();
    let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut per_client: Vec<Vec<SignedRequest>> = Vec::new();
    let mut forged = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut signer = Signer::new(key.clone(), 1);
        let valid = share(w.requests, i, k);
        let over = share(w.overdrafts, i, k);
        let mut mine = Vec::new();
        let all = valid + over;
        for j in 0..all {
            let to = publics[(i + 1 + j) % k.max(1)];
            // exactly `over` overdrafts, spread evenly among the valid transfers
            let is_over = (j + 1) * over / all > j * over / all;
            let amount = if is_over {
                w.balance.saturating_mul(10)
            } else {
                1 + rnd() % 100
            };
            let op = Operation::transfer(to, amount).encode_padded(w.op_bytes);
            mine.push(signer.sign(op));
        }
        for j in 0..share(w.invalid_signatures, i, k) {
            let body = match mine.get(j % mine.len().max(1)) {
                Some(r) => r.body.clone(),
                None => {
                    signer
                        .sign(Operation::transfer(publics[0], 1).encode())
                        .body
                }
            };
            let mut r = pbft_protocol::Signed::sign(body, key);
            r.sig.0[5] ^= 0x40;
            forged.push(r);
        }
        per_client.push(mine);
    }
    let mut valid = Vec::new();
    let longest = per_client.iter().map(Vec::len).max().unwrap_or(0);
    for j in 0..longest {
        for c in &per_client {
            if let Some(r) = c.get(j) {
                valid.push(r.clone());
            }
        }
    }
    Plan { valid, forged }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::timeline::tests::scenario;
    use crate::workload::tests::signed_by;
    use pbft_crypto::Digest;

    fn keys(k: u64) -> Vec<Keypair> {
        (0..k)
            .map(|i| {
                Keypair::from_seed(&Digest::of_parts(&[b"plan test", &i.to_le_bytes()]).0)
                    .expect("key")
            })
            .collect()
    }

    fn amount(r: &SignedRequest) -> u64 {
        let op: Operation = postcard::from_bytes(&r.body.op).expect("operation");
        op.transfers[0].amount
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for total in [0, 1, 7, 100, 101] {
            for k in 1..6 {
                let shares: Vec<usize> = (0..k).map(|i| share(total, i, k)).collect();
                assert_eq!(shares.iter().sum::<usize>(), total, "{total} over {k}");
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            }
        }
    }

    #[test]
    fn the_plan_holds_every_request_of_the_scenario() {
        let sc = scenario(
            "[workload]\nclients = 3\nrequests = 10\noverdrafts = 4\ninvalid_signatures = 5\nbalance = 1000\n",
        );
        let keys = keys(3);
        let p = plan(&sc, &keys, 7);
        assert_eq!(p.valid.len(), 14);
        let overdrafts = p.valid.iter().filter(|r| amount(r) == 10_000).count();
        assert_eq!(overdrafts, 4);
        assert!(p
            .valid
            .iter()
            .all(|r| (1..=100).contains(&amount(r)) || amount(r) == 10_000));
        // round robin: client 0, 1, 2, 0, ... while each has requests left
        for (j, r) in p.valid.iter().take(12).enumerate() {
            assert_eq!(r.body.client, keys[j % 3].public(), "request {j}");
            assert_eq!(r.body.request_id, 1 + (j / 3) as u64, "request {j}");
            assert!(
                signed_by(r, &keys[j % 3].public()),
                "request {j} is signed by its client"
            );
        }
        assert_eq!(p.forged.len(), 5);
        for f in &p.forged {
            assert!(!signed_by(f, &f.body.client), "a forged request verifies");
            assert!(
                p.valid.iter().any(|v| v.body == f.body),
                "a forged request reuses a real body"
            );
        }
    }

    #[test]
    fn operations_are_padded_to_op_bytes() {
        let sc = scenario("[workload]\nrequests = 6\nop_bytes = 4096\n");
        let p = plan(&sc, &keys(2), 5);
        assert_eq!(p.valid.len(), 6);
        assert!(p.valid.iter().all(|r| r.body.op.len() == 4096));
        assert!(p.valid.iter().all(|r| (1..=100).contains(&amount(r))));
        let sc = scenario("[workload]\nrequests = 6\n");
        assert!(plan(&sc, &keys(2), 5)
            .valid
            .iter()
            .all(|r| r.body.op.len() < 100));
    }

    #[test]
    fn the_same_seed_signs_the_same_plan() {
        let sc = scenario("[workload]\nrequests = 20\n");
        let keys = keys(4);
        let amounts =
            |seed| -> Vec<u64> { plan(&sc, &keys, seed).valid.iter().map(amount).collect() };
        assert_eq!(amounts(3), amounts(3));
        assert_ne!(amounts(3), amounts(4));
    }
}
