//! The cluster file (`cluster.toml`): who the validators are (id, public key,
//! address), the protocol parameters every validator must share, the client
//! accounts with their genesis balances, and the governance keys whose signatures
//! (k of them) a membership change needs. `pbft keygen` writes it with the key
//! files; validators, clients and tools read it.
//!
//! Errors name the file, the line where there is one, the field and the reason.

use pbft_crypto::{write_key_file, Digest, Hasher, KeyFileError, Keypair, PublicKey};
use pbft_protocol::{Config, Duration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a cluster file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A field has an impossible value.
    #[error("{}: {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `validators[2].key`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file could not be written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// Protocol parameters, shared by every validator of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolParams {
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: the log window (a multiple of K, at least 2K).
    pub log_window: u64,
    /// Most requests per batch.
    pub batch_size: usize,
    /// Most sequence numbers in flight at the primary.
    pub pipeline_depth: u64,
    /// Base view-change timeout, milliseconds.
    pub view_timeout_ms: u64,
    /// Retransmission interval, milliseconds.
    pub retransmit_ms: u64,
    /// Most outstanding requests per client.
    pub client_window: u64,
}

impl Default for ProtocolParams {
    fn default() -> Self {
        ProtocolParams {
            checkpoint_interval: 64,
            log_window: 256,
            batch_size: 256,
            // 1: on a CPU-bound cluster (every validator on one 2-core host) a deeper
            // pipeline only splits the load into more, smaller batches, each costing
            // every validator a round of signed messages. Validators on machines of
            // their own, with network round trips to hide, want 2 or more (decision
            // 0032).
            pipeline_depth: 1,
            view_timeout_ms: 1000,
            retransmit_ms: 200,
            client_window: 64,
        }
    }
}

/// One validator's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    /// Replica id, 0..n in order.
    pub id: u32,
    /// Public key, hex.
    pub key: String,
    /// QUIC address (`host:port`).
    pub addr: String,
}

/// One client account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Name, e.g. `client-3` (usable wherever an account is expected).
    pub name: String,
    /// Public key, hex: the account.
    pub key: String,
    /// Genesis balance.
    pub balance: u64,
}

/// The `[governance]` table as written on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceEntry {
    /// Public keys, hex.
    pub keys: Vec<String>,
    /// How many distinct governance signatures a change needs.
    pub threshold: usize,
}

/// The file as written on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    protocol: ProtocolParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    governance: Option<GovernanceEntry>,
    validators: Vec<ValidatorEntry>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

/// Who may change the cluster's membership: a change needs valid signatures by at
/// least `threshold` distinct keys of `keys` (issue 21).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Governance {
    /// The governance public keys, in file order.
    pub keys: Vec<PublicKey>,
    /// k: the signatures a change needs, 1 to `keys.len()`.
    pub threshold: usize,
}

/// A validator, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Replica id.
    pub id: u32,
    /// Public key.
    pub key: PublicKey,
    /// Address.
    pub addr: SocketAddr,
}

/// A client account, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Name.
    pub name: String,
    /// Public key (the account).
    pub key: PublicKey,
    /// Genesis balance.
    pub balance: u64,
}

/// A checked cluster description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Protocol parameters.
    pub params: ProtocolParams,
    /// Validators by id.
    pub validators: Vec<Validator>,
    /// Client accounts.
    pub clients: Vec<Client>,
    /// The governance keys and threshold; `None` for a file without `[governance]`,
    /// whose membership cannot change.
    pub governance: Option<Governance>,
}

