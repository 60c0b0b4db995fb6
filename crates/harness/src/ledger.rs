//! `pbft ledger verify` and `pbft ledger show`: offline tools on a closed ledger.

use crate::error::{Error, Outcome, Result};
use pbft_crypto::PublicKey;
use pbft_executor::{LedgerReport, LedgerShow};
use std::path::{Path, PathBuf};

/// `pbft ledger`.
#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// The offline ledger tools.
#[derive(clap::Subcommand, Debug)]
pub enum LedgerCommand {
    /// Check the block hash chain and the state digest.
    Verify {
        /// A node data directory (or its ledger/ directory).
        #[arg(long)]
        data: PathBuf,
    },
    /// Show the head, a block, or an account.
    Show {
        /// A node data directory (or its ledger/ directory).
        #[arg(long)]
        data: PathBuf,
        /// A block height.
        #[arg(long)]
        height: Option<u64>,
        /// An account (hex public key).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Runs a `pbft ledger` command.
pub fn run(args: &LedgerArgs) -> Result<Outcome> {
    match &args.command {
        LedgerCommand::Verify { data } => verify(data),
        LedgerCommand::Show {
            data,
            height,
            account,
        } => show(data, *height, account.as_deref()),
    }
}

/// The ledger directory inside a node data directory, or the directory itself; bad
/// input if `data` is not a directory.
pub fn ledger_dir(data: &Path) -> Result<PathBuf> {
    if !data.is_dir() {
        return Err(Error::bad_value(
            format!("--data {}", data.display()),
            "no such directory",
        ));
    }
    let inner = data.join("ledger");
    Ok(if inner.is_dir() {
        inner
    } else {
        data.to_path_buf()
    })
}

fn verify(data: &Path) -> Result<Outcome> {
    let r = pbft_executor::verify_ledger(&ledger_dir(data)?)
        .map_err(|e| Error::Failed(format!("ledger in {} does not verify: {e}", data.display())))?;
    println!("{}", verified(&r));
    Ok(Outcome::Success)
}

/// The line `pbft ledger verify` prints for a ledger that verifies.
pub fn verified(r: &LedgerReport) -> String {
    format!(
        "ledger OK: {} blocks chained, head {} at height {}, state digest {} ({} batches since the checkpoint at {} rechecked), LtHash {} over {} accounts",
        r.blocks_checked,
        r.head.short(),
        r.height,
        r.state_digest.short(),
        r.height - r.lthash_at,
        r.lthash_at,
        r.lthash.short(),
        r.accounts
    )
}

fn show(data: &Path, height: Option<u64>, account: Option<&str>) -> Result<Outcome> {
    let dir = ledger_dir(data)?;
    let account = account
        .map(|a| {
            PublicKey::from_hex(a.trim())
                .map_err(|e| Error::bad_value(format!("--account {a:?}"), e.to_string()))
        })
        .transpose()?;
    let s = pbft_executor::show_ledger(&dir, height, account.as_ref())
        .map_err(|e| Error::Failed(format!("{}: {e}", data.display())))?;
    println!("{}", head_line(&s));
    if let Some(h) = height {
        println!("{}", block_line(&s, h)?);
    }
    if let Some(a) = account {
        println!("{}", account_line(&s, &a)?);
    }
    Ok(Outcome::Success)
}

/// The head line of `pbft ledger show`.
pub fn head_line(s: &LedgerShow) -> String {
    format!(
        "head: height {}, hash {}, state digest {}; stable checkpoint {}",
        s.head.height,
        s.head.hash.to_hex(),
        s.head.state_digest.to_hex(),
        s.stable
    )
}

/// The line of the block at `h`, or the failure of a ledger that does not hold it.
pub fn block_line(s: &LedgerShow, h: u64) -> Result<String> {
    match &s.block {
        Some((b, hash)) => Ok(format!(
            "block {h}: hash {}, prev {}, batch {}, receipts root {}, state digest {}",
            hash.to_hex(),
            b.prev.to_hex(),
            b.batch_digest.to_hex(),
            b.receipts_root.to_hex(),
            b.state_digest.to_hex()
        )),
        None => Err(Error::Failed(format!(
            "no block at height {h} in this ledger (a validator that caught up by state transfer holds the blocks from the installed checkpoint on, not the ones below it)"
        ))),
    }
}

/// The line of account `a`, or the failure of an account that does not exist.
pub fn account_line(s: &LedgerShow, a: &PublicKey) -> Result<String> {
    match s.balance {
        Some(Some(b)) => Ok(format!("account {}: balance {b}", a.to_hex())),
        _ => Err(Error::Failed(format!(
            "account {} does not exist",
            a.to_hex()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::{Digest, Keypair};
    use pbft_executor::{Block, Head};

    fn d(tag: &[u8]) -> Digest {
        Digest::of_parts(&[tag])
    }

    fn shown(block: bool, balance: Option<u64>) -> LedgerShow {
        LedgerShow {
            head: Head {
                height: 9,
                hash: d(b"head"),
                state_digest: d(b"state"),
            },
            stable: 8,
            block: block.then(|| {
                (
                    Block {
                        height: 4,
                        prev: d(b"prev"),
                        batch_digest: d(b"batch"),
                        receipts_root: d(b"receipts"),
                        state_digest: d(b"state 4"),
                    },
                    d(b"hash 4"),
                )
            }),
            balance: Some(balance),
        }
    }

    #[test]
    fn show_prints_the_head_the_block_and_the_account() {
        let s = shown(true, Some(77));
        assert_eq!(
            head_line(&s),
            format!(
                "head: height 9, hash {}, state digest {}; stable checkpoint 8",
                d(b"head").to_hex(),
                d(b"state").to_hex()
            )
        );
        let line = block_line(&s, 4).expect("block");
        assert!(
            line.starts_with(&format!(
                "block 4: hash {}, prev {}",
                d(b"hash 4").to_hex(),
                d(b"prev").to_hex()
            )),
            "{line}"
        );
        let a = Keypair::from_seed(&d(b"account").0).expect("key").public();
        assert_eq!(
            account_line(&s, &a).expect("account"),
            format!("account {}: balance 77", a.to_hex())
        );
    }

    #[test]
    fn a_missing_block_or_account_is_a_failure_not_bad_input() {
        let s = shown(false, None);
        let e = block_line(&s, 4).expect_err("no block");
        assert!(
            !e.is_bad_input() && e.to_string().contains("no block at height 4"),
            "{e}"
        );
        let a = Keypair::from_seed(&d(b"account").0).expect("key").public();
        let e = account_line(&s, &a).expect_err("no account");
        assert!(
            !e.is_bad_input() && e.to_string().contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn the_ledger_directory_is_found_inside_a_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ledger_dir(dir.path()).expect("dir"), dir.path());
        std::fs::create_dir(dir.path().join("ledger")).expect("mkdir");
        assert_eq!(
            ledger_dir(dir.path()).expect("dir"),
            dir.path().join("ledger")
        );
        let e = ledger_dir(&dir.path().join("missing")).expect_err("missing");
        assert!(
            e.is_bad_input() && e.to_string().contains("no such directory"),
            "{e}"
        );
    }

    #[test]
    fn the_verify_line_counts_the_rechecked_batches() {
        let r = LedgerReport {
            height: 20,
            head: d(b"head"),
            state_digest: d(b"state"),
            lthash: d(b"lthash"),
            lthash_at: 16,
            blocks_checked: 20,
            accounts: 4,
        };
        let line = verified(&r);
        assert!(line.starts_with("ledger OK: 20 blocks chained"), "{line}");
        assert!(
            line.contains("(4 batches since the checkpoint at 16 rechecked)"),
            "{line}"
        );
    }
}
