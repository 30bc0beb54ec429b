//! The `run:` section of a job file (what each replica runs), read and validated into a [`RunSpec`].

use super::Validator;
use crate::run::{
    DEFAULT_GRACE_S, MAX_ARG_BYTES, MAX_ARGS, MAX_RESTARTS, MAX_WALLTIME_S, RestartPolicy, RunSpec, env_name_problem,
    parse_duration_s,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Restarts allowed with `on-failure` when `restart.max` is not given.
const DEFAULT_MAX_RESTARTS: u32 = 3;

/// The longest grace period any cluster may allow (`scheduling.max_grace` and a job's `grace`): one hour.
pub const MAX_GRACE_S: u64 = 3_600;

/// A duration as written: whole seconds or text (`90s`, `2h`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum RawDuration {
    Seconds(i64),
    Text(String),
}

impl RawDuration {
    /// The duration in seconds, or a problem on `field`.
    pub(crate) fn seconds(&self, v: &mut Validator, field: &str) -> Option<u64> {
        match self {
            RawDuration::Seconds(n) if *n < 0 => {
                v.problem(field, format!("{n} is negative; give a duration such as 90s, 30m or 2h"));
                None
            }
            RawDuration::Seconds(n) => Some(*n as u64),
            RawDuration::Text(t) => parse_duration_s(t).map_err(|e| v.problem(field, e)).ok(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: String,
    #[serde(default)]
    user: String,
    walltime: Option<RawDuration>,
    grace: Option<RawDuration>,
    #[serde(default)]
    restart: RawRestart,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    #[serde(default)]
    policy: RestartPolicy,
    max: Option<i64>,
}

fn bounded(v: &mut Validator, field: &str, s: &str) {
    if s.len() > MAX_ARG_BYTES {
        v.problem(field, format!("is {} bytes long; at most {MAX_ARG_BYTES} are allowed", s.len()));
    }
    if s.contains('\0') {
        v.problem(field, "contains a NUL byte, which no program can receive; remove it".into());
    }
}

impl RawRun {
    /// Validates the section; field paths start with `p` (e.g. `jobs[2].run.`).
    pub(crate) fn validate(self, v: &mut Validator, p: &str) -> RunSpec {
        v.nonempty(&format!("{p}command"), &self.command);
        bounded(v, &format!("{p}command"), &self.command);
        if self.args.len() > MAX_ARGS {
            v.problem(&format!("{p}args"), format!("has {} entries; at most {MAX_ARGS}", self.args.len()));
        }
        for (i, a) in self.args.iter().enumerate().take(MAX_ARGS) {
            bounded(v, &format!("{p}args[{i}]"), a);
        }
        if self.env.len() > MAX_ARGS {
            v.problem(&format!("{p}env"), format!("has {} entries; at most {MAX_ARGS}", self.env.len()));
        }
        for (k, val) in self.env.iter().take(MAX_ARGS) {
            if let Some(why) = env_name_problem(k) {
                v.problem(&format!("{p}env.{k}"), why);
            }
            bounded(v, &format!("{p}env.{k}"), val);
        }
        bounded(v, &format!("{p}workdir"), &self.workdir);
        if !self.workdir.is_empty() && !self.workdir.starts_with('/') {
            v.problem(&format!("{p}workdir"), format!("{:?} is relative; give an absolute path", self.workdir));
        }
        let user_ok = self.user.len() <= 32
            && self.user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
            && !self.user.starts_with('-');
        if !user_ok {
            v.problem(&format!("{p}user"), format!("{:?} is not a unix user name", self.user));
        }
        let walltime_s = self.walltime.as_ref().and_then(|w| w.seconds(v, &format!("{p}walltime")));
        match walltime_s {
            Some(0) => v.problem(
                &format!("{p}walltime"),
                "is 0, so the job could never run; give a positive duration (e.g. 2h) or remove it for no limit".into(),
            ),
            Some(w) if w > MAX_WALLTIME_S => {
                v.problem(&format!("{p}walltime"), format!("{w} s is over the limit of {MAX_WALLTIME_S} s (one year)"))
            }
            _ => {}
        }
        let grace_s = self.grace.as_ref().and_then(|g| g.seconds(v, &format!("{p}grace"))).unwrap_or(DEFAULT_GRACE_S);
        if grace_s > MAX_GRACE_S {
            v.problem(&format!("{p}grace"), format!("{grace_s} s is over the limit of {MAX_GRACE_S} s (one hour)"));
        }
        let max = match (self.restart.policy, self.restart.max) {
            (RestartPolicy::Never, Some(m)) if m != 0 => {
                v.problem(
                    &format!("{p}restart.max"),
                    format!("is {m} but the policy is never; set policy: on-failure or remove max"),
                );
                0
            }
            (RestartPolicy::Never, _) => 0,
            (RestartPolicy::OnFailure, None) => DEFAULT_MAX_RESTARTS,
            (RestartPolicy::OnFailure, Some(m)) if m < 1 || m > i64::from(MAX_RESTARTS) => {
                v.problem(&format!("{p}restart.max"), format!("{m} is out of range; use 1 to {MAX_RESTARTS}"));
                0
            }
            (RestartPolicy::OnFailure, Some(m)) => m as u32,
        };
        RunSpec {
            command: self.command,
            args: self.args,
            env: self.env,
            workdir: self.workdir,
            user: self.user,
            walltime_s,
            grace_s,
            restart: self.restart.policy,
            max_restarts: max,
        }
    }
}