impl Cluster {
    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Cluster::parse(path, &text)
    }

    /// Parses and checks cluster-file text; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Cluster, ClusterError> {
        let shape: FileShape = toml::from_str(text).map_err(|e| ClusterError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().to_string(),
        })?;
        let invalid = |field: String, reason: String| ClusterError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let mut validators = Vec::new();
        let mut addrs = BTreeSet::new();
        for (i, v) in shape.validators.iter().enumerate() {
            if v.id as usize != i {
                return Err(invalid(
                    format!("validators[{i}].id"),
                    format!("is {}, expected {i}: ids are 0..n in order", v.id),
                ));
            }
            let key = PublicKey::from_hex(v.key.trim())
                .map_err(|e| invalid(format!("validators[{i}].key"), e.to_string()))?;
            let addr: SocketAddr = v.addr.parse().map_err(|e| {
                invalid(
                    format!("validators[{i}].addr"),
                    format!("{:?} is not host:port ({e})", v.addr),
                )
            })?;
            if !addrs.insert(addr) {
                return Err(invalid(
                    format!("validators[{i}].addr"),
                    format!("{addr} is used by another validator"),
                ));
            }
            validators.push(Validator {
                id: v.id,
                key,
                addr,
            });
        }
        let mut clients = Vec::new();
        let mut names = BTreeSet::new();
        let mut keys: BTreeSet<PublicKey> = validators.iter().map(|v| v.key).collect();
        if keys.len() != validators.len() {
            return Err(invalid(
                "validators".into(),
                "two validators have the same key".into(),
            ));
        }
        for (j, c) in shape.clients.iter().enumerate() {
            let key = PublicKey::from_hex(c.key.trim())
                .map_err(|e| invalid(format!("clients[{j}].key"), e.to_string()))?;
            check_client_name(&c.name).map_err(|why| invalid(format!("clients[{j}].name"), why))?;
            if !names.insert(c.name.clone()) {
                return Err(invalid(
                    format!("clients[{j}].name"),
                    format!("{:?} is used twice", c.name),
                ));
            }
            if !keys.insert(key) {
                return Err(invalid(
                    format!("clients[{j}].key"),
                    "is already used by a validator or another client".into(),
                ));
            }
            clients.push(Client {
                name: c.name.clone(),
                key,
                balance: c.balance,
            });
        }
        let governance = match &shape.governance {
            None => None,
            Some(g) => {
                let mut gkeys = Vec::new();
                for (m, text) in g.keys.iter().enumerate() {
                    let key = PublicKey::from_hex(text.trim())
                        .map_err(|e| invalid(format!("governance.keys[{m}]"), e.to_string()))?;
                    // a governance key is nobody else's: a validator or a client signing
                    // a change would be one party holding two roles
                    if !keys.insert(key) {
                        return Err(invalid(
                            format!("governance.keys[{m}]"),
                            "is already used by a validator, a client or another governance key"
                                .into(),
                        ));
                    }
                    gkeys.push(key);
                }
                if gkeys.is_empty() {
                    return Err(invalid(
                        "governance.keys".into(),
                        "is empty: list at least one key, or leave out [governance]".into(),
                    ));
                }
                if g.threshold == 0 || g.threshold > gkeys.len() {
                    return Err(invalid(
                        "governance.threshold".into(),
                        format!(
                            "is {}; it must be 1 to the number of governance keys ({})",
                            g.threshold,
                            gkeys.len()
                        ),
                    ));
                }
                Some(Governance {
                    keys: gkeys,
                    threshold: g.threshold,
                })
            }
        };
        let cluster = Cluster {
            path: path.to_path_buf(),
            params: shape.protocol,
            validators,
            clients,
            governance,
        };
        cluster.protocol_config().validate().map_err(|e| match e {
            pbft_protocol::ConfigError::TooFewValidators(n) => invalid(
                "validators".into(),
                format!(
                    "{n} listed; PBFT needs n = 3f+1 >= 4 validators to tolerate f >= 1 traitor"
                ),
            ),
            pbft_protocol::ConfigError::Invalid { field, reason } => {
                invalid(format!("protocol.{}", file_field(field)), reason.into())
            }
            other => invalid("validators".into(), other.to_string()),
        })?;
        Ok(cluster)
    }

    /// The digest of what every validator and client of the cluster must agree on: the
    /// protocol parameters, the validators' ids and keys, the genesis accounts (key
    /// and balance), and the governance keys and threshold if there are any. Validators compare it when they connect, so that a cluster file
    /// that differs shows as an error at once rather than as checkpoints that never
    /// become stable. Addresses and client names are left out: they say where a
    /// validator is reached and what an account is called on this host, and a wrong
    /// address already shows as a failed dial.
    pub fn genesis_digest(&self) -> Digest {
        let mut h = Hasher::new();
        h.update_part(b"pbft genesis v1");
        let p = &self.params;
        for x in [
            p.checkpoint_interval,
            p.log_window,
            p.batch_size as u64,
            p.pipeline_depth,
            p.view_timeout_ms,
            p.retransmit_ms,
            p.client_window,
        ] {
            h.update(&x.to_le_bytes());
        }
        h.update(&(self.validators.len() as u64).to_le_bytes());
        for v in &self.validators {
            h.update(&v.id.to_le_bytes());
            h.update(v.key.as_bytes());
        }
        // the ledger's genesis is a map from key to balance: the file's order is not part
        // of it
        let accounts = self.genesis();
        h.update(&(accounts.len() as u64).to_le_bytes());
        for (key, balance) in &accounts {
            h.update(key.as_bytes());
            h.update(&balance.to_le_bytes());
        }
        // appended only when present, so that a file without it keeps its digest; the
        // keys are a set, as the accounts are
        if let Some(g) = &self.governance {
            h.update_part(b"governance");
            h.update(&(g.threshold as u64).to_le_bytes());
            let keys: BTreeSet<&PublicKey> = g.keys.iter().collect();
            h.update(&(keys.len() as u64).to_le_bytes());
            for k in keys {
                h.update(k.as_bytes());
            }
        }
        h.finalize()
    }

    /// The protocol configuration for replicas of this cluster.
    pub fn protocol_config(&self) -> Config {
        let p = &self.params;
        Config {
            validators: self.validators.iter().map(|v| v.key).collect(),
            checkpoint_interval: p.checkpoint_interval,
            log_window: p.log_window,
            max_batch: p.batch_size,
            pipeline_depth: p.pipeline_depth,
            view_timeout: Duration::from_millis(p.view_timeout_ms),
            retransmit_interval: Duration::from_millis(p.retransmit_ms),
            client_window: p.client_window,
            clients: pbft_protocol::ClientKeys::listed(self.clients.iter().map(|c| c.key)),
        }
    }

    /// n.
    pub fn n(&self) -> usize {
        self.validators.len()
    }

    /// f = (n-1)/3.
    pub fn f(&self) -> usize {
        (self.n().saturating_sub(1)) / 3
    }

    /// Genesis balances of the client accounts.
    pub fn genesis(&self) -> BTreeMap<PublicKey, u64> {
        self.clients.iter().map(|c| (c.key, c.balance)).collect()
    }

    /// The validator holding `key`, if any.
    pub fn validator_with_key(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators.iter().find(|v| v.key == *key)
    }

    /// An account given as hex public key or as a client name from the file.
    pub fn resolve_account(&self, text: &str) -> Option<PublicKey> {
        if let Some(c) = self.clients.iter().find(|c| c.name == text) {
            return Some(c.key);
        }
        PublicKey::from_hex(text.trim()).ok()
    }

    /// The client name of an account, if it has one.
    pub fn client_name(&self, key: &PublicKey) -> Option<&str> {
        self.clients
            .iter()
            .find(|c| c.key == *key)
            .map(|c| c.name.as_str())
    }

    /// The cluster-file text for this cluster.
    pub fn to_toml(&self) -> String {
        let shape = FileShape {
            protocol: self.params.clone(),
            governance: self.governance.as_ref().map(|g| GovernanceEntry {
                keys: g.keys.iter().map(PublicKey::to_hex).collect(),
                threshold: g.threshold,
            }),
            validators: self
                .validators
                .iter()
                .map(|v| ValidatorEntry {
                    id: v.id,
                    key: v.key.to_hex(),
                    addr: v.addr.to_string(),
                })
                .collect(),
            clients: self
                .clients
                .iter()
                .map(|c| ClientEntry {
                    name: c.name.clone(),
                    key: c.key.to_hex(),
                    balance: c.balance,
                })
                .collect(),
        };
        let body = toml::to_string_pretty(&shape).unwrap_or_default();
        format!("# pbft cluster file, written by `pbft keygen`.\n# Every validator and client of the cluster must use the same file.\n\n{body}")
    }
}

