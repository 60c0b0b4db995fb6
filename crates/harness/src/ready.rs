//! Waiting for validators: until every one answers, and until a set of them agrees on
//! one ledger head. Both poll a [`StatusSource`], which the real client implements and
//! tests can fake.

use crate::error::{Error, Result};
use pbft_client::{Client, ClientError};
use pbft_protocol::NodeStatus;
use std::future::Future;
use std::time::{Duration, Instant};

/// Every validator's status: `None` where it did not answer.
pub type StatusRows = Vec<(u32, Option<NodeStatus>)>;

/// Something that asks every validator for its status.
pub trait StatusSource {
    /// One round of status queries, waiting up to `wait` for the answers.
    fn statuses(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = std::result::Result<StatusRows, ClientError>>;
}

impl StatusSource for Client {
    fn statuses(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = std::result::Result<StatusRows, ClientError>> {
        self.status(wait)
    }
}

/// The validators that answered.
pub fn reachable(rows: &[(u32, Option<NodeStatus>)]) -> Vec<u32> {
    rows.iter()
        .filter(|(_, s)| s.is_some())
        .map(|(id, _)| *id)
        .collect()
}

/// Polls until all `n` validators answer; fails after `within`, naming the ones that
/// did.
pub async fn wait_reachable(
    source: &mut impl StatusSource,
    n: usize,
    within: Duration,
) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        let rows = source.statuses(Duration::from_millis(500)).await?;
        let up = reachable(&rows);
        if up.len() == n {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(Error::NotReachable {
                within,
                reachable: up,
            });
        }
    }
}

/// True when at least one of the validators `include` selects is in `rows`, and each
/// of them answered with the same last executed sequence number and ledger head.
pub fn heads_agree(rows: &[(u32, Option<NodeStatus>)], include: impl Fn(u32) -> bool) -> bool {
    let heads: Vec<_> = rows
        .iter()
        .filter(|(id, _)| include(*id))
        .map(|(_, s)| s.as_ref().map(|s| (s.last_executed, s.head_hash)))
        .collect();
    !heads.is_empty() && heads.iter().all(|h| h.is_some() && *h == heads[0])
}

/// Polls every `every` until the validators `include` selects agree on one head (see
/// [`heads_agree`]) or `within` has passed; returns the last statuses either way.
pub async fn wait_heads_agree(
    source: &mut impl StatusSource,
    include: impl Fn(u32) -> bool,
    within: Duration,
    every: Duration,
) -> Result<StatusRows> {
    let until = Instant::now() + within;
    loop {
        let rows = source.statuses(Duration::from_secs(2)).await?;
        if heads_agree(&rows, &include) || Instant::now() >= until {
            return Ok(rows);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pbft_crypto::Digest;
    use std::collections::VecDeque;

    /// A validator's status at `executed`, with a head derived from it.
    pub(crate) fn status(id: u32, executed: u64) -> NodeStatus {
        NodeStatus {
            replica: id,
            view: 0,
            changing_view: false,
            last_executed: executed,
            stable_checkpoint: 0,
            head_hash: Digest::of_parts(&[&executed.to_le_bytes()]),
            halted: None,
            evidence_against: Vec::new(),
        }
    }

    /// Answers from a script, one round per call; the last round repeats.
    pub(crate) struct Fake {
        pub rounds: VecDeque<StatusRows>,
        pub calls: usize,
    }

    impl Fake {
        pub(crate) fn new(rounds: Vec<StatusRows>) -> Fake {
            Fake {
                rounds: rounds.into(),
                calls: 0,
            }
        }
    }

    impl StatusSource for Fake {
        async fn statuses(
            &mut self,
            _wait: Duration,
        ) -> std::result::Result<StatusRows, ClientError> {
            self.calls += 1;
            match self.rounds.len() {
                0 => Err(ClientError::Closed),
                1 => Ok(self.rounds[0].clone()),
                _ => Ok(self.rounds.pop_front().unwrap_or_default()),
            }
        }
    }

    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn up(ids: &[u32], n: u32) -> StatusRows {
        (0..n)
            .map(|i| (i, ids.contains(&i).then(|| status(i, 5))))
            .collect()
    }

    #[test]
    fn waits_until_every_validator_answers() {
        let mut fake = Fake::new(vec![up(&[0], 4), up(&[0, 1, 3], 4), up(&[0, 1, 2, 3], 4)]);
        block_on(wait_reachable(&mut fake, 4, Duration::from_secs(3600))).expect("all up");
        assert_eq!(fake.calls, 3);
    }

    #[test]
    fn gives_up_naming_the_reachable_ones() {
        let mut fake = Fake::new(vec![up(&[1, 3], 4)]);
        let e = block_on(wait_reachable(&mut fake, 4, Duration::ZERO)).expect_err("not all");
        match e {
            Error::NotReachable { reachable, .. } => assert_eq!(reachable, [1, 3]),
            other => panic!("{other}"),
        }
        assert_eq!(fake.calls, 1);
    }

    #[test]
    fn a_client_failure_is_passed_on() {
        let mut fake = Fake::new(vec![]);
        let e = block_on(wait_reachable(&mut fake, 4, Duration::from_secs(1))).expect_err("x");
        assert!(matches!(e, Error::Client(ClientError::Closed)), "{e}");
    }

    #[test]
    fn heads_agree_among_the_selected_only() {
        let rows: StatusRows = vec![
            (0, Some(status(0, 9))),
            (1, Some(status(1, 7))),
            (2, Some(status(2, 7))),
            (3, None),
        ];
        assert!(heads_agree(&rows, |id| id == 1 || id == 2));
        assert!(!heads_agree(&rows, |id| id != 3), "0 is ahead of 1 and 2");
        assert!(!heads_agree(&rows, |id| id >= 1), "3 did not answer");
        assert!(!heads_agree(&rows, |_| false), "nobody to agree");
    }

    #[test]
    fn waiting_for_agreement_returns_the_agreeing_round() {
        let behind: StatusRows = vec![(0, Some(status(0, 3))), (1, Some(status(1, 2)))];
        let level: StatusRows = vec![(0, Some(status(0, 3))), (1, Some(status(1, 3)))];
        let mut fake = Fake::new(vec![behind.clone(), level.clone()]);
        let rows = block_on(wait_heads_agree(
            &mut fake,
            |_| true,
            Duration::from_secs(3600),
            Duration::ZERO,
        ))
        .expect("rows");
        assert_eq!(rows, level);
        // out of time: the last round is returned as it is
        let mut fake = Fake::new(vec![behind.clone()]);
        let rows = block_on(wait_heads_agree(
            &mut fake,
            |_| true,
            Duration::ZERO,
            Duration::ZERO,
        ))
        .expect("rows");
        assert_eq!(rows, behind);
    }
}
