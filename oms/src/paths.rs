//! Resolving user paths against the model root, and checking the names a signed manifest holds.

use std::path::{Component, Path, PathBuf};

/// `p` made absolute (against the current directory) and normalised: `.` dropped, `..` applied, symbolic links
/// resolved where the path (or its parent) exists.
pub fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if let Ok(c) = std::fs::canonicalize(&out) {
        return c;
    }
    match (out.parent().and_then(|d| std::fs::canonicalize(d).ok()), out.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => out,
    }
}

/// The POSIX path of `p` relative to the model directory, if `p` lies strictly inside it; `None` otherwise (also
/// when the model is a single file).
pub fn model_relative(model: &Path, p: &Path) -> Option<String> {
    let root = std::fs::canonicalize(model).ok().filter(|r| r.is_dir())?;
    let rel = resolve(p).strip_prefix(&root).ok()?.to_path_buf();
    let parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_str().map(str::to_string)).collect::<Option<_>>()?;
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// A user's `--ignore-paths` value as a model-relative path: resolved against the current directory as
/// `model_signing` does; when that lands outside the model, a relative value is read as relative to the model.
pub fn ignore_path(model: &Path, p: &Path) -> Option<String> {
    model_relative(model, p).or_else(|| {
        if p.is_absolute() {
            return None;
        }
        let s = p.to_str()?.replace('\\', "/");
        normalize_name(&s).filter(|n| n != ".")
    })
}

/// Normalises a manifest name as `PurePosixPath` does (`a//b` → `a/b`, `./a` → `a`, empty → `.`), and refuses any
/// name that could leave the model directory (absolute, or with a `..` component) with `None`.
pub fn normalize_name(name: &str) -> Option<String> {
    if name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_escapes_refused() {
        assert_eq!(normalize_name("a//b/./c").unwrap(), "a/b/c");
        assert_eq!(normalize_name(".").unwrap(), ".");
        assert!(normalize_name("../x").is_none());
        assert!(normalize_name("a/../../x").is_none());
        assert!(normalize_name("/etc/passwd").is_none());
    }

    #[test]
    fn relative_inside_only() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        std::fs::create_dir(&model).unwrap();
        assert_eq!(model_relative(&model, &model.join("x/y")).as_deref(), Some("x/y"));
        assert_eq!(model_relative(&model, &dir.path().join("m.sig")), None);
        assert_eq!(model_relative(&model, &model), None);
        assert_eq!(ignore_path(&model, Path::new("not-in-cwd-extra")).as_deref(), Some("not-in-cwd-extra"));
    }
}