/// The cluster-file name of a protocol configuration field.
fn file_field(config_field: &str) -> &str {
    match config_field {
        "max_batch" => "batch_size",
        "view_timeout" => "view_timeout_ms",
        "retransmit_interval" => "retransmit_ms",
        other => other,
    }
}

/// What `pbft keygen` should produce.
#[derive(Clone, Debug)]
pub struct KeygenSpec {
    /// Number of validators (>= 4).
    pub validators: usize,
    /// Number of client accounts.
    pub clients: usize,
    /// Host of every validator address.
    pub host: String,
    /// Port of validator 0; validator i listens on `base_port + i`.
    pub base_port: u16,
    /// Protocol parameters.
    pub params: ProtocolParams,
    /// Genesis balance of every client.
    pub balance: u64,
    /// Number of governance keys (0: no `[governance]`, membership fixed).
    pub governance: usize,
    /// k: the governance signatures a membership change needs.
    pub threshold: usize,
    /// Overwrite existing files.
    pub force: bool,
}

/// What keygen wrote.
#[derive(Clone, Debug)]
pub struct KeygenOutput {
    /// The cluster file.
    pub cluster_file: PathBuf,
    /// The checked cluster.
    pub cluster: Cluster,
    /// Validator key files, by id.
    pub validator_keys: Vec<PathBuf>,
    /// Client key files, in order.
    pub client_keys: Vec<PathBuf>,
    /// Governance key files, in order.
    pub governance_keys: Vec<PathBuf>,
}

