//! The `Admin` API: zones, residency classes and queues (from the snapshot), and reloading the cluster file (by
//! the writer).

use super::Scheduler;
use super::writer::{ReplyTx, Req};
use sovra_api::v1::admin_server::Admin;
use sovra_api::v1::{
    ClassInfo, ClassesRequest, ClassesResponse, QueuesRequest, QueuesResponse, ReloadRequest, ReloadResponse, ZoneInfo,
    ZonesRequest, ZonesResponse,
};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Admin for Scheduler {
    async fn zones(&self, _req: Request<ZonesRequest>) -> Result<Response<ZonesResponse>, Status> {
        let snap = self.snapshot();
        let zones = snap
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
        let snap = self.snapshot();
        let classes = snap
            .base
            .residency_classes
            .iter()
            .map(|c| ClassInfo {
                name: c.name.clone(),
                rules_json: serde_json::to_string(c).unwrap_or_default(),
                zones: snap.base.zones.iter().filter(|z| sovra_domain::satisfies(z, c)).map(|z| z.id.clone()).collect(),
            })
            .collect();
        Ok(Response::new(ClassesResponse { classes }))
    }

    async fn queues(&self, _req: Request<QueuesRequest>) -> Result<Response<QueuesResponse>, Status> {
        Ok(Response::new(QueuesResponse { queues: Vec::clone(&self.snapshot().queues) }))
    }

    async fn reload(&self, _req: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        self.call(Req::Reload, ReplyTx::Reload).await.map(Response::new)
    }
}
