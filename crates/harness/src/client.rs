//! `pbft client`: transfer, balance and the load generator ([`crate::load`]) against a
//! running cluster.

use crate::error::{Error, Outcome, Result};
use crate::load::LoadArgs;
use pbft_client::{Client, NextIdError, NextIdFile, Signer};
use pbft_cluster::Cluster;
use pbft_crypto::{read_key_file, Keypair, PublicKey};
use pbft_executor::{Operation, Receipt};
use std::path::{Path, PathBuf};

/// `pbft client`: the cluster, the client's key, and what to do.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The cluster file.
    #[arg(long)]
    pub cluster: PathBuf,
    /// The client's key file.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// The client's commands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Transfer from the --key account; prints the result once f+1 validators agree.
    Transfer(TransferArgs),
    /// The balance of ACCOUNT (or of the --key account).
    Balance(BalanceArgs),
    /// Generate load with the client keys next to the cluster file.
    Load(LoadArgs),
}

/// `pbft client transfer`.
#[derive(clap::Args, Debug)]
pub struct TransferArgs {
    /// Receiving account: hex public key or a client name from the cluster file.
    #[arg(long)]
    pub to: String,
    /// Amount.
    #[arg(long)]
    pub amount: u64,
}

/// `pbft client balance`.
#[derive(clap::Args, Debug)]
pub struct BalanceArgs {
    /// Hex public key or client name.
    pub account: Option<String>,
}

/// Runs a `pbft client` command.
pub fn run(args: &ClientArgs) -> Result<Outcome> {
    let cluster = Cluster::load(&args.cluster)?;
    match &args.command {
        ClientCommand::Transfer(t) => {
            let key = args
                .key
                .as_ref()
                .ok_or_else(|| Error::bad_value("transfer", "needs --key FILE"))?;
            transfer(&cluster, key, &read_key_file(key)?, t)
        }
        ClientCommand::Balance(b) => {
            // with a key, the connections are bound to its account: its reads get a
            // slot when strangers hold every anonymous one
            let key = args.key.as_ref().map(|k| read_key_file(k)).transpose()?;
            let account = match (&b.account, &key) {
                (Some(a), _) => resolve(&cluster, &format!("{a:?}"), a)?,
                (None, Some(k)) => k.public(),
                (None, None) => {
                    return Err(Error::bad_value("balance", "give an ACCOUNT or --key"))
                }
            };
            balance(&cluster, account, key)
        }
        ClientCommand::Load(l) => crate::load::run(&cluster, l),
    }
}

/// The account `text` names (a hex public key or a client name); `flag` names the
/// argument in the error.
fn resolve(cluster: &Cluster, flag: &str, text: &str) -> Result<PublicKey> {
    cluster.resolve_account(text).ok_or_else(|| {
        Error::bad_value(
            flag,
            format!(
                "not a public key (64 hex digits) nor a client name in {}",
                cluster.path.display()
            ),
        )
    })
}

/// Describes a receipt for people: whether it applied, and how it came out.
pub fn describe(result: &[u8]) -> (bool, String) {
    match Receipt::decode(result) {
        Some(Receipt::Applied { balance }) => (true, format!("applied; new balance {balance}")),
        Some(Receipt::Failed { reason }) => (false, format!("rejected: {reason} ({reason:?})")),
        None => (false, "undecodable receipt".into()),
    }
}

/// The request id a transfer signed with the key of `key_file` uses, given the next id
/// f+1 validators report for its account: the next one the id file beside the key
/// records, moved on to the account's if that is further (the key signed elsewhere),
/// never back (the account answer may come from validators that lag; decision 0062).
/// The id file records the id after it before the request is signed.
fn request_id_for(key_file: &Path, from_account: u64) -> Result<u64> {
    NextIdFile::beside(key_file)
        .reserve(from_account)
        .map_err(|e| match e {
            NextIdError::Corrupt { .. } => Error::bad_value("--key", e.to_string()),
            e => Error::Failed(format!("the next request id: {e}")),
        })
}

