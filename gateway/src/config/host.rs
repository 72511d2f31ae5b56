//! The host's CPUs as the configuration is checked and resolved against them: its online cores
//! and its cgroup's CPU quota. Read once, by `main`, before any thread pins itself:
//! `core_affinity::get_core_ids` answers the *calling thread's* allowed cores, so a check run
//! later on a pinned thread (a backend thread applying `PATCH /api/config` or a SIGHUP) would
//! see one core and refuse every other core named in the file.

use std::path::Path;

/// What `gateway.cores` and `backend.cores` are checked against, and what `"auto"` resolves on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCpus {
    /// The cores this process may run on, sorted.
    pub online: Vec<usize>,
    /// CPUs the cgroup's quota (`cpu.max`) allows, rounded up; `None`: no quota.
    pub quota: Option<usize>,
}

impl HostCpus {
    /// This machine, as the calling thread sees it: call before any thread pins itself.
    pub fn read() -> HostCpus {
        HostCpus {
            online: online_cores(),
            quota: read_cpu_quota(Path::new("/")),
        }
    }

    /// Cores given on the command line for another host (`check-config --host-cores`): no quota.
    pub fn of(online: Vec<usize>) -> HostCpus {
        HostCpus {
            online,
            quota: None,
        }
    }
}

/// The cores the calling thread may run on (its affinity): this process's online cores only
/// while no thread has pinned itself. `HostCpus::read` keeps them for later.
pub fn online_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}

/// The CPUs a cgroup v2 `cpu.max` (`"$QUOTA $PERIOD"` in µs, or `"max $PERIOD"`) allows,
/// rounded up: `"400000 100000"` is 4, `"150000 100000"` is 2 (a shard more than whole CPUs
/// is better than a CPU's worth of quota left unused), `"max 100000"` is `None`.
pub fn cpu_quota(cpu_max: &str) -> Option<usize> {
    let mut parts = cpu_max.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next().unwrap_or("100000").parse().ok()?;
    if quota == 0 || period == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period)).ok()
}

/// The quota of this process's cgroup under `root` (`/` for this machine): its own `cpu.max`
/// (`/proc/self/cgroup` names it: a systemd unit's `CPUQuota=`), else the one at the top of
/// `/sys/fs/cgroup` (a container's, which sees its own cgroup there). `None`: no file (cgroup
/// v1, the root cgroup) or no quota. A parent cgroup's lower quota is not looked for.
pub fn read_cpu_quota(root: &Path) -> Option<usize> {
    let cgroups = root.join("sys/fs/cgroup");
    let own = std::fs::read_to_string(root.join("proc/self/cgroup"))
        .ok()
        .and_then(|text| {
            let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            let path = path.trim().trim_start_matches('/');
            (!path.is_empty()).then(|| cgroups.join(path).join("cpu.max"))
        });
    own.into_iter()
        .chain([cgroups.join("cpu.max")])
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| cpu_quota(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_rounded_up_to_whole_cpus() {
        assert_eq!(cpu_quota("max 100000"), None);
        assert_eq!(cpu_quota("max 100000\n"), None);
        assert_eq!(cpu_quota("400000 100000\n"), Some(4));
        assert_eq!(cpu_quota("150000 100000"), Some(2));
        assert_eq!(cpu_quota("50000 100000"), Some(1));
        assert_eq!(cpu_quota(""), None);
        assert_eq!(cpu_quota("0 100000"), None);
    }

    #[test]
    fn the_quota_is_read_from_the_process_cgroup_or_the_top_one_or_is_none() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read_cpu_quota(root.path()), None, "no file: no quota");
        let top = root.path().join("sys/fs/cgroup");
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(top.join("cpu.max"), "400000 100000\n").unwrap();
        assert_eq!(read_cpu_quota(root.path()), Some(4), "a container's");
        let unit = top.join("system.slice/ringchat.service");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(unit.join("cpu.max"), "150000 100000\n").unwrap();
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::write(
            root.path().join("proc/self/cgroup"),
            "0::/system.slice/ringchat.service\n",
        )
        .unwrap();
        assert_eq!(read_cpu_quota(root.path()), Some(2), "the unit's own");
        std::fs::write(unit.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(read_cpu_quota(root.path()), None, "the unit has none");
    }
}
