//! A model version an inference job serves (`model: radiology@3f9c2a1b` in a job file), and where versions are
//! available for inference: the fact the placement core's model filter reads (docs/receipts.md, "Model-aware
//! placement").
//!
//! A reference names the model and a digest prefix of at least [`MIN_DIGEST_PREFIX`] hex digits: an alias such as
//! `latest` could change under a running job, so placement binds to one version.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The shortest digest prefix a reference may give.
pub const MIN_DIGEST_PREFIX: usize = 8;

/// `name@digest-prefix`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    /// The model's name in the registry.
    pub name: String,
    /// A prefix of its version's SHA-256 digest, lowercase hex.
    pub digest: String,
}

impl TryFrom<String> for ModelRef {
    type Error = String;

    fn try_from(s: String) -> Result<ModelRef, String> {
        s.parse()
    }
}

impl From<ModelRef> for String {
    fn from(r: ModelRef) -> String {
        r.to_string()
    }
}

impl std::str::FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<ModelRef, String> {
        let Some((name, digest)) = s.split_once('@') else {
            return Err(format!(
                "`{s}` names no version; write NAME@DIGEST with at least {MIN_DIGEST_PREFIX} hex digits of the \
                 version's digest (`sovra model list` shows them)"
            ));
        };
        crate::datazone::check_name("model name", name).map_err(|e| e.to_string())?;
        let digest = digest.strip_prefix("sha256:").unwrap_or(digest);
        if digest.len() < MIN_DIGEST_PREFIX || digest.len() > 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "`{s}`: the digest must be {MIN_DIGEST_PREFIX} to 64 hex digits of the version's SHA-256 digest"
            ));
        }
        Ok(ModelRef { name: name.to_string(), digest: digest.to_ascii_lowercase() })
    }
}

/// The `model:` of a job of `kind`: a valid reference, on an inference job.
pub(crate) fn for_job(kind: crate::Purpose, text: &str) -> Result<ModelRef, String> {
    if kind != crate::Purpose::Inference {
        return Err(
            "only inference jobs name a model to serve; remove `model:` or make the job `kind: inference`".into()
        );
    }
    text.parse()
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.digest)
    }
}

/// Where model versions are available for inference: for each model, each version's full digest and the zones
/// whose inference data zone holds it (promoted there, not withdrawn). Fed to the placement core by whoever knows
/// (the scheduler, from the promotion service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAvailability {
    /// Why the availability cannot be had now (the promotion service is unreachable, none is configured): every
    /// model-bound job is then held — fail closed. `None` when `models` is current.
    pub unavailable: Option<String>,
    /// Model name → version digest → zones.
    pub models: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// What a reference resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// One version, with the zones holding it for inference (possibly none).
    Version {
        /// Its full digest.
        digest: &'a str,
        /// Zones whose inference data zone holds it.
        zones: &'a BTreeSet<String>,
    },
    /// No fact can be had: why.
    Unavailable(&'a str),
    /// No version of the model has this digest prefix.
    NoVersion,
    /// Several versions share the prefix.
    Ambiguous(usize),
}

impl ModelAvailability {
    /// Resolves a reference.
    pub fn resolve(&self, r: &ModelRef) -> Resolved<'_> {
        if let Some(why) = &self.unavailable {
            return Resolved::Unavailable(why);
        }
        let Some(versions) = self.models.get(&r.name) else { return Resolved::NoVersion };
        let mut hits = versions.range(r.digest.clone()..).take_while(|(d, _)| d.starts_with(&r.digest));
        match (hits.next(), hits.count()) {
            (None, _) => Resolved::NoVersion,
            (Some((digest, zones)), 0) => Resolved::Version { digest, zones },
            (Some(_), more) => Resolved::Ambiguous(more + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_resolve() {
        let r: ModelRef = "radiology@3F9C2A1B".parse().unwrap();
        assert_eq!(r.to_string(), "radiology@3f9c2a1b");
        assert!("radiology".parse::<ModelRef>().unwrap_err().contains("names no version"));
        assert!("radiology@3f9c".parse::<ModelRef>().unwrap_err().contains("8 to 64 hex digits"));
        assert!("../x@3f9c2a1b".parse::<ModelRef>().is_err());
        let mut a = ModelAvailability::default();
        let zones: BTreeSet<String> = ["de-fra-c5".to_string()].into();
        a.models.entry("radiology".into()).or_default().insert("3f9c2a1b00".into(), zones.clone());
        a.models.entry("radiology".into()).or_default().insert("3f9c2a1b11".into(), BTreeSet::new());
        a.models.entry("radiology".into()).or_default().insert("aaaa0000".into(), BTreeSet::new());
        assert_eq!(a.resolve(&"radiology@3f9c2a1b".parse().unwrap()), Resolved::Ambiguous(2));
        let one = a.resolve(&"radiology@3f9c2a1b0".parse().unwrap());
        assert_eq!(one, Resolved::Version { digest: "3f9c2a1b00", zones: &zones });
        assert_eq!(a.resolve(&"radiology@bbbbbbbb".parse().unwrap()), Resolved::NoVersion);
        assert_eq!(a.resolve(&"other@3f9c2a1b".parse().unwrap()), Resolved::NoVersion);
        a.unavailable = Some("down".into());
        assert_eq!(a.resolve(&"radiology@3f9c2a1b0".parse().unwrap()), Resolved::Unavailable("down"));
    }
}
