//! Process measurements from `/proc/self/status`.

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), or 0 where it cannot be read.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// The resident set size now, in bytes.
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS") * 1024
}
