//! What the runner and the benchmark read about their validator processes from `/proc`.

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB; `None` if the
/// process is gone or the field is missing.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU seconds of a process so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the parenthesised command name: state is field 3, utime 14
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_a_peak_at_least_as_large() {
        let me = std::process::id();
        let rss = status_kb(me, "VmRSS").expect("VmRSS");
        let hwm = status_kb(me, "VmHWM").expect("VmHWM");
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
        assert_eq!(status_kb(me, "NoSuchField"), None);
    }

    /// The CPU counter of a busy process moves (a wrong field would stay constant or
    /// fail to parse).
    #[test]
    fn cpu_of_this_process_is_read_from_proc() {
        let me = std::process::id();
        let a = cpu_seconds(me).expect("cpu");
        let mut x = 0u64;
        let mut moved = false;
        // bounded: a counter that never moves fails the test instead of hanging it
        for _ in 0..5_000 {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            if cpu_seconds(me).expect("cpu") > a {
                moved = true;
                break;
            }
        }
        assert!(moved, "the CPU time of a busy process did not move");
    }
}
