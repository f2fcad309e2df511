//! What the agent learns about its host when the configuration does not say: node name, host
//! identity, CPU count, total memory, GPU count, and the default `FLAME_HOME`.
//!
//! Why separate: these read the machine (`/proc`, `/etc/machine-id`, the hostname, the agent's
//! own path), and the configuration resolver must stay testable without them; every function
//! here is small and returns `None` instead of failing, so a missing file only means "no
//! default".
//!
//! Caveats: memory is `MemTotal` of `/proc/meminfo` (Linux only) and ignores cgroup limits, as
//! upstream does; the CPU count is the process's available parallelism, which honours CPU
//! affinity but not CFS quotas.

use std::path::PathBuf;

/// The host's name, used as the default node name.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// A stable identifier of this host: `/etc/machine-id` when readable, else the hostname.
pub fn host_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .or_else(hostname)
}

/// CPU cores available to this process.
pub fn cpu_count() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Total memory in bytes from `/proc/meminfo`.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total(&text)
}

/// Parses the `MemTotal:  16384 kB` line of a meminfo text into bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        None => 1,
        Some(u) if u.eq_ignore_ascii_case("kb") => 1024,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

/// GPU count from a `CUDA_VISIBLE_DEVICES` value: the number of listed devices; 0 when unset,
/// empty, or when the list starts with a negative index (CUDA's way of hiding every device).
pub fn gpu_count(cuda_visible_devices: Option<&str>) -> i32 {
    let Some(list) = cuda_visible_devices
        .map(str::trim)
        .filter(|l| !l.is_empty())
    else {
        return 0;
    };
    let devices: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if devices.first().is_some_and(|d| d.starts_with('-')) || list == "NoDevFiles" {
        return 0;
    }
    i32::try_from(devices.len()).unwrap_or(i32::MAX)
}

/// The default `FLAME_HOME`: the parent of the directory holding the agent binary, so that an
/// install laid out as `<home>/bin/flame-node-agent` finds `<home>/bin/flmping-service`.
pub fn flame_home_from_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let exe = exe.canonicalize().unwrap_or(exe);
    exe.parent()?.parent().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16318060 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(text), Some(16_318_060 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
        assert_eq!(mem_total("MemTotal: lots kB"), None);
    }

    #[test]
    fn cuda_visible_devices_counts_listed_devices() {
        assert_eq!(gpu_count(None), 0);
        assert_eq!(gpu_count(Some("")), 0);
        assert_eq!(gpu_count(Some("0")), 1);
        assert_eq!(gpu_count(Some("0,1, 3")), 3);
        assert_eq!(gpu_count(Some("GPU-8f2a,GPU-11c0")), 2);
        assert_eq!(gpu_count(Some("-1")), 0);
        assert_eq!(gpu_count(Some("NoDevFiles")), 0);
    }

    #[test]
    fn host_facts_are_available_here() {
        assert!(cpu_count() >= 1);
        assert!(hostname().is_some());
    }
}
