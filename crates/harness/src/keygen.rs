//! `pbft keygen`: a cluster file and key files (mode 0600) for a new cluster.

use crate::error::{Outcome, Result};
use pbft_cluster::{keygen, keygen_validator, KeygenOutput, KeygenSpec, ProtocolParams};
use std::path::PathBuf;

/// `pbft keygen`.
#[derive(clap::Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Number of validators, n = 3f+1 >= 4.
    #[arg(long, required_unless_present = "validator_only")]
    pub validators: Option<usize>,
    /// Write only one validator key (`validator.key`) for a validator that will join a
    /// running cluster, and print its public key: no cluster file, no other keys.
    #[arg(long, conflicts_with_all = ["validators", "clients", "governance", "threshold"])]
    pub validator_only: bool,
    /// Number of client accounts.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Output directory.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Host of every validator address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of validator 0 (validator i uses base-port + i).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// A checkpoint every K sequence numbers.
    #[arg(long, default_value_t = 64)]
    pub checkpoint_interval: u64,
    /// Most requests per batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Genesis balance of every client account.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub balance: u64,
    /// Number of governance keys, whose signatures change the membership (0: none,
    /// the membership can never change).
    #[arg(long, default_value_t = 1)]
    pub governance: usize,
    /// How many distinct governance signatures a membership change needs (k).
    #[arg(long, default_value_t = 1)]
    pub threshold: usize,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

impl KeygenArgs {
    /// What the cluster crate's keygen is asked for: the log window is four checkpoint
    /// intervals, the other protocol parameters are the defaults.
    pub fn spec(&self) -> KeygenSpec {
        KeygenSpec {
            validators: self.validators.unwrap_or(0),
            clients: self.clients,
            host: self.host.clone(),
            base_port: self.base_port,
            params: ProtocolParams {
                checkpoint_interval: self.checkpoint_interval,
                log_window: self.checkpoint_interval * 4,
                batch_size: self.batch_size,
                ..ProtocolParams::default()
            },
            balance: self.balance,
            governance: self.governance,
            threshold: self.threshold,
            force: self.force,
        }
    }
}

/// Writes the files and lists them.
pub fn run(args: &KeygenArgs) -> Result<Outcome> {
    if args.validator_only {
        let (path, public) = keygen_validator(&args.out, args.force)?;
        println!("wrote {} (mode 0600)", path.display());
        println!("public key {}", public.to_hex());
        return Ok(Outcome::Success);
    }
    let o = keygen(&args.out, &args.spec())?;
    print!("{}", written(&o));
    Ok(Outcome::Success)
}

/// The lines that list what keygen wrote.
pub fn written(o: &KeygenOutput) -> String {
    let governance = match &o.cluster.governance {
        Some(g) => format!(
            ", {} of {} governance signatures per membership change",
            g.threshold,
            g.keys.len()
        ),
        None => ", no governance keys: membership fixed".to_string(),
    };
    let mut s = format!(
        "wrote {} ({} validators, f = {}, {} clients{governance})\n",
        o.cluster_file.display(),
        o.cluster.n(),
        o.cluster.f(),
        o.cluster.clients.len()
    );
    for p in o
        .validator_keys
        .iter()
        .chain(&o.client_keys)
        .chain(&o.governance_keys)
    {
        s.push_str(&format!("wrote {} (mode 0600)\n", p.display()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(out: PathBuf, validators: usize) -> KeygenArgs {
        KeygenArgs {
            validators: Some(validators),
            validator_only: false,
            clients: 2,
            out,
            host: "127.0.0.1".into(),
            base_port: 7100,
            checkpoint_interval: 8,
            batch_size: 32,
            balance: 5,
            governance: 1,
            threshold: 1,
            force: false,
        }
    }

    #[test]
    fn writes_a_cluster_and_lists_every_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = args(dir.path().to_path_buf(), 4);
        assert_eq!(a.spec().params.log_window, 32);
        let o = keygen(&a.out, &a.spec()).expect("keygen");
        let text = written(&o);
        assert!(text.starts_with(&format!(
            "wrote {} (4 validators, f = 1, 2 clients, 1 of 1 governance signatures per membership change)\n",
            dir.path().join("cluster.toml").display()
        )));
        assert_eq!(text.matches("(mode 0600)").count(), 7, "{text}");
        assert!(text.contains("governance-0.key"), "{text}");
        // the same directory again, without --force: the caller's mistake
        let e = run(&a).expect_err("exists");
        assert!(
            e.is_bad_input() && e.to_string().contains("already exists"),
            "{e}"
        );
    }

    #[test]
    fn fewer_than_four_validators_is_bad_input_explaining_3f_plus_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = run(&args(dir.path().join("x"), 3)).expect_err("n = 3");
        assert!(e.is_bad_input() && e.to_string().contains("3f+1"), "{e}");
    }
}
