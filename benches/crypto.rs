//! Criterion benchmarks of the signature primitives (`cargo bench --bench crypto`):
//!
//! - `sign`, `verify`: one ed25519 signature over a transfer-sized message;
//! - `verify_batch/<n>`: n signatures by n different clients checked as one batch,
//!   for n = 16, 64 and 256 (throughput in signatures), the way the verification
//!   workers check client requests;
//! - `verify_each/<n>`: the same batch with one bad signature, which the workers must
//!   find (batch, then bisection);
//! - `digest/<bytes>`: SHA-256 of a message;
//! - `public_key_from_bytes`: validating a known public key, as decoding does for
//!   every key a message carries.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pbft_crypto::{verify, verify_batch, verify_each, Digest, Domain, Keypair, VerifyItem};

/// A transfer request is about this long once encoded.
const MSG_BYTES: usize = 120;

fn keypairs(n: usize) -> Vec<Keypair> {
    (0..n)
        .filter_map(|i| Keypair::from_seed(&Digest::of(&(i as u64).to_le_bytes()).0).ok())
        .collect()
}

fn bench_single(c: &mut Criterion) {
    let keys = keypairs(1);
    let Some(k) = keys.first() else { return };
    let msg = vec![7u8; MSG_BYTES];
    let sig = k.sign(Domain::Request, &msg);
    let public = k.public();
    c.bench_function("sign", |b| {
        b.iter(|| k.sign(Domain::Request, black_box(&msg)))
    });
    c.bench_function("verify", |b| {
        b.iter(|| verify(&public, Domain::Request, black_box(&msg), &sig))
    });
    // what decoding a message costs per public key it carries (the same key again and
    // again, as with the accounts of a cluster)
    let bytes = public.to_bytes();
    c.bench_function("public_key_from_bytes", |b| {
        b.iter(|| pbft_crypto::PublicKey::from_bytes(black_box(&bytes)))
    });
}

fn bench_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_batch");
    let keys = keypairs(256);
    let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let msgs: Vec<Vec<u8>> = (0..keys.len())
        .map(|i| {
            let mut m = vec![0u8; MSG_BYTES];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| k.sign(Domain::Request, m))
        .collect();
    let items = |n: usize| -> Vec<VerifyItem<'_>> {
        (0..n)
            .map(|i| VerifyItem {
                key: &publics[i],
                domain: Domain::Request,
                msg: &msgs[i],
                sig: &sigs[i],
            })
            .collect()
    };
    for n in [16usize, 64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        let batch = items(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| verify_batch(black_box(&batch)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("verify_each");
    // one signature made over another message: the batch fails and is bisected
    let bad = keys[0].sign(Domain::Request, b"something else");
    for n in [16usize, 64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        let mut batch = items(n);
        batch[n / 2].sig = &bad;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| verify_each(black_box(&batch)))
        });
    }
    group.finish();
}

fn bench_digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    for bytes in [64usize, 1024, 64 * 1024] {
        group.throughput(Throughput::Bytes(bytes as u64));
        let data = vec![3u8; bytes];
        group.bench_with_input(BenchmarkId::from_parameter(bytes), &bytes, |b, _| {
            b.iter(|| Digest::of(black_box(&data)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_single, bench_batches, bench_digest);
criterion_main!(benches);
