//! Break-glass for placement: a time-boxed waiver that lets one job run in one zone that fails exactly one named
//! requirement of its residency class (docs/receipts.md, "Break-glass for placement").
//!
//! The scheduler grants a waiver only from a placement exception signed by N of the M approvers its
//! configuration names; the engine sets it on the job, the placement core honours it in its residency filter
//! ([`permits`]), every receipt of the job carries it, and when it expires the engine requeues the job.

use crate::zone::{ResidencyClass, Zone};
use serde::{Deserialize, Serialize};

/// A granted placement exception, as the engine holds it on a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The exception's id: the first 16 hex digits of SHA-256 over its signed payload.
    pub id: String,
    /// The one zone it lets the job into.
    pub zone: String,
    /// The one requirement of the job's class it waives there, as [`crate::Violation::requirement`] names it:
    /// `country`, `jurisdiction`, `operator_hq`, `zone` or `certification:NAME`.
    pub requirement: String,
    /// Why, as the approvers signed it.
    pub reason: String,
    /// The approvers whose signatures granted it, sorted.
    pub approvers: Vec<String>,
    /// When it ends (milliseconds since the Unix epoch, the scheduler's clock).
    pub expires_at_ms: u64,
}

impl Waiver {
    /// Whether this waiver lets a job of `class` into `zone`: it names the zone, and the zone fails the class in
    /// exactly the one requirement it waives. Expiry is the engine's to judge (the core reads no clock).
    pub fn covers(&self, zone: &Zone, class: &ResidencyClass) -> bool {
        if self.zone != zone.id {
            return false;
        }
        let failed = class.violations(zone);
        failed.len() == 1 && failed[0].requirement == self.requirement
    }
}

/// Whether a replica of a job of `class`, holding `waiver` (if any), may be placed in `zone`: the zone satisfies
/// the class, or the waiver covers it ([`Waiver::covers`]).
pub fn permits(zone: &Zone, class: &ResidencyClass, waiver: Option<&Waiver>) -> bool {
    class.is_satisfied_by(zone) || waiver.is_some_and(|w| w.covers(zone, class))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(id: &str, country: &str, certs: &[&str]) -> Zone {
        Zone {
            id: id.into(),
            country: country.into(),
            region: "r".into(),
            jurisdiction: "EU".into(),
            operator: "o".into(),
            operator_hq: country.into(),
            certifications: certs.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn waiver(zone: &str, requirement: &str) -> Waiver {
        Waiver {
            id: "0123456789abcdef".into(),
            zone: zone.into(),
            requirement: requirement.into(),
            reason: "r".into(),
            approvers: vec!["a".into(), "b".into()],
            expires_at_ms: 1,
        }
    }

    #[test]
    fn a_waiver_covers_exactly_one_named_requirement_in_one_zone() {
        let class = ResidencyClass {
            name: "fr-health".into(),
            countries: Some(vec!["FR".into()]),
            certifications: vec!["HDS".into()],
            ..ResidencyClass::default()
        };
        let no_hds = zone("fr-par", "FR", &["SecNumCloud"]);
        let de = zone("de-fra", "DE", &[]);
        let ok = zone("fr-hds", "FR", &["HDS"]);
        let w = waiver("fr-par", "certification:HDS");
        assert!(w.covers(&no_hds, &class));
        assert!(permits(&no_hds, &class, Some(&w)));
        assert!(!permits(&no_hds, &class, None));
        // Another zone, another requirement, or a zone that fails two requirements: not covered.
        assert!(!waiver("fr-other", "certification:HDS").covers(&no_hds, &class));
        assert!(!waiver("fr-par", "country").covers(&no_hds, &class));
        assert!(!waiver("de-fra", "certification:HDS").covers(&de, &class));
        assert!(!waiver("de-fra", "country").covers(&de, &class));
        // A zone that satisfies the class needs no waiver.
        assert!(permits(&ok, &class, None));
    }
}
