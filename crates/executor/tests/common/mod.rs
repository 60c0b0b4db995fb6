//! Shared helpers of the executor's integration tests: deterministic keys, genesis and
//! random workloads (seeded ChaCha8, so every run sees the same batches).

#![allow(dead_code)]

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::types::EXEC_WINDOW;
use pbft_executor::{Block, ExecRequest, Executor, Operation, StoredReceipt, Transfer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// A deterministic public key.
pub fn key(i: u8) -> PublicKey {
    let mut seed = [i; 32];
    seed[0] = 0x5a;
    match Keypair::from_seed(&seed) {
        Ok(kp) => kp.public(),
        Err(e) => panic!("test key {i}: {e}"),
    }
}

/// Accounts of a test ledger: `clients` have genesis balances (client 0 is a "whale"
/// close to `u64::MAX`, so transfers to it overflow), `strangers` have no account.
#[derive(Clone, Debug)]
pub struct People {
    pub clients: Vec<PublicKey>,
    pub strangers: Vec<PublicKey>,
    pub genesis: BTreeMap<PublicKey, u64>,
}

/// A deterministic public key from a wider range than [`key`]'s (and none of its keys).
pub fn key_wide(i: u16) -> PublicKey {
    let mut seed = [0xa5; 32];
    seed[1..3].copy_from_slice(&i.to_le_bytes());
    match Keypair::from_seed(&seed) {
        Ok(kp) => kp.public(),
        Err(e) => panic!("test key {i}: {e}"),
    }
}

impl People {
    pub fn new(n_clients: u8, n_strangers: u8, seed: u64) -> People {
        let clients: Vec<PublicKey> = (0..n_clients).map(key).collect();
        let strangers: Vec<PublicKey> = (0..n_strangers).map(|i| key(200 + i)).collect();
        People::from_keys(clients, strangers, seed)
    }

    /// More people than [`People::new`] can make.
    pub fn many(n_clients: u16, n_strangers: u16, seed: u64) -> People {
        let clients: Vec<PublicKey> = (0..n_clients).map(key_wide).collect();
        let strangers: Vec<PublicKey> = (0..n_strangers).map(|i| key_wide(n_clients + i)).collect();
        People::from_keys(clients, strangers, seed)
    }

    fn from_keys(clients: Vec<PublicKey>, strangers: Vec<PublicKey>, seed: u64) -> People {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut genesis = BTreeMap::new();
        for (i, c) in clients.iter().enumerate() {
            let b = if i == 0 {
                u64::MAX - 100
            } else {
                rng.gen_range(0..1000)
            };
            genesis.insert(*c, b);
        }
        People {
            clients,
            strangers,
            genesis,
        }
    }

    /// Everyone, account or not.
    pub fn everyone(&self) -> impl Iterator<Item = &PublicKey> {
        self.clients.iter().chain(&self.strangers)
    }
}

/// Verifies a RocksDB ledger with no executor open on it (a read-only open beside a
/// writer can race with the writer's compactions: a table file it listed is gone when it
/// opens it), then opens the ledger again.
pub fn verify_closed(
    e: pbft_executor::RocksExecutor,
) -> (pbft_executor::LedgerReport, pbft_executor::RocksExecutor) {
    let dir = e.dir().to_path_buf();
    drop(e);
    let report = pbft_executor::verify_ledger(&dir).expect("verify");
    let e = pbft_executor::RocksExecutor::open(
        &dir,
        &BTreeMap::new(),
        pbft_executor::RocksOptions::default(),
    )
    .expect("reopen");
    (report, e)
}

/// One request, owned.
#[derive(Clone, Debug)]
pub struct Req {
    pub client: PublicKey,
    pub rid: u64,
    pub op: Vec<u8>,
}

/// One batch, owned.
#[derive(Clone, Debug)]
pub struct Batch {
    pub digest: Digest,
    pub reqs: Vec<Req>,
}

impl Batch {
    /// The borrowed form the executor takes.
    pub fn requests(&self) -> Vec<ExecRequest<'_>> {
        self.reqs
            .iter()
            .map(|r| ExecRequest {
                client: &r.client,
                request_id: r.rid,
                op: &r.op,
                digest: Digest::of(&r.op),
            })
            .collect()
    }
}

/// A random workload: transfers (overdrafts, zero amounts, unknown accounts, overflow,
/// self-transfers, several per request), malformed operations, duplicates, ids out of the
/// window, id 0, and null batches.
pub struct Workload {
    rng: ChaCha8Rng,
    people: People,
    next_rid: BTreeMap<PublicKey, u64>,
    /// Every (client, request id) handed out.
    pub issued: Vec<(PublicKey, u64)>,
}

impl Workload {
    pub fn new(people: &People, seed: u64) -> Workload {
        Workload {
            rng: ChaCha8Rng::seed_from_u64(seed),
            people: people.clone(),
            next_rid: BTreeMap::new(),
            issued: Vec::new(),
        }
    }

