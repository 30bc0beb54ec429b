//! The promotion configuration (YAML): which zones hold each stage's data zones, the keys of signers, approvers,
//! admins and the promotion service, approval counts, evaluation thresholds and where the policies are.
//! Paths in the file are relative to the file. See docs/registry.md for the format.

use sovra_domain::datazone::Stage;
use sovra_oms::keys::{PublicKey, SigningKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A named public key.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    /// Who it is.
    pub name: String,
    /// PEM public key file.
    pub key: PathBuf,
}

/// Zones of each stage.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// Zones where models are trained and pushed; also the permitted training zones unless `training_zones` says
    /// otherwise.
    pub training: Vec<String>,
    /// Zones of the curated registry.
    pub registry: Vec<String>,
    /// Zones that serve inference.
    pub inference: Vec<String>,
}

impl Stages {
    /// The zones of a stage.
    pub fn zones(&self, stage: Stage) -> &[String] {
        match stage {
            Stage::Training => &self.training,
            Stage::Registry => &self.registry,
            Stage::Inference => &self.inference,
        }
    }
}

/// A threshold on one evaluation metric.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The metric must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The metric must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Approval rules.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRules {
    /// Approvals needed to enter the registry stage.
    #[serde(default)]
    pub registry: usize,
    /// Approvals needed to enter the inference stage (N of the M approvers).
    #[serde(default)]
    pub inference: usize,
    /// Longest validity an approval may carry, e.g. `7d` (default 7 days).
    #[serde(default = "default_max_age")]
    pub max_age: String,
}

fn default_max_age() -> String {
    "7d".into()
}

impl Default for ApprovalRules {
    fn default() -> Self {
        ApprovalRules { registry: 0, inference: 0, max_age: default_max_age() }
    }
}

/// Break-glass exception rules.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRules {
    /// Longest time an exception may last, e.g. `24h` (default 24 hours); a longer `--ttl` is refused.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: String,
}

fn default_max_ttl() -> String {
    "24h".into()
}

impl Default for ExceptionRules {
    fn default() -> Self {
        ExceptionRules { max_ttl: default_max_ttl() }
    }
}

/// How training provenance is proven (gate `training_zone`, docs/receipts.md).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvenance {
    #[serde(default = "yes")]
    require_receipts: bool,
    #[serde(default)]
    scheduler_keys: Vec<NamedKey>,
}

fn yes() -> bool {
    true
}

impl Default for RawProvenance {
    fn default() -> Self {
        RawProvenance { require_receipts: true, scheduler_keys: Vec::new() }
    }
}

/// The file as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: Option<PathBuf>,
    stages: Stages,
    #[serde(default)]
    training_zones: Option<Vec<String>>,
    #[serde(default)]
    signers: Vec<NamedKey>,
    #[serde(default)]
    approvers: Vec<NamedKey>,
    #[serde(default)]
    admins: Vec<NamedKey>,
    #[serde(default)]
    service_public_key: Option<PathBuf>,
    #[serde(default)]
    service_key: Option<PathBuf>,
    #[serde(default)]
    service: Option<crate::service_config::ServiceSection>,
    #[serde(default)]
    approvals: ApprovalRules,
    #[serde(default)]
    exceptions: ExceptionRules,
    #[serde(default)]
    evaluation: BTreeMap<String, Threshold>,
    #[serde(default)]
    policies: Option<PathBuf>,
    #[serde(default)]
    stores: sovra_registry::Stores,
    #[serde(default)]
    provenance: RawProvenance,
}

/// A loaded key with its name and hint.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Who.
    pub name: String,
    /// The key.
    pub key: PublicKey,
    /// Its hint.
    pub hint: String,
}