fn transfer(
    cluster: &Cluster,
    key_file: &Path,
    keypair: &Keypair,
    args: &TransferArgs,
) -> Result<Outcome> {
    let to = resolve(cluster, &format!("--to {:?}", args.to), &args.to)?;
    if args.amount == 0 {
        return Err(Error::bad_value("--amount", "must be at least 1"));
    }
    let accepted = crate::runtime()?.block_on(async {
        let mut client = Client::connect_bound(cluster, vec![keypair.clone()]).await?;
        let info = client.account(keypair.public()).await?;
        let id = request_id_for(key_file, info.next_request_id)?;
        let mut signer = Signer::new(keypair.clone(), id);
        let req = signer.sign(Operation::transfer(to, args.amount).encode());
        let accepted = client.submit(vec![req], 1, |_| {}).await;
        client.close().await;
        Ok::<_, Error>(accepted?)
    })?;
    let a = accepted
        .into_iter()
        .next()
        .ok_or_else(|| Error::Failed("no result".into()))?;
    let (ok, text) = describe(&a.result);
    println!(
        "transfer of {} to {} (request {}, sequence {}): {text}",
        args.amount,
        cluster
            .client_name(&to)
            .map(str::to_string)
            .unwrap_or_else(|| to.short()),
        a.request_id,
        a.seq
    );
    Ok(Outcome::from_success(ok))
}

fn balance(cluster: &Cluster, account: PublicKey, key: Option<Keypair>) -> Result<Outcome> {
    let info = crate::runtime()?.block_on(async {
        let mut client = Client::connect_bound(cluster, key.into_iter().collect()).await?;
        let info = client.account(account).await;
        client.close().await;
        Ok::<_, Error>(info?)
    })?;
    match info.balance {
        Some(b) => {
            println!("{b}");
            Ok(Outcome::Success)
        }
        None => Err(Error::Failed(format!(
            "account {} does not exist",
            account.to_hex()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_executor::FailReason;

    #[test]
    fn receipts_are_described_for_people() {
        let applied = Receipt::Applied { balance: 42 }.encode();
        assert_eq!(describe(&applied), (true, "applied; new balance 42".into()));
        let failed = Receipt::Failed {
            reason: FailReason::InsufficientFunds,
        }
        .encode();
        assert_eq!(
            describe(&failed),
            (
                false,
                "rejected: insufficient funds (InsufficientFunds)".into()
            )
        );
        let reused = Receipt::Failed {
            reason: FailReason::ReusedId,
        }
        .encode();
        assert_eq!(
            describe(&reused),
            (
                false,
                "rejected: request id reused with a different operation (ReusedId)".into()
            )
        );
        assert_eq!(describe(&[0xff; 3]), (false, "undecodable receipt".into()));
    }

    /// Validators that lag agree on an old next id for the account: a transfer must
    /// still never sign a new operation under an id it signed before.
    #[test]
    fn a_transfer_never_reuses_a_request_id_it_signed_before() {
        let dir = std::env::temp_dir().join(format!("pbft-transfer-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let key = dir.join("client-0.key");
        let first = request_id_for(&key, 1).expect("an id");
        assert_eq!(first, 1);
        // the account still reads 1 (its request has not executed everywhere yet)
        let second = request_id_for(&key, 1).expect("an id");
        assert!(second > first, "request id {second} signed twice");
        // an account answer further on moves the ids on, an older one never back
        assert_eq!(request_id_for(&key, 10).expect("an id"), 10);
        assert_eq!(request_id_for(&key, 4).expect("an id"), 11);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unknown_account_is_bad_input_naming_the_flag_and_the_file() {
        let keys = crate::supervise::keys_dir().expect("keys");
        let cluster = Cluster::load(&keys.join("cluster.toml")).expect("cluster");
        let e = resolve(&cluster, "--to \"nobody\"", "nobody").expect_err("unknown");
        assert!(e.is_bad_input());
        let text = e.to_string();
        assert!(
            text.starts_with("--to \"nobody\": not a public key") && text.contains("cluster.toml"),
            "{text}"
        );
        assert_eq!(
            resolve(&cluster, "x", "client-1").expect("a client name"),
            cluster.clients[1].key
        );
    }
}