    fn someone(&mut self) -> PublicKey {
        let r = self.rng.gen_range(0..100);
        if r < 6 && !self.people.strangers.is_empty() {
            let i = self.rng.gen_range(0..self.people.strangers.len());
            self.people.strangers[i]
        } else {
            let i = self.rng.gen_range(0..self.people.clients.len());
            self.people.clients[i]
        }
    }

    fn op(&mut self, sender: PublicKey) -> Vec<u8> {
        let r = self.rng.gen_range(0..100);
        if r < 5 {
            let len = self.rng.gen_range(0..40);
            return (0..len).map(|_| self.rng.gen()).collect();
        }
        let n = if r < 9 {
            0
        } else if r < 12 {
            17
        } else if r < 40 {
            self.rng.gen_range(2..5)
        } else {
            1
        };
        let zero = self.rng.gen_range(0..100) < 5;
        let mut transfers = Vec::new();
        for j in 0..n {
            let t = self.rng.gen_range(0..100);
            let to = if t < 5 {
                self.people.clients[0]
            } else if t < 10 {
                sender
            } else {
                self.someone()
            };
            let amount = if zero && j == 0 {
                0
            } else if self.rng.gen_range(0..100) < 70 {
                self.rng.gen_range(1..60)
            } else {
                self.rng.gen_range(1..2000)
            };
            transfers.push(Transfer { to, amount });
        }
        Operation { transfers }.encode()
    }

    fn rid(&mut self, client: PublicKey) -> u64 {
        let next = *self.next_rid.get(&client).unwrap_or(&1);
        let earlier: Vec<u64> = self
            .issued
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, r)| *r)
            .collect();
        let r = self.rng.gen_range(0..100);
        let rid = if r < 10 && !earlier.is_empty() {
            earlier[self.rng.gen_range(0..earlier.len())]
        } else if r < 13 {
            0
        } else if r < 17 {
            next + EXEC_WINDOW + self.rng.gen_range(0..100)
        } else if r < 27 {
            let skip = next + self.rng.gen_range(1..5);
            self.next_rid.insert(client, skip + 1);
            skip
        } else {
            self.next_rid.insert(client, next + 1);
            next
        };
        self.issued.push((client, rid));
        rid
    }

    /// The next batch (about 10% are null batches).
    pub fn batch(&mut self) -> Batch {
        let mut d = [0u8; 32];
        self.rng.fill(&mut d);
        let n = if self.rng.gen_range(0..100) < 10 {
            0
        } else {
            self.rng.gen_range(1..10)
        };
        self.batch_with(d, n)
    }

    /// The next batch, of `n` requests.
    pub fn batch_of(&mut self, n: usize) -> Batch {
        let mut d = [0u8; 32];
        self.rng.fill(&mut d);
        self.batch_with(d, n)
    }

    fn batch_with(&mut self, d: [u8; 32], n: usize) -> Batch {
        let mut reqs = Vec::with_capacity(n);
        for _ in 0..n {
            let client = self.someone();
            let rid = self.rid(client);
            let op = self.op(client);
            reqs.push(Req { client, rid, op });
        }
        Batch {
            digest: Digest(d),
            reqs,
        }
    }
}

/// Everything observable of a ledger: head, stable sequence, balances, receipts of the
/// given requests, blocks up to the head.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub head: pbft_executor::Head,
    pub stable: u64,
    pub balances: Vec<Option<u64>>,
    pub receipts: Vec<Option<StoredReceipt>>,
    pub blocks: Vec<Option<Block>>,
}

pub fn observe<E: Executor>(e: &E, people: &People, issued: &[(PublicKey, u64)]) -> Observed {
    let head = e.head();
    Observed {
        head,
        stable: e.stable_seq(),
        balances: people
            .everyone()
            .map(|pk| e.balance(pk).expect("balance"))
            .collect(),
        receipts: issued
            .iter()
            .map(|(c, r)| e.receipt(c, *r).expect("receipt"))
            .collect(),
        blocks: (0..=head.height + 1)
            .map(|h| e.block(h).expect("block"))
            .collect(),
    }
}

/// A temporary directory, on tmpfs (`/dev/shm`) when there is one: the tests fsync a
/// lot (every RocksDB open, flush and checkpoint) and only the fault-injected crash
/// semantics matter here, which do not depend on the file system.
pub fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::Builder::new()
            .prefix("pbft-executor-")
            .tempdir_in(shm)
        {
            return t;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// The options RocksDB recorded for column family `cf` in the newest OPTIONS file of
/// the database at `db`: the section's lines, as RocksDB wrote them.
#[allow(dead_code)] // `mod common` is compiled into every test file; one uses this
pub fn cf_options_file_section(db: &std::path::Path, cf: &str) -> String {
    let newest = std::fs::read_dir(db)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-"))
        })
        .max()
        .expect("an OPTIONS file");
    let text = std::fs::read_to_string(&newest).expect("read OPTIONS");
    text.split(&format!("[CFOptions \"{cf}\"]"))
        .nth(1)
        .expect("a section for the column family")
        .split("\n[")
        .next()
        .unwrap_or_default()
        .to_string()
}
