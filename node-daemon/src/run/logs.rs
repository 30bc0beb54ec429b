//! Reading a replica's output for `sovra logs`: the last lines of its rotated files, then, when following, what it
//! writes until it ends (across rotations: an open file survives being renamed, so nothing is skipped).

use super::files::{Record, parse_key, read_json};
use super::shim::rotated;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The directory of the latest attempt of `job`'s replica `replica` on this node.
pub fn latest_dir(state_dir: &Path, job: u64, replica: u32) -> Option<PathBuf> {
    let entries = std::fs::read_dir(state_dir.join("replicas")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_key(&e.file_name().to_string_lossy()).map(|k| (k, e.path())))
        .filter(|((j, r, _), _)| *j == job && *r == replica)
        .max_by_key(|(k, _)| k.2)
        .map(|(_, p)| p)
}

/// The last `n` lines of `data` (all of it for 0).
fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return data;
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// Sends the output of the replica in `dir`: the last `tail` lines (0: everything kept), then with `follow` new
/// output every 200 ms until the replica has ended (or `cancel` is set). `send` returns false when the reader is
/// gone.
pub fn read(
    dir: &Path,
    tail: usize,
    follow: bool,
    cancel: &Arc<AtomicBool>,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    let log = dir.join("output.log");
    // Rotated files oldest first, then the current one: their end, as one text.
    let mut past = Vec::new();
    for n in (1..=64).rev() {
        if let Ok(b) = std::fs::read(rotated(&log, n)) {
            past.extend_from_slice(&b);
        }
    }
    let mut file = std::fs::File::open(&log).ok();
    let mut current = Vec::new();
    if let Some(f) = file.as_mut() {
        f.read_to_end(&mut current).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    }
    past.extend_from_slice(&current);
    let first = last_lines(&past, tail);
    if !first.is_empty() && !send(first.to_vec()) {
        return Ok(());
    }
    if !follow {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let ended = read_json::<Record>(&dir.join("state.json")).is_some_and(|r| r.ended.is_some());
        // Drain what is there; if the file was rotated, finish the old one and go on with the new.
        while let Some(f) = file.as_mut() {
            match f.read(&mut buf) {
                Ok(0) => {
                    let same = match (f.metadata(), std::fs::metadata(&log)) {
                        (Ok(a), Ok(b)) => {
                            std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b)
                        }
                        _ => true,
                    };
                    if same {
                        break;
                    }
                    file = std::fs::File::open(&log).ok();
                }
                Ok(n) => {
                    if !send(buf[..n].to_vec()) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("cannot read {}: {e}", log.display())),
            }
        }
        if file.is_none() {
            file = std::fs::File::open(&log).ok();
            if let Some(f) = file.as_mut() {
                let _ = f.seek(SeekFrom::Start(0));
                continue;
            }
        }
        if ended {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"a\nb\n");
    }
}