/// The loaded configuration, with every key read.
#[derive(Debug)]
pub struct PromotionConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The cluster file, if the config names one (else the caller's default).
    pub cluster: Option<PathBuf>,
    /// Zones per stage.
    pub stages: Stages,
    /// Permitted training zones.
    pub training_zones: Vec<String>,
    /// Allowed model signers.
    pub signers: Vec<Identity>,
    /// Approvers (M).
    pub approvers: Vec<Identity>,
    /// Admins who may grant exceptions.
    pub admins: Vec<Identity>,
    /// The promotion service's public key: verifies promotion statements (`service_public_key`, or derived from
    /// `service_key` when only that is given).
    pub service_public_key: PublicKey,
    /// Where the promotion service's private key is (`service_key`), read only when a statement is signed
    /// ([`PromotionConfig::service_signer`]).
    pub service_key_path: Option<PathBuf>,
    /// The `service:` section: how `sovra-promotion serve` listens and who its clients are.
    pub service: Option<crate::service_config::ServiceSection>,
    /// Approval rules.
    pub approvals: ApprovalRules,
    /// Longest approval validity, seconds.
    pub approval_max_age: u64,
    /// Exception rules.
    pub exceptions: ExceptionRules,
    /// Longest exception validity, seconds.
    pub exception_max_ttl: u64,
    /// Evaluation thresholds.
    pub evaluation: BTreeMap<String, Threshold>,
    /// A directory of `.rego` files that override or add to the built-in policies.
    pub policies: Option<PathBuf>,
    /// The store and key of each zone (`zone` or `zone/stage` → store), paths resolved; zones without an entry
    /// keep the registry's local default (see `sovra_registry::stores`).
    pub stores: sovra_registry::Stores,
    /// `provenance.require_receipts` (default true): the `training_zone` gate takes only placement receipts
    /// signed by a scheduler key; `false` also accepts a self-declared `training_zone` (work trained outside
    /// Sovra), which the gate's result then says.
    pub require_receipts: bool,
    /// `provenance.scheduler_keys`: the keys whose receipts prove where a training job ran.
    pub scheduler_keys: Vec<Identity>,
}

/// The longest duration [`parse_duration`] accepts: 3650 days (about ten years). Every validity in the
/// promotion config and on the command line is far shorter; the bound keeps `now + duration` far from overflow.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// Parses `30s`, `15m`, `2h`, `7d` (or plain seconds) into seconds; at most [`MAX_DURATION_SECS`].
///
/// Hand-written on purpose: a four-unit grammar with no calendar math (a day is 86,400 s), whose errors name the
/// value and the units allowed. jiff's friendly duration parser (used for formatting times elsewhere) accepts a far
/// larger language (`1 hour 2 mins`, fractions, negatives), which a signed validity bound should not.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let too_long = || format!("`{s}` is longer than the limit of 3650d (about ten years)");
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) if !num.is_empty() => return Err(too_long()),
        Err(_) => return Err(format!("`{s}` is not a duration; write e.g. 30m, 2h or 7d")),
    };
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; use s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("`{s}`: a duration must be positive"));
    }
    n.checked_mul(mult).filter(|&secs| secs <= MAX_DURATION_SECS).ok_or_else(too_long)
}

