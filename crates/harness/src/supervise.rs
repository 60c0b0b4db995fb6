//! Supervision of local validator processes: how a `pbft node` process is started
//! ([`Launcher`], [`NodeSpec`]), the set of children that is stopped whatever happens
//! ([`Children`]), and the key directories a local cluster runs from.

use crate::error::{Error, Result};
use pbft_cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that allows `pbft node`'s fault-injection flags; the
/// launcher sets it to `1` for a node that is given any of them.
pub const TRAITOR_ENV: &str = "PBFT_ALLOW_TRAITOR";

/// Child processes, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug, Default)]
pub struct Children(Vec<(u32, Child)>);

impl Children {
    /// No children yet.
    pub fn new() -> Children {
        Children(Vec::new())
    }

    /// Takes charge of `child`, validator `id`'s process.
    pub fn push(&mut self, id: u32, child: Child) {
        self.0.push((id, child));
    }

    /// The process ids, in the order the children were added.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|(_, c)| c.id()).collect()
    }

    /// Asks every child to stop, waits up to `grace`, then kills what is left.
    pub fn stop(&mut self, grace: Duration) {
        for (_, c) in &self.0 {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let until = Instant::now() + grace;
        for (_, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A traitor's flags on a node's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraitorFlags {
    /// The behaviour's name (`equivocate`, ...).
    pub behavior: String,
    /// The seed of its random choices, if not the node's default.
    pub seed: Option<u64>,
    /// The other traitors it colludes with.
    pub accomplices: Vec<u32>,
}

/// One validator process to start.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The cluster file.
    pub cluster: PathBuf,
    /// The validator's key file.
    pub key: PathBuf,
    /// Its data directory.
    pub data: PathBuf,
    /// The file its log (JSON lines on standard error) is appended to.
    pub log: PathBuf,
    /// The loopback port of its fault-injection control endpoint, if it serves one.
    pub control: Option<u16>,
    /// Its traitor behaviour, if it has one.
    pub traitor: Option<TraitorFlags>,
    /// The cluster's first start (`pbft node --genesis`): false once its disk was
    /// wiped, so that it recovers instead.
    pub genesis: bool,
    /// Further `pbft node` flags (limits on client connections).
    pub extra: Vec<String>,
}

/// Starts `pbft node` processes from one binary.
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The `pbft` binary.
    pub exe: PathBuf,
}

impl Launcher {
    /// A launcher of the running binary (the `pbft` command line runs its own nodes).
    pub fn this_binary() -> Result<Launcher> {
        let exe = std::env::current_exe().map_err(|e| Error::io("locating the pbft binary", e))?;
        Ok(Launcher { exe })
    }

    /// The command that starts `spec`'s node, without its standard streams.
    pub fn command(&self, spec: &NodeSpec) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--cluster")
            .arg(&spec.cluster)
            .arg("--key")
            .arg(&spec.key)
            .arg("--data")
            .arg(&spec.data)
            .arg("--log-format")
            .arg("json");
        if spec.genesis {
            cmd.arg("--genesis");
        }
        if let Some(port) = spec.control {
            cmd.arg("--control").arg(format!("127.0.0.1:{port}"));
        }
        if let Some(t) = &spec.traitor {
            cmd.arg("--traitor").arg(&t.behavior);
            if let Some(seed) = t.seed {
                cmd.arg("--traitor-seed").arg(seed.to_string());
            }
            if !t.accomplices.is_empty() {
                let ids: Vec<String> = t.accomplices.iter().map(u32::to_string).collect();
                cmd.arg("--accomplices").arg(ids.join(","));
            }
        }
        cmd.args(&spec.extra);
        if spec.control.is_some() || spec.traitor.is_some() {
            cmd.env(TRAITOR_ENV, "1");
        }
        cmd
    }

    /// Starts `spec`'s node (validator `id`), its log appended to `spec.log`.
    pub fn spawn(&self, id: u32, spec: &NodeSpec) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::io(format!("creating the log of validator {id}"), e))?;
        self.command(spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io(format!("starting validator {id}"), e))
    }

    /// Starts one process per validator of `cluster`, with its key from `keys`, its
    /// data directory and log under `data`; `traitors` gives behaviours by id.
    pub fn spawn_all(
        &self,
        cluster: &Cluster,
        keys: &Path,
        data: &Path,
        traitors: &[(u32, &str)],
    ) -> Result<Children> {
        let mut children = Children::new();
        for v in &cluster.validators {
            let spec = NodeSpec {
                cluster: cluster.path.clone(),
                key: keys.join(pbft_cluster::validator_key_name(v.id as usize)),
                data: data.join(format!("validator-{}", v.id)),
                log: data.join(format!("validator-{}.log", v.id)),
                control: None,
                genesis: true,
                extra: Vec::new(),
                traitor: traitors
                    .iter()
                    .find(|(id, _)| *id == v.id)
                    .map(|(_, b)| TraitorFlags {
                        behavior: b.to_string(),
                        seed: None,
                        accomplices: Vec::new(),
                    }),
            };
            children.push(v.id, self.spawn(v.id, &spec)?);
        }
        Ok(children)
    }
}

/// Where the development keys are: `./keys`, or the source tree's `keys/`.
pub fn keys_dir() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [PathBuf::from("keys"), workspace.join("keys")]
        .into_iter()
        .find(|d| d.join("cluster.toml").is_file())
        .ok_or(Error::NoDevelopmentKeys)
}

