//! Zones, pools and residency classes, and the pure function that decides whether a zone satisfies a class.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// The ISO 3166 codes of the 27 EU member states. The word `EU` in a country list of a residency class
/// (`countries`, `operator_hq_in`) stands for all of them.
pub const EU_MEMBER_STATES: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU", "LV",
    "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// A place where data may live and be processed (docs/design.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// Unique identifier, e.g. `fr-par-secnum`.
    pub id: String,
    /// ISO 3166 alpha-2 country code of the datacenter, e.g. `FR`.
    pub country: String,
    /// Free-form region name, e.g. `Paris`.
    pub region: String,
    /// Legal jurisdiction of the datacenter, e.g. `EU`.
    pub jurisdiction: String,
    /// Name of the operator running the datacenter.
    pub operator: String,
    /// ISO 3166 code of the country of the operator's ultimate parent company. A `US` value means the zone is
    /// reachable by the US CLOUD Act / FISA 702, whatever country the datacenter is in.
    pub operator_hq: String,
    /// Certifications the zone holds, e.g. `SecNumCloud`, `HDS`, `C5`, `ISO27001` (none when omitted).
    #[serde(default)]
    pub certifications: BTreeSet<String>,
}

/// What a pool's nodes are for. A job's kind must equal its pool's purpose (docs/design.md invariant 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Training jobs.
    Training,
    /// Inference (serving) jobs.
    Inference,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Training => "training",
            Purpose::Inference => "inference",
        })
    }
}

/// GPU nodes in one zone with one purpose. A node belongs to exactly one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Unique identifier, e.g. `fr-par-train`.
    pub id: String,
    /// The zone the pool's nodes are in.
    pub zone: String,
    /// What the pool's nodes are for.
    pub purpose: Purpose,
}

/// A named residency requirement defined by an administrator; jobs and models refer to it by name.
///
/// Every constraint that is present must hold; an absent constraint allows anything. Country lists accept the word
/// `EU` for all member states ([`EU_MEMBER_STATES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyClass {
    /// Unique name, e.g. `eu-restricted`.
    pub name: String,
    /// What the class is for, shown to users.
    pub description: String,
    /// The zone's country must be one of these.
    pub countries: Option<Vec<String>>,
    /// The zone's jurisdiction must be one of these.
    pub jurisdictions: Option<Vec<String>>,
    /// The operator's headquarters country must be one of these (e.g. `[EU]`: no operator owned from outside the
    /// EU, so out of reach of the US CLOUD Act).
    pub operator_hq_in: Option<Vec<String>>,
    /// The zone must hold every one of these certifications.
    pub certifications: Vec<String>,
    /// The zone must be one of these (an explicit allow-list).
    pub zones: Option<Vec<String>>,
}

/// One reason why a zone fails a residency class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Violation {
    /// The constraint that failed: `country`, `jurisdiction`, `operator_hq`, `certification` or `zone`.
    pub constraint: String,
    /// The requirement that failed, as a placement exception names it: the constraint, and for a certification
    /// which one (`certification:HDS`).
    #[serde(default)]
    pub requirement: String,
    /// A readable sentence, e.g. `operator_hq US is not in [EU]`.
    pub message: String,
}

fn in_list(value: &str, list: &[String]) -> bool {
    list.iter().any(|item| item == value || (item == "EU" && EU_MEMBER_STATES.contains(&value)))
}

impl ResidencyClass {
    /// Every constraint of this class that `zone` fails, in a fixed order; empty when the zone satisfies it.
    pub fn violations(&self, zone: &Zone) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut fail = |constraint: &str, message: String| {
            let requirement = constraint.to_string();
            out.push(Violation { constraint: constraint.to_string(), requirement, message })
        };
        if let Some(zones) = &self.zones
            && !zones.contains(&zone.id)
        {
            fail("zone", format!("zone {} is not in [{}]", zone.id, zones.join(", ")));
        }
        if let Some(countries) = &self.countries
            && !in_list(&zone.country, countries)
        {
            fail("country", format!("country {} is not in [{}]", zone.country, countries.join(", ")));
        }
        if let Some(jurisdictions) = &self.jurisdictions
            && !jurisdictions.contains(&zone.jurisdiction)
        {
            fail(
                "jurisdiction",
                format!("jurisdiction {} is not in [{}]", zone.jurisdiction, jurisdictions.join(", ")),
            );
        }
        if let Some(hq) = &self.operator_hq_in
            && !in_list(&zone.operator_hq, hq)
        {
            fail(
                "operator_hq",
                format!(
                    "operator {} is headquartered in {}, not in [{}]",
                    zone.operator,
                    zone.operator_hq,
                    hq.join(", ")
                ),
            );
        }
        for cert in &self.certifications {
            if !zone.certifications.contains(cert) {
                out.push(Violation {
                    constraint: "certification".into(),
                    requirement: format!("certification:{cert}"),
                    message: format!("zone lacks certification {cert}"),
                });
            }
        }
        out
    }

    /// Whether `zone` satisfies this class. Allocation-free (it runs once per pool per placement); it agrees
    /// with [`ResidencyClass::violations`] being empty (tested).
    pub fn is_satisfied_by(&self, zone: &Zone) -> bool {
        self.zones.as_ref().is_none_or(|z| z.contains(&zone.id))
            && self.countries.as_ref().is_none_or(|c| in_list(&zone.country, c))
            && self.jurisdictions.as_ref().is_none_or(|j| j.contains(&zone.jurisdiction))
            && self.operator_hq_in.as_ref().is_none_or(|h| in_list(&zone.operator_hq, h))
            && self.certifications.iter().all(|c| zone.certifications.contains(c))
    }
}

