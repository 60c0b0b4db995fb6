//! Pre-signed workloads: the client keys next to a cluster file, and transfers signed
//! before a run starts, so that signing is not charged to the cluster.

use crate::error::{Error, Result};
use pbft_client::{Client, Signer};
use pbft_cluster::Cluster;
use pbft_crypto::{read_key_file, Keypair, PublicKey};
use pbft_executor::Operation;
use pbft_protocol::SignedRequest;
use std::path::Path;

/// The keys a load generator binds its connections to: all of `keys`, or the first
/// [`pbft_transport::MAX_BINDS`] (the others' replies come as anonymous copies).
pub fn bindable(keys: &[Keypair]) -> Vec<Keypair> {
    keys.iter()
        .take(pbft_transport::MAX_BINDS)
        .cloned()
        .collect()
}

/// The first `count` client keys next to the cluster file (`client-<j>.key`).
pub fn client_keys(cluster: &Cluster, count: usize) -> Result<Vec<Keypair>> {
    let dir = cluster.path.parent().unwrap_or(Path::new("."));
    if count == 0 {
        return Err(Error::bad_value("--clients", "must be at least 1"));
    }
    (0..count)
        .map(|j| {
            let p = dir.join(pbft_cluster::client_key_name(j));
            read_key_file(&p).map_err(|e| {
                Error::bad_value(
                    format!("--clients {count}"),
                    format!("client {j}: the load generator signs with the key files next to the cluster file: {e}"),
                )
            })
        })
        .collect()
}

/// One signer per key, each continuing from its account's next request id; fails if a
/// key has no account in the cluster.
pub async fn signers(client: &mut Client, keys: &[Keypair]) -> Result<Vec<Signer>> {
    let mut signers = Vec::new();
    for k in keys {
        let info = client.account(k.public()).await?;
        if info.balance.is_none() {
            return Err(Error::Failed(format!(
                "client {} has no account in the cluster's genesis",
                k.public().short()
            )));
        }
        signers.push(Signer::new(k.clone(), info.next_request_id));
    }
    Ok(signers)
}

/// `requests` transfers of 1 unit, round robin: request `i` is signed by signer
/// `i mod k` and pays signer `i + 1 mod k`, so balances end where they started when
/// `requests` is a multiple of `k`.
pub fn round_robin(signers: &mut [Signer], requests: usize) -> Vec<SignedRequest> {
    let publics: Vec<PublicKey> = signers.iter().map(|s| s.public()).collect();
    let k = signers.len();
    if k == 0 {
        return Vec::new();
    }
    (0..requests)
        .map(|i| {
            let to = publics[(i + 1) % k];
            signers[i % k].sign(Operation::transfer(to, 1).encode())
        })
        .collect()
}

/// Pre-signs `requests` round-robin transfers (see [`round_robin`]) between the
/// accounts of `keys`.
pub async fn presign(
    client: &mut Client,
    keys: &[Keypair],
    requests: usize,
) -> Result<Vec<SignedRequest>> {
    let mut signers = signers(client, keys).await?;
    Ok(round_robin(&mut signers, requests))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pbft_crypto::Digest;
    use pbft_protocol::Signable;

    /// Whether `key` signed `r`.
    pub(crate) fn signed_by(r: &SignedRequest, key: &PublicKey) -> bool {
        pbft_crypto::verify(
            key,
            pbft_crypto::Domain::Request,
            &r.body.signing_bytes(),
            &r.sig,
        )
        .is_ok()
    }

    fn key(i: u64) -> Keypair {
        Keypair::from_seed(&Digest::of_parts(&[b"workload test", &i.to_le_bytes()]).0).expect("key")
    }

    #[test]
    fn round_robin_pays_the_next_client_with_consecutive_ids() {
        let keys: Vec<Keypair> = (0..3).map(key).collect();
        let mut signers: Vec<Signer> = keys.iter().map(|k| Signer::new(k.clone(), 5)).collect();
        let reqs = round_robin(&mut signers, 7);
        assert_eq!(reqs.len(), 7);
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(r.body.client, keys[i % 3].public(), "request {i}");
            assert_eq!(r.body.request_id, 5 + (i / 3) as u64, "request {i}");
            let op: Operation = postcard::from_bytes(&r.body.op).expect("operation");
            assert_eq!(op, Operation::transfer(keys[(i + 1) % 3].public(), 1));
            assert!(signed_by(r, &keys[i % 3].public()), "request {i}");
        }
        assert!(round_robin(&mut [], 3).is_empty());
    }

    #[test]
    fn client_keys_are_read_next_to_the_cluster_file() {
        let keys = crate::supervise::keys_dir().expect("keys");
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = crate::supervise::private_copy(&keys, dir.path()).expect("copy");
        let two = client_keys(&cluster, 2).expect("two client keys");
        assert_eq!(two[1].public(), cluster.clients[1].key);
        let e = client_keys(&cluster, 0).expect_err("none");
        assert!(
            e.is_bad_input() && e.to_string().contains("--clients"),
            "{e}"
        );
        let e = client_keys(&cluster, cluster.clients.len() + 1).expect_err("too many");
        assert!(e.is_bad_input(), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("client {}", cluster.clients.len())),
            "{e}"
        );
    }
}
