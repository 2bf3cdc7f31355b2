//! The broker process as Linux sees it: CPU time (utime + stime from `/proc/PID/stat`), the
//! same per thread role (`/proc/PID/task/*/stat`), and peak resident memory (`VmHWM` from
//! `/proc/PID/status`). Read on the main thread before and after a run; the broker must run on
//! the same machine. Linux only.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};

/// One reading of the broker's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrokerSample {
    /// User + system CPU seconds since the broker started.
    pub cpu_s: f64,
    /// Peak resident set size so far, in KiB.
    pub peak_rss_kib: u64,
}

/// Reads both counters of process `pid`.
pub fn sample(pid: u32) -> Result<BrokerSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is --broker-pid right?)"))?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(BrokerSample { cpu_s: cpu_ticks(&stat)? as f64 / clock_ticks_per_s(), peak_rss_kib: vm_hwm_kib(&status)? })
}

/// Resident memory of `pid` now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU seconds of `pid` per thread role, summed over its threads. A role is a thread's name
/// without its trailing `-<number>` parts: Ferry's `ferry-shard-0-1` and `ferry-shard-1-2`
/// (event loops) are both `ferry-shard`, `ferry-log-0` (a shard's sync and compaction thread)
/// is `ferry-log`. A thread that exits between two readings drops out of its role's sum.
pub fn thread_roles(pid: u32) -> Result<BTreeMap<String, f64>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("list /proc/{pid}/task"))?;
    let mut roles = BTreeMap::new();
    for task in tasks {
        // A thread may exit while we read: skip what is gone.
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(name), Ok(ticks)) = (thread_name(&stat), cpu_ticks(&stat)) else { continue };
        *roles.entry(role(name).to_owned()).or_insert(0.0) += ticks as f64 / clock_ticks_per_s();
    }
    Ok(roles)
}

/// The CPU seconds each role used between two [`thread_roles`] readings, largest first; roles
/// that used none are left out.
pub fn role_deltas(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut used: Vec<(String, f64)> = after
        .iter()
        .map(|(role, cpu)| (role.clone(), cpu - before.get(role).copied().unwrap_or(0.0)))
        .filter(|(_, cpu)| *cpu > 0.0)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used
}

/// The thread name (field 2, in parentheses) of a `/proc` stat line.
fn thread_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// `name` without trailing `-<digits>` parts. Linux cuts names at 15 bytes, so an empty or
/// cut-off last part counts as a number too (`ferry-shard-12-` is `ferry-shard`).
fn role(name: &str) -> &str {
    let mut role = name;
    while let Some((head, last)) = role.rsplit_once('-') {
        if !last.bytes().all(|b| b.is_ascii_digit()) || head.is_empty() {
            break;
        }
        role = head;
    }
    role
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
fn cpu_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).ok_or_else(|| anyhow!("malformed /proc stat line"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc stat line"))?
            .parse::<u64>()
            .context("non-numeric /proc stat field")
    };
    Ok(field(11)? + field(12)?)
}

/// `VmHWM` of a `/proc/PID/status` file, in KiB.
fn vm_hwm_kib(status: &str) -> Result<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or_else(|| anyhow!("no VmHWM in /proc status"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().context("non-numeric VmHWM")
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "1234 (ferry shard 0) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(stat).ok(), Some(300));
        assert!(cpu_ticks("garbage").is_err());
    }

    #[test]
    fn thread_roles_drop_trailing_numbers() {
        assert_eq!(role("ferry-shard-0-1"), "ferry-shard");
        assert_eq!(role("ferry-shard-12-"), "ferry-shard");
        assert_eq!(role("ferry-log-3"), "ferry-log");
        assert_eq!(role("ferry-admin"), "ferry-admin");
        assert_eq!(role("ferry"), "ferry");
        assert_eq!(role("-1"), "-1");
        assert_eq!(thread_name("77 (ferry-log-0) S 1 2"), Some("ferry-log-0"));
        assert_eq!(thread_name("no parentheses"), None);
        assert_eq!(thread_name("1 x) (y"), None, "a closing parenthesis before the opening one");
    }

    #[test]
    fn role_deltas_subtract_and_sort() {
        let before = BTreeMap::from([("ferry-shard".to_owned(), 1.0), ("ferry-log".to_owned(), 0.5)]);
        let after = BTreeMap::from([
            ("ferry-shard".to_owned(), 3.0),
            ("ferry-log".to_owned(), 0.5),
            ("ferry-lease".to_owned(), 0.25),
            ("ferry-new".to_owned(), 4.0),
        ]);
        let used = role_deltas(&before, &after);
        assert_eq!(
            used,
            vec![("ferry-new".to_owned(), 4.0), ("ferry-shard".to_owned(), 2.0), ("ferry-lease".to_owned(), 0.25)]
        );
    }

    #[test]
    fn reads_this_process_threads() {
        let probe = std::thread::Builder::new()
            .name("stats-probe-7".to_owned())
            .spawn(|| thread_roles(std::process::id()).expect("own /proc tasks"))
            .expect("spawn");
        let roles = probe.join().expect("probe thread");
        assert!(roles.contains_key("stats-probe"), "{roles:?}");
        assert!(!roles.contains_key("stats-probe-7"), "{roles:?}");
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tferry\nVmPeak:\t  9999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kib(status).ok(), Some(20480));
        assert!(vm_hwm_kib("Name: x\n").is_err());
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).expect("own /proc entry");
        assert!(me.peak_rss_kib > 0);
        assert!(me.cpu_s >= 0.0);
    }
}