/// Validator key file name.
pub fn validator_key_name(id: usize) -> String {
    format!("validator-{id}.key")
}

/// Longest client name the cluster file accepts.
pub const MAX_CLIENT_NAME: usize = 64;

/// Checks a client name: 1 to 64 characters of ASCII letters, digits, `-`, `_` and `.`,
/// starting with a letter, so that it can never be read as an account key (64 hex
/// digits) or shadow one, nor carry spaces or control characters into logs and
/// command lines.
pub fn check_client_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CLIENT_NAME {
        return Err(format!(
            "{name:?} must be 1 to {MAX_CLIENT_NAME} characters long"
        ));
    }
    if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{name:?} reads as an account key"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("{name:?} must start with a letter"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?} holds {c:?}: only ASCII letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    Ok(())
}

/// Client key file name.
pub fn client_key_name(j: usize) -> String {
    format!("client-{j}.key")
}

/// Governance key file name.
pub fn governance_key_name(m: usize) -> String {
    format!("governance-{m}.key")
}

/// Creates `out` (and its parents) if missing. A directory made here is private: a key
/// in a directory others may write to is refused when read (they could replace it).
fn private_dir(out: &Path) -> Result<(), ClusterError> {
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        dir.mode(0o700);
    }
    dir.create(out).map_err(|source| ClusterError::Io {
        path: out.to_path_buf(),
        source,
    })
}

/// The key file of a validator that will join a running cluster.
pub const JOINER_KEY_NAME: &str = "validator.key";

/// Generates one validator key for a validator that will join a running cluster, and
/// writes it (0600) as `out/validator.key`; no cluster file. Refuses to overwrite it
/// unless `force`. Returns the file and the public key, which the membership change
/// that adds the validator names.
pub fn keygen_validator(out: &Path, force: bool) -> Result<(PathBuf, PublicKey), ClusterError> {
    private_dir(out)?;
    let path = out.join(JOINER_KEY_NAME);
    let key = Keypair::generate(&mut rand::rngs::OsRng);
    write_key_file(&path, &key, force)?;
    Ok((path, key.public()))
}

