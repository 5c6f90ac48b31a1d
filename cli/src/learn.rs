//! What `wait` and `watch` learn about job durations, kept between runs.
//!
//! Each run of the command is one process and, usually, one job: without a memory every run
//! would start cold. So the client's learned durations are read from, and written back to, a
//! file per API profile and host in the user's cache directory —
//! `$TRANSLATION_STATUS_CACHE_DIR`, else `$XDG_CACHE_HOME/translation-status`, else
//! `~/.cache/translation-status` (`~/Library/Caches/translation-status` on macOS,
//! `%LOCALAPPDATA%\translation-status` on Windows) — as `learned/<profile>@<host>.json`.
//! `--no-learn` neither reads nor writes it. A damaged or oversized file is reported on
//! stderr and replaced; it never stops a wait.

use std::path::{Path, PathBuf};

use translation_status::poll::{LearnedDurations, MAX_SAVED_BYTES, SavedDurations};

/// Where the learned durations of `profile` at `host` are kept, if a cache directory is
/// known.
pub(crate) fn path(
    profile: &str,
    host: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let set = |var: &str| env(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = set("TRANSLATION_STATUS_CACHE_DIR")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("translation-status")))
        .or_else(|| {
            let home = set("HOME")?;
            Some(if cfg!(target_os = "macos") {
                home.join("Library/Caches/translation-status")
            } else {
                home.join(".cache/translation-status")
            })
        })
        .or_else(|| set("LOCALAPPDATA").map(|d| d.join("translation-status")))?;
    Some(
        dir.join("learned")
            .join(format!("{}@{}.json", safe(profile), safe(host))),
    )
}

/// A file-name-safe form of `name`: letters, digits, `.`, `-` and `_` kept, anything else
/// `_`, at most 100 characters.
fn safe(name: &str) -> String {
    name.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The host (and port) of `url`, lower-cased; the whole string when it has no scheme.
pub(crate) fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    // Credentials in a URL are never part of a file name.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    authority.to_ascii_lowercase()
}

/// The learned durations kept at `path`: empty when there is no file, and, with a warning on
/// stderr, when it cannot be used.
pub(crate) fn load(path: &Path) -> LearnedDurations {
    let learned = LearnedDurations::default();
    let bytes = match read_bounded(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return learned,
        Err(problem) => {
            warn(path, &problem);
            return learned;
        }
    };
    match SavedDurations::from_json(&bytes).and_then(|saved| learned.import(&saved)) {
        Ok(_) => {}
        Err(e) => warn(path, &e.to_string()),
    }
    learned
}

/// Writes what `learned` holds to `path` (through a temporary file, so a reader never sees
/// half of it); a failure is a warning, not an error of the wait.
pub(crate) fn save(path: &Path, learned: &LearnedDurations) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&partial, learned.export().to_json())?;
        std::fs::rename(&partial, path)
    };
    if let Err(e) = write() {
        eprintln!(
            "translation-status: could not keep what this wait learned in {}: {e}",
            path.display()
        );
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SAVED_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

fn warn(path: &Path, problem: &str) {
    eprintln!(
        "translation-status: ignoring the learned durations in {} ({problem}); starting afresh",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_file_per_profile_and_host() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = path("heygen-v2", "api.heygen.com", env(&[("HOME", "/home/u")])).unwrap();
        if !cfg!(target_os = "macos") {
            assert_eq!(
                p,
                PathBuf::from(
                    "/home/u/.cache/translation-status/learned/heygen-v2@api.heygen.com.json"
                )
            );
        }
        let p = path("result", "127.0.0.1:8080", env(&[("XDG_CACHE_HOME", "/c")])).unwrap();
        assert_eq!(
            p,
            PathBuf::from("/c/translation-status/learned/result@127.0.0.1_8080.json")
        );
        let p = path(
            "../x",
            "h/..",
            env(&[("TRANSLATION_STATUS_CACHE_DIR", "/t")]),
        )
        .unwrap();
        assert_eq!(p, PathBuf::from("/t/learned/.._x@h_...json"));
        assert_eq!(path("result", "h", env(&[])), None);
        assert_eq!(
            host("https://User:pw@API.example.com:8443/v1/x?y"),
            "api.example.com:8443"
        );
        assert_eq!(host("j-123"), "j-123");
    }
}
