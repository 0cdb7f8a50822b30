//! Cheap live statistics of a process from `/proc/<pid>/stat`: one small read, no allocation
//! beyond the line.

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time in milliseconds.
    pub cpu_ms: u64,
}

/// Reads the stats of `pid`; `None` if it is gone or unreadable.
pub fn read(pid: i32) -> Option<ProcStat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&line, crate::sys::page_size(), crate::sys::clock_ticks())
}

/// Parses a stat line. The command name is in parentheses and may itself contain spaces or
/// parentheses, so fields are counted from the last `)`.
pub fn parse(line: &str, page_size: u64, ticks: u64) -> Option<ProcStat> {
    let rest = line.get(line.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, rss 24 (1-based, man 5 proc).
    let field = |n: usize| fields.get(n - 3);
    let state = field(3)?.chars().next()?;
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let rss_pages: i64 = field(24)?.parse().ok()?;
    Some(ProcStat {
        state,
        rss_bytes: u64::try_from(rss_pages).unwrap_or(0) * page_size,
        cpu_ms: (utime + stime) * 1000 / ticks.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_tricky_command_name() {
        let line = "1234 (no de) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    11 0 5000 1000000 2560 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1";
        let stat = parse(line, 4096, 100).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.cpu_ms, 3000);
        assert_eq!(stat.rss_bytes, 2560 * 4096);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id() as i32).unwrap();
        assert!(me.rss_bytes > 0);
        assert_eq!(read(-1), None);
    }
}