/// Generates fresh keys with the operating system's CSPRNG and writes the cluster
/// file and key files (0600) into `out`. Refuses to overwrite anything unless
/// `spec.force`.
pub fn keygen(out: &Path, spec: &KeygenSpec) -> Result<KeygenOutput, ClusterError> {
    let cluster_file = out.join("cluster.toml");
    let invalid = |field: &str, reason: String| ClusterError::Invalid {
        path: cluster_file.clone(),
        field: field.into(),
        reason,
    };
    if spec.validators < 4 {
        return Err(invalid(
            "--validators",
            format!(
                "{} validators cannot tolerate a traitor: PBFT needs n = 3f+1, so at least 4 for f = 1",
                spec.validators
            ),
        ));
    }
    let last_port = spec.base_port as usize + spec.validators - 1;
    if last_port > u16::MAX as usize {
        return Err(invalid(
            "--base-port",
            format!("ports {}..={last_port} do not fit", spec.base_port),
        ));
    }
    private_dir(out)?;
    let validator_keys: Vec<PathBuf> = (0..spec.validators)
        .map(|i| out.join(validator_key_name(i)))
        .collect();
    let client_keys: Vec<PathBuf> = (0..spec.clients)
        .map(|j| out.join(client_key_name(j)))
        .collect();
    if spec.governance > 0 && (spec.threshold == 0 || spec.threshold > spec.governance) {
        return Err(invalid(
            "--threshold",
            format!(
                "is {}; it must be 1 to the number of governance keys (--governance {})",
                spec.threshold, spec.governance
            ),
        ));
    }
    let governance_keys: Vec<PathBuf> = (0..spec.governance)
        .map(|m| out.join(governance_key_name(m)))
        .collect();
    if !spec.force {
        for p in std::iter::once(&cluster_file)
            .chain(&validator_keys)
            .chain(&client_keys)
            .chain(&governance_keys)
        {
            if p.exists() {
                return Err(invalid(
                    "--out",
                    format!("{} already exists; pass --force to overwrite", p.display()),
                ));
            }
        }
    }
    let mut rng = rand::rngs::OsRng;
    let mut validators = Vec::new();
    for (i, path) in validator_keys.iter().enumerate() {
        let key = Keypair::generate(&mut rng);
        write_key_file(path, &key, spec.force)?;
        let addr_text = format!("{}:{}", spec.host, spec.base_port as usize + i);
        let addr = addr_text
            .parse()
            .map_err(|e| invalid("--host", format!("{addr_text:?} is not an address ({e})")))?;
        validators.push(Validator {
            id: i as u32,
            key: key.public(),
            addr,
        });
    }
    let mut clients = Vec::new();
    for (j, path) in client_keys.iter().enumerate() {
        let key = Keypair::generate(&mut rng);
        write_key_file(path, &key, spec.force)?;
        clients.push(Client {
            name: format!("client-{j}"),
            key: key.public(),
            balance: spec.balance,
        });
    }
    let mut gkeys = Vec::new();
    for path in &governance_keys {
        let key = Keypair::generate(&mut rng);
        write_key_file(path, &key, spec.force)?;
        gkeys.push(key.public());
    }
    let governance = (!gkeys.is_empty()).then_some(Governance {
        keys: gkeys,
        threshold: spec.threshold,
    });
    let cluster = Cluster {
        path: cluster_file.clone(),
        params: spec.params.clone(),
        validators,
        clients,
        governance,
    };
    let text = cluster.to_toml();
    // check what we are about to write, exactly as a reader will see it
    let cluster = Cluster::parse(&cluster_file, &text)?;
    write_atomic(&cluster_file, text.as_bytes())?;
    Ok(KeygenOutput {
        cluster_file,
        cluster,
        validator_keys,
        client_keys,
        governance_keys,
    })
}

