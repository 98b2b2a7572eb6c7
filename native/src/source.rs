//! Dataset sources: a local directory or an object-store URL (`file://`, `s3://`, `gs://`,
//! `az://`, `http(s)://` with WebDAV listing), listed like Spark's `binaryFile` reader.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceItem {
    /// Path relative to the source root, with `/` separators.
    pub path: String,
    pub size: u64,
    /// ETag when the store gives one, else the modification time: changes when the file does.
    pub version: String,
}

/// A listed source: where it is and what it holds.
#[derive(Debug)]
pub struct Source {
    /// As the user gave it (directory path or URL).
    pub location: String,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
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

impl Source {
    /// Opens a local directory or a URL. Credentials come from the usual environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), endpoints too (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).
    pub fn open(location: &str) -> Result<Source> {
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = if location.contains("://") {
            let url = url::Url::parse(location).with_context(|| format!("invalid source URL {location}"))?;
            let prefix = StorePath::from_url_path(url.path()).context("source URL path")?;
            let store: Arc<dyn ObjectStore> = match url.scheme() {
                "file" => {
                    let dir = url.to_file_path().map_err(|_| anyhow::anyhow!("invalid file URL {location}"))?;
                    return Self::local(location, &dir);
                }
                "s3" | "s3a" => Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_url(location)
                        .with_retry(retry())
                        .with_client_options(client_options("AWS_"))
                        .build()?,
                ),
                "gs" => Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(location)
                        .with_retry(retry())
                        .with_client_options(client_options("GOOGLE_"))
                        .build()?,
                ),
                "az" | "abfs" | "abfss" | "azure" => Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(location)
                        .with_retry(retry())
                        .with_client_options(client_options("AZURE_"))
                        .build()?,
                ),
                "http" | "https" => {
                    // Rooted at the server's origin with the URL path as prefix: the HTTP store
                    // lists locations relative to the origin.
                    let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
                        + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
                    Arc::new(
                        object_store::http::HttpBuilder::new()
                            .with_url(origin)
                            .with_retry(retry())
                            .with_client_options(client_options("").with_allow_http(true))
                            .build()?,
                    )
                }
                other => bail!("unsupported source scheme `{other}://` (use a directory, file://, s3://, gs://, az:// or http(s)://)"),
            };
            // Bucket-style URLs: the bucket is the store, the rest of the path the prefix.
            (store, prefix)
        } else {
            return Self::local(location, std::path::Path::new(location));
        };
        Ok(Source {
            location: location.to_owned(),
            store,
            prefix,
        })
    }

    fn local(location: &str, dir: &std::path::Path) -> Result<Source> {
        if !dir.is_dir() {
            bail!("source {location}: not a directory");
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening source directory {location}"))?;
        Ok(Source {
            location: location.to_owned(),
            store: Arc::new(store),
            prefix: StorePath::default(),
        })
    }

    /// Lists every file under the source (sorted by path) that matches one of `include`
    /// (all files when `include` is empty).
    pub async fn list(&self, include: &[String]) -> Result<Vec<SourceItem>> {
        let filter = glob_set(include)?;
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .with_context(|| format!("listing source {}", self.location))?;
        let mut items: Vec<SourceItem> = metas
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.as_ref();
                let relative = full
                    .strip_prefix(self.prefix.as_ref())
                    .unwrap_or(full)
                    .trim_start_matches('/');
                let name = relative.rsplit('/').next().unwrap_or(relative);
                // Hidden files and our own temporaries are never data.
                if name.starts_with('.') || relative.is_empty() {
                    return None;
                }
                if let Some(filter) = &filter {
                    if !filter.is_match(relative) && !filter.is_match(name) {
                        return None;
                    }
                }
                let version = meta
                    .e_tag
                    .clone()
                    .unwrap_or_else(|| meta.last_modified.to_rfc3339());
                Some(SourceItem {
                    path: relative.to_owned(),
                    size: meta.size,
                    version,
                })
            })
            .collect();
        items.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(items)
    }

    /// Reads one listed file.
    pub async fn fetch(&self, item: &SourceItem) -> Result<Bytes> {
        let location = if self.prefix.as_ref().is_empty() {
            StorePath::from(item.path.as_str())
        } else {
            StorePath::from(format!("{}/{}", self.prefix.as_ref(), item.path))
        };
        let result = self
            .store
            .get(&location)
            .await
            .with_context(|| format!("reading {}", item.path))?;
        result
            .bytes()
            .await
            .with_context(|| format!("reading {}", item.path))
    }
}

fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).with_context(|| format!("invalid --include pattern {p:?}"))?);
    }
    Ok(Some(builder.build()?))
}
