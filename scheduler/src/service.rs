//! The gRPC service (tonic) around the [`Engine`]: jobs (submit, get, list, cancel) and cluster views (nodes,
//! pools), authenticated with a bearer token, every change persisted before it is acknowledged.

use crate::engine::{Engine, Event, JobId, JobRecord, JobState, QueueSpec, SubmitError};
use crate::store::Store;
use sovra_api::v1::cluster_server::{Cluster, ClusterServer};
use sovra_api::v1::jobs_server::{Jobs, JobsServer};
use sovra_api::v1::{
    CancelRequest, GetRequest, JobInfo, ListRequest, ListResponse, NodeInfo, NodesRequest, NodesResponse, PoolInfo,
    PoolsRequest, PoolsResponse, Replica, SubmitRequest, SubmitResponse,
};
use sovra_domain::{ClusterConfig, PolicySpec};
use std::sync::{Arc, Mutex, MutexGuard};
use tonic::{Request, Response, Status};

struct Inner {
    engine: Engine,
    store: Option<Store>,
    cluster: ClusterConfig,
}

/// The scheduler service; cheap to clone (shared state).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Mutex<Inner>>,
}

/// The cluster's queues; a cluster without any (e.g. built in code) gets one `default` queue, as a cluster file
/// without a `queues:` section does.
fn queues_of(cluster: &ClusterConfig) -> Vec<QueueSpec> {
    let mut queues: Vec<QueueSpec> = cluster
        .queues
        .iter()
        .map(|q| QueueSpec { name: q.name.clone(), weight: q.weight, quota_milli: q.quota_milli.clone() })
        .collect();
    if queues.is_empty() {
        queues.push(QueueSpec::new("default"));
    }
    queues
}

