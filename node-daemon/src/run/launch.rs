//! From an assignment to what the shim starts: the user to run as (and whether this daemon may), and the whole
//! environment of the process.

use super::RunnerConfig;
use super::files::{Launch, Work};
use std::path::Path;

/// The `PATH` of a replica whose `env` does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The user a replica runs as: uid, gid, name, home.
struct RunAs {
    uid: Option<u32>,
    gid: Option<u32>,
    name: String,
    home: String,
}

/// Resolves the user `run.user` names on this node, as the daemon's rules allow.
fn run_as(cfg: &RunnerConfig, wanted: &str) -> Result<RunAs, String> {
    let me = nix::unistd::geteuid();
    let lookup = |name: &str| -> Result<nix::unistd::User, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(format!("user {name:?} does not exist on node {}", cfg.node)),
            Err(e) => Err(format!("cannot look up user {name:?} on node {}: {e}", cfg.node)),
        }
    };
    if !me.is_root() {
        let own = nix::unistd::User::from_uid(me).ok().flatten();
        let own_name = own.as_ref().map_or_else(|| me.to_string(), |u| u.name.clone());
        if !wanted.is_empty() && wanted != own_name {
            lookup(wanted)?;
            return Err(format!(
                "run.user {wanted:?}: the daemon on node {} runs as {own_name:?} and can start processes only as \
                 itself; run it as root to run jobs as other users",
                cfg.node
            ));
        }
        return Ok(RunAs {
            uid: None,
            gid: None,
            home: own.map_or_else(|| "/".into(), |u| u.dir.display().to_string()),
            name: own_name,
        });
    }
    let name = if wanted.is_empty() { cfg.default_user.as_str() } else { wanted };
    let u = lookup(name)?;
    if u.uid.is_root() && !cfg.allow_root {
        return Err(format!(
            "user {name:?} is root, and the daemon on node {} does not run jobs as root (set allow_root: true in \
             its config to allow it)",
            cfg.node
        ));
    }
    Ok(RunAs { uid: Some(u.uid.as_raw()), gid: Some(u.gid.as_raw()), name: u.name, home: u.dir.display().to_string() })
}

/// What the shim must start for `work` in directory `dir` (with the cgroup, if any); an error is why the replica
/// cannot start on this node.
pub fn launch(cfg: &RunnerConfig, work: &Work, dir: &Path, restarts: u32) -> Result<Launch, String> {
    let who = run_as(cfg, &work.run.user)?;
    if let Some(d) = work.devices.iter().find(|d| d.uuid.trim().is_empty()) {
        return Err(format!(
            "GPU {} has no UUID known to the scheduler (a node its daemon never reported?); the job cannot be given \
             exactly its devices",
            d.gpu
        ));
    }
    // The replica's directory (its state files, read back by the daemon as root) stays the daemon's; the job
    // gets a `work` directory of its own in it, its working directory unless `run.workdir` names another.
    let own = dir.join("work");
    std::fs::create_dir_all(&own).map_err(|e| format!("cannot create {}: {e}", own.display()))?;
    if let (Some(uid), Some(gid)) = (who.uid, who.gid) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("cannot open {} to {}: {e}", dir.display(), who.name))?;
        nix::unistd::chown(&own, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| format!("cannot give {} to {}: {e}", own.display(), who.name))?;
    }
    let uuids: Vec<&str> = work.devices.iter().map(|d| d.uuid.as_str()).collect();
    let visible = uuids.join(",");
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), who.home),
        ("USER".into(), who.name.clone()),
        ("LOGNAME".into(), who.name),
    ];
    for (k, v) in &work.run.env {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    let sovra = [
        // No GPUs: CUDA sees none (an empty list), and container runtimes mount none.
        ("CUDA_VISIBLE_DEVICES", visible.clone()),
        ("NVIDIA_VISIBLE_DEVICES", if uuids.is_empty() { "void".into() } else { visible }),
        ("SOVRA_JOB_ID", work.job.to_string()),
        ("SOVRA_JOB_NAME", work.job_name.clone()),
        ("SOVRA_REPLICA", work.replica.to_string()),
        ("SOVRA_REPLICAS", work.replicas.to_string()),
        ("SOVRA_ATTEMPT", work.attempt.to_string()),
        ("SOVRA_RESTARTS", restarts.to_string()),
        ("SOVRA_NODE", cfg.node.clone()),
        ("MASTER_ADDR", work.master_addr.clone()),
        ("MASTER_PORT", work.master_port.to_string()),
        ("WORLD_SIZE", work.replicas.to_string()),
        ("RANK", work.replica.to_string()),
        // One process per replica: its local rank counts the gang's replicas before it on this node.
        ("LOCAL_RANK", work.peers.iter().take(work.replica as usize).filter(|n| **n == cfg.node).count().to_string()),
        ("LOCAL_WORLD_SIZE", work.peers.iter().filter(|n| **n == cfg.node).count().max(1).to_string()),
    ];
    env.extend(sovra.into_iter().map(|(k, v)| (k.to_string(), v)));
    let workdir = if work.run.workdir.is_empty() { own } else { work.run.workdir.clone().into() };
    Ok(Launch {
        program: work.run.command.clone(),
        args: work.run.args.clone(),
        env,
        workdir,
        uid: who.uid,
        gid: who.gid,
        cgroup: None,
        log_max_bytes: cfg.log_max_bytes,
        log_keep: cfg.log_keep,
    })
}
