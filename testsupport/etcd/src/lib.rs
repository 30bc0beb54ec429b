//! Test only: a real etcd cluster (3 members by default) on free loopback ports, each member in its own temporary
//! directory, every member killed when the cluster is dropped.
//!
//! The binary is `$SOVRA_ETCD`, else Debian's `/usr/bin/etcd` (package `etcd-server`, etcd 3.4, what `.ci/run`
//! installs). When it is missing, [`EtcdCluster::start`] fails naming the package: a test that needs etcd fails
//! rather than skips.
//!
//! Members run with `--max-txn-ops 65536` and `--max-request-bytes 33554432`, the limits the scheduler's etcd store
//! documents (one group commit is one etcd transaction; docs/etcd.md).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the harness could not start or drive etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No binary.
    #[error(
        "the etcd binary is not at {0}; install Debian's etcd-server (`apt-get install -y etcd-server`, what .ci/run does) or point SOVRA_ETCD at one"
    )]
    Missing(PathBuf),
    /// A file, port or process could not be set up.
    #[error("etcd test cluster: {0}")]
    Io(String),
    /// The cluster did not become healthy in time.
    #[error("etcd test cluster: member {member} did not answer on {endpoint} within {secs} s; its log:\n{log}")]
    NotReady {
        /// The member's index.
        member: usize,
        /// Its client endpoint.
        endpoint: String,
        /// How long the harness waited.
        secs: u64,
        /// The tail of its log.
        log: String,
    },
}

/// Where the etcd binary is: `$SOVRA_ETCD`, else `/usr/bin/etcd`.
pub fn binary() -> Result<PathBuf, EtcdError> {
    let path = std::env::var_os("SOVRA_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if path.is_file() { Ok(path) } else { Err(EtcdError::Missing(path)) }
}

fn free_port() -> Result<u16, EtcdError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EtcdError::Io(format!("no free port: {e}")))
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster on loopback.
pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster").field("endpoints", &self.endpoints()).finish()
    }
}

impl EtcdCluster {
    /// Starts a 3-member cluster and waits until every member answers.
    pub fn start() -> Result<EtcdCluster, EtcdError> {
        Self::start_n(3)
    }

    /// Starts an `n`-member cluster and waits until every member answers.
    pub fn start_n(n: usize) -> Result<EtcdCluster, EtcdError> {
        let bin = binary()?;
        let dir = tempfile::tempdir().map_err(|e| EtcdError::Io(format!("temporary directory: {e}")))?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let token = format!("sovra-test-{}-{}", std::process::id(), dir.path().display().to_string().len());
        let mut c = EtcdCluster { bin, dir, members, token };
        for i in 0..n {
            c.spawn(i)?;
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(30))?;
        }
        Ok(c)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdError> {
        let initial = self.initial_cluster();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| EtcdError::Io(format!("log file: {e}")))?;
        let err = log.try_clone().map_err(|e| EtcdError::Io(e.to_string()))?;
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--max-txn-ops", "65536", "--max-request-bytes", "33554432"])
            // Loopback: short heartbeats make leader loss in the member-loss tests quick to detect.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| EtcdError::Io(format!("starting {}: {e}", self.bin.display())))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, i: usize, within: Duration) -> Result<(), EtcdError> {
        let start = Instant::now();
        let port = self.members[i].client_port;
        while start.elapsed() < within {
            if let Some(c) = self.members[i].child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(EtcdError::Io(format!("member {i} exited ({status}): {}", self.log_tail(i))));
            }
            if health(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EtcdError::NotReady {
            member: i,
            endpoint: self.endpoint(i),
            secs: within.as_secs(),
            log: self.log_tail(i),
        })
    }

    /// The last 4 KiB of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let cut = log.len().saturating_sub(4096);
        log.get(cut..).unwrap_or(&log).to_string()
    }

    /// Member `i`'s client endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` on its data directory (after [`EtcdCluster::kill`]) and waits until it answers.
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i, Duration::from_secs(30))
    }
}

/// Whether the member on `port` answers `/health` with `"health":"true"` (a plain HTTP/1.0 request: the harness has
/// no HTTP client dependency).
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
