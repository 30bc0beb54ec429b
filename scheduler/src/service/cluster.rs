//! The `Cluster` API (nodes — paginated by name — and pools, read from the snapshot) and the `Nodes` API, where
//! daemons report over mutual TLS: registrations, inventories and health changes go to the writer; heartbeats only
//! touch the node's liveness cell (and wake the writer when a NotReady node is back).

use super::jobs::page_size;
use super::writer::{ReplyTx, Req};
use super::{ReplyStream, Scheduler};
use sovra_api::v1::cluster_server::Cluster;
use sovra_api::v1::nodes_server::Nodes;
use sovra_api::v1::{
    Ack, NodeReport, NodesRequest, NodesResponse, PoolsRequest, PoolsResponse, Register, Registered, ReportReply,
    node_report, report_reply,
};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

impl Scheduler {
    /// Registers a node whose identity the caller has established: what the `Nodes` API does after checking the
    /// client certificate, for in-process node sources (the scale benchmark's simulated nodes; an embedding that
    /// authenticates nodes itself). Returns the report session (for [`Scheduler::node_heartbeat`]) and the reply.
    pub async fn register_node(&self, identity: &str, reg: Register) -> Result<(u64, Registered), Status> {
        self.metrics.node_reports.inc();
        self.call(Req::Register { identity: identity.to_string(), reg: Box::new(reg) }, ReplyTx::Registered).await
    }

    /// A heartbeat from `identity` on report session `session`: what a report stream's heartbeat does. It touches
    /// only the node's liveness cell — the writer hears of it only when the node was NotReady.
    pub fn node_heartbeat(&self, identity: &str, session: u64) -> Result<(), Status> {
        let now = Instant::now();
        {
            let live = self.live.load();
            match live.get(identity) {
                Some(c) if c.session.load(Ordering::Relaxed) == session => c.seen(&self.clock, now),
                _ => return Err(Status::aborted("a newer report stream of this node replaced this one")),
            }
        }
        // A NotReady node that reports is ready again: only then does a heartbeat need the writer.
        if self.snapshot().nodes.get(identity).is_some_and(|v| !v.info.ready) {
            self.enqueue(Req::Ready { identity: identity.to_string() }, ReplyTx::Unit(None))?;
        }
        Ok(())
    }

    /// One message after the registration, on report stream `session`.
    async fn on_report(&self, identity: &str, session: u64, msg: NodeReport) -> Result<Option<ReportReply>, Status> {
        self.metrics.node_reports.inc();
        self.node_heartbeat(identity, session)?;
        match msg.body {
            Some(node_report::Body::Heartbeat(h)) => {
                Ok(Some(ReportReply { body: Some(report_reply::Body::Ack(Ack { seq: h.seq })) }))
            }
            Some(node_report::Body::Health(h)) => {
                let req = Req::Health {
                    identity: identity.to_string(),
                    session,
                    gpu: h.gpu_index,
                    healthy: h.healthy,
                    reason: h.reason,
                };
                self.call(req, |tx| ReplyTx::Unit(Some(tx))).await?;
                Ok(None)
            }
            Some(node_report::Body::Inventory(inv)) => {
                let req = Req::Inventory { identity: identity.to_string(), session, inv: Box::new(inv) };
                self.call(req, |tx| ReplyTx::Unit(Some(tx))).await?;
                Ok(None)
            }
            Some(node_report::Body::Replica(status)) => {
                let req = Req::Replica { identity: identity.to_string(), session, status: Box::new(status) };
                self.call(req, |tx| ReplyTx::Unit(Some(tx))).await?;
                Ok(None)
            }
            Some(node_report::Body::Logs(data)) => {
                self.dispatch.deliver(identity, data).await;
                Ok(None)
            }
            Some(node_report::Body::Register(_)) => {
                Err(Status::invalid_argument("register: only the first message of a stream registers"))
            }
            None => Err(Status::invalid_argument("node report: empty message")),
        }
    }
}

#[tonic::async_trait]
impl Cluster for Scheduler {
    async fn nodes(&self, req: Request<NodesRequest>) -> Result<Response<NodesResponse>, Status> {
        let req = req.into_inner();
        let size = page_size(req.page_size, "page_size")?;
        let snap = self.snapshot();
        let live = self.live.load();
        let now = Instant::now();
        let start = std::ops::Bound::Excluded(req.page_token.clone());
        let range = if req.page_token.is_empty() {
            snap.nodes.range::<_, String>(..)
        } else {
            snap.nodes.range((start, std::ops::Bound::Unbounded))
        };
        let mut nodes = Vec::with_capacity(size.min(snap.nodes.len()));
        let mut next_page_token = String::new();
        for v in range.map(|(_, v)| v) {
            if nodes.len() == size {
                // More follow: the next page starts after the last node of this one.
                next_page_token = nodes.last().map(|n: &sovra_api::v1::NodeInfo| n.name.clone()).unwrap_or_default();
                break;
            }
            nodes.push(snap.node_info(v, &live, &self.clock, now));
        }
        Ok(Response::new(NodesResponse { nodes, next_page_token }))
    }

    async fn pools(&self, _req: Request<PoolsRequest>) -> Result<Response<PoolsResponse>, Status> {
        Ok(Response::new(PoolsResponse { pools: Vec::clone(&self.snapshot().pools) }))
    }
}

#[tonic::async_trait]
impl Nodes for Scheduler {
    type ReportStream = ReplyStream<ReportReply>;

    async fn report(&self, req: Request<Streaming<NodeReport>>) -> Result<Response<Self::ReportStream>, Status> {
        let certs = req.peer_certs();
        let Some(identity) = crate::tls::peer_node(certs.as_deref().map(|v| v.as_slice())) else {
            return Err(Status::unauthenticated(
                "node reports need a client certificate issued by the scheduler's CA (mutual TLS): start the \
                 daemon with --tls-dir (or --ca, --cert, --key), and the scheduler with --tls-dir",
            ));
        };
        // Gang peers reach the node at the address it names, or else at the one its connection comes from.
        let seen_from = req.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let mut stream = req.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("register: the stream was empty"))?;
        let Some(node_report::Body::Register(mut reg)) = first.body else {
            return Err(Status::invalid_argument("register: the first message of a report stream must register"));
        };
        if reg.address.trim().is_empty() {
            reg.address = seen_from;
        }
        let (session, registered) = self.register_node(&identity, reg).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let _ = tx.send(Ok(ReportReply { body: Some(report_reply::Body::Registered(registered)) })).await;
        // Then the node's assignment set, and every later one.
        self.dispatch.attach(&identity, session, tx.clone());
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                match me.on_report(&identity, session, msg).await {
                    Ok(Some(reply)) => {
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            me.dispatch.detach(&identity, session);
            let _ = me.enqueue(Req::Disconnected { identity, session }, ReplyTx::Unit(None));
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
