//! The served directory: listing its media, resolving `/files/PATH` inside it, and reading and
//! saving `labels.csv`.
//!
//! Everything is resolved against the directory's canonical path, and a path is served or
//! listed only if its canonical path (every link followed) stays inside it: a link to
//! `/etc/passwd` named `x.wav` is neither listed nor served. Loops among links are detected
//! (walkdir compares each directory with its ancestors), and a listing's size is bounded.

use std::fs;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;

use super::ServeError;

/// The labels file `PUT /api/labels` writes, in the format `kiln convert --labels` reads.
pub const LABELS_FILE: &str = "labels.csv";
/// The extensions listed and served, with their content types: the formats `load_audio` and
/// `decode_image` read, so the page can open whatever it is shown. `.oga` is Ogg audio's
/// registered extension (RFC 5334); browsers play `audio/ogg` and `audio/flac` natively.
const MEDIA: &[(&str, &str)] = &[
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
];
/// Files one listing may return (about 100 MB of JSON at most).
const MAX_LISTED: usize = 1_000_000;
/// Directory entries one listing may visit: links can make a tree whose paths grow
/// exponentially without a loop (each directory linking twice to the next).
const MAX_VISITED: usize = 4_000_000;

/// A refusal, as the client will see it.
pub(super) type Refusal = (StatusCode, String);

/// The canonical form of `--dir`, which every served path must stay inside.
pub(super) fn canonical_root(dir: &Path) -> Result<PathBuf, ServeError> {
    let root = fs::canonicalize(dir).map_err(|source| ServeError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    if !root.is_dir() {
        return Err(ServeError::NotADirectory { path: dir.to_owned() });
    }
    Ok(root)
}

/// The content type of a dataset file, from its extension; `None` for anything else.
fn media_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    MEDIA
        .iter()
        .find(|(e, _)| extension.eq_ignore_ascii_case(e))
        .map(|(_, mime)| *mime)
}

/// Hidden names are skipped, as Spark's file listing skips them (and the page's temporary
/// labels files start with `.`).
fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Whether `path`'s canonical form is inside `root`.
fn inside(root: &Path, path: &Path) -> bool {
    fs::canonicalize(path).is_ok_and(|real| real.starts_with(root))
}

/// The media files under `root`, as sorted `/`-separated relative paths. Unreadable
/// directories, link loops, links out of `root` and names that are not UTF-8 (JSON cannot
/// carry them) are skipped, so one bad entry never hides the rest.
pub(super) fn list_media(root: &Path) -> Result<Vec<String>, Refusal> {
    let walk = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|entry| {
            entry.depth() == 0
                || (entry.file_name().to_str().is_some_and(|name| !hidden(name))
                    && (!entry.path_is_symlink() || inside(root, entry.path())))
        });
    let mut files = Vec::new();
    for (visited, entry) in walk.enumerate() {
        if visited >= MAX_VISITED {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "--dir {} has more than {MAX_VISITED} entries (counting linked directories)",
                    root.display()
                ),
            ));
        }
        // Loops and unreadable directories are errors for that entry only.
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str() else {
            continue;
        };
        if media_type(name).is_none() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(relative) = relative.to_str() else {
            continue;
        };
        if files.len() == MAX_LISTED {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("--dir {} has more than {MAX_LISTED} media files", root.display()),
            ));
        }
        files.push(relative.replace(std::path::MAIN_SEPARATOR, "/"));
    }
    files.sort();
    Ok(files)
}

/// Decodes a URL path's `%XX` escapes strictly: a `%` not followed by two hex digits, or bytes
/// that are not UTF-8, are refused rather than guessed at.
pub(super) fn percent_decode(raw: &str) -> Result<String, Refusal> {
    let bad = |why: &str| Err((StatusCode::BAD_REQUEST, format!("invalid path {raw:?}: {why}")));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
            let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                return bad("`%` must be followed by two hex digits");
            };
            // Both digits are < 16, so this fits a byte.
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(path) => Ok(path),
        Err(_) => bad("not UTF-8 once decoded"),
    }
}

