//! Dataset sources: a local directory (walked directly, so any file name works) or an
//! object-store URL (`file://`, `s3://`, `gs://`, `az://`, `http(s)://` with WebDAV listing).
//!
//! Listing follows Spark's file index: names starting with `.` or `_` (files and directories)
//! are hidden. A directory that cannot be read, or a symlink loop, is a listing failure
//! reported with the others; it does not end the listing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::cache::Failure;
use crate::error::{Error, Result};

/// Items larger than this are refused: an item is held in memory while it is transformed.
pub const MAX_ITEM_BYTES: u64 = 4 << 30;

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceItem {
    /// Path relative to the source root, with `/` separators (file names that are not UTF-8
    /// appear with U+FFFD in place of the invalid bytes).
    pub path: String,
    pub size: u64,
    /// ETag when the store gives one, else the modification time: changes when the file does.
    pub version: String,
    /// The file itself, for local sources (exact even when `path` is lossy).
    #[serde(skip)]
    pub local: Option<PathBuf>,
}

/// What a listing found: the items, sorted by path, and what could not be listed.
#[derive(Debug, Default)]
pub struct Listing {
    pub items: Vec<SourceItem>,
    pub failures: Vec<Failure>,
}

#[derive(Debug)]
enum Store {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
    },
}

/// A source: where it is and how to read it.
#[derive(Debug)]
pub struct Source {
    /// As the user gave it (directory path or URL).
    pub location: String,
    store: Store,
}

/// Few, short retries: an unreachable store should fail in seconds, not minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    }
}

