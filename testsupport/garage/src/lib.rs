//! Test only: a real one-node [Garage](https://garagehq.deuxfleurs.fr/) S3 server on free loopback ports, with
//! one access key, killed when dropped.
//!
//! The binary is `$SOVRA_GARAGE`, else `~/.cache/sovra-garage/2.5.0/bin/garage` (what `.ci/run` installs with
//! `cargo install garage --version 2.5.0 --locked --root ~/.cache/sovra-garage/2.5.0`). When it is missing,
//! [`Garage::start`] fails with that command: a test that needs a real S3 store fails rather than skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Garage version the harness is written against.
pub const GARAGE_VERSION: &str = "2.5.0";

/// Why the harness could not start or drive Garage.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    /// No binary.
    #[error(
        "the garage binary is not at {0}; install it with `cargo install garage --version 2.5.0 --locked --root \
         ~/.cache/sovra-garage/2.5.0` (what .ci/run does) or point SOVRA_GARAGE at one"
    )]
    Missing(PathBuf),
    /// A file or process could not be set up.
    #[error("garage test server: {0}")]
    Io(String),
    /// A `garage` command failed.
    #[error("`garage {args}` failed: {output}")]
    Command {
        /// The arguments.
        args: String,
        /// What it printed.
        output: String,
    },
}

/// Where the garage binary is: `$SOVRA_GARAGE`, else the cache path.
pub fn binary() -> Result<PathBuf, GarageError> {
    let path = match std::env::var_os("SOVRA_GARAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/sovra-garage").join(GARAGE_VERSION).join("bin/garage")
        }
    };
    if path.is_file() { Ok(path) } else { Err(GarageError::Missing(path)) }
}

fn free_port() -> Result<u16, GarageError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| GarageError::Io(format!("no free port: {e}")))
}

/// A running one-node Garage with one access key allowed on every bucket it creates.
pub struct Garage {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    endpoint: String,
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Garage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Garage").field("endpoint", &self.endpoint).finish()
    }
}

impl Garage {
    /// Starts a server (data uncompressed, so that tests can read what it stores) and creates an access key.
    /// Tries three times: a free port found by binding port 0 may be taken by a parallel test before Garage
    /// binds it.
    pub fn start() -> Result<Garage, GarageError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once() {
                Ok(g) => return Ok(g),
                Err(e @ GarageError::Missing(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| GarageError::Io("garage did not start".into())))
    }

    fn start_once() -> Result<Garage, GarageError> {
        let bin = binary()?;
        let dir = tempfile::tempdir().map_err(|e| GarageError::Io(e.to_string()))?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let secret: String = {
            let mut s = String::new();
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mut x = seed.as_nanos() as u64 ^ (std::process::id() as u64) << 32 ^ rpc as u64;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(&format!("{x:016x}"));
            }
            s
        };
        let config = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             compression_level = \"none\"\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"{secret}\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("garage.toml"), config).map_err(|e| GarageError::Io(e.to_string()))?;
        let log = std::fs::File::create(dir.path().join("garage.log")).map_err(|e| GarageError::Io(e.to_string()))?;
        let err = log.try_clone().map_err(|e| GarageError::Io(e.to_string()))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| GarageError::Io(format!("cannot start {}: {e}", bin.display())))?;
        let mut g = Garage {
            bin,
            dir,
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
        };
        // The CLI reaches the server over RPC once it listens.
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            match g.garage(&["node", "id", "-q"]) {
                Ok(out) => break out.trim().split('@').next().unwrap_or("").to_string(),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    if let Some(Some(status)) = g.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                        return Err(GarageError::Io(format!("garage exited ({status}): {}", g.log())));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        g.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        g.garage(&["layout", "apply", "--version", "1"])?;
        let out = g.garage(&["key", "create", "sovra-test"])?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
                .unwrap_or_default()
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        if g.key_id.is_empty() || g.secret.is_empty() {
            return Err(GarageError::Command { args: "key create sovra-test".into(), output: out });
        }
        Ok(g)
    }

    /// Runs `garage -c <config> args…` and returns its standard output.
    pub fn garage(&self, args: &[&str]) -> Result<String, GarageError> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .output()
            .map_err(|e| GarageError::Io(format!("cannot run {}: {e}", self.bin.display())))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(GarageError::Command {
                args: args.join(" "),
                output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
            })
        }
    }

    /// Creates a bucket the access key may read and write.
    pub fn create_bucket(&self, name: &str) -> Result<(), GarageError> {
        self.garage(&["bucket", "create", name])?;
        self.garage(&["bucket", "allow", "--read", "--write", "--owner", name, "--key", &self.key_id])?;
        Ok(())
    }

    /// The S3 endpoint (`http://127.0.0.1:<port>`, path-style requests).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The S3 region.
    pub fn region(&self) -> &str {
        "garage"
    }

    /// The access key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret key.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Where the server keeps object data (uncompressed).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL), e.g. to test an unreachable endpoint.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