impl Scheduler {
    /// A scheduler over `cluster`; with a store, the jobs it holds are restored first (a restart).
    pub fn new(
        cluster: ClusterConfig,
        policy: PolicySpec,
        seed: u64,
        store: Option<Store>,
    ) -> Result<Scheduler, String> {
        let records = match &store {
            Some(s) => s.load()?,
            None => vec![],
        };
        let (engine, requeued) = Engine::restore(&cluster, queues_of(&cluster), policy, seed, records)?;
        for id in &requeued {
            tracing::warn!(job = id, "placement no longer fits the configuration: requeued");
        }
        let s = Scheduler { inner: Arc::new(Mutex::new(Inner { engine, store, cluster })) };
        {
            let mut inner = s.lock().map_err(|e| e.message().to_string())?;
            let ids: Vec<JobId> = requeued;
            let events = inner.engine.schedule();
            inner.persist(ids.into_iter().chain(touched(&events))).map_err(|e| e.message().to_string())?;
        }
        Ok(s)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Status> {
        self.inner.lock().map_err(|_| Status::internal("scheduler state poisoned by an earlier failure"))
    }

    /// The gRPC services, each behind the token check.
    pub fn services(
        &self,
        token: String,
    ) -> (
        tonic::service::interceptor::InterceptedService<
            JobsServer<Scheduler>,
            impl tonic::service::Interceptor + Clone + use<>,
        >,
        tonic::service::interceptor::InterceptedService<
            ClusterServer<Scheduler>,
            impl tonic::service::Interceptor + Clone + use<>,
        >,
    ) {
        let check = move |req: Request<()>| -> Result<Request<()>, Status> {
            let expected = format!("Bearer {token}");
            match req.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if v == expected => Ok(req),
                Some(_) => {
                    Err(Status::unauthenticated("wrong token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
                None => {
                    Err(Status::unauthenticated("no token; pass the scheduler's token with --token or SOVRA_TOKEN"))
                }
            }
        };
        (
            JobsServer::with_interceptor(self.clone(), check.clone()),
            ClusterServer::with_interceptor(self.clone(), check),
        )
    }
}

fn touched(events: &[Event]) -> Vec<JobId> {
    events
        .iter()
        .map(|e| match e {
            Event::Placed { job } | Event::Preempted { job, .. } | Event::Reserved { job, .. } => *job,
        })
        .collect()
}

impl Inner {
    /// Persists the records of `ids` (all at once, flushed).
    fn persist(&self, ids: impl IntoIterator<Item = JobId>) -> Result<(), Status> {
        let Some(store) = &self.store else { return Ok(()) };
        let mut ids: Vec<JobId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let recs: Vec<&JobRecord> = ids.iter().filter_map(|id| self.engine.job(*id)).collect();
        store.save(recs).map_err(Status::unavailable)
    }
}

fn state_name(s: JobState) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn info(r: &JobRecord) -> JobInfo {
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
    }
}

#[tonic::async_trait]
impl Jobs for Scheduler {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let req = req.into_inner();
        let mut inner = self.lock()?;
        let jobs =
            inner.cluster.jobs_from_yaml("job", &req.job_yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let [job] = <[_; 1]>::try_from(jobs).map_err(|_| Status::invalid_argument("job: submit one job at a time"))?;
        let request_id = (!req.request_id.is_empty()).then_some(req.request_id);
        match inner.engine.submit(job, request_id) {
            Ok(id) => {
                let events = inner.engine.schedule();
                inner.persist(std::iter::once(id).chain(touched(&events)))?;
                let state = inner.engine.job(id).map(|r| state_name(r.state)).unwrap_or_default();
                Ok(Response::new(SubmitResponse { id, state }))
            }
            Err(SubmitError::Refused { id, explanation }) => {
                inner.persist([id])?;
                Err(Status::failed_precondition(format!("job {id} refused: {}", explanation.summary)))
            }
            Err(e @ SubmitError::UnknownQueue { .. }) => Err(Status::invalid_argument(format!("job: queue: {e}"))),
        }
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().id;
        let inner = self.lock()?;
        inner.engine.job(id).map(|r| Response::new(info(r))).ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = req.into_inner();
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

    async fn cancel(&self, req: Request<CancelRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().id;
        let mut inner = self.lock()?;
        inner.engine.cancel(id).map_err(Status::failed_precondition)?;
        let events = inner.engine.schedule();
        inner.persist(std::iter::once(id).chain(touched(&events)))?;
        Ok(Response::new(info(inner.engine.job(id).expect("just cancelled"))))
    }
}

#[tonic::async_trait]
impl Cluster for Scheduler {
    async fn nodes(&self, _req: Request<NodesRequest>) -> Result<Response<NodesResponse>, Status> {
        let inner = self.lock()?;
        let state = inner.engine.state();
        let topo = state.topology();
        let nodes = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let pool = &topo.pools[n.pool as usize];
                let range = topo.device_range(i as u32);
                NodeInfo {
                    name: n.name.clone(),
                    pool: pool.id.clone(),
                    zone: topo.zones[pool.zone].id.clone(),
                    ready: state.node_ready(i as u32),
                    gpus: u32::from(n.dev_count),
                    healthy_gpus: u32::from(state.summary(i as u32).healthy),
                    used_milli: range.map(|d| u64::from(state.device_used(d))).sum(),
                }
            })
            .collect();
        Ok(Response::new(NodesResponse { nodes }))
    }

    async fn pools(&self, _req: Request<PoolsRequest>) -> Result<Response<PoolsResponse>, Status> {
        let inner = self.lock()?;
        let state = inner.engine.state();
        let topo = state.topology();
        let pools = topo
            .pools
            .iter()
            .enumerate()
            .map(|(p, pool)| {
                let nodes = &topo.pool_nodes[p];
                let devices = nodes.iter().flat_map(|&n| topo.device_range(n));
                PoolInfo {
                    id: pool.id.clone(),
                    zone: topo.zones[pool.zone].id.clone(),
                    purpose: pool.purpose.to_string(),
                    nodes: nodes.len() as u32,
                    capacity_milli: nodes.iter().map(|&n| u64::from(topo.nodes[n as usize].dev_count) * 1000).sum(),
                    used_milli: devices.map(|d| u64::from(state.device_used(d))).sum(),
                }
            })
            .collect();
        Ok(Response::new(PoolsResponse { pools }))
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let (jobs, cluster) = scheduler.services(token);
    tonic::transport::Server::builder()
        .add_service(jobs)
        .add_service(cluster)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("the gRPC server stopped: {e}"))
}
