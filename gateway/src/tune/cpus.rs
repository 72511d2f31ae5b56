//! The kernel's CPU list format (`0-3,8,10-11`), as in `/sys/devices/system/cpu/online`,
//! `node*/cpulist`, `/proc/irq/*/smp_affinity_list` and systemd's `CPUAffinity=`.

/// CPU ids a list may name: Linux's own limit (`CONFIG_NR_CPUS` at most 8192).
pub const CPU_ID_MAX: usize = 8191;

/// Parses `0-3,8,10-11` into sorted, distinct ids; "" is the empty list.
pub fn parse(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let id = |s: &str| -> Result<usize, String> {
            let n: usize = s
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not a CPU id or a range such as 0-3"))?;
            if n > CPU_ID_MAX {
                return Err(format!("CPU {n} is above {CPU_ID_MAX}"));
            }
            Ok(n)
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!("{part:?}: the range runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(id(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats ids as ranges: `[0, 1, 2, 3, 8]` → `0-3,8`; no ids → "".
pub fn format(ids: &[usize]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        assert_eq!(parse("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse("").unwrap(), Vec::<usize>::new());
        assert_eq!(parse("5").unwrap(), vec![5]);
        assert_eq!(format(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(format(&[]), "");
        assert!(parse("3-1").unwrap_err().contains("backwards"));
        assert!(parse("a").unwrap_err().contains("not a CPU id"));
        assert!(parse("99999").unwrap_err().contains("above"));
    }
}
