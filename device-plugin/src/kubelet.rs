//! Talking to the kubelet: serving `DevicePlugin` on the plugin's unix socket, registering with the kubelet's
//! `Registration` service on `kubelet.sock`, and doing both again when the kubelet restarts.
//!
//! A restarting kubelet removes every socket in its device-plugins directory and creates a new `kubelet.sock`.
//! The plugin notices (it checks every `watch` interval): when its own socket is gone it serves on a new one,
//! and when `kubelet.sock` is a different file (device, inode, change time) than the one it registered with, it registers
//! again.

use crate::api::RegisterRequest;
use crate::api::device_plugin_server::DevicePluginServer;
use crate::api::registration_client::RegistrationClient;
use crate::inventory;
use crate::kube_pods::GPU_MILLI_RESOURCE;
use crate::lookup::PodSource;
use crate::plugin::{Plugin, options};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// The API version the plugin registers with.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's socket in the device-plugins directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The kubelet's device-plugins directory.
pub const DEFAULT_SOCKET_DIR: &str = "/var/lib/kubelet/device-plugins";

/// Where and how often.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kubelet's device-plugins directory (holds `kubelet.sock`).
    pub socket_dir: PathBuf,
    /// The file name of the plugin's socket in it.
    pub socket_name: String,
    /// The inventory file, read again every `inventory_poll`.
    pub inventory: PathBuf,
    /// How often to look for a kubelet restart.
    pub watch: Duration,
    /// How often to read the inventory again.
    pub inventory_poll: Duration,
}

/// Why the plugin stops.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The device-plugins directory is missing or not a directory.
    #[error(
        "--socket-dir {dir}: {problem}; give the kubelet's device-plugins directory (on a node: /var/lib/kubelet/device-plugins, mounted into the pod as a hostPath volume)"
    )]
    SocketDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The plugin's socket name is not a plain file name.
    #[error("--socket-name {0:?}: must be a plain file name ending in .sock, without '/'")]
    SocketName(String),
    /// The plugin's socket cannot be created.
    #[error("cannot serve on {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kubelet refused the registration (the API says a plugin then stops).
    #[error("the kubelet refused the registration of {GPU_MILLI_RESOURCE}: {0}")]
    Refused(String),
}

/// A channel to a unix socket (the URI is a placeholder: the connector ignores it).
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Checks that the device-plugins directory exists and is a directory, naming `--socket-dir` when not.
pub fn check_dir(dir: &Path) -> Result<(), RunError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(RunError::SocketDir { dir: dir.to_path_buf(), problem: "is not a directory".into() }),
        Err(e) => Err(RunError::SocketDir { dir: dir.to_path_buf(), problem: e.to_string() }),
    }
}

/// A file's identity: device, inode and change time (a socket created anew may reuse a freed inode number, but
/// not its change time).
type FileId = (u64, u64, i64, i64);

/// The identity of a path, `None` when it does not exist.
fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// One server generation: serving on the socket until `stop` is sent.
struct Serving {
    stop: watch::Sender<()>,
    id: Option<FileId>,
}

fn serve<S: PodSource>(plugin: &Plugin<S>, path: &Path) -> Result<Serving, RunError> {
    // A socket left by an earlier run of the plugin is removed; any other file there is not ours to remove.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            let source = std::io::Error::other("a file that is not a socket is in the way; remove it");
            return Err(RunError::Listen { path: path.to_path_buf(), source });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| RunError::Listen { path: path.to_path_buf(), source })?;
    let (stop, stop_rx) = watch::channel(());
    let service = DevicePluginServer::new(plugin.service(stop_rx.clone()))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    let mut shutdown = stop_rx;
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("device plugin server stopped: {e}");
        }
    });
    tracing::info!(socket = %path.display(), "serving the device plugin API");
    Ok(Serving { stop, id: identity(path) })
}

/// Registers with the kubelet. `Ok(false)`: the kubelet could not be reached (try again later).
async fn register(kubelet: &Path, socket_name: &str) -> Result<bool, RunError> {
    let channel = match connect(kubelet).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot reach the kubelet at {}: {e}; trying again", kubelet.display());
            return Ok(false);
        }
    };
    let req = RegisterRequest {
        version: API_VERSION.into(),
        endpoint: socket_name.into(),
        resource_name: GPU_MILLI_RESOURCE.into(),
        options: Some(options()),
    };
    match RegistrationClient::new(channel).register(req).await {
        Ok(_) => {
            tracing::info!(resource = GPU_MILLI_RESOURCE, endpoint = socket_name, "registered with the kubelet");
            Ok(true)
        }
        Err(s) if s.code() == tonic::Code::Unavailable => {
            tracing::warn!("the kubelet did not answer the registration: {}; trying again", s.message());
            Ok(false)
        }
        Err(s) => Err(RunError::Refused(format!("{:?}: {}", s.code(), s.message()))),
    }
}

/// Serves and registers until `shutdown` resolves (then removes its socket), re-reading the inventory and
/// watching for kubelet restarts meanwhile.
pub async fn run<S: PodSource>(
    plugin: Plugin<S>,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    check_dir(&opts.socket_dir)?;
    let name = &opts.socket_name;
    if name.is_empty() || name.contains('/') || !name.ends_with(".sock") || name == KUBELET_SOCKET {
        return Err(RunError::SocketName(name.clone()));
    }
    let own = opts.socket_dir.join(name);
    let kubelet = opts.socket_dir.join(KUBELET_SOCKET);
    let mut serving = serve(&plugin, &own)?;
    let mut registered: Option<FileId> = None;
    let mut watch_tick = tokio::time::interval(opts.watch);
    let mut inventory_tick = tokio::time::interval(opts.inventory_poll);
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    inventory_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut waiting_logged = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = inventory_tick.tick() => {
                let path = opts.inventory.clone();
                let read = tokio::task::spawn_blocking(move || inventory::load(&path)).await;
                if let Ok(read) = read {
                    plugin.set_inventory(read);
                }
            }
            _ = watch_tick.tick() => {
                check_dir(&opts.socket_dir)?;
                if identity(&own) != serving.id {
                    tracing::warn!("the plugin socket {} was removed (kubelet restart?); serving anew", own.display());
                    let _ = serving.stop.send(());
                    serving = serve(&plugin, &own)?;
                    registered = None;
                }
                match identity(&kubelet) {
                    None => {
                        registered = None;
                        if !waiting_logged {
                            tracing::info!("waiting for the kubelet's {}", kubelet.display());
                            waiting_logged = true;
                        }
                    }
                    Some(id) if registered != Some(id) => {
                        waiting_logged = false;
                        if register(&kubelet, name).await? {
                            registered = Some(id);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let _ = serving.stop.send(());
    if identity(&own) == serving.id {
        let _ = std::fs::remove_file(&own);
    }
    Ok(())
}
