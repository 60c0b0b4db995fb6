//! The validator processes of a cluster-mode run: how each is started ([`Setup`]) and
//! what the runner knows about it ([`Node`]).

use crate::error::Result;
use crate::procfs::status_kb;
use crate::supervise::{Launcher, NodeSpec, TraitorFlags};
use pbft_cluster::Cluster;
use pbft_protocol::NodeStatus;
use std::path::PathBuf;
use std::process::Child;

/// One validator process and what the runner knows about it.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its id.
    pub id: u32,
    /// Its traitor behaviour, if it has one.
    pub traitor: Option<&'static str>,
    /// Its process, while it runs.
    pub child: Option<Child>,
    /// The loopback port of its control endpoint.
    pub control_port: u16,
    /// How often it stopped (killed, or aborted as planned).
    pub crashes: u32,
    /// Whether its disk was wiped.
    pub wiped: bool,
    /// Asked to abort inside its next checkpoint.
    pub abort_planned: bool,
    /// Why it stopped on its own, if it did when nobody asked.
    pub died: Option<String>,
    /// Its peak resident memory so far, KiB.
    pub peak_rss_kb: u64,
    /// The last status it answered with.
    pub last_status: Option<NodeStatus>,
}

impl Node {
    /// A validator that has not been started yet.
    pub(crate) fn new(id: u32, traitor: Option<&'static str>, control_port: u16) -> Node {
        Node {
            id,
            traitor,
            child: None,
            control_port,
            crashes: 0,
            wiped: false,
            abort_planned: false,
            died: None,
            peak_rss_kb: 0,
            last_status: None,
        }
    }

    /// Whether its process runs.
    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Notices an exit: a planned abort is a crash, anything else is a death.
    pub(crate) fn reap(&mut self) {
        let Some(c) = &mut self.child else { return };
        if let Ok(Some(status)) = c.try_wait() {
            self.child = None;
            self.crashes += 1;
            if self.abort_planned {
                self.abort_planned = false;
            } else {
                self.died = Some(format!("the process exited on its own ({status})"));
            }
        }
    }

    /// Reads its peak resident memory while it runs.
    pub(crate) fn sample_rss(&mut self) {
        if let Some(c) = &self.child {
            if let Some(kb) = status_kb(c.id(), "VmHWM") {
                self.peak_rss_kb = self.peak_rss_kb.max(kb);
            }
        }
    }

    /// SIGKILL, as a crash.
    pub(crate) fn kill(&mut self) {
        self.sample_rss();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.crashes += 1;
            self.abort_planned = false;
        }
    }
}

impl Drop for Node {
    /// A run that ends early (an error, a panic) leaves no process behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything a run needs to start and restart its processes.
#[derive(Debug)]
pub(crate) struct Setup {
    /// Starts `pbft node`.
    pub launcher: Launcher,
    /// The run's directory: cluster file, keys, data directories, logs.
    pub dir: PathBuf,
    /// The run's cluster.
    pub cluster: Cluster,
    /// The run's seed.
    pub seed: u64,
    /// The scripted traitors, sorted.
    pub traitor_ids: Vec<u32>,
    /// Further `pbft node` flags for every validator (the scenario's `[node]`).
    pub node_flags: Vec<String>,
}

impl Setup {
    /// Validator `id`'s data directory.
    pub(crate) fn data(&self, id: u32) -> PathBuf {
        self.dir.join(format!("data-{id}"))
    }

    /// How `node` is started: with its control endpoint, and for a traitor its
    /// behaviour, a seed of its own derived from the run's, and every other traitor
    /// as an accomplice.
    pub(crate) fn spec(&self, node: &Node) -> NodeSpec {
        NodeSpec {
            cluster: self.cluster.path.clone(),
            key: self
                .dir
                .join(pbft_cluster::validator_key_name(node.id as usize)),
            data: self.data(node.id),
            log: self.dir.join(format!("validator-{}.log", node.id)),
            control: Some(node.control_port),
            genesis: !node.wiped,
            extra: self.node_flags.clone(),
            traitor: node.traitor.map(|b| TraitorFlags {
                behavior: b.to_string(),
                seed: Some(
                    self.seed
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .wrapping_add(node.id as u64),
                ),
                accomplices: self
                    .traitor_ids
                    .iter()
                    .copied()
                    .filter(|t| *t != node.id)
                    .collect(),
            }),
        }
    }

    /// Starts `node`'s process.
    pub(crate) fn spawn(&self, node: &Node) -> Result<Child> {
        self.launcher.spawn(node.id, &self.spec(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traitors_get_their_own_seed_and_the_others_as_accomplices() {
        let keys = crate::supervise::keys_dir().expect("keys");
        let cluster = Cluster::load(&keys.join("cluster.toml")).expect("cluster");
        let setup = Setup {
            launcher: Launcher {
                exe: "/bin/pbft".into(),
            },
            dir: "/run".into(),
            cluster,
            seed: 5,
            traitor_ids: vec![0, 2],
            node_flags: Vec::new(),
        };
        let honest = setup.spec(&Node::new(1, None, 4001));
        assert_eq!(honest.traitor, None);
        assert_eq!(honest.control, Some(4001));
        assert_eq!(honest.data, PathBuf::from("/run/data-1"));
        assert_eq!(honest.key, PathBuf::from("/run/validator-1.key"));
        let t0 = setup.spec(&Node::new(0, Some("silent"), 4000)).traitor;
        let t2 = setup.spec(&Node::new(2, Some("silent"), 4002)).traitor;
        let (t0, t2) = (t0.expect("traitor 0"), t2.expect("traitor 2"));
        assert_eq!((t0.accomplices, t2.accomplices), (vec![2], vec![0]));
        assert_ne!(t0.seed, t2.seed, "each traitor draws its own choices");
        assert_eq!(t0.seed, Some(5u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }

    #[test]
    fn a_node_that_never_ran_is_neither_crashed_nor_dead() {
        let mut n = Node::new(3, None, 1);
        n.reap();
        n.kill();
        n.sample_rss();
        assert!(!n.running());
        assert_eq!((n.crashes, n.died.as_deref(), n.peak_rss_kb), (0, None, 0));
    }
}
