//! The `Jobs` API: submit (validated against the limits of `sovra_domain::limits`, idempotent by request id),
//! get, list, watch, set-state and cancel.

use super::{ReplyStream, Scheduler};
use sovra_api::v1::jobs_server::Jobs;
use sovra_api::v1::{
    CancelRequest, GetRequest, JobInfo, ListRequest, ListResponse, Replica, SetStateRequest, SubmitRequest,
    SubmitResponse, WatchRequest,
};
use sovra_domain::limits::{MAX_JOB_YAML_BYTES, MAX_REQUEST_ID_LEN};
use sovra_engine::{JobError, JobRecord, JobState, SubmitError};
use tonic::{Request, Response, Status};

impl Scheduler {
    /// Submits one job given as job YAML, with an optional request id (empty: none): what the gRPC `Submit` does,
    /// callable without a server (the fuzz target `fuzz/fuzz_targets/scheduler_submit.rs` drives it).
    ///
    /// A request over a limit, an invalid job or an unknown queue is INVALID_ARGUMENT naming the field; a request
    /// id used before for a job with different content is ALREADY_EXISTS naming the first job; a job no permitted
    /// pool could ever hold is FAILED_PRECONDITION (and recorded as refused).
    pub fn submit_yaml(&self, job_yaml: &str, request_id: &str) -> Result<SubmitResponse, Status> {
        if job_yaml.len() > MAX_JOB_YAML_BYTES {
            return Err(Status::invalid_argument(format!(
                "job: the job YAML is {} bytes; at most {MAX_JOB_YAML_BYTES} are accepted",
                job_yaml.len()
            )));
        }
        if request_id.len() > MAX_REQUEST_ID_LEN {
            return Err(Status::invalid_argument(format!(
                "request_id: is {} bytes long; at most {MAX_REQUEST_ID_LEN} are allowed",
                request_id.len()
            )));
        }
        let mut inner = self.lock()?;
        let jobs =
            inner.cluster.jobs_from_yaml("job", job_yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let [job] = <[_; 1]>::try_from(jobs).map_err(|_| Status::invalid_argument("job: submit one job at a time"))?;
        let request_id = (!request_id.is_empty()).then(|| request_id.to_string());
        match inner.engine.submit(job, request_id) {
            Ok(id) => {
                // A retry of a request whose job was refused gets the refusal again, as the first attempt did.
                if let Some(r) = inner.engine.job(id).filter(|r| r.state == JobState::Refused) {
                    let why = r.explanation.as_ref().map(|e| e.summary.clone()).unwrap_or_default();
                    return Err(Status::failed_precondition(format!("job {id} refused: {why}")));
                }
                self.metrics.submits.inc();
                inner.cycle([id])?;
                let state = inner.engine.job(id).map(|r| state_name(r.state)).unwrap_or_default();
                Ok(SubmitResponse { id, state })
            }
            Err(SubmitError::Refused { id, explanation }) => {
                inner.persist([id])?;
                Err(Status::failed_precondition(format!("job {id} refused: {}", explanation.summary)))
            }
            Err(e @ SubmitError::UnknownQueue { .. }) => Err(Status::invalid_argument(format!("job: queue: {e}"))),
            Err(e @ SubmitError::RequestReused { .. }) => Err(Status::already_exists(format!("request_id: {e}"))),
            // A refusal the engine may add later is still a refusal.
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

pub(super) fn state_name(s: JobState) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub(super) fn info(r: &JobRecord) -> JobInfo {
    JobInfo {
        id: r.id,
        name: r.job.name.clone(),
        queue: r.job.queue.clone(),
        priority: r.job.priority,
        residency: r.job.residency.clone(),
        state: state_name(r.state),
        replicas: r
            .placement
            .iter()
            .flat_map(|d| &d.replicas)
            .map(|p| Replica {
                node: p.node_name.clone(),
                pool: p.pool.clone(),
                zone: p.zone.clone(),
                devices: p.devices.iter().map(|a| u32::from(a.device)).collect(),
                milli_per_device: p.devices.first().map_or(0, |a| u32::from(a.milli)),
            })
            .collect(),
        explanation_json: r
            .explanation
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .unwrap_or_default(),
        explanation_summary: r.explanation.as_ref().map(|e| e.summary.clone()).unwrap_or_default(),
        preemptions: r.preemptions,
        // Plain data (strings, numbers, lists): serialising cannot fail.
        blockers_json: serde_json::to_string(&r.blockers).unwrap_or_default(),
        preemption_records_json: serde_json::to_string(&r.preemption_records).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Jobs for Scheduler {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let req = req.into_inner();
        self.submit_yaml(&req.job_yaml, &req.request_id).map(Response::new)
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().id;
        let inner = self.lock()?;
        inner.engine.job(id).map(|r| Response::new(info(r))).ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = req.into_inner();
        if !req.state.is_empty()
            && serde_json::from_value::<JobState>(serde_json::Value::String(req.state.clone())).is_err()
        {
            return Err(Status::invalid_argument(format!(
                "state: {:?} is not a job state; use one of pending, placed, running, succeeded, failed, cancelled, \
                 lost, refused (or none for all)",
                req.state
            )));
        }
        let inner = self.lock()?;
        let jobs = inner
            .engine
            .jobs()
            .filter(|r| req.queue.is_empty() || r.job.queue == req.queue)
            .filter(|r| req.state.is_empty() || state_name(r.state) == req.state)
            .map(info)
            .collect();
        Ok(Response::new(ListResponse { jobs }))
    }

    type WatchStream = ReplyStream<JobInfo>;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let wanted =
            move |j: &JobInfo| (req.id == 0 || j.id == req.id) && (req.queue.is_empty() || j.queue == req.queue);
        let (mut updates, snapshot) = {
            let inner = self.lock()?;
            if req.id != 0 && inner.engine.job(req.id).is_none() {
                return Err(Status::not_found(format!("no job {}", req.id)));
            }
            let snapshot: Vec<JobInfo> = inner.engine.jobs().map(info).filter(|j| wanted(j)).collect();
            (inner.watch.subscribe(), snapshot)
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for j in snapshot {
                if tx.send(Ok(j)).await.is_err() {
                    return;
                }
            }
            loop {
                match updates.recv().await {
                    Ok(j) if wanted(&j) => {
                        if tx.send(Ok(j)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!("the watcher fell {n} updates behind; watch again"))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn set_state(&self, req: Request<SetStateRequest>) -> Result<Response<JobInfo>, Status> {
        let req = req.into_inner();
        let mut inner = self.lock()?;
        let r = match req.state.as_str() {
            "running" => inner.engine.started(req.id),
            "succeeded" => inner.engine.finished(req.id, true),
            "failed" => inner.engine.finished(req.id, false),
            other => {
                return Err(Status::invalid_argument(format!(
                    "state: {other:?} is not one a runner reports; use running, succeeded or failed"
                )));
            }
        };
        r.map_err(job_status)?;
        inner.cycle([req.id])?;
        inner
            .engine
            .job(req.id)
            .map(|r| Response::new(info(r)))
            .ok_or_else(|| Status::not_found(format!("no job {}", req.id)))
    }

    async fn cancel(&self, req: Request<CancelRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().id;
        let mut inner = self.lock()?;
        inner.engine.cancel(id).map_err(job_status)?;
        inner.cycle([id])?;
        inner.engine.job(id).map(|r| Response::new(info(r))).ok_or_else(|| Status::not_found(format!("no job {id}")))
    }
}

/// The gRPC status of a refused lifecycle change: NOT_FOUND for an unknown job, FAILED_PRECONDITION otherwise.
fn job_status(e: JobError) -> Status {
    match e {
        JobError::NoSuchJob { .. } => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}
