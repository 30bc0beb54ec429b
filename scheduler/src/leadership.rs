//! Leader election with fencing on etcd (docs/etcd.md): scheduler replicas over one etcd store campaign for one
//! key under a lease; the winner serves, the others wait.
//!
//! - **Campaign.** A replica grants itself a lease of `--lease-ttl-ms` and creates `PREFIX/leader` (its address
//!   as the value) under it, in a transaction conditioned on the key not existing. The create revision of that
//!   key is the replica's [`Fence`]: every commit of its store is conditioned on it
//!   ([`crate::store::EtcdStore::set_fence`]).
//! - **Standby.** A replica that lost the campaign retries every [`RETRY`]; the key disappears when the leader's
//!   lease expires (it stopped renewing: killed, paused, partitioned), and the first standby to retry wins. The
//!   winner re-reads the store before it builds its engine, so it starts from every acknowledged batch.
//! - **Step down.** The leader renews its lease every third of the TTL. When a renewal fails or comes back expired
//!   (etcd already gave the key to another replica, e.g. after this process was paused), it has lost: it tries
//!   one fenced write (a step-down event), which etcd refuses — logged — and the process exits with code 3, to be
//!   restarted as a standby.

use crate::store::{Batch, EtcdStore, Fence, Store};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::time::{Duration, Instant};

/// How often a standby retries the campaign.
pub const RETRY: Duration = Duration::from_millis(200);

/// The default lease TTL, milliseconds (`--lease-ttl-ms`).
pub const DEFAULT_TTL_MS: u64 = 3000;

/// The exit code of a replica that lost its leadership.
pub const STEPPED_DOWN: i32 = 3;

/// The leadership this replica won.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The fence its writes carry.
    pub fence: Fence,
    /// The etcd lease.
    pub lease: i64,
    /// The lease's TTL in whole seconds (etcd's unit).
    pub ttl_s: i64,
}

/// The leadership key under the store's prefix.
pub fn key(store: &EtcdStore) -> String {
    format!("{}leader", store.prefix())
}

/// The address of the current leader, if any.
pub fn leader(store: &EtcdStore) -> Option<String> {
    let mut c = store.client();
    let k = key(store);
    let r = store.run(async move { c.get(k, None).await }).ok()?.ok()?;
    r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Campaigns until this replica leads: returns its leadership. `me` is the address clients reach it on.
pub async fn campaign(store: &EtcdStore, me: &str, ttl: Duration) -> Result<Leadership, String> {
    let ttl_s = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX).max(1);
    let k = key(store);
    let mut announced: Option<String> = None;
    loop {
        let (mut c, key, value) = (store.client(), k.clone(), me.to_string());
        let tried = store
            .run(async move {
                let lease = c.lease_grant(ttl_s, None).await?.id();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease)))])
                    .or_else([TxnOp::get(key, None)]);
                let r = c.txn(txn).await?;
                if r.succeeded() {
                    return Ok::<_, etcd_client::Error>(Ok((lease, r.header().map(|h| h.revision()).unwrap_or(0))));
                }
                let _ = c.lease_revoke(lease).await;
                let holder = r.op_responses().into_iter().find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(g) => {
                        g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    }
                    _ => None,
                });
                Ok(Err(holder.unwrap_or_default()))
            })
            .map_err(|e| e.to_string())?;
        match tried {
            Ok(Ok((lease, rev))) => {
                let fence = Fence { key: k.clone(), create_revision: rev };
                store.set_fence(Some(fence.clone()));
                store.refresh().map_err(|e| format!("after winning the leadership: {e}"))?;
                tracing::info!(me, revision = rev, ttl_s, "leader: this replica won the leadership");
                return Ok(Leadership { fence, lease, ttl_s });
            }
            Ok(Err(holder)) => {
                if announced.as_deref() != Some(holder.as_str()) {
                    tracing::info!(leader = %holder, "standby: {holder} leads; waiting for its lease to expire");
                    announced = Some(holder);
                }
            }
            Err(e) => tracing::warn!(error = %e, "standby: campaign failed (etcd); retrying"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Keeps the lease alive for as long as this replica leads; returns (after logging why) when it lost the
/// leadership: a renewal came back expired, or no renewal succeeded within the TTL.
pub async fn hold(store: &EtcdStore, l: &Leadership) -> String {
    let every = Duration::from_millis(u64::try_from(l.ttl_s).unwrap_or(1) * 1000 / 3);
    let ttl = Duration::from_secs(u64::try_from(l.ttl_s).unwrap_or(1));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        // After a pause (SIGSTOP) the clock jumped: the lease may be gone even if etcd still answers.
        if last_ok.elapsed() > ttl {
            return format!("no lease renewal for {:?} (over the TTL of {ttl:?})", last_ok.elapsed());
        }
        let (mut c, lease) = (store.client(), l.lease);
        let renewed = store
            .run(async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match renewed {
            Ok(Some(t)) if t > 0 => last_ok = Instant::now(),
            Ok(_) => return format!("lease {lease:x} expired", lease = l.lease),
            Err(e) => tracing::warn!(error = %e, "leader: lease renewal failed; retrying"),
        }
    }
}

/// Steps down: logs why, tries one fenced write (a step-down event line) — etcd refuses it once another replica
/// leads, and the refusal is logged — and exits with [`STEPPED_DOWN`].
pub fn step_down(store: &EtcdStore, why: &str) -> ! {
    tracing::error!(why, "leader: lost the leadership; stepping down");
    let batch = Batch { events: vec![format!("leader stepped down: {why}")], ..Batch::default() };
    match store.commit(&batch) {
        Err(e) => tracing::error!(error = %e, "leader: write refused (fenced)"),
        Ok(()) => tracing::warn!("leader: the step-down event was written: the lease had not yet been taken over"),
    }
    std::process::exit(STEPPED_DOWN)
}
