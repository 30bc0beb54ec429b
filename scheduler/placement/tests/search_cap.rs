//! `scheduling.max_feasible_nodes` (`Placer::with_max_feasible_nodes`): a capped search takes the best of the first
//! n feasible nodes in pool order — so it can pick a worse node than the exhaustive search, never an infeasible one —
//! and a job that fits nowhere is still checked against every node.

use sovra_domain::{ClusterConfig, PolicySpec};
use sovra_placement::{ClusterState, DEFAULT_SEED, Placer, synth};

fn cluster() -> ClusterConfig {
    synth::cluster(200, 1)
}

fn job(cfg: &ClusterConfig, yaml: &str) -> sovra_domain::Job {
    cfg.jobs_from_yaml("job", yaml).unwrap().remove(0)
}

#[test]
fn a_capped_search_picks_among_the_first_feasible_nodes_and_the_full_search_among_all() {
    let cfg = cluster();
    let mut state = ClusterState::from_config(&cfg).unwrap();
    let share = job(
        &cfg,
        "name: s\nkind: inference\nresidency: eu-any\nresources: {gpus: 1, gpu_milli: 500, cpu_milli: 100, memory_mib: 100}\n",
    );
    // Make one node late in its pool the tightest fit (best-fit's choice): half a GPU used on it.
    let mut full = Placer::new("best-fit".parse::<PolicySpec>().unwrap(), DEFAULT_SEED);
    let first = full.place(&state, &share).unwrap();
    let pool = &first.replicas[0].pool;
    let topo = state.topology().clone();
    let pool_idx = topo.pools.iter().position(|p| &p.id == pool).unwrap();
    let nodes = &topo.pool_nodes[pool_idx];
    let late = *nodes.last().unwrap();
    let warm = Placer::new("best-fit".parse::<PolicySpec>().unwrap(), DEFAULT_SEED).place_on(&state, &share, late);
    state.apply(&warm.unwrap()).unwrap();

    let exhaustive = full.place(&state, &share).unwrap();
    assert_eq!(exhaustive.replicas[0].node, late, "the full search finds the tightest node wherever it is");
    let mut capped = Placer::new("best-fit".parse::<PolicySpec>().unwrap(), DEFAULT_SEED).with_max_feasible_nodes(4);
    let d = capped.place(&state, &share).unwrap();
    assert_ne!(d.replicas[0].node, late, "a search capped at 4 feasible nodes stops before the last node of a pool");
    assert!(d.replicas[0].feasible_nodes <= 4, "it scored at most 4: {}", d.replicas[0].feasible_nodes);
    state.check(&d).expect("a capped decision is a valid one");
    // Deterministic: the same inputs give the same node.
    let again = Placer::new("best-fit".parse::<PolicySpec>().unwrap(), DEFAULT_SEED).with_max_feasible_nodes(4);
    assert_eq!(again.clone_place(&state, &share), d.replicas[0].node);
}

#[test]
fn a_job_that_fits_nowhere_is_explained_over_every_node_even_when_capped() {
    let cfg = cluster();
    let state = ClusterState::from_config(&cfg).unwrap();
    let huge = job(
        &cfg,
        "name: h\nkind: training\nresidency: eu-any\nresources: {gpus: 8, cpu_milli: 999999999, memory_mib: 100}\n",
    );
    let full = Placer::new(PolicySpec::default(), DEFAULT_SEED).place(&state, &huge).unwrap_err();
    let capped = Placer::new(PolicySpec::default(), DEFAULT_SEED).with_max_feasible_nodes(1).place(&state, &huge);
    let capped = capped.unwrap_err();
    assert_eq!(serde_json::to_value(&capped).unwrap(), serde_json::to_value(&full).unwrap());
}

trait PlaceOnce {
    fn clone_place(self, state: &ClusterState, job: &sovra_domain::Job) -> u32;
}

impl PlaceOnce for Placer {
    fn clone_place(mut self, state: &ClusterState, job: &sovra_domain::Job) -> u32 {
        self.place(state, job).unwrap().replicas[0].node
    }
}