/// Copies a cluster directory (cluster file and key files) to `to`, key files with
/// mode 0600 (a checkout does not keep file modes, and nodes refuse loose keys), and
/// loads the copied cluster file.
pub fn private_copy(from: &Path, to: &Path) -> Result<Cluster> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: String| move |e| Error::io(what, e);
    std::fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    // whatever the umask: a key in a directory others may write to is refused
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("protecting {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(io(format!("reading {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", from.display())))?;
        let name = entry.file_name();
        let is_key = name.to_string_lossy().ends_with(".key");
        if !is_key && name != "cluster.toml" {
            continue;
        }
        let dst = to.join(&name);
        std::fs::copy(entry.path(), &dst)
            .map_err(io(format!("copying {}", entry.path().display())))?;
        if is_key {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("protecting {}", dst.display())))?;
        }
    }
    Ok(Cluster::load(&to.join("cluster.toml"))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env(cmd: &Command) -> Option<String> {
        cmd.get_envs()
            .find(|(k, _)| *k == OsStr::new(TRAITOR_ENV))
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    fn spec() -> NodeSpec {
        NodeSpec {
            cluster: "c/cluster.toml".into(),
            key: "c/validator-1.key".into(),
            data: "d/validator-1".into(),
            log: "d/validator-1.log".into(),
            control: None,
            traitor: None,
            genesis: false,
            extra: Vec::new(),
        }
    }

    #[test]
    fn an_honest_node_gets_no_fault_flags_and_no_permission() {
        let l = Launcher {
            exe: "/bin/pbft".into(),
        };
        let cmd = l.command(&spec());
        assert_eq!(cmd.get_program(), "/bin/pbft");
        assert_eq!(
            args(&cmd),
            [
                "node",
                "--cluster",
                "c/cluster.toml",
                "--key",
                "c/validator-1.key",
                "--data",
                "d/validator-1",
                "--log-format",
                "json"
            ]
        );
        assert_eq!(env(&cmd), None);
    }

    #[test]
    fn a_scripted_traitor_gets_its_flags_and_the_permission() {
        let l = Launcher {
            exe: "/bin/pbft".into(),
        };
        let mut s = spec();
        s.control = Some(4100);
        s.traitor = Some(TraitorFlags {
            behavior: "equivocate".into(),
            seed: Some(77),
            accomplices: vec![2, 3],
        });
        let a = args(&l.command(&s));
        assert_eq!(
            a[9..],
            [
                "--control",
                "127.0.0.1:4100",
                "--traitor",
                "equivocate",
                "--traitor-seed",
                "77",
                "--accomplices",
                "2,3"
            ]
        );
        assert_eq!(env(&l.command(&s)).as_deref(), Some("1"));
        // a traitor alone (the demo's) needs the permission too, and no seed flag
        s.control = None;
        s.traitor = Some(TraitorFlags {
            behavior: "silent".into(),
            seed: None,
            accomplices: vec![],
        });
        let cmd = l.command(&s);
        assert_eq!(args(&cmd)[9..], ["--traitor", "silent"]);
        assert_eq!(env(&cmd).as_deref(), Some("1"));
    }

    #[test]
    fn the_development_keys_are_found_from_anywhere_in_the_tree() {
        let dir = keys_dir().expect("the repository's keys/");
        assert!(dir.join("cluster.toml").is_file());
        assert!(dir.join("validator-0.key").is_file());
    }

    #[test]
    fn a_private_copy_holds_the_cluster_and_keys_with_mode_0600_only() {
        use std::os::unix::fs::PermissionsExt;
        let keys = keys_dir().expect("keys");
        let from = tempfile::tempdir().expect("tempdir");
        for e in std::fs::read_dir(&keys).expect("read keys") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), from.path().join(e.file_name())).expect("copy");
        }
        std::fs::write(from.path().join("notes.txt"), b"not a key").expect("write");
        let to = tempfile::tempdir().expect("tempdir");
        let cluster = private_copy(from.path(), to.path()).expect("copy");
        assert_eq!(cluster.path, to.path().join("cluster.toml"));
        for i in 0..cluster.n() {
            let key = to.path().join(pbft_cluster::validator_key_name(i));
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            pbft_crypto::read_key_file(&key).expect("a copied key reads back");
        }
        let names: Vec<String> = std::fs::read_dir(to.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "cluster.toml" || n.ends_with(".key")),
            "{names:?}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_io_failure_naming_it() {
        let to = tempfile::tempdir().expect("tempdir");
        let e = private_copy(Path::new("/nonexistent/keys"), to.path()).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/keys"), "{e}");
    }

    /// Stopping asks politely first: a process that exits on SIGTERM is gone well
    /// within the grace period, and nothing is left to stop afterwards.
    #[test]
    fn stop_ends_every_child() {
        let mut children = Children::new();
        for id in 0..2 {
            let c = Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep");
            children.push(id, c);
        }
        let pids = children.pids();
        children.stop(Duration::from_secs(10));
        assert!(children.pids().is_empty());
        for pid in pids {
            // the child was reaped: its pid is no longer ours to signal
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z"))
                .unwrap_or(false);
            assert!(!alive, "process {pid} survived");
        }
    }
}