/// Writes a file through a temporary file and a rename, so a crash leaves the old
/// file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    use std::io::Write;
    let io = |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster file of `n` validators with the default protocol parameters, changed by
    /// `params`.
    fn file(n: u8, params: impl FnOnce(&mut ProtocolParams)) -> String {
        let mut p = ProtocolParams::default();
        params(&mut p);
        let shape = FileShape {
            protocol: p,
            governance: None,
            validators: (0..n)
                .map(|i| ValidatorEntry {
                    id: u32::from(i),
                    key: Keypair::from_seed(&[i.wrapping_add(1); 32])
                        .expect("key")
                        .public()
                        .to_hex(),
                    addr: format!("127.0.0.1:{}", 7000 + u16::from(i)),
                })
                .collect(),
            clients: Vec::new(),
        };
        toml::to_string(&shape).expect("serialises")
    }

    /// The file of `file(4, ..)` with the clients `(name, key seed, balance)`.
    fn with_clients(clients: &[(&str, u8, u64)]) -> String {
        let mut shape: FileShape = toml::from_str(&file(4, |_| {})).expect("parses");
        shape.clients = clients
            .iter()
            .map(|(name, seed, balance)| ClientEntry {
                name: (*name).to_string(),
                key: client_hex(*seed),
                balance: *balance,
            })
            .collect();
        toml::to_string(&shape).expect("serialises")
    }

    fn client_hex(seed: u8) -> String {
        Keypair::from_seed(&[seed; 32])
            .expect("key")
            .public()
            .to_hex()
    }

    /// A client named by another account's key would shadow it: `pbft client transfer
    /// --to <that key>` would pay the named account instead.
    #[test]
    fn a_client_name_that_reads_as_a_key_or_holds_odd_characters_is_refused() {
        let victim = client_hex(100);
        let text = with_clients(&[("alice", 100, 5), (victim.as_str(), 101, 5)]);
        match Cluster::parse(Path::new("cluster.toml"), &text) {
            Err(ClusterError::Invalid { field, reason, .. }) => {
                assert_eq!(field, "clients[1].name");
                assert!(reason.contains("account key"), "{reason}");
            }
            other => panic!("a name that is a key must be refused, got {other:?}"),
        }
        for bad in [
            "",
            " alice",
            "al ice",
            "alice\n",
            "9lives",
            "a/b",
            &"x".repeat(65),
        ] {
            let text = with_clients(&[(bad, 100, 5)]);
            assert_eq!(refused_field(&text), "clients[0].name", "{bad:?}");
        }
        for good in ["client-0", "Alice_2.b", &"x".repeat(64)] {
            let text = with_clients(&[(good, 100, 5)]);
            Cluster::parse(Path::new("cluster.toml"), &text).expect(good);
        }
    }

    /// The genesis digest changes with every parameter, validator key and account, and
    /// not with addresses, client names or the order of the accounts.
    #[test]
    fn the_genesis_digest_binds_parameters_validators_and_accounts_only() {
        let parse = |t: &str| Cluster::parse(Path::new("cluster.toml"), t).expect("parses");
        let base = parse(&with_clients(&[("a", 100, 5), ("b", 101, 7)])).genesis_digest();
        assert_eq!(
            parse(&with_clients(&[("b2", 101, 7), ("a2", 100, 5)])).genesis_digest(),
            base,
            "names and order are not part of genesis"
        );
        let mut moved: FileShape =
            toml::from_str(&with_clients(&[("a", 100, 5), ("b", 101, 7)])).expect("parses");
        moved.validators[2].addr = "10.0.0.9:9000".into();
        assert_eq!(
            parse(&toml::to_string(&moved).expect("ser")).genesis_digest(),
            base,
            "addresses are not part of genesis"
        );
        let differs = |t: String, what: &str| {
            assert_ne!(parse(&t).genesis_digest(), base, "{what}");
        };
        differs(with_clients(&[("a", 100, 6), ("b", 101, 7)]), "a balance");
        differs(
            with_clients(&[("a", 100, 5), ("b", 102, 7)]),
            "an account key",
        );
        differs(with_clients(&[("a", 100, 5)]), "an account fewer");
        let mut p: FileShape =
            toml::from_str(&with_clients(&[("a", 100, 5), ("b", 101, 7)])).expect("parses");
        p.protocol.view_timeout_ms += 1;
        differs(toml::to_string(&p).expect("ser"), "a parameter");
        let mut v: FileShape =
            toml::from_str(&with_clients(&[("a", 100, 5), ("b", 101, 7)])).expect("parses");
        v.validators[3].key = client_hex(200);
        differs(toml::to_string(&v).expect("ser"), "a validator key");
    }

    fn refused_field(text: &str) -> String {
        match Cluster::parse(Path::new("cluster.toml"), text) {
            Err(ClusterError::Invalid { field, .. }) => field,
            other => panic!("expected a refused field, got {other:?}"),
        }
    }

    /// Every message must fit the frame limit (docs/protocol.md, "Message sizes"): a
    /// cluster file whose view changes, new views or batches could not be sent is
    /// refused, naming the parameter to change.
    #[test]
    fn a_cluster_whose_messages_would_not_fit_a_frame_is_refused() {
        let path = Path::new("cluster.toml");
        Cluster::parse(path, &file(4, |_| {})).expect("the defaults are accepted");
        // 40 validators with L = 256: a new view of 27 view changes of 256 certificates
        assert_eq!(refused_field(&file(40, |_| {})), "protocol.log_window");
        Cluster::parse(
            path,
            &file(40, |p| {
                p.checkpoint_interval = 8;
                p.log_window = 16;
            }),
        )
        .expect("40 validators with L = 16 are accepted");
        // 4096 requests of 4 KiB in one batch: 17 MiB
        assert_eq!(
            refused_field(&file(4, |p| p.batch_size = 4096)),
            "protocol.batch_size"
        );
    }

    /// The file of `file(4, ..)` with `[governance]`: keys from `seeds`, `threshold`.
    fn with_governance(seeds: &[u8], threshold: usize) -> String {
        let mut shape: FileShape = toml::from_str(&file(4, |_| {})).expect("parses");
        shape.governance = Some(GovernanceEntry {
            keys: seeds.iter().map(|s| client_hex(*s)).collect(),
            threshold,
        });
        toml::to_string(&shape).expect("serialises")
    }

    /// `[governance]` parses into keys and a threshold, round-trips through the writer,
    /// and is refused, naming the field, when a key is bad or shared with a validator,
    /// when there are no keys, or when the threshold is not 1 to the number of keys.
    #[test]
    fn governance_keys_and_threshold_are_checked() {
        let parse = |t: &str| Cluster::parse(Path::new("cluster.toml"), t);
        let c = parse(&with_governance(&[200, 201, 202], 2)).expect("parses");
        let g = c.governance.clone().expect("governance");
        assert_eq!((g.keys.len(), g.threshold), (3, 2));
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!(again.governance, c.governance);
        assert_eq!(
            parse(&file(4, |_| {})).expect("parses").governance,
            None,
            "optional"
        );
        assert_eq!(
            refused_field(&with_governance(&[200, 201], 0)),
            "governance.threshold"
        );
        assert_eq!(
            refused_field(&with_governance(&[200, 201], 3)),
            "governance.threshold"
        );
        assert_eq!(refused_field(&with_governance(&[], 1)), "governance.keys");
        // validator 0's key (seed 1) as a governance key
        assert_eq!(
            refused_field(&with_governance(&[200, 1], 1)),
            "governance.keys[1]"
        );
        assert_eq!(
            refused_field(&with_governance(&[200, 200], 1)),
            "governance.keys[1]"
        );
        let bad = with_governance(&[200], 1).replace(&client_hex(200), "zz");
        assert_eq!(refused_field(&bad), "governance.keys[0]");
    }

    /// The genesis digest binds the governance keys (as a set) and the threshold, and a
    /// file without `[governance]` keeps the digest it had before the table existed.
    #[test]
    fn the_genesis_digest_binds_governance() {
        let parse = |t: &str| Cluster::parse(Path::new("cluster.toml"), t).expect("parses");
        let none = parse(&file(4, |_| {})).genesis_digest();
        let g = parse(&with_governance(&[200, 201], 1)).genesis_digest();
        assert_ne!(none, g);
        assert_eq!(
            g,
            parse(&with_governance(&[201, 200], 1)).genesis_digest(),
            "order"
        );
        assert_ne!(g, parse(&with_governance(&[200, 201], 2)).genesis_digest());
        assert_ne!(g, parse(&with_governance(&[200, 202], 1)).genesis_digest());
    }

    /// keygen writes the governance keys and the table, and refuses a threshold above
    /// the number of keys, naming the flag.
    #[test]
    fn keygen_writes_governance_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |governance, threshold| KeygenSpec {
            validators: 4,
            clients: 1,
            host: "127.0.0.1".into(),
            base_port: 7100,
            params: ProtocolParams::default(),
            balance: 1,
            governance,
            threshold,
            force: true,
        };
        let o = keygen(dir.path(), &spec(3, 2)).expect("keygen");
        assert_eq!(o.governance_keys.len(), 3);
        let g = o.cluster.governance.expect("governance");
        assert_eq!(g.threshold, 2);
        for (path, key) in o.governance_keys.iter().zip(&g.keys) {
            let kp = pbft_crypto::read_key_file(path).expect("a governance key file");
            assert_eq!(kp.public(), *key);
        }
        match keygen(dir.path(), &spec(2, 3)) {
            Err(ClusterError::Invalid { field, .. }) => assert_eq!(field, "--threshold"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let none = keygen(dir.path(), &spec(0, 0)).expect("keygen");
        assert_eq!(none.cluster.governance, None);
    }

    /// A joiner's key: one file, mode 0600, readable back, never overwritten without
    /// `force`.
    #[test]
    fn a_joiners_validator_key_is_written_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("joiner");
        let (path, public) = keygen_validator(&out, false).expect("written");
        assert_eq!(path, out.join(JOINER_KEY_NAME));
        assert_eq!(
            pbft_crypto::read_key_file(&path)
                .expect("readable")
                .public(),
            public
        );
        assert!(!out.join("cluster.toml").exists());
        assert!(keygen_validator(&out, false).is_err(), "no overwrite");
        let (_, other) = keygen_validator(&out, true).expect("forced");
        assert_ne!(other, public, "a fresh key");
    }
}
