//! The broker process as Linux sees it: CPU time (utime + stime from `/proc/PID/stat`) and
//! peak resident memory (`VmHWM` from `/proc/PID/status`). Read on the main thread before
//! and after a run; the broker must run on the same machine. Linux only.

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
