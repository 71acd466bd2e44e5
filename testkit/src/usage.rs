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

/// Confines every thread of process `pid` to the CPUs in `cpus` and
/// returns how many threads it has: `sched_setaffinity` on each task under
/// `/proc/<pid>/task`, pass after pass until one finds every thread already
/// confined (a thread created during a pass by one not yet pinned would
/// otherwise keep the old set; threads created later inherit it from their
/// creator). Benchmarks use it to give a part of the system a core of its
/// own on one machine, as a deployment gives it machines of its own.
pub fn pin_to_cpus(pid: u32, cpus: &[usize]) -> anyhow::Result<usize> {
    use anyhow::Context;
    const PASSES: usize = 10;
    let mut wanted: Vec<usize> = cpus.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut set = nix::sched::CpuSet::new();
    for &cpu in &wanted {
        set.set(cpu).with_context(|| {
            format!(
                "CPU {cpu} is beyond the {} CPUs a CPU set can name",
                nix::sched::CpuSet::count()
            )
        })?;
    }
    for _ in 0..PASSES {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| {
            format!("cannot read /proc/{pid}/task to pin process {pid} to CPUs {wanted:?}")
        })?;
        let (mut threads, mut changed) = (0, 0);
        for task in tasks {
            let tid: u32 = task?
                .file_name()
                .to_string_lossy()
                .parse()
                .context("a task under /proc/<pid>/task is not a number")?;
            // A thread that ended since the directory was read has nothing to pin.
            let Ok(now) = allowed_cpus(tid) else { continue };
            threads += 1;
            if now == wanted {
                continue;
            }
            changed += 1;
            match nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid as i32), &set) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot pin thread {tid} of process {pid} to CPUs {wanted:?}; this \
                             process may use CPUs {:?} (see `taskset -p $$`)",
                            allowed_cpus(std::process::id()).unwrap_or_default()
                        )
                    });
                }
            }
        }
        if changed == 0 {
            return Ok(threads);
        }
    }
    anyhow::bail!(
        "process {pid} kept starting threads on other CPUs through {PASSES} passes of pinning it to {wanted:?}"
    )
}

/// The CPUs thread `tid` (a process's id names its first thread) may run
/// on, for checking [`pin_to_cpus`].
pub fn allowed_cpus(tid: u32) -> anyhow::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid as i32))?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// The CPUs online on the machine, whatever this process's own affinity
/// (`available_parallelism` counts only the CPUs this process may use,
/// which [`pin_to_cpus`] narrows).
pub fn machine_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .map_or(1, |cpus| cpus.max(1) as usize)
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

    /// A child process killed when the test ends, passed or not.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn pinning_reaches_every_thread_of_a_running_process() {
        // A child with four threads, all started before it is pinned.
        let mut child = KillOnDrop(
            std::process::Command::new("python3")
                .args([
                    "-c",
                    "import threading, time\n\
                     for _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n\
                     print('ready', flush=True)\n\
                     time.sleep(30)",
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3 runs (the setup installs it)"),
        );
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        let pid = child.0.id();
        let tasks = || -> Vec<u32> {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .map(|t| t.unwrap().file_name().to_string_lossy().parse().unwrap())
                .collect()
        };
        assert_eq!(tasks().len(), 4, "the child's main thread and its three");
        // The child may use what this test may use; pin it to the first of them.
        let inherited = allowed_cpus(pid).unwrap();
        let first = vec![inherited[0]];

        assert_eq!(pin_to_cpus(pid, &first).unwrap(), 4, "threads pinned");
        for tid in tasks() {
            assert_eq!(allowed_cpus(tid).unwrap(), first, "thread {tid} of {pid}");
        }
        // And back to the set it inherited.
        assert_eq!(pin_to_cpus(pid, &inherited).unwrap(), 4);
        for tid in tasks() {
            assert_eq!(
                allowed_cpus(tid).unwrap(),
                inherited,
                "thread {tid} of {pid}"
            );
        }
        drop(child);
        assert!(
            pin_to_cpus(pid, &first).is_err(),
            "a process that has ended cannot be pinned, and says so"
        );
    }
}