/// Whether `zone` satisfies `class`: the pure function at the heart of docs/design.md invariant 1.
pub fn satisfies(zone: &Zone, class: &ResidencyClass) -> bool {
    class.is_satisfied_by(zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(country: &str, hq: &str, certs: &[&str]) -> Zone {
        Zone {
            id: format!("{}-{}", country.to_lowercase(), hq.to_lowercase()),
            country: country.into(),
            region: "r".into(),
            jurisdiction: if EU_MEMBER_STATES.contains(&country) { "EU".into() } else { country.into() },
            operator: "op".into(),
            operator_hq: hq.into(),
            certifications: certs.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn class(countries: Option<&[&str]>, hq: Option<&[&str]>, certs: &[&str]) -> ResidencyClass {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ResidencyClass {
            name: "c".into(),
            countries: countries.map(list),
            operator_hq_in: hq.map(list),
            certifications: list(certs),
            ..Default::default()
        }
    }

    #[test]
    fn table_of_zones_and_classes() {
        let eu_restricted =
            ResidencyClass { jurisdictions: Some(vec!["EU".into()]), ..class(None, Some(&["EU"]), &[]) };
        let fr_health = class(Some(&["FR"]), None, &["HDS", "SecNumCloud"]);
        let de_c5 = class(Some(&["DE"]), None, &["C5"]);
        let any = class(None, None, &[]);
        // (zone, class, satisfied?, failing constraints)
        let cases: Vec<(Zone, &ResidencyClass, Vec<&str>)> = vec![
            (zone("FR", "FR", &["SecNumCloud", "HDS"]), &fr_health, vec![]),
            (zone("FR", "FR", &["SecNumCloud"]), &fr_health, vec!["certification"]),
            (zone("DE", "DE", &["C5"]), &fr_health, vec!["country", "certification", "certification"]),
            (zone("DE", "US", &["C5"]), &eu_restricted, vec!["operator_hq"]),
            (zone("DE", "DE", &["C5"]), &eu_restricted, vec![]),
            (zone("CH", "CH", &[]), &eu_restricted, vec!["jurisdiction", "operator_hq"]),
            (zone("DE", "US", &["C5"]), &de_c5, vec![]),
            (zone("US", "US", &[]), &any, vec![]),
        ];
        for (z, c, want) in cases {
            let got: Vec<String> = c.violations(&z).into_iter().map(|v| v.constraint).collect();
            assert_eq!(got, want, "zone {z:?}");
            assert_eq!(satisfies(&z, c), want.is_empty());
            assert_eq!(c.is_satisfied_by(&z), c.violations(&z).is_empty());
        }
    }

    #[test]
    fn eu_keyword_expands_to_member_states_only() {
        let c = class(Some(&["EU"]), None, &[]);
        assert!(c.is_satisfied_by(&zone("IT", "IT", &[])));
        assert!(!c.is_satisfied_by(&zone("GB", "GB", &[])));
        assert!(!c.is_satisfied_by(&zone("NO", "NO", &[])));
    }

    #[test]
    fn zone_allow_list() {
        let mut c = class(None, None, &[]);
        c.zones = Some(vec!["fr-fr".into()]);
        assert!(c.is_satisfied_by(&zone("FR", "FR", &[])));
        let v = c.violations(&zone("DE", "DE", &[]));
        assert_eq!(v[0].message, "zone de-de is not in [fr-fr]");
    }
}