impl PromotionConfig {
    /// Loads a promotion config file and every key it names. Errors name the file and field.
    pub fn load(path: &Path) -> Result<PromotionConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the promotion config: {e}", path.display()))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            format!("{}: field `{field}`: {}", path.display(), e.into_inner())
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let ids = |list: &[NamedKey], field: &str| -> Result<Vec<Identity>, String> {
            let mut out: Vec<Identity> = Vec::new();
            for (i, k) in list.iter().enumerate() {
                let key = PublicKey::from_pem_file(&at(&k.key))
                    .map_err(|e| format!("{}: field `{field}[{i}].key`: {e}", path.display()))?;
                let hint = key.hint();
                if out.iter().any(|o| o.name == k.name || o.hint == hint) {
                    return Err(format!(
                        "{}: field `{field}[{i}]`: `{}` repeats a name or key of {field}; each must be distinct",
                        path.display(),
                        k.name
                    ));
                }
                out.push(Identity { name: k.name.clone(), key, hint });
            }
            Ok(out)
        };
        let service_key_path = raw.service_key.as_deref().map(|k| sovra_oms::keyuri::resolve_name(&base, k));
        let service_public_key = match (&raw.service_public_key, &service_key_path) {
            (Some(p), _) => PublicKey::from_pem_file(&at(p))
                .map_err(|e| format!("{}: field `service_public_key`: {e}", path.display()))?,
            // Older configs name only the private key: the public key is derived from it (so every command
            // reads it, as before). Give `service_public_key` so that only `promote` needs the private key.
            (None, Some(k)) => SigningKey::open(k)
                .map_err(|e| format!("{}: field `service_key`: {e}", path.display()))?
                .public_key()
                .clone(),
            (None, None) => {
                return Err(format!(
                    "{}: field `service_public_key`: missing; give the promotion service's public key (PEM) that \
                     verifies promotion statements (and `service_key`, its private key, where statements are signed)",
                    path.display()
                ));
            }
        };
        let service = match raw.service.clone() {
            Some(s) => Some(s.resolve(&base).map_err(|e| format!("{}: field `service.{e}", path.display()))?),
            None => None,
        };
        let approval_max_age = parse_duration(&raw.approvals.max_age)
            .map_err(|e| format!("{}: field `approvals.max_age`: {e}", path.display()))?;
        let exception_max_ttl = parse_duration(&raw.exceptions.max_ttl)
            .map_err(|e| format!("{}: field `exceptions.max_ttl`: {e}", path.display()))?;
        let approvers = ids(&raw.approvers, "approvers")?;
        for (stage, n) in [("registry", raw.approvals.registry), ("inference", raw.approvals.inference)] {
            if n > approvers.len() {
                return Err(format!(
                    "{}: field `approvals.{stage}`: {n} approvals required but only {} approvers configured",
                    path.display(),
                    approvers.len()
                ));
            }
        }
        for stage in Stage::ALL {
            if raw.stages.zones(stage).is_empty() {
                return Err(format!("{}: field `stages.{stage}`: list at least one zone", path.display()));
            }
        }
        for (name, t) in &raw.evaluation {
            if t.min.is_none() && t.max.is_none() {
                return Err(format!("{}: field `evaluation.{name}`: give `min`, `max` or both", path.display()));
            }
        }
        let stores: sovra_registry::Stores = raw.stores.iter().map(|(k, v)| (k.clone(), v.resolved(&base))).collect();
        sovra_registry::stores::validate(&stores).map_err(|e| format!("{}: field `stores`: {e}", path.display()))?;
        Ok(PromotionConfig {
            stores,
            path: path.to_path_buf(),
            cluster: raw.cluster.as_deref().map(at),
            training_zones: raw.training_zones.clone().unwrap_or_else(|| raw.stages.training.clone()),
            stages: raw.stages,
            signers: ids(&raw.signers, "signers")?,
            approvers,
            admins: ids(&raw.admins, "admins")?,
            service_public_key,
            service_key_path,
            service,
            approvals: raw.approvals,
            approval_max_age,
            exceptions: raw.exceptions,
            exception_max_ttl,
            evaluation: raw.evaluation,
            policies: raw.policies.as_deref().map(at),
            require_receipts: raw.provenance.require_receipts,
            scheduler_keys: ids(&raw.provenance.scheduler_keys, "provenance.scheduler_keys")?,
        })
    }

    /// The promotion service's private key, read now from `service_key`: only signing a promotion statement needs
    /// it. Errors name the field; a key that does not match `service_public_key` is refused (statements it signed
    /// would not verify).
    pub fn service_signer(&self) -> Result<SigningKey, String> {
        let Some(p) = &self.service_key_path else {
            return Err(format!(
                "{}: field `service_key`: not set; only the promotion service signs promotion statements — give its \
                 private key here, or promote through the service (`--server`)",
                self.path.display()
            ));
        };
        let key = SigningKey::open(p).map_err(|e| format!("{}: field `service_key`: {e}", self.path.display()))?;
        if key.public_key().hint() != self.service_public_key.hint() {
            return Err(format!(
                "{}: field `service_key`: {} is not the private key of `service_public_key` (hints {} and {})",
                self.path.display(),
                p.display(),
                key.public_key().hint(),
                self.service_public_key.hint()
            ));
        }
        Ok(key)
    }

    /// Approvals required to enter `stage`.
    pub fn required_approvals(&self, stage: Stage) -> usize {
        match stage {
            Stage::Training => 0,
            Stage::Registry => self.approvals.registry,
            Stage::Inference => self.approvals.inference,
        }
    }

    /// Checks that every zone the config names exists in the cluster.
    pub fn check_zones(&self, cluster: &sovra_domain::ClusterConfig) -> Result<(), String> {
        for stage in Stage::ALL {
            for z in self.stages.zones(stage) {
                if cluster.zone(z).is_none() {
                    return Err(format!(
                        "{}: field `stages.{stage}`: zone `{z}` is not in the cluster config (zones: {})",
                        self.path.display(),
                        cluster.zones.iter().map(|z| z.id.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        for z in &self.training_zones {
            if cluster.zone(z).is_none() {
                return Err(format!(
                    "{}: field `training_zones`: zone `{z}` is not in the cluster config",
                    self.path.display()
                ));
            }
        }
        Ok(())
    }
}
