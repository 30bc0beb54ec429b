//! What the scheduler tells node daemons to run, and the log reads it relays.
//!
//! **Assignments are level-triggered.** For each node the writer keeps the whole set of replicas that must run
//! there (jobs with a `run:` section, placed or running) and publishes it in a `tokio::sync::watch` cell after each
//! commit that changed it. Each report stream forwards the latest set of its node to the daemon, the current one
//! first: a daemon that reconnects, or a scheduler that restarts, never has to replay a history — the daemon starts
//! what is listed and it does not run, and stops what it runs that is not listed. Only committed state is sent, so
//! a daemon never starts work that a crash could forget.
//!
//! **Logs** stay on the nodes. `Jobs.Logs` sends a `LogRead` down the replica's node's report stream, and the
//! daemon's `LogData` answers are routed back to the caller by request id; when the caller goes away the read is
//! cancelled on the node.

use sovra_api::v1::{Assignments, LogChunk, LogData, LogRead, ReportReply, report_reply};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// A node's open report stream: its session and where replies to the daemon go.
#[derive(Clone)]
struct Link {
    session: u64,
    tx: mpsc::Sender<Result<ReportReply, Status>>,
}

/// A log read in flight: which node answers it, and where its chunks go.
struct Read {
    node: String,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
}

/// Shared by the writer (which publishes assignment sets) and the report streams (which forward them and relay
/// log reads). Locks are held only to look up or swap an entry, never across an await.
#[derive(Default)]
pub(crate) struct Dispatch {
    sets: Mutex<BTreeMap<String, watch::Sender<Arc<Assignments>>>>,
    links: Mutex<BTreeMap<String, Link>>,
    reads: Mutex<BTreeMap<u64, Read>>,
    next_read: AtomicU64,
}

/// Locks a map; a poisoned lock (a panic elsewhere while holding it) still holds consistent data, since every
/// critical section is a single insert, remove or lookup.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatch {
    /// The watch cell of `node`'s set, created empty.
    fn cell(&self, node: &str) -> watch::Sender<Arc<Assignments>> {
        lock(&self.sets).entry(node.to_string()).or_insert_with(|| watch::Sender::new(Arc::default())).clone()
    }

    /// Publishes `node`'s new set (the writer, after a commit).
    pub fn publish(&self, node: &str, set: Assignments) {
        self.cell(node).send_replace(Arc::new(set));
    }

    /// Attaches report stream `session` of `node`: forwards its assignment sets (the current one at once) to
    /// `tx` until the stream's replies are dropped, and makes it the target of log reads for the node.
    pub fn attach(self: &Arc<Self>, node: &str, session: u64, tx: mpsc::Sender<Result<ReportReply, Status>>) {
        lock(&self.links).insert(node.to_string(), Link { session, tx: tx.clone() });
        let mut rx = self.cell(node).subscribe();
        tokio::spawn(async move {
            loop {
                let set = Assignments::clone(&rx.borrow_and_update());
                let reply = ReportReply { body: Some(report_reply::Body::Assignments(set)) };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
    }

    /// Report stream `session` of `node` ended: log reads it was answering end with an error.
    pub fn detach(&self, node: &str, session: u64) {
        {
            let mut links = lock(&self.links);
            if links.get(node).is_some_and(|l| l.session == session) {
                links.remove(node);
            }
        }
        let ended: Vec<Read> = {
            let mut reads = lock(&self.reads);
            let ids: Vec<u64> = reads.iter().filter(|(_, r)| r.node == node).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| reads.remove(&id)).collect()
        };
        for r in ended {
            let _ = r.tx.try_send(Err(Status::unavailable(format!(
                "node {node}'s daemon disconnected while sending the log; run `sovra logs` again once it is back"
            ))));
        }
    }

    /// Asks `node`'s daemon for a replica's output; the returned stream carries it and ends after the daemon's
    /// last chunk. Dropping the stream cancels the read on the node.
    pub async fn read_logs(self: &Arc<Self>, node: &str, mut read: LogRead) -> Result<LogStream, Status> {
        let link = lock(&self.links).get(node).cloned().ok_or_else(|| {
            Status::unavailable(format!(
                "node {node}'s daemon is not connected, and the output stays on the node: retry once it reports \
                 again"
            ))
        })?;
        let id = self.next_read.fetch_add(1, Ordering::Relaxed) + 1;
        read.request = id;
        let (tx, rx) = mpsc::channel(64);
        lock(&self.reads).insert(id, Read { node: node.to_string(), tx });
        let stream = LogStream { rx, id, dispatch: self.clone(), node_tx: link.tx.clone() };
        let ask = ReportReply { body: Some(report_reply::Body::LogRead(read)) };
        if link.tx.send(Ok(ask)).await.is_err() {
            return Err(Status::unavailable(format!("node {node}'s daemon disconnected; retry once it is back")));
        }
        Ok(stream)
    }

    /// Routes a daemon's `LogData` to its reader; data for a read nobody waits for any more is dropped. Only the
    /// node the read was sent to may answer it.
    pub async fn deliver(&self, node: &str, data: LogData) {
        let tx = {
            let reads = lock(&self.reads);
            match reads.get(&data.request) {
                Some(r) if r.node == node => r.tx.clone(),
                _ => return,
            }
        };
        if !data.data.is_empty() && tx.send(Ok(LogChunk { data: data.data })).await.is_err() {
            return;
        }
        if data.eof {
            lock(&self.reads).remove(&data.request);
            if !data.error.is_empty() {
                let _ = tx.send(Err(Status::not_found(data.error))).await;
            }
        }
    }
}

/// The chunks of one log read. The read's only sender is in [`Dispatch`]'s table, so the stream ends when the
/// daemon's last chunk arrived (or its node disconnected); dropped earlier, it cancels the read on the node.
pub(crate) struct LogStream {
    rx: mpsc::Receiver<Result<LogChunk, Status>>,
    id: u64,
    dispatch: Arc<Dispatch>,
    node_tx: mpsc::Sender<Result<ReportReply, Status>>,
}

impl tokio_stream::Stream for LogStream {
    type Item = Result<LogChunk, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if lock(&self.dispatch.reads).remove(&self.id).is_none() {
            return; // over already
        }
        let cancel = ReportReply { body: Some(report_reply::Body::LogCancel(self.id)) };
        let tx = self.node_tx.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tx.send(Ok(cancel)).await;
            });
        } else {
            let _ = tx.try_send(Ok(cancel));
        }
    }
}
