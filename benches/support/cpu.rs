//! CPU time read from /proc, shared by the benchmarks that measure whole swarms.

/// USER_HZ: the unit of utime/stime in /proc/self/stat (100 on every Linux we run on).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// On-CPU time of the calling thread in nanoseconds, from /proc/thread-self/schedstat.
#[allow(dead_code)] // Not every benchmark that shares this file reads the thread's time.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the whole process, in nanoseconds (10 ms resolution).
pub fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks * 1_000_000_000 / CLOCK_TICKS_PER_SEC
}
