//! The order of a fill run — which tasks arrive in which order, and which node wins a tie — drawn from a seed with
//! one of two random streams ([`Stream`]).
//!
//! [`Stream::Go`] (the default of `sovra simulate`) replays the FGD paper's simulator: Go's `math/rand` seeded with
//! the seed ([`crate::gorand`]), one `rand.Int()` consumed, the name-sorted tasks shuffled, tuned up with
//! `rand.Intn(n)` clones (or down with `rand.Intn(len)` removals), then `rand.Perm(#nodes)` giving the name-sorted
//! nodes their random name prefixes, the tie-break order (`docs/fgd-simulator-protocol.md` §2 steps 2–6). Seeds 42–51
//! then draw the same ten orders as the published results. [`Stream::SplitMix`] is the project's own stream
//! ([`crate::fill::SplitMix`] for the workload, the placer's seeded node order for ties), kept for comparison.

use crate::fill::{SplitMix, build_workload};
use crate::gorand::GoRand;
use crate::trace::{TraceNode, TraceTask};
use sovra_placement::NodeIdx;

/// The random stream a fill run's order comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stream {
    /// Go's `math/rand`, as the FGD paper's simulator draws it: the published runs' orders.
    #[default]
    Go,
    /// SplitMix64 for the workload and the placer's seeded node order for ties.
    SplitMix,
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Stream, String> {
        match s {
            "go" => Ok(Stream::Go),
            "splitmix" => Ok(Stream::SplitMix),
            _ => Err(format!("{s:?}: the random stream is `go` (the FGD paper's) or `splitmix`")),
        }
    }
}

/// A run's order: the tasks in arrival order, and the nodes in tie-break order (first preferred) when the stream
/// gives one (`None`: the placer's seeded order).
#[derive(Debug, Clone)]
pub struct Order {
    /// Tasks in arrival order.
    pub workload: Vec<TraceTask>,
    /// Node indices, the winner of a tie first.
    pub tie_order: Option<Vec<NodeIdx>>,
}

/// The order of the run with `seed` over `nodes` and `tasks`, inflated to `inflate` × `capacity_milli`.
pub fn order(
    nodes: &[TraceNode],
    tasks: &[TraceTask],
    capacity_milli: u64,
    inflate: f64,
    seed: u64,
    stream: Stream,
) -> Order {
    match stream {
        Stream::SplitMix => Order {
            workload: build_workload(tasks, capacity_milli, inflate, &mut SplitMix::new(seed)),
            tie_order: None,
        },
        Stream::Go => go_order(nodes, tasks, capacity_milli, inflate, seed),
    }
}

fn go_order(nodes: &[TraceNode], tasks: &[TraceTask], capacity: u64, inflate: f64, seed: u64) -> Order {
    let mut sorted: Vec<TraceTask> = tasks.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut r = GoRand::new(seed as i64);
    r.int(); // evaluated as an argument of a Debugf call before the shuffle (§2 step 2)
    let mut pods = sorted.clone();
    r.shuffle(&mut pods);
    let target = (inflate * capacity as f64) as u64;
    crate::fill::resize(&mut pods, &sorted, target, |n| r.intn(n));
    // Nodes sorted by name; the i-th gets the prefix perm[i]; ties go to the smallest prefix.
    let mut by_name: Vec<usize> = (0..nodes.len()).collect();
    by_name.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
    let perm = r.perm(nodes.len());
    let mut tie: Vec<(usize, NodeIdx)> = by_name.iter().zip(&perm).map(|(&n, &p)| (p, n as NodeIdx)).collect();
    tie.sort_unstable();
    Order { workload: pods, tie_order: Some(tie.into_iter().map(|(_, n)| n).collect()) }
}
