//! The server's CPU time and memory, read from /proc, so cost per message stays comparable on a
//! shared machine where wall-clock throughput does not.

use std::time::Duration;

use anyhow::{Context, bail};

/// CPU time (user + system, all threads) and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// Clock ticks per second of /proc/*/stat times (USER_HZ; 100 on Linux everywhere in practice).
const TICKS_PER_S: u64 = 100;

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu: parse_cpu(&stat)?,
        rss_kib: parse_rss_kib(&status)?,
    })
}

/// utime + stime from a /proc/PID/stat line. The command name may hold spaces and parentheses,
/// so fields are counted from the last ')'.
fn parse_cpu(stat: &str) -> anyhow::Result<Duration> {
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14 and stime 15.
    let (utime, stime) = match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) => (u.parse::<u64>()?, s.parse::<u64>()?),
        _ => bail!("short stat line"),
    };
    Ok(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_S))
}

fn parse_rss_kib(status: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in status")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?;
    Ok(kib.parse()?)
}

/// The pid of the one running process named `ringchat`, if there is exactly one.
pub fn find_server() -> Option<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            && comm.trim() == "ringchat"
        {
            found.push(pid);
        }
    }
    (found.len() == 1).then(|| found[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_nasty_name() {
        let stat =
            "1234 (ring chat) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu(stat).unwrap(), Duration::from_millis(3250));
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tringchat\nVmPeak:\t  10 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(parse_rss_kib(status).unwrap(), 5120);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
