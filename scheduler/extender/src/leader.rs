//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several extender replicas exactly one
//! binds (docs/kubernetes.md, "High availability").
//!
//! The algorithm is client-go's (the one kube-scheduler and kube-controller-manager use), written here against
//! kube-rs because kube-runtime 5 has no lease helper, and the one crate built on kube 5 (`kube-lease-manager`)
//! renews with server-side apply and strategic merge patches without a resourceVersion precondition and judges
//! expiry by comparing the holder's `renewTime` with the local wall clock, so clock skew between nodes shortens or
//! lengthens the lease. Here:
//! - every write is a `PUT` of the Lease carrying the `resourceVersion` that was read (or a `POST` when there is
//!   none), so two candidates can never both win: the API server answers the loser 409 Conflict;
//! - a candidate may take a lease held by someone else only after the lease record has stayed unchanged for
//!   `leaseDurationSeconds` **as measured by the candidate's own monotonic clock** since it saw the record change
//!   (no comparison of clocks across machines);
//! - the holder believes it leads only until `renew_deadline` after the start of its last successful write, and
//!   `renew_deadline < lease_duration`: it stops binding before any other replica can take over. A replica that
//!   cannot reach the API server therefore stops leading on its own (fail closed).
//!
//! Defaults are kube-scheduler's: lease 15 s, renew deadline 10 s, retry period 2 s.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Default `leaseDurationSeconds`, as kube-scheduler's.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default renew deadline, as kube-scheduler's.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default retry period, as kube-scheduler's.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Where the lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (`holderIdentity`): the pod name.
    pub identity: String,
    /// How long a lease stays valid after its last renewal (`leaseDurationSeconds`, whole seconds).
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal (less than the lease duration).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (less than the renew deadline).
    pub retry_period: Duration,
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseSettingsError {
    /// A required value is empty.
    #[error("{flag} is empty; {what}")]
    Empty {
        /// The flag.
        flag: &'static str,
        /// What to give.
        what: &'static str,
    },
    /// The durations are not ordered `retry period < renew deadline < lease duration`, or the lease is not whole
    /// seconds.
    #[error("{0}")]
    Durations(String),
}

impl LeaseSettings {
    /// Checks the settings: names and identity non-empty, the lease a whole number of seconds (at least 1), and
    /// `0 < retry period < renew deadline < lease duration`.
    pub fn validate(&self) -> Result<(), LeaseSettingsError> {
        let empty = |flag, what| Err(LeaseSettingsError::Empty { flag, what });
        if self.name.trim().is_empty() {
            return empty("--lease-name", "name the Lease the replicas share, e.g. sovra-extender");
        }
        if self.namespace.trim().is_empty() {
            return empty("--lease-namespace", "give the namespace of the Lease, e.g. sovra-system");
        }
        if self.identity.trim().is_empty() {
            return empty("--lease-identity", "set POD_NAME from the downward API, or give --lease-identity");
        }
        let d = &self.lease_duration;
        if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > i32::MAX as u64 {
            return Err(LeaseSettingsError::Durations(format!(
                "--lease-duration {d:?}: a Lease's duration is a whole number of seconds, at least 1s"
            )));
        }
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(LeaseSettingsError::Durations(format!(
                "--retry-period {:?} < --renew-deadline {:?} < --lease-duration {:?} must hold (and the retry period \
                 must be above zero); the defaults are 2s, 10s and 15s",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        Ok(())
    }
}

/// Parses a duration flag: a whole number with a unit, `ms`, `s` or `m` (`500ms`, `15s`, `1m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} is not a duration; write e.g. 500ms, 15s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long")),
        _ => Err(format!("{text:?}: the unit is ms, s or m (e.g. 500ms, 15s, 1m)")),
    }
}

#[derive(Debug, Default)]
struct State {
    /// Whether the last write made this replica the holder; it leads only while `valid_until` is ahead.
    holding: bool,
    valid_until: Option<Instant>,
    /// The holder last seen on the Lease.
    holder: Option<String>,
    /// The record last seen (`resourceVersion`) and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

/// Whether this replica leads, shared with the extender. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Leadership {
    settings: Arc<LeaseSettings>,
    state: Arc<Mutex<State>>,
}

impl Leadership {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while this replica holds the lease and its last successful renewal started less than the renew
    /// deadline ago. False when it cannot tell (never renewed, or renewals failing).
    pub fn is_leader(&self) -> bool {
        let s = self.state();
        s.holding && s.valid_until.is_some_and(|v| Instant::now() < v)
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// The holder last seen on the Lease (possibly this replica).
    pub fn holder(&self) -> Option<String> {
        self.state().holder.clone()
    }

    /// The refusal a follower answers to a bind.
    pub fn not_leader(&self) -> String {
        let s = &self.settings;
        let holder = match self.holder() {
            Some(h) if h != s.identity => format!("the leader is {h}"),
            Some(_) => "this replica's lease has not been renewed within the renew deadline".to_string(),
            None => "no leader is known yet".to_string(),
        };
        format!(
            "sovra-extender {} is not the leader of Lease {}/{} ({holder}); only the leader binds, kube-scheduler \
             retries the pod",
            s.identity, s.namespace, s.name
        )
    }
}

/// What one attempt to acquire or renew found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease (acquired or renewed).
    Leading,
    /// Another replica holds a lease that has not expired by this replica's clock.
    Following(String),
    /// Another replica wrote first (409 Conflict).
    Conflict,
}

/// An error talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
#[error("Lease {namespace}/{name}: {source}")]
pub struct LeaseError {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Runs the election for one replica (see the module documentation).
pub struct Elector {
    api: Api<Lease>,
    leadership: Leadership,
}

/// Writes name the field manager `sovra-extender` (the Lease's managedFields say who holds it).
fn params() -> PostParams {
    PostParams { field_manager: Some("sovra-extender".into()), ..Default::default() }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// An elector for `settings` (checked) and the [`Leadership`] handle it keeps up to date.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Result<(Elector, Leadership), LeaseSettingsError> {
        settings.validate()?;
        let api = Api::namespaced(client, &settings.namespace);
        let leadership = Leadership { settings: Arc::new(settings), state: Arc::default() };
        Ok((Elector { api, leadership: leadership.clone() }, leadership))
    }