/// Resolves `/files/PATH` (still percent-encoded) to a canonical file inside `root` and its
/// content type.
pub(super) fn resolve_media(root: &Path, raw: &str) -> Result<(PathBuf, &'static str), Refusal> {
    let relative = percent_decode(raw)?;
    if relative
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'))
    {
        return Err((StatusCode::BAD_REQUEST, format!("invalid path {relative:?}")));
    }
    let not_found = || (StatusCode::NOT_FOUND, format!("no dataset file {relative:?}"));
    if relative.split('/').any(hidden) {
        return Err(not_found());
    }
    let mime = media_type(&relative).ok_or_else(not_found)?;
    let real = fs::canonicalize(root.join(&relative)).map_err(|_| not_found())?;
    if !real.starts_with(root) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("{relative:?} links outside the served directory"),
        ));
    }
    if !real.is_file() {
        return Err(not_found());
    }
    Ok((real, mime))
}

/// `labels.csv`, or just the header when there is none yet.
pub(super) fn read_labels(root: &Path, max_bytes: usize) -> Result<Vec<u8>, Refusal> {
    let path = root.join(LABELS_FILE);
    let internal = |why: String| (StatusCode::INTERNAL_SERVER_ERROR, why);
    let real = match fs::canonicalize(&path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(b"path,label\n".to_vec()),
        Err(e) => return Err(internal(format!("reading {}: {e}", path.display()))),
    };
    if !real.starts_with(root) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("{LABELS_FILE} links outside the served directory"),
        ));
    }
    let size = fs::metadata(&real)
        .map_err(|e| internal(format!("reading {}: {e}", path.display())))?
        .len();
    if size > max_bytes as u64 {
        return Err(internal(format!(
            "{} is {size} bytes, more than the {max_bytes} bytes served",
            path.display()
        )));
    }
    fs::read(&real).map_err(|e| internal(format!("reading {}: {e}", path.display())))
}

/// Saves `labels.csv` atomically through the crate's one atomic-write helper (a temporary of
/// its own per save, so concurrent saves cannot mix); the caller serialises saves so the last
/// one wins whole.
pub(super) fn write_labels(root: &Path, bytes: &[u8]) -> Result<(), Refusal> {
    let path = root.join(LABELS_FILE);
    crate::fsio::write_atomic(&path, bytes)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("saving labels: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_strict_and_never_panics() {
        assert_eq!(percent_decode("a%20b/x.wav").unwrap(), "a b/x.wav");
        assert_eq!(percent_decode("%C3%BC%23%3F.wav").unwrap(), "ü#?.wav");
        assert_eq!(percent_decode("é.wav").unwrap(), "é.wav");
        for bad in ["%aé", "%", "%a", "%zz", "x%4", "%FF.wav", "%C3"] {
            let (status, message) = percent_decode(bad).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(message.starts_with("invalid path"), "{bad}: {message}");
        }
    }

    #[test]
    fn media_types_come_from_the_extension() {
        assert_eq!(media_type("a/B.WAV"), Some("audio/wav"));
        assert_eq!(media_type("x.jpeg"), Some("image/jpeg"));
        assert_eq!(media_type("x.WebP"), Some("image/webp"));
        assert_eq!(media_type("clip.flac"), Some("audio/flac"));
        assert_eq!(media_type("clip.MP3"), Some("audio/mpeg"));
        assert_eq!(media_type("clip.ogg"), Some("audio/ogg"));
        assert_eq!(media_type("clip.oga"), Some("audio/ogg"));
        assert_eq!(media_type("clip.opus"), None);
        assert_eq!(media_type("flac"), None);
        assert_eq!(media_type("labels.csv"), None);
        assert_eq!(media_type("wav"), None);
    }
}
