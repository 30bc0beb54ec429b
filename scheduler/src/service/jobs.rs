//! The `Jobs` API: submit (validated against the limits of `sovra_domain::limits`, idempotent by request id),
//! get, list (paginated), watch (resumable from a revision), set-state and cancel. Changes go to the writer; reads
//! come from the published snapshot.

use super::writer::{ReplyTx, Req};
use super::{ReplyStream, Scheduler};
use sovra_api::v1::jobs_server::Jobs;
use sovra_api::v1::{
    CancelRequest, GetRequest, JobInfo, ListRequest, ListResponse, LogChunk, LogRead, LogsRequest, ReceiptsRequest,
    ReceiptsResponse, Replica, SetStateRequest, SubmitRequest, SubmitResponse, WatchRequest,
};
use sovra_domain::Job;
use sovra_domain::limits::{MAX_JOB_YAML_BYTES, MAX_REQUEST_ID_LEN};
use sovra_engine::{JobRecord, JobState};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Jobs per `List` page when the request asks for none.
pub const DEFAULT_PAGE: usize = 1000;
/// The largest `List` / `Nodes` page.
pub const MAX_PAGE: usize = 10_000;
/// The most lines `Logs` returns from the end of an output (`tail_lines`).
pub const MAX_TAIL_LINES: u32 = 1_000_000;

/// The page size a request asks for, checked.
pub(super) fn page_size(asked: u32, field: &str) -> Result<usize, Status> {
    match asked as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => {
            Err(Status::invalid_argument(format!("{field}: {n}; at most {MAX_PAGE} per page (follow next_page_token)")))
        }
    }
}

impl Scheduler {
    /// Checks a submit request's limits and parses its job against the cluster's residency classes.
    fn parse_submit(&self, job_yaml: &str, request_id: &str) -> Result<(Job, Option<String>), Status> {
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
        let jobs = self
            .snapshot()
            .base
            .jobs_from_yaml("job", job_yaml)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let [job] = <[_; 1]>::try_from(jobs).map_err(|_| Status::invalid_argument("job: submit one job at a time"))?;
        Ok((job, (!request_id.is_empty()).then(|| request_id.to_string())))
    }

    /// Submits one job given as job YAML, with an optional request id (empty: none), and waits for the answer:
    /// what the gRPC `Submit` does, callable without a server or runtime (the fuzz target
    /// `fuzz/fuzz_targets/scheduler_submit.rs` drives it).
    ///
    /// A request over a limit, an invalid job or an unknown queue is INVALID_ARGUMENT naming the field; a request
    /// id used before for a job with different content is ALREADY_EXISTS naming the first job; a job no permitted
    /// pool could ever hold is FAILED_PRECONDITION (and recorded as refused).
    pub fn submit_yaml(&self, job_yaml: &str, request_id: &str) -> Result<SubmitResponse, Status> {
        let (job, request_id) = self.parse_submit(job_yaml, request_id)?;
        self.call_blocking(Req::Submit { job: Box::new(job), request_id }, ReplyTx::Submit)
    }

