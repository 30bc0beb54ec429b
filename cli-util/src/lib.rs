//! What every Sovra binary (`sovra`, `sovra-scheduler`, `sovra-node-daemon`, `sovra-extender`) does at start.
//!
//! **A closed stdout pipe ends the program quietly.** A reader that stops early (`sovra-node-daemon watch … |
//! head`) is normal, not a crash. Rust ignores SIGPIPE, so the write fails with `BrokenPipe` and `println!` panics
//! ("failed printing to stdout"). Restoring SIGPIPE's default action (the `sigpipe` crate) would end the program
//! quietly too, but it also kills it when a *socket* write hits a closed connection: hyper writes with `writev`,
//! which has no `MSG_NOSIGNAL`, so a daemon or server whose peer hangs up would die without a word. So SIGPIPE stays
//! ignored, and [`exit_quietly_on_broken_pipe`] installs a panic hook that turns exactly that panic — stdout, broken
//! pipe — into exit status 0, leaving every other panic to the default hook. Hand-written because no crate does this
//! without the signal (and `unsafe` is forbidden in this workspace).

/// Installs the panic hook described in the crate documentation. Call it first in `main`.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_stdout_broken_pipe(info.payload()) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic payload is `println!`'s on a closed stdout pipe.
fn is_stdout_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.contains("failed printing to stdout") && msg.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stdout_broken_pipe_panic_is_recognised() {
        let yes = String::from("failed printing to stdout: Broken pipe (os error 32)");
        assert!(is_stdout_broken_pipe(&yes));
        assert!(!is_stdout_broken_pipe(&"failed printing to stdout: No space left on device"));
        assert!(!is_stdout_broken_pipe(&"index out of bounds"));
    }
}
