//! Which priority a worker takes its next task from: the rule that puts high before normal
//! before low without starving anyone. A worker counts the tasks it starts in cycles of
//! [`CYCLE`]; the 5th start of each cycle tries normal first (then low, then high), the 10th
//! tries low first (then normal, then high), and the other eight try high, normal, low. So a
//! line that has work gets at least one start in ten however busy the others are, and high
//! gets at least eight in ten while it has work.

use courier_core::Priority;

/// Starts per cycle of the rule.
pub const CYCLE: usize = 10;

/// The order the lines are tried in for start number `position` (0-based) of a cycle.
pub fn order_at(position: usize) -> [Priority; 3] {
    match position % CYCLE {
        4 => [Priority::Normal, Priority::Low, Priority::High],
        9 => [Priority::Low, Priority::Normal, Priority::High],
        _ => [Priority::High, Priority::Normal, Priority::Low],
    }
}

/// A worker's place in the cycle: it moves on only when a task starts.
#[derive(Debug, Default)]
pub struct PullCycle {
    started: usize,
}

impl PullCycle {
    /// The order for the next start.
    pub fn order(&self) -> [Priority; 3] {
        order_at(self.started)
    }

    /// A task started.
    pub fn started(&mut self) {
        self.started = (self.started + 1) % CYCLE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `n` tasks from lines with `work[p]` tasks each; the priorities in start order.
    fn run(n: usize, mut work: [usize; 3]) -> Vec<Priority> {
        let mut cycle = PullCycle::default();
        let mut starts = Vec::new();
        for _ in 0..n {
            let Some(p) = cycle.order().into_iter().find(|p| work[p.index()] > 0) else { break };
            work[p.index()] -= 1;
            starts.push(p);
            cycle.started();
        }
        starts
    }

    fn count(starts: &[Priority], p: Priority) -> usize {
        starts.iter().filter(|s| **s == p).count()
    }

    #[test]
    fn with_every_line_busy_high_gets_eight_in_ten_and_the_others_one_each() {
        let starts = run(1_000, [usize::MAX; 3]);
        assert_eq!(count(&starts, Priority::High), 800);
        assert_eq!(count(&starts, Priority::Normal), 100);
        assert_eq!(count(&starts, Priority::Low), 100);
    }

    #[test]
    fn a_line_with_work_gets_at_least_one_start_in_every_ten() {
        for work in [[usize::MAX, 0, usize::MAX], [usize::MAX, usize::MAX, 0], [0, 5_000, 5_000]] {
            let starts = run(1_000, work);
            for window in starts.windows(CYCLE) {
                for p in Priority::ALL.into_iter().filter(|p| work[p.index()] > 0) {
                    assert!(count(window, p) >= 1, "{p} starved in {window:?} ({work:?})");
                }
            }
        }
    }

    #[test]
    fn high_goes_first_and_the_rest_follow_once_it_is_empty() {
        let starts = run(100, [20, 0, 80]);
        let last_high = starts.iter().rposition(|p| *p == Priority::High).unwrap();
        // 20 high tasks among the first 24 starts (8 in 10, normal's turn going to low too).
        assert_eq!(last_high, 23, "{starts:?}");
        assert_eq!(count(&starts[..=last_high], Priority::Low), 4);
        assert!(starts[last_high + 1..].iter().all(|p| *p == Priority::Low));
        assert_eq!(starts.len(), 100, "every task starts");
    }

    #[test]
    fn an_empty_line_gives_its_turn_to_the_next() {
        assert_eq!(run(10, [0, 0, 10]).len(), 10);
        assert_eq!(run(10, [10, 0, 0]), vec![Priority::High; 10]);
    }
}