/// Timeouts kiln sets, plus `<PREFIX>ALLOW_HTTP` from the environment (these options replace
/// what the builders' own environment parsing put there).
fn client_options(env_prefix: &str) -> ClientOptions {
    let allow_http = !env_prefix.is_empty()
        && std::env::var(format!("{env_prefix}ALLOW_HTTP"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    ClientOptions::new()
        .with_timeout(Duration::from_secs(60))
        .with_connect_timeout(Duration::from_secs(10))
        .with_allow_http(allow_http)
}

fn built<T>(location: &str, result: object_store::Result<T>) -> Result<T> {
    result.map_err(|e| Error::Source {
        location: location.to_owned(),
        message: e.to_string(),
    })
}

/// Spark's hidden-path rule, applied to every component of a relative path.
fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

impl Source {
    /// Opens a local directory or a URL. Credentials come from the usual environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), endpoints too (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).
    pub fn open(location: &str) -> Result<Source> {
        let error = |message: String| Error::Source {
            location: location.to_owned(),
            message,
        };
        if !location.contains("://") {
            return Self::local(location, Path::new(location));
        }
        let url = url::Url::parse(location).map_err(|e| error(format!("invalid URL: {e}")))?;
        let prefix = StorePath::from_url_path(url.path()).map_err(|e| error(format!("invalid path: {e}")))?;
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| error("not a local file URL".into()))?;
                return Self::local(location, &dir);
            }
            "s3" | "s3a" => Arc::new(built(location,
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(location)
                    .with_retry(retry())
                    .with_client_options(client_options("AWS_"))
                    .build(),
            )?),
            "gs" => Arc::new(built(location,
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(location)
                    .with_retry(retry())
                    .with_client_options(client_options("GOOGLE_"))
                    .build(),
            )?),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(built(location,
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(location)
                    .with_retry(retry())
                    .with_client_options(client_options("AZURE_"))
                    .build(),
            )?),
            "http" | "https" => {
                // Rooted at the server's origin with the URL path as prefix: the HTTP store
                // lists locations relative to the origin.
                let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
                    + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
                Arc::new(built(location,
                    object_store::http::HttpBuilder::new()
                        .with_url(origin)
                        .with_retry(retry())
                        .with_client_options(client_options("").with_allow_http(true))
                        .build(),
                )?)
            }
            other => {
                return Err(error(format!(
                    "unsupported source scheme `{other}://` (use a directory, file://, s3://, gs://, az:// or http(s)://)"
                )))
            }
        };
        Ok(Source {
            location: location.to_owned(),
            store: Store::Remote { store, prefix },
        })
    }

    fn local(location: &str, dir: &Path) -> Result<Source> {
        if !dir.is_dir() {
            return Err(Error::Source {
                location: location.to_owned(),
                message: "not a directory".into(),
            });
        }
        Ok(Source {
            location: location.to_owned(),
            store: Store::Local(dir.to_owned()),
        })
    }

    /// Lists every file under the source (sorted by path) that matches one of `include`
    /// (all files when `include` is empty).
    pub async fn list(&self, include: &[String]) -> Result<Listing> {
        let filter = glob_set(include)?;
        let keep = |relative: &str| {
            let name = relative.rsplit('/').next().unwrap_or(relative);
            !relative.is_empty()
                && !relative.split('/').any(is_hidden)
                && filter
                    .as_ref()
                    .is_none_or(|f| f.is_match(relative) || f.is_match(name))
        };
        let mut listing = match &self.store {
            Store::Local(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || list_local(&root))
                    .await
                    .map_err(|e| Error::panicked("directory listing", e.into_panic()))?
            }
            Store::Remote { store, prefix } => {
                let prefix_opt = (!prefix.as_ref().is_empty()).then_some(prefix);
                let metas: Vec<_> =
                    store
                        .list(prefix_opt)
                        .try_collect()
                        .await
                        .map_err(|e| Error::Listing {
                            location: self.location.clone(),
                            message: e.to_string(),
                        })?;
                let items = metas
                    .into_iter()
                    .map(|meta| {
                        let full = meta.location.as_ref();
                        let relative = full
                            .strip_prefix(prefix.as_ref())
                            .unwrap_or(full)
                            .trim_start_matches('/');
                        SourceItem {
                            path: relative.to_owned(),
                            size: meta.size,
                            version: meta
                                .e_tag
                                .clone()
                                .unwrap_or_else(|| meta.last_modified.to_rfc3339()),
                            local: None,
                        }
                    })
                    .collect();
                Listing {
                    items,
                    failures: Vec::new(),
                }
            }
        };
        listing.items.retain(|item| keep(&item.path));
        listing.items.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    /// Whether items are local files ([`Source::read_local`] reads them).
    pub fn is_local(&self) -> bool {
        matches!(self.store, Store::Local(_))
    }

    /// Reads an item of a local directory on the calling thread; `None` for object stores,
    /// which [`Source::fetch`] reads asynchronously. Conversion reads local files on the worker
    /// that transforms them, saving a thread hand-off per file. Checked as `fetch` checks.
    pub fn read_local(&self, item: &SourceItem) -> Option<Result<Bytes>> {
        match &self.store {
            Store::Local(root) => Some(read_local_file(root, item)),
            Store::Remote { .. } => None,
        }
    }

    /// Reads one listed file: exactly the listed size, never more (a store that sends more,
    /// or a file that changed size since it was listed, is an error for that item).
    pub async fn fetch(&self, item: &SourceItem) -> Result<Bytes> {
        let fail = |message: String| fetch_error(item, message);
        let limit = listed_size(item)?;
        let bytes = match &self.store {
            Store::Local(root) => {
                let (root, item) = (root.clone(), item.clone());
                return tokio::task::spawn_blocking(move || read_local_file(&root, &item))
                    .await
                    .map_err(|e| Error::Panicked {
                        what: "file read",
                        message: e.to_string(),
                    })?;
            }
            Store::Remote { store, prefix } => {
                let location = if prefix.as_ref().is_empty() {
                    StorePath::from(item.path.as_str())
                } else {
                    StorePath::from(format!("{}/{}", prefix.as_ref(), item.path))
                };
                let result = store.get(&location).await.map_err(|e| fail(e.to_string()))?;
                let mut stream = result.into_stream();
                let mut bytes = BytesMut::with_capacity(limit);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| fail(e.to_string()))?;
                    if bytes.len() + chunk.len() > limit {
                        return Err(fail(format!(
                            "the store sent more than the {limit} bytes it listed"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                bytes.freeze()
            }
        };
        exactly_listed(item, bytes)
    }
}

fn read_local_file(root: &Path, item: &SourceItem) -> Result<Bytes> {
    let limit = listed_size(item)?;
    let path = item.local.clone().unwrap_or_else(|| root.join(&item.path));
    let mut bytes = Vec::with_capacity(limit);
    std::fs::File::open(path)
        .and_then(|file| file.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fetch_error(item, e.to_string()))?;
    exactly_listed(item, bytes.into())
}

fn fetch_error(item: &SourceItem, message: String) -> Error {
    Error::Fetch {
        path: item.path.clone(),
        message,
    }
}

/// The listed size as a read limit, or an error past [`MAX_ITEM_BYTES`].
fn listed_size(item: &SourceItem) -> Result<usize> {
    if item.size > MAX_ITEM_BYTES {
        return Err(fetch_error(
            item,
            format!(
                "{} bytes is over kiln's per-item limit of {MAX_ITEM_BYTES} bytes",
                item.size
            ),
        ));
    }
    Ok(item.size as usize)
}

/// `bytes` when it is exactly the listed size.
fn exactly_listed(item: &SourceItem, bytes: Bytes) -> Result<Bytes> {
    let limit = item.size as usize;
    if bytes.len() != limit {
        return Err(fetch_error(
            item,
            format!(
                "read {}{} bytes, but {limit} were listed (the file changed since it was listed)",
                if bytes.len() > limit { "more than " } else { "" },
                bytes.len().min(limit)
            ),
        ));
    }
    Ok(bytes)
}

/// Walks a directory: hidden names skipped, links followed with loops detected, unreadable
/// directories reported and skipped.
fn list_local(root: &Path) -> Listing {
    let mut listing = Listing::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(&e.file_name().to_string_lossy()));
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e
                    .path()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(relative_string)
                    .unwrap_or_default();
                let error = match e.loop_ancestor() {
                    Some(ancestor) => format!("symlink loop back to {}", ancestor.display()),
                    None => e
                        .io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| e.to_string()),
                };
                listing.failures.push(Failure {
                    path,
                    error: format!("not listed: {error}"),
                });
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        let path = relative_string(relative);
        match entry.metadata() {
            Ok(meta) => {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                listing.items.push(SourceItem {
                    path,
                    size: meta.len(),
                    version: format!("mtime:{modified}"),
                    local: Some(entry.path().to_owned()),
                });
            }
            Err(e) => listing.failures.push(Failure {
                path,
                error: format!("not listed: {e}"),
            }),
        }
    }
    listing
}

/// A relative path with `/` separators; non-UTF-8 bytes become U+FFFD.
fn relative_string(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| Error::invalid("--include", format!("{p:?}: {e}")))?);
    }
    Ok(Some(
        builder
            .build()
            .map_err(|e| Error::invalid("--include", e.to_string()))?,
    ))
}
