//! Which scorers rank feasible nodes, and how they are weighted.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A scoring plugin of the placement core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerKind {
    /// Tightest fit: the node left with the least free CPU and GPU after placement scores highest.
    BestFit,
    /// Fragmentation gradient descent (Weng et al., ATC'23): least growth of expected fragmentation.
    Fgd,
    /// A seeded pseudo-random score per (job, replica, node): the random baseline.
    Random,
    /// Least allocated: the node left with the most free resources scores highest.
    Spread,
    /// NVLink topology: multi-GPU replicas score highest where their GPUs share one island.
    Topology,
    /// Dot product of the node's free (CPU, GPU) and the replica's request, smallest first (FGD paper baseline).
    DotProduct,
    /// GPU packing (FGD paper baseline): partly used GPUs first, then partly used nodes, then empty nodes.
    GpuPacking,
    /// GPU clustering (FGD paper baseline): nodes already running replicas of the same GPU shape first.
    GpuClustering,
    /// First fit: nodes early in a fixed, seeded order first (classic first-fit bin packing). Combined with FGD it
    /// is Sovra's earlier packing policy (`fgd,first-fit`).
    FirstFit,
    /// First fit whose pull on whole-GPU replicas fades as multi-GPU jobs take a larger share of the GPU demand
    /// admitted so far (full below 8%, none above 18%); CPU-only and GPU-sharing replicas always get full first
    /// fit. With FGD it is Sovra's packing policy (`sovra` = `learned:fgd,adaptive-first-fit` in the simulator).
    AdaptiveFirstFit,
}

impl ScorerKind {
    /// Every scorer, in a fixed order.
    pub const ALL: [ScorerKind; 10] = [
        ScorerKind::BestFit,
        ScorerKind::Fgd,
        ScorerKind::Random,
        ScorerKind::Spread,
        ScorerKind::Topology,
        ScorerKind::DotProduct,
        ScorerKind::GpuPacking,
        ScorerKind::GpuClustering,
        ScorerKind::FirstFit,
        ScorerKind::AdaptiveFirstFit,
    ];

    /// The name used in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScorerKind::BestFit => "best-fit",
            ScorerKind::Fgd => "fgd",
            ScorerKind::Random => "random",
            ScorerKind::Spread => "spread",
            ScorerKind::Topology => "topology",
            ScorerKind::DotProduct => "dot-product",
            ScorerKind::GpuPacking => "gpu-packing",
            ScorerKind::GpuClustering => "gpu-clustering",
            ScorerKind::FirstFit => "first-fit",
            ScorerKind::AdaptiveFirstFit => "adaptive-first-fit",
        }
    }
}

impl fmt::Display for ScorerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A weighted combination of scorers, written `fgd` or `fgd=2,topology=1`.
///
/// Each scorer gives an integer in 0..=100; a node's score is the weighted sum. Ties are broken by a fixed, seeded
/// order of the nodes (see the placement core).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicySpec {
    /// The scorers with their weights, each scorer at most once, in the order written.
    pub scorers: Vec<(ScorerKind, u32)>,
}

impl PolicySpec {
    /// A policy made of one scorer.
    pub fn single(kind: ScorerKind) -> Self {
        PolicySpec { scorers: vec![(kind, 1)] }
    }

    /// The weight of `kind`, 0 when absent.
    pub fn weight(&self, kind: ScorerKind) -> u32 {
        self.scorers.iter().find(|(k, _)| *k == kind).map_or(0, |(_, w)| *w)
    }
}

impl Default for PolicySpec {
    /// `best-fit,topology`: tight packing, and NVLink islands for multi-GPU replicas.
    fn default() -> Self {
        PolicySpec { scorers: vec![(ScorerKind::BestFit, 1), (ScorerKind::Topology, 1)] }
    }
}

impl FromStr for PolicySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut scorers: Vec<(ScorerKind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: u32 = w
                        .trim()
                        .parse()
                        .map_err(|_| format!("weight {w:?} of scorer {n:?} is not a whole number from 1 to 1000"))?;
                    (n.trim(), w)
                }
                None => (part, 1),
            };
            let kind = ScorerKind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
                let names: Vec<&str> = ScorerKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown scorer {name:?}; choose from {}", names.join(", "))
            })?;
            if !(1..=1000).contains(&weight) {
                return Err(format!("weight {weight} of scorer {name} must be from 1 to 1000"));
            }
            if scorers.iter().any(|(k, _)| *k == kind) {
                return Err(format!("scorer {name} is named twice"));
            }
            scorers.push((kind, weight));
        }
        Ok(PolicySpec { scorers })
    }
}

impl TryFrom<String> for PolicySpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PolicySpec> for String {
    fn from(p: PolicySpec) -> String {
        p.to_string()
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, w)) in self.scorers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if *w == 1 { write!(f, "{k}")? } else { write!(f, "{k}={w}")? }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: PolicySpec = "fgd=2, topology".parse().unwrap();
        assert_eq!(p.scorers, vec![(ScorerKind::Fgd, 2), (ScorerKind::Topology, 1)]);
        assert_eq!(p.to_string(), "fgd=2,topology");
        assert_eq!(p.weight(ScorerKind::BestFit), 0);
    }

    #[test]
    fn rejects_bad_policies() {
        for (input, want) in [
            ("fdg", "unknown scorer \"fdg\""),
            ("fgd=x", "is not a whole number"),
            ("fgd=0", "must be from 1 to 1000"),
            ("fgd,fgd", "named twice"),
            ("", "unknown scorer \"\""),
        ] {
            let err = input.parse::<PolicySpec>().unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
