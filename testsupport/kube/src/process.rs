//! Child processes of a test control plane: started with their output in a log file, killed when dropped.

use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Proc, HarnessError> {
        Self::spawn_env(name, program, args, &[], log)
    }

    /// As [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &std::ffi::OsStr)],
        log: &Path,
    ) -> Result<Proc, HarnessError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| HarnessError::Io(format!("{}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| HarnessError::Io(format!("{}: {e}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("{name} ({}): {e}", program.display())))?;
        Ok(Proc { name: name.to_string(), child: Some(child), log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Fails with the end of its log when the process has exited.
    pub fn check_alive(&mut self) -> Result<(), HarnessError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(HarnessError::Start(format!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                self.log_tail(40)
            ))),
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: a small race with other processes, fine for tests).
pub fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError::Io(format!("free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| HarnessError::Io(format!("free port: {e}")))
}