    fn err(&self, source: kube::Error) -> LeaseError {
        let s = &self.leadership.settings;
        LeaseError { namespace: s.namespace.clone(), name: s.name.clone(), source }
    }

    /// One attempt to acquire or renew the lease.
    pub async fn try_once(&self) -> Result<Attempt, LeaseError> {
        let s = self.leadership.settings.clone();
        let started = Instant::now();
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_secs = s.lease_duration.as_secs() as i32;
        let current = self.api.get_opt(&s.name).await.map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&params(), &lease).await {
                Ok(created) => Ok(self.won(started, &created)),
                Err(e) if is_conflict(&e) => Ok(self.lost(None)),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let first_seen = {
            let mut st = self.leadership.state();
            st.holder = holder.clone();
            match &st.observed {
                Some((v, at)) if *v == version => *at,
                _ => {
                    st.observed = Some((version, started));
                    started
                }
            }
        };
        if let Some(h) = holder.as_ref().filter(|h| **h != s.identity) {
            let held_for =
                spec.lease_duration_seconds.map_or(s.lease_duration, |d| Duration::from_secs(d.max(0) as u64));
            if started < first_seen + held_for {
                let mut st = self.leadership.state();
                st.holding = false;
                return Ok(Attempt::Following(h.clone()));
            }
        }
        let ours = holder.as_deref() == Some(s.identity.as_str());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if ours { spec.acquire_time.clone().or(Some(now.clone())) } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        });
        // The read resourceVersion stays in the metadata: the API server refuses the write with 409 if the Lease
        // changed since.
        match self.api.replace(&s.name, &params(), &lease).await {
            Ok(written) => Ok(self.won(started, &written)),
            Err(e) if is_conflict(&e) => Ok(self.lost(holder)),
            Err(e) => Err(self.err(e)),
        }
    }

    fn won(&self, started: Instant, written: &Lease) -> Attempt {
        let mut st = self.leadership.state();
        let s = &self.leadership.settings;
        if !st.holding {
            tracing::info!(identity = %s.identity, lease = %format!("{}/{}", s.namespace, s.name), "became the leader");
        }
        st.holding = true;
        st.valid_until = Some(started + s.renew_deadline);
        st.holder = Some(s.identity.clone());
        st.observed = written.metadata.resource_version.clone().map(|v| (v, started));
        Attempt::Leading
    }

    fn lost(&self, holder: Option<String>) -> Attempt {
        let mut st = self.leadership.state();
        st.holding = false;
        st.holder = holder;
        Attempt::Conflict
    }

    /// Tries every retry period, forever. Errors are logged; a leader whose renewals keep failing stops leading
    /// at its renew deadline without being told.
    pub async fn run(&self) {
        let period = self.leadership.settings.retry_period;
        let mut was = false;
        loop {
            match self.try_once().await {
                Ok(a) => tracing::debug!(attempt = ?a, "lease"),
                Err(e) => tracing::warn!(error = %e, "lease: cannot acquire or renew (retrying)"),
            }
            let now = self.leadership.is_leader();
            if was && !now {
                tracing::warn!(identity = %self.leadership.identity(), "lost the leadership");
            }
            was = now;
            tokio::time::sleep(period).await;
        }
    }

    /// Gives the lease up (on shutdown) so that another replica takes over at once: stops leading first, then
    /// clears `holderIdentity` if this replica still holds it (with its resourceVersion; a conflict means it did
    /// not).
    pub async fn release(&self) -> Result<(), LeaseError> {
        let s = self.leadership.settings.clone();
        self.leadership.state().holding = false;
        let Some(mut lease) = self.api.get_opt(&s.name).await.map_err(|e| self.err(e))? else { return Ok(()) };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        lease.spec = Some(spec);
        match self.api.replace(&s.name, &params(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "sovra-system".into(),
            name: "sovra-extender".into(),
            identity: "a".into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    #[test]
    fn settings_are_checked_naming_the_flag() {
        assert_eq!(settings().validate(), Ok(()));
        let bad = |f: fn(&mut LeaseSettings), want: &str| {
            let mut s = settings();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(|s| s.identity = " ".into(), "--lease-identity is empty; set POD_NAME");
        bad(|s| s.name.clear(), "--lease-name");
        bad(|s| s.namespace.clear(), "--lease-namespace");
        bad(|s| s.lease_duration = Duration::from_millis(1500), "whole number of seconds");
        bad(|s| s.renew_deadline = Duration::from_secs(15), "--renew-deadline");
        bad(|s| s.retry_period = Duration::from_secs(10), "--retry-period");
        bad(|s| s.retry_period = Duration::ZERO, "above zero");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("15").unwrap_err().contains("the unit is ms, s or m"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("1h").unwrap_err().contains("the unit is"));
    }
}
