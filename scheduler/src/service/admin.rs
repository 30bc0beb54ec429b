//! The `Admin` API: zones, residency classes and queues (from the snapshot), and reloading the cluster file (by
//! the writer).

use super::Scheduler;
use super::writer::{ReplyTx, Req};
use sovra_api::v1::admin_server::Admin;
use sovra_api::v1::{
    ClassInfo, ClassesRequest, ClassesResponse, QueuesRequest, QueuesResponse, ReloadRequest, ReloadResponse,
    SchedulerAuditLine, SchedulerAuditRequest, ZoneInfo, ZonesRequest, ZonesResponse,
};
use tokio_stream::Stream;
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

    async fn grant_exception(
        &self,
        req: Request<sovra_api::v1::GrantExceptionRequest>,
    ) -> Result<Response<sovra_api::v1::JobInfo>, Status> {
        let text = req.into_inner().envelope_json;
        let envelope: sovra_oms::dsse::Envelope = serde_json::from_str(&text)
            .map_err(|e| Status::invalid_argument(format!("envelope_json: not a DSSE envelope: {e}")))?;
        self.call(Req::GrantException { envelope: Box::new(envelope) }, ReplyTx::Job).await.map(Response::new)
    }

    async fn events(
        &self,
        req: Request<sovra_api::v1::EventsRequest>,
    ) -> Result<Response<sovra_api::v1::EventsResponse>, Status> {
        let n = match req.into_inner().limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        Ok(Response::new(sovra_api::v1::EventsResponse { events: self.events(n) }))
    }

    async fn reload(&self, _req: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        self.call(Req::Reload, ReplyTx::Reload).await.map(Response::new)
    }

    type AuditExportStream = std::pin::Pin<Box<dyn Stream<Item = Result<SchedulerAuditLine, Status>> + Send>>;

    async fn audit_export(
        &self,
        req: Request<SchedulerAuditRequest>,
    ) -> Result<Response<Self::AuditExportStream>, Status> {
        let from = req.into_inner().from;
        let store = self.store.clone();
        let head = store.audit_head().map_err(|e| Status::internal(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Entries up to the head read at the start, in pages, so that a long log streams in bounded memory.
        tokio::task::spawn_blocking(move || {
            let line = |v: serde_json::Value| Ok(SchedulerAuditLine { json: v.to_string() });
            if tx.blocking_send(line(serde_json::json!({"head": head}))).is_err() {
                return;
            }
            let mut at = from;
            while at < head.count {
                let page = (head.count - at).min(1024) as usize;
                match store.audit_entries(at, page) {
                    Ok(entries) if !entries.is_empty() => {
                        at += entries.len() as u64;
                        for e in entries {
                            let v = serde_json::to_value(&e).unwrap_or_default();
                            if tx.blocking_send(line(v)).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => return,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
