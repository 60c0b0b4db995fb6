//! What signature operations cost on this machine at the time of a run.
//!
//! The host's speed drifts (the same ed25519 verification has measured 34 µs and
//! 100 µs on this machine on different days), so a throughput figure means little
//! without the costs it was measured against: the bench times them on one thread just
//! before the cluster starts and recomputes the throughput limit from them.

use crate::error::{Error, Result};
use std::time::Instant;

/// What signature operations cost on this machine at the time of a run, measured on
/// one thread just before the cluster starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// One ed25519 signature (120-byte message), µs.
    pub sign_us: f64,
    /// One single verification, µs.
    pub verify_us: f64,
    /// Batch verification, per signature, in batches of 64, µs.
    pub batch_verify_us: f64,
    /// Cores available to the processes.
    pub cores: usize,
}

impl Calibration {
    /// The throughput limit these costs imply: each of `n` validators batch-verifies
    /// every client signature, all of them sharing `cores` cores, and nothing else
    /// costs anything. Requests per second.
    pub fn limit(&self, n: usize) -> f64 {
        self.cores as f64 * 1e6 / (n.max(1) as f64 * self.batch_verify_us.max(1e-3))
    }

    /// One line for the report.
    pub fn describe(&self, n: usize) -> String {
        format!(
            "crypto on this machine now (one thread): sign {:.1} µs, verify {:.1} µs, batch verify {:.1} µs per signature (64 per batch); limit for n = {n} on {} cores: {:.0} req/s",
            self.sign_us,
            self.verify_us,
            self.batch_verify_us,
            self.cores,
            self.limit(n)
        )
    }
}

/// Times signing, single and batch verification (the median of three rounds of 256
/// each), on the calling thread.
pub fn calibrate() -> Result<Calibration> {
    use pbft_crypto::{verify, verify_each, Digest, Domain, Keypair, VerifyItem};
    const N: usize = 256;
    let keys: Vec<Keypair> = (0..64u64)
        .map(|i| Keypair::from_seed(&Digest::of_parts(&[b"bench calibration", &i.to_le_bytes()]).0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Failed(format!("calibration keys: {e}")))?;
    let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let msg = [0x5au8; 120];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut sign, mut single, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let sigs: Vec<_> = (0..N)
            .map(|i| keys[i % keys.len()].sign(Domain::Request, &msg))
            .collect();
        sign.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
        let t = Instant::now();
        for (i, sig) in sigs.iter().enumerate() {
            verify(&publics[i % publics.len()], Domain::Request, &msg, sig).map_err(|e| {
                Error::Failed(format!(
                    "calibration: a fresh signature did not verify: {e}"
                ))
            })?;
        }
        single.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
        let items: Vec<VerifyItem<'_>> = sigs
            .iter()
            .enumerate()
            .map(|(i, sig)| VerifyItem {
                key: &publics[i % publics.len()],
                domain: Domain::Request,
                msg: &msg,
                sig,
            })
            .collect();
        let t = Instant::now();
        for chunk in items.chunks(64) {
            if !verify_each(chunk).iter().all(|ok| *ok) {
                return Err(Error::Failed(
                    "calibration: a fresh batch did not verify".into(),
                ));
            }
        }
        batch.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
    }
    Ok(Calibration {
        sign_us: median(sign),
        verify_us: median(single),
        batch_verify_us: median(batch),
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calibration runs the real operations (a signature that failed to verify
    /// would be an error) and gives positive costs and a finite limit that falls as n
    /// grows. (How fast they are is the bench's business, not a test's.)
    #[test]
    fn calibration_measures_the_signature_operations() {
        let c = calibrate().expect("calibrate");
        assert!(
            c.sign_us > 0.0 && c.verify_us > 0.0 && c.batch_verify_us > 0.0,
            "{c:?}"
        );
        assert!(c.cores >= 1);
        assert!(c.limit(4).is_finite() && c.limit(4) > c.limit(7), "{c:?}");
    }

    #[test]
    fn the_limit_is_cores_over_n_batch_verifications() {
        let c = Calibration {
            sign_us: 15.0,
            verify_us: 35.0,
            batch_verify_us: 16.0,
            cores: 2,
        };
        // 2 cores / (4 x 16 us) = 31,250 req/s
        assert_eq!(c.limit(4), 31_250.0);
        assert!(
            c.describe(4)
                .ends_with("limit for n = 4 on 2 cores: 31250 req/s"),
            "{}",
            c.describe(4)
        );
    }
}
