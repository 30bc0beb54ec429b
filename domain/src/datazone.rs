//! Stages of a model's life and data zones (one stage's namespace inside one zone of the cluster configuration).
//!
//! These types used to live in the registry crate; they are domain vocabulary shared by the registry, the
//! promotion service, its config and the command line. Their serde forms are unchanged: a stage is the lowercase
//! word (`training`, `registry`, `inference`) and a data zone is `{zone, stage}`, so stored registries and
//! promotion configs written before the move still load.

use serde::{Deserialize, Serialize};

/// The stages a model goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Where training jobs write models.
    Training,
    /// The curated registry.
    Registry,
    /// Where inference jobs read models.
    Inference,
}

impl Stage {
    /// All stages in promotion order.
    pub const ALL: [Stage; 3] = [Stage::Training, Stage::Registry, Stage::Inference];

    /// The stage a promotion from this one must go to, if any.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Training => Some(Stage::Registry),
            Stage::Registry => Some(Stage::Inference),
            Stage::Inference => None,
        }
    }

    /// `training`, `registry` or `inference`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Training => "training",
            Stage::Registry => "registry",
            Stage::Inference => "inference",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "training" => Ok(Stage::Training),
            "registry" => Ok(Stage::Registry),
            "inference" => Ok(Stage::Inference),
            other => Err(format!("unknown stage `{other}`; use training, registry or inference")),
        }
    }
}

/// A name that cannot be used as a key or a path component (see [`check_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{name}`: use 1–128 letters, digits, `-`, `_` or `.` (not `.` or `..` alone)")]
#[non_exhaustive]
pub struct NameError {
    /// What the name is (e.g. `zone`, `model name`, `alias`).
    pub what: String,
    /// The refused name.
    pub name: String,
}

/// Refuses names that cannot be keys or path components: empty, longer than 128 bytes, `.`/`..`, or with
/// characters other than ASCII letters, digits, `-`, `_`, `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(NameError { what: what.to_string(), name: name.to_string() }) }
}

/// A data zone: one stage's namespace inside one zone of the cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataZone {
    /// The zone id (cluster configuration).
    pub zone: String,
    /// The stage.
    pub stage: Stage,
}

impl DataZone {
    /// A data zone; the zone id must be a safe path component ([`check_name`]).
    pub fn new(zone: &str, stage: Stage) -> Result<DataZone, NameError> {
        check_name("zone", zone)?;
        Ok(DataZone { zone: zone.to_string(), stage })
    }
}

impl std::fmt::Display for DataZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.zone, self.stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde form promotion configs were written with before the move (the registry's JSON records are pinned
    /// in `registry/src/tests_datazone.rs`).
    #[test]
    fn stage_and_data_zone_keep_their_stored_form() {
        let dz = DataZone::new("fr-par-secnum", Stage::Inference).unwrap();
        assert_eq!(serde_yaml_ng::to_string(&dz).unwrap(), "zone: fr-par-secnum\nstage: inference\n");
        let back: DataZone = serde_yaml_ng::from_str("{zone: de-fra-c5, stage: registry}").unwrap();
        assert_eq!(back, DataZone { zone: "de-fra-c5".into(), stage: Stage::Registry });
        let stages: Vec<Stage> = serde_yaml_ng::from_str("[training, registry, inference]").unwrap();
        assert_eq!(stages, Stage::ALL);
        assert!(serde_yaml_ng::from_str::<Stage>("Training").is_err(), "only the lowercase word is a stage");
    }

    #[test]
    fn unsafe_zone_names_are_refused_with_the_rule() {
        for bad in ["", ".", "..", "../etc", "a/b", "é"] {
            let e = DataZone::new(bad, Stage::Training).unwrap_err();
            assert_eq!(e.what, "zone");
            assert!(e.to_string().contains("use 1–128 letters"), "{e}");
        }
        assert!(check_name("zone", &"a".repeat(129)).is_err());
        assert!(check_name("model", "resnet-50_v1.2").is_ok());
        assert_eq!("inference".parse::<Stage>(), Ok(Stage::Inference));
        assert!("prod".parse::<Stage>().unwrap_err().contains("use training, registry or inference"));
    }
}
