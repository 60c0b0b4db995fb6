//! Ports on loopback: free ones for a new cluster, and a check that a cluster file's
//! addresses are free before its validators are started.

use crate::error::{Error, Result};
use pbft_cluster::Cluster;

/// Lowest port [`free_udp_ports`] hands out (above the usual service ports).
const LOWEST: u64 = 20_000;
/// One past the highest port it hands out (below the usual ephemeral range).
const HIGHEST: u64 = 60_000;
/// How many candidate ranges it tries before it gives up.
const ATTEMPTS: u64 = 2_000;

/// The first ports of the ranges of `n` consecutive ports that [`free_udp_ports`]
/// tries, in order. `salt` and `pid` spread concurrent callers (runs of a seed sweep,
/// several test processes) over different ranges.
pub fn candidate_bases(n: usize, salt: u64, pid: u32) -> impl Iterator<Item = u16> {
    let n = n as u64;
    let span = HIGHEST - LOWEST - n;
    let start = (salt.wrapping_mul(7919) + pid as u64 * 131) % span;
    (0..ATTEMPTS).map(move |i| (LOWEST + (start + i * (n + 3)) % span) as u16)
}

/// The first of `n` consecutive UDP ports on loopback that are free right now.
pub fn free_udp_ports(n: usize, salt: u64) -> Result<u16> {
    for base in candidate_bases(n, salt, std::process::id()) {
        let socks: Vec<_> = (0..n as u16)
            .map(|k| std::net::UdpSocket::bind(("127.0.0.1", base + k)))
            .collect();
        if socks.iter().all(|s| s.is_ok()) {
            return Ok(base);
        }
    }
    Err(Error::Failed(format!(
        "found no {n} consecutive free UDP ports"
    )))
}

/// A TCP port on loopback that is free right now.
pub fn free_tcp_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free TCP port", e))
}

/// Checks that every validator address of `cluster` is free on this machine.
pub fn check_ports(cluster: &Cluster) -> Result<()> {
    for v in &cluster.validators {
        std::net::UdpSocket::bind(v.addr).map_err(|source| Error::PortInUse {
            validator: v.id,
            port: v.addr.port(),
            cluster: cluster.path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_cluster::{keygen, KeygenSpec, ProtocolParams};

    #[test]
    fn candidate_ranges_stay_inside_the_band_and_differ_by_salt() {
        for n in [4, 7, 31] {
            for base in candidate_bases(n, 3, 12_345) {
                let last = base as u64 + n as u64 - 1;
                assert!(
                    (LOWEST..HIGHEST).contains(&(base as u64)) && last < HIGHEST,
                    "n {n}: {base}..={last}"
                );
            }
        }
        let first = |salt| candidate_bases(4, salt, 1).next();
        assert_ne!(first(1), first(2));
        assert_eq!(candidate_bases(4, 1, 1).count(), ATTEMPTS as usize);
    }

    #[test]
    fn free_ports_are_bindable() {
        let base = free_udp_ports(4, 9).expect("free UDP ports");
        let held: Vec<_> = (0..4)
            .map(|k| std::net::UdpSocket::bind(("127.0.0.1", base + k)))
            .collect();
        assert!(held.iter().all(|s| s.is_ok()), "base {base}");
        let tcp = free_tcp_port().expect("free TCP port");
        assert!(tcp > 0);
    }

    /// A held validator port is reported as bad input naming the validator, its port
    /// and the cluster file; the same cluster passes once the port is released.
    #[test]
    fn a_taken_validator_port_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = free_udp_ports(4, 17).expect("free UDP ports");
        let spec = KeygenSpec {
            validators: 4,
            clients: 1,
            host: "127.0.0.1".into(),
            base_port: base,
            params: ProtocolParams::default(),
            balance: 10,
            governance: 1,
            threshold: 1,
            force: false,
        };
        let cluster = keygen(dir.path(), &spec).expect("keygen").cluster;
        let hold = std::net::UdpSocket::bind(("127.0.0.1", base + 2)).expect("hold");
        let e = check_ports(&cluster).expect_err("port 2 is held");
        assert!(e.is_bad_input());
        let text = e.to_string();
        assert!(
            text.contains("validator 2")
                && text.contains(&format!("UDP port {}", base + 2))
                && text.contains("cluster.toml"),
            "{text}"
        );
        drop(hold);
        check_ports(&cluster).expect("every port is free again");
    }
}
