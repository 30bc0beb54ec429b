//! The `Admin` API: zones, residency classes, queues, and reloading the cluster file.

use super::{Scheduler, overlay, queues_of};
use sovra_api::v1::admin_server::Admin;
use sovra_api::v1::{
    ClassInfo, ClassesRequest, ClassesResponse, QueueInfo, QueuesRequest, QueuesResponse, ReloadRequest,
    ReloadResponse, ZoneInfo, ZonesRequest, ZonesResponse,
};
use sovra_domain::ClusterConfig;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Admin for Scheduler {
    async fn zones(&self, _req: Request<ZonesRequest>) -> Result<Response<ZonesResponse>, Status> {
        let inner = self.lock()?;
        let zones = inner
            .base
            .zones
            .iter()
            .map(|z| ZoneInfo {
                id: z.id.clone(),
                country: z.country.clone(),
                jurisdiction: z.jurisdiction.clone(),
                operator: z.operator.clone(),
                operator_hq: z.operator_hq.clone(),
                certifications: z.certifications.iter().cloned().collect(),
            })
            .collect();
        Ok(Response::new(ZonesResponse { zones }))
    }

    async fn classes(&self, _req: Request<ClassesRequest>) -> Result<Response<ClassesResponse>, Status> {
        let inner = self.lock()?;
        let classes = inner
            .base
            .residency_classes
            .iter()
            .map(|c| ClassInfo {
                name: c.name.clone(),
                rules_json: serde_json::to_string(c).unwrap_or_default(),
                zones: inner
                    .base
                    .zones
                    .iter()
                    .filter(|z| sovra_domain::satisfies(z, c))
                    .map(|z| z.id.clone())
                    .collect(),
            })
            .collect();
        Ok(Response::new(ClassesResponse { classes }))
    }

    async fn queues(&self, _req: Request<QueuesRequest>) -> Result<Response<QueuesResponse>, Status> {
        let inner = self.lock()?;
        let queues = inner
            .engine
            .queue_stats()
            .into_iter()
            .map(|q| QueueInfo {
                name: q.spec.name,
                weight: q.spec.weight,
                quota_milli: q.spec.quota_milli.into_iter().collect(),
                pending: q.pending,
                running: q.running,
                gpu_milli_held: q.gpu_milli_held,
                share: q.share,
            })
            .collect();
        Ok(Response::new(QueuesResponse { queues }))
    }

    async fn reload(&self, _req: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        let mut inner = self.lock()?;
        let Some(path) = inner.opts.config_path.clone() else {
            return Err(Status::failed_precondition("this scheduler was not started from a cluster file"));
        };
        let base = ClusterConfig::load(&path).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let enrolled: std::collections::BTreeSet<String> = base.nodes.iter().map(|n| n.name.clone()).collect();
        let mut reported = inner.reported.clone();
        reported.retain(|n, _| enrolled.contains(n));
        let cluster = overlay(&base, &reported);
        let requeued =
            inner.engine.rebuild(&cluster, queues_of(&base)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        inner.live.retain(|n, _| enrolled.contains(n));
        let response = ReloadResponse {
            nodes: base.nodes.len() as u32,
            pools: base.pools.len() as u32,
            requeued: requeued.clone(),
        };
        inner.event(&format!("configuration reloaded from {}; requeued {requeued:?}", path.display()));
        tracing::info!(file = %path.display(), ?requeued, "configuration reloaded");
        inner.base = base;
        inner.cluster = cluster;
        inner.reported = reported;
        inner.cycle(requeued)?;
        Ok(Response::new(response))
    }
}
