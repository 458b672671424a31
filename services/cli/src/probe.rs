//! Shared pieces of the `courier bench` load generators: durations, a latency histogram that
//! merges across processes, and CPU/RSS readings of local processes from `/proc`.

use std::time::Duration;

/// Latencies in microseconds, exact below 100 µs and in 1 % wide buckets above; mergeable.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    pub max_us: u64,
}

const EXACT: u64 = 100;

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < EXACT {
            us as usize
        } else {
            EXACT as usize + ((us as f64 / EXACT as f64).ln() / 1.01f64.ln()) as usize
        }
    }

    fn value(bucket: usize) -> u64 {
        if bucket < EXACT as usize {
            bucket as u64
        } else {
            (EXACT as f64 * 1.01f64.powi((bucket - EXACT as usize) as i32 + 1)) as u64
        }
    }

    pub fn record(&mut self, us: u64) {
        let b = Self::bucket(us);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `p` quantile (0–1) in milliseconds (the bucket's upper edge); 0 when empty.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * p).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(bucket).min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
}

/// CPU seconds (user + system) a local process has used, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / ticks)
}

/// Resident set size of a local process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sums a reading over several pids; `None` if any of them cannot be read.
pub fn sum_over<T: std::iter::Sum<T>>(pids: &[String], read: fn(&str) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| read(pid)).sum()
}

/// Warns on stderr when this process used nearly a whole core over `wall` (its own numbers
/// are then bounded by the load generator, not the server).
pub fn warn_if_saturated(cpu_before: Option<f64>, wall: Duration) -> Option<f64> {
    let used = cpu_secs("self")? - cpu_before?;
    let share = used / wall.as_secs_f64().max(1e-9);
    if share >= 0.9 {
        eprintln!(
            "warning: the bench process used {:.0} % of a core: figures may be bounded by the load generator (try --procs)",
            share * 100.0
        );
    }
    Some(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_percent_and_merge() {
        let mut a = Histogram::default();
        for us in 1..=1000 {
            a.record(us * 10);
        }
        let p50 = a.quantile_ms(0.5);
        assert!((p50 - 5.0).abs() / 5.0 < 0.02, "p50 {p50}");
        assert_eq!(a.quantile_ms(1.0), 10.0);
        let mut b = Histogram::default();
        b.record(50_000);
        a.merge(&b);
        assert_eq!((a.total, a.max_us), (1001, 50_000));
        assert_eq!(Histogram::default().quantile_ms(0.99), 0.0);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(cpu_secs("self").is_some());
        assert!(rss_bytes("self").unwrap() > 0);
    }
}
