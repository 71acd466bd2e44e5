//! What a process we started costs, read from Linux's `/proc`: resident
//! memory (now and at its peak) and CPU time. Benchmarks and the relay's
//! attack tests report these for the relay, the collector and friends.

/// Resident memory now (`VmRSS`), in bytes; `None` once the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

/// CPU time used so far, user and system, in seconds (`/proc/<pid>/stat`
/// fields 14 and 15, in clock ticks).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

/// CPU time the whole machine has spent busy (every CPU, every process and
/// the kernel: all of `/proc/stat`'s first line but idle, iowait, steal and guest), in
/// seconds: with a process's own [`cpu_seconds`], what *others* took.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice; the
    // guest times are already counted in user and nice, and steal is time
    // the hypervisor gave to other machines, not work done here.
    let busy: u64 = ticks.iter().take(7).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |ticks| ticks as f64)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_memory_and_cpu() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        // Burn CPU until the counter moves (ticks are 10 ms), for at most 5 s.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(pid).unwrap() <= before
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(
            cpu_seconds(pid).unwrap() > before,
            "5 s of spinning used no CPU time"
        );
        let rss = rss_bytes(pid).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(peak_rss_bytes(pid).unwrap() >= rss);
        assert_eq!(rss_bytes(u32::MAX), None);
        // The machine was busy at least while this process spun.
        assert!(machine_busy_seconds().unwrap() >= cpu_seconds(pid).unwrap());
    }
}
