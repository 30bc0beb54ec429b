//! What keeps a pending job waiting besides the placement core's [`Explanation`](sovra_placement::Explanation),
//! and who preempted whom: structured records set by the scheduling cycle, with one formatting function each
//! ([`Display`](std::fmt::Display)) for people. The CLI, the service and tests read the fields; only display goes
//! through the text.

use crate::JobId;
use std::fmt;

/// How many preemption records a job keeps (the most recent ones).
pub const MAX_PREEMPTION_RECORDS: usize = 16;

/// One reason a pending job did not start in the cycle that last tried (or skipped) it, with its numbers. Set on
/// [`JobRecord::blockers`](crate::JobRecord::blockers) each time a cycle looks at the job; cleared when it starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "blocker", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Blocker {
    /// The job's queue is at its GPU quota in a pool the job may use (purpose and residency permit it): the pool
    /// was closed to the job, or the placement found would have taken the queue over its quota there.
    Quota {
        /// The queue.
        queue: String,
        /// The pool.
        pool: String,
        /// GPU milli the queue holds in the pool.
        held_milli: u64,
        /// The queue's quota in the pool, GPU milli.
        quota_milli: u64,
        /// GPU milli the job would add there: one replica's when the pool was closed to it, the gang's share in
        /// the pool when a placement found would have overrun the quota.
        needs_milli: u64,
    },
    /// A backfill reservation held for another, higher-ranked job kept this job from starting: recorded only when
    /// the job would have been placed (within its quotas) had the reserved nodes not been excluded.
    Reservation {
        /// The job holding the reservation.
        job: JobId,
        /// Its priority.
        priority: i32,
        /// The reserved nodes, in topology order.
        nodes: Vec<String>,
    },
    /// Where the job stands in its queue, in the cycle's order (priority, then submission).
    Position {
        /// The queue.
        queue: String,
        /// 1-based: 1 + the number of the queue's jobs ranked ahead of it that were still pending when it was
        /// tried (jobs placed earlier in the same cycle no longer count).
        position: u32,
        /// The queue's pending jobs at that moment, this one included (those ranked after it are all pending).
        pending: u32,
    },
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Quota { queue, pool, held_milli, quota_milli, needs_milli } => write!(
                f,
                "queue {queue} holds {} of its {} milli quota in pool {pool}; this job needs {}",
                thousands(*held_milli),
                thousands(*quota_milli),
                thousands(*needs_milli)
            ),
            Blocker::Reservation { job, priority, nodes } => {
                let (noun, verb) = if nodes.len() == 1 { ("node", "is") } else { ("nodes", "are") };
                write!(
                    f,
                    "{noun} {} {verb} reserved for job {job} (priority {priority}); without that reservation this \
                     job would start now",
                    node_ranges(nodes)
                )
            }
            Blocker::Position { queue, position, pending } => {
                let ahead = position.saturating_sub(1);
                let jobs = if ahead == 1 { "job" } else { "jobs" };
                write!(
                    f,
                    "position {position} of {pending} in queue {queue}: {ahead} pending {jobs} ahead of it (priority, \
                     then submission)"
                )
            }
        }
    }
}

/// A preemption, kept on the victim's record ([`JobRecord::preemption_records`](crate::JobRecord)) and carried by
/// [`Event::Preempted`](crate::Event::Preempted): who preempted whom, why (the priorities), when (the caller's
/// time, see [`Engine::set_now`](crate::Engine::set_now)) and what it freed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreemptionRecord {
    /// The preempted job.
    pub victim: JobId,
    /// The job it made room for.
    pub by: JobId,
    /// The victim's priority.
    pub victim_priority: i32,
    /// The preempting job's priority (always higher: only strictly lower priorities are preempted).
    pub by_priority: i32,
    /// When, in the caller's milliseconds (the engine reads no clock).
    pub at_ms: u64,
    /// GPU milli released.
    pub freed_milli: u64,
    /// Devices (GPUs or MIG instances) released.
    pub freed_devices: u32,
    /// The nodes the victim ran on, in replica order, without repeats.
    pub nodes: Vec<String>,
}

impl fmt::Display for PreemptionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let devices = if self.freed_devices == 1 { "device" } else { "devices" };
        write!(
            f,
            "at {} ms job {} (priority {}) preempted job {} (priority {}), freeing {} {devices} ({} GPU milli) on {}",
            self.at_ms,
            self.by,
            self.by_priority,
            self.victim,
            self.victim_priority,
            self.freed_devices,
            thousands(self.freed_milli),
            node_ranges(&self.nodes)
        )
    }
}

/// A number with `,` between groups of three digits: `7000` → `7,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Node names, with runs of three or more consecutive numbered names compressed: `n1, n2, n3, n4, x` →
/// `n1–n4, x`. Names keep their order; a run needs the same prefix and the same digit width (`node-09`,
/// `node-10`); names without a trailing number are listed as they are.
pub fn node_ranges(names: &[String]) -> String {
    fn split(name: &str) -> Option<(&str, u64, usize)> {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits > 18 {
            return None;
        }
        let (prefix, number) = name.split_at(name.len() - digits);
        Some((prefix, number.parse().ok()?, digits))
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let mut end = i + 1;
        if let Some((prefix, first, width)) = split(&names[i]) {
            while end < names.len()
                && split(&names[end])
                    .is_some_and(|(p, n, w)| p == prefix && w == width && n == first + (end - i) as u64)
            {
                end += 1;
            }
        }
        if end - i >= 3 {
            parts.push(format!("{}–{}", names[i], names[end - 1]));
        } else {
            parts.extend(names[i..end].iter().cloned());
        }
        i = end;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranges_compress_runs_of_three_or_more() {
        assert_eq!(node_ranges(&names(&["n1", "n2", "n3", "n4"])), "n1–n4");
        assert_eq!(node_ranges(&names(&["n1", "n2", "n4"])), "n1, n2, n4");
        assert_eq!(node_ranges(&names(&["fr-a", "n08", "n09", "n10", "n7"])), "fr-a, n08–n10, n7");
        assert_eq!(node_ranges(&names(&["a9", "a10", "a11"])), "a9, a10, a11", "widths differ");
        assert_eq!(node_ranges(&[]), "");
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(7000), "7,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn blockers_read_as_sentences() {
        let q = Blocker::Quota {
            queue: "research".into(),
            pool: "fr-train".into(),
            held_milli: 7000,
            quota_milli: 8000,
            needs_milli: 2000,
        };
        assert_eq!(
            q.to_string(),
            "queue research holds 7,000 of its 8,000 milli quota in pool fr-train; this job needs 2,000"
        );
        let r = Blocker::Reservation { job: 17, priority: 90, nodes: names(&["n1", "n2", "n3", "n4"]) };
        assert!(r.to_string().starts_with("nodes n1–n4 are reserved for job 17 (priority 90)"), "{r}");
        let p = Blocker::Position { queue: "q".into(), position: 3, pending: 5 };
        assert_eq!(p.to_string(), "position 3 of 5 in queue q: 2 pending jobs ahead of it (priority, then submission)");
        let json = serde_json::to_string(&q).unwrap_or_default();
        assert!(json.starts_with(r#"{"blocker":"quota""#), "{json}");
    }
}