    /// A job's view: from the snapshot, or from the archive once it left the hot state.
    fn job_info(&self, id: u64) -> Result<JobInfo, Status> {
        if let Some(j) = self.snapshot().jobs.get(&id) {
            return Ok(JobInfo::clone(j));
        }
        match self.store.archived(id) {
            Ok(Some(r)) => Ok(info(&r)),
            Ok(None) => Err(Status::not_found(format!("no job {id}"))),
            Err(e) => Err(Status::unavailable(format!("reading the archive for job {id}: {e}"))),
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
        revision: 0,
        // Plain data (strings, numbers, lists): serialising cannot fail.
        blockers_json: serde_json::to_string(&r.blockers).unwrap_or_default(),
        preemption_records_json: serde_json::to_string(&r.preemption_records).unwrap_or_default(),
        ended_reason: r.ended_reason.clone().unwrap_or_default(),
        model: r.job.model.as_ref().map(ToString::to_string).unwrap_or_default(),
        exception_json: r
            .job
            .exception
            .as_ref()
            .map(|w| serde_json::to_string(w).unwrap_or_default())
            .unwrap_or_default(),
        runs: Vec::new(),
    }
}

#[tonic::async_trait]
impl Jobs for Scheduler {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let req = req.into_inner();
        let (job, request_id) = self.parse_submit(&req.job_yaml, &req.request_id)?;
        self.call(Req::Submit { job: Box::new(job), request_id }, ReplyTx::Submit).await.map(Response::new)
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<JobInfo>, Status> {
        self.job_info(req.into_inner().id).map(Response::new)
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
        let size = page_size(req.page_size, "page_size")?;
        let after = match req.page_token.as_str() {
            "" => 0,
            t => t.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token: {t:?} is not a token this scheduler gave; omit it to start"
                ))
            })?,
        };
        let snap = self.snapshot();
        let mut jobs = Vec::new();
        let mut next_page_token = String::new();
        for j in snap.jobs.range(after.saturating_add(1)..).map(|(_, j)| j) {
            if !(req.queue.is_empty() || j.queue == req.queue) || !(req.state.is_empty() || j.state == req.state) {
                continue;
            }
            if jobs.len() == size {
                // More follow: the next page starts after the last job of this one.
                next_page_token = jobs.last().map(|j: &JobInfo| j.id.to_string()).unwrap_or_default();
                break;
            }
            jobs.push(JobInfo::clone(j));
        }
        Ok(Response::new(ListResponse { jobs, next_page_token, revision: snap.revision }))
    }

    type WatchStream = ReplyStream<JobInfo>;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let wanted =
            move |j: &JobInfo| (req.id == 0 || j.id == req.id) && (req.queue.is_empty() || j.queue == req.queue);
        // Subscribe before reading the snapshot: nothing committed after it can be missed.
        let mut updates = self.watch.subscribe();
        let snap = self.snapshot();
        if req.id != 0 && self.job_info(req.id).is_err() {
            return Err(Status::not_found(format!("no job {}", req.id)));
        }
        let since = req.since_revision;
        if since != 0 && since < snap.compacted {
            return Err(Status::out_of_range(format!(
                "since_revision: {since} is older than revision {}, before which finished jobs were archived; list \
                 the jobs again and watch from the list's revision",
                snap.compacted
            )));
        }
        let at = snap.revision;
        let current: Vec<Arc<JobInfo>> =
            snap.jobs.values().filter(|j| j.revision > since && wanted(j)).cloned().collect();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = since;
            for j in current {
                last = last.max(j.revision);
                if tx.send(Ok(JobInfo::clone(&j))).await.is_err() {
                    return;
                }
            }
            loop {
                match updates.recv().await {
                    Ok(j) if j.revision > at && wanted(&j) => {
                        last = last.max(j.revision);
                        if tx.send(Ok(JobInfo::clone(&j))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "the watcher fell {n} updates behind; watch again with since_revision {}",
                                last.saturating_sub(1)
                            ))))
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
        self.call(Req::SetState { id: req.id, state: req.state }, ReplyTx::Job).await.map(Response::new)
    }

    type LogsStream = ReplyStream<LogChunk>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        if req.tail_lines > MAX_TAIL_LINES {
            return Err(Status::invalid_argument(format!(
                "tail_lines: {}; at most {MAX_TAIL_LINES} (or 0 for everything the node keeps)",
                req.tail_lines
            )));
        }
        let job = self.job_info(req.id)?;
        let node = job.runs.iter().find(|r| r.replica == req.replica).map(|r| r.node.clone());
        let Some(node) = node else {
            return Err(if job.runs.is_empty() {
                Status::failed_precondition(format!(
                    "job {}: no node daemon has run it, so there is no output to read (jobs without a `run:` \
                     section run outside Sovra; pending jobs have not started)",
                    req.id
                ))
            } else {
                Status::invalid_argument(format!(
                    "replica: job {} has replicas 0 to {}, not {}",
                    req.id,
                    job.runs.len().saturating_sub(1),
                    req.replica
                ))
            });
        };
        let read =
            LogRead { request: 0, job: req.id, replica: req.replica, follow: req.follow, tail_lines: req.tail_lines };
        let stream = self.dispatch.read_logs(&node, read).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel(&self, req: Request<CancelRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().id;
        self.call(Req::Cancel { id }, ReplyTx::Job).await.map(Response::new)
    }

    async fn receipts(&self, req: Request<ReceiptsRequest>) -> Result<Response<ReceiptsResponse>, Status> {
        let id = req.into_inner().id;
        let (store, key) = (self.store.clone(), self.receipt_key.clone());
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let doc = tokio::task::spawn_blocking(move || super::receipts::document(store.as_ref(), &key, id, now_ms))
            .await
            .map_err(|e| Status::internal(format!("reading the receipts: {e}")))?
            .map_err(Status::internal)?;
        match doc {
            Some(d) => Ok(Response::new(ReceiptsResponse { json: d.to_string() })),
            None if self.snapshot().jobs.contains_key(&id) => Err(Status::not_found(format!(
                "job {id} has no placement receipts: it was never placed (`sovra job {id}` says why it waits)"
            ))),
            None => Err(Status::not_found(format!("id: no job {id}; `sovra jobs` lists the jobs"))),
        }
    }
}
