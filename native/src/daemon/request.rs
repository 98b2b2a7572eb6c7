//! A job as submitted (`POST /v1/jobs`): its kind, source, spec and options, checked before it
//! is queued and turned into the library's options when it runs. Option keys are the CLI's
//! long flags with underscores (`on_error`, `shard_size`, `batch_size`, ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cache::{Failure, Materialize};
use crate::convert::{convert, ConvertMonitor, ConvertOptions, OnError};
use crate::error::{Error, Result};
use crate::items::{LabelRule, TableColumns};
use crate::score::{score, Backoff, EndpointOptions, Engine, ModelSource, ScoreOptions};
use crate::shards::TensorEncoding;
use crate::transform::SpecFile;
use crate::units::{parse_duration, parse_size};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `convert` or `score`.
    pub kind: String,
    /// What `kiln convert` takes (a directory or URL); for `score`, also a cache entry.
    pub source: String,
    #[serde(default)]
    pub spec: Option<Value>,
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Convert jobs: earlier entries of the same spec whose rows of unchanged files are
    /// reused instead of transformed again (what keeps a watched dataset incremental).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reuse: Vec<String>,
}

/// A job ready to run.
#[derive(Debug)]
pub enum Prepared {
    Convert(Box<ConvertOptions>),
    Score(Box<ScoreOptions>),
}

/// What a finished job reports.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Option<u64>,
    pub reused: Option<u64>,
    pub entry: Option<String>,
    pub output: Option<String>,
    pub failures: Vec<Failure>,
}

const CONVERT_KEYS: &[&str] = &[
    "include",
    "labels",
    "label_regex",
    "materialize",
    "source_format",
    "path_column",
    "content_column",
    "label_column",
    "shard_size",
    "row_group_rows",
    "row_group_size",
    "compression",
    "tensor_encoding",
    "on_error",
    "backend",
    "gpu_batch",
    "workers",
];

const SCORE_KEYS: &[&str] = &[
    "model",
    "endpoint",
    "model_name",
    "model_version",
    "output",
    "batch_size",
    "workers",
    "concurrency",
    "retries",
    "timeout",
    "max_rps",
    "input_name",
    "engine",
    "ort_lib",
    "shard_rows",
];

/// Reads typed options out of the request, naming the key in every error.
struct Options<'a>(&'a Map<String, Value>);

fn bad(key: &str, problem: impl std::fmt::Display) -> Error {
    Error::invalid(format!("options.{key}"), problem.to_string())
}

impl Options<'_> {
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(key, format!("expected a string, got {other}"))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(bad(key, format!("expected a number, got {other}"))),
        }
    }

    fn count(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(key, format!("expected a whole number, got {n}"))),
            Some(other) => Err(bad(key, format!("expected a whole number, got {other}"))),
        }
    }

    /// A size as a string (`"64MiB"`) or a number of bytes.
    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.0.get(key) {
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(key, "expected bytes")),
            _ => self
                .string(key)?
                .map(|s| parse_size(&format!("options.{key}"), &s))
                .transpose(),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(key, "expected strings"))
                })
                .collect(),
            Some(other) => Err(bad(
                key,
                format!("expected a string or a list of strings, got {other}"),
            )),
        }
    }

    fn choice(&self, key: &str, allowed: &[&str], default: &str) -> Result<String> {
        let value = self.string(key)?.unwrap_or_else(|| default.to_owned());
        if !allowed.contains(&value.as_str()) {
            return Err(bad(key, format!("{value:?} is not one of {allowed:?}")));
        }
        Ok(value)
    }
}

impl JobRequest {
    /// Checks what can be checked without running: kind, option names and types, the spec.
    pub fn check(&self, cache: &Path) -> Result<()> {
        let keys = match self.kind.as_str() {
            "convert" => CONVERT_KEYS,
            "score" => SCORE_KEYS,
            other => {
                return Err(Error::invalid(
                    "kind",
                    format!("{other:?} is not \"convert\" or \"score\""),
                ))
            }
        };
        if let Some(unknown) = self.options.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(Error::invalid(
                "options",
                format!(
                    "unknown key {unknown:?} for a {} job (known: {})",
                    self.kind,
                    keys.join(", ")
                ),
            ));
        }
        if self.source.is_empty() {
            return Err(Error::invalid("source", "is empty"));
        }
        if self.kind == "convert" && self.spec.is_none() {
            return Err(Error::invalid("spec", "a convert job needs a spec"));
        }
        // Everything else (spec, sizes, choices) is checked by building the options; files
        // (labels, models) are only opened when the job runs.
        let mut checked = self.clone();
        checked.options.remove("labels");
        checked.prepare(cache).map(|_| ())
    }

    fn spec(&self) -> Result<Option<SpecFile>> {
        self.spec.clone().map(SpecFile::from_value).transpose()
    }

    /// The library options for this job.
    pub fn prepare(&self, cache: &Path) -> Result<Prepared> {
        let o = Options(&self.options);
        match self.kind.as_str() {
            "convert" => {
                let spec = self
                    .spec()?
                    .ok_or_else(|| Error::invalid("spec", "a convert job needs a spec"))?;
                let mut c = ConvertOptions::new(self.source.clone(), spec, cache.to_owned());
                c.progress = false;
                c.labels = match (o.string("labels")?, o.string("label_regex")?) {
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid("options", "give labels or label_regex, not both"))
                    }
                    (Some(file), None) => LabelRule::from_file(Path::new(&file))?,
                    (None, Some(re)) => LabelRule::from_regex(&re)?,
                    (None, None) => LabelRule::ParentDir,
                };
                c.materialize = match o.choice("materialize", &["tensor", "raw"], "tensor")?.as_str() {
                    "raw" => Materialize::Raw,
                    _ => Materialize::Tensor,
                };
                if o.choice("source_format", &["files", "parquet"], "files")? == "parquet" {
                    c.table = Some(TableColumns {
                        path: o.string("path_column")?.unwrap_or_else(|| "path".into()),
                        content: o.string("content_column")?.unwrap_or_else(|| "content".into()),
                        label: o.string("label_column")?,
                    });
                }
                c.include = o.strings("include")?;
                if c.table.is_some() && c.include.is_empty() {
                    c.include = vec!["*.parquet".into()];
                }
                if let Some(bytes) = o.size("shard_size")? {
                    c.shard_bytes = bytes;
                }
                c.row_group_rows = o.count("row_group_rows")?;
                if let Some(bytes) = o.size("row_group_size")? {
                    c.row_group_bytes = bytes;
                }
                c.zstd = o.choice("compression", &["zstd", "none"], "zstd")? == "zstd";
                c.tensor_encoding = o
                    .choice(
                        "tensor_encoding",
                        &["auto", "plain", "byte-stream-split", "dictionary"],
                        "auto",
                    )?
                    .parse::<TensorEncoding>()?;
                c.on_error = match o.choice("on_error", &["skip", "fail"], "skip")?.as_str() {
                    "fail" => OnError::Fail,
                    _ => OnError::Skip,
                };
                if o.choice("backend", &["cpu", "gpu"], "cpu")? == "gpu" {
                    c.backend = kiln_gpu::AnyBackend::open(kiln_gpu::BackendChoice::Gpu)?;
                }
                if let Some(n) = o.count("gpu_batch")? {
                    c.gpu_batch = n;
                }
                if let Some(n) = o.count("workers")? {
                    c.workers = n;
                }
                c.reuse = self.reuse.iter().map(PathBuf::from).collect();
                Ok(Prepared::Convert(Box::new(c)))
            }
            _ => {
                let output = o
                    .string("output")?
                    .ok_or_else(|| bad("output", "a score job needs an output directory"))?;
                let model = match (o.string("model")?, o.string("endpoint")?) {
                    (Some(path), None) => ModelSource::Onnx {
                        path: PathBuf::from(path),
                        engine: match o.choice("engine", &["tract", "onnxruntime"], "tract")?.as_str() {
                            "onnxruntime" => Engine::OnnxRuntime {
                                library: o.string("ort_lib")?.map(PathBuf::from),
                            },
                            _ => Engine::Tract,
                        },
                    },
                    (None, Some(url)) => ModelSource::Endpoint(EndpointOptions {
                        url,
                        model_name: o
                            .string("model_name")?
                            .ok_or_else(|| bad("model_name", "an endpoint needs the model's name"))?,
                        model_version: o.string("model_version")?,
                        input_name: o.string("input_name")?,
                        concurrency: o.count("concurrency")?.unwrap_or(8),
                        retries: o.count("retries")?.unwrap_or(5).min(u32::MAX as usize) as u32,
                        timeout: match o.string("timeout")? {
                            Some(t) => parse_duration("options.timeout", &t)?,
                            None => std::time::Duration::from_secs(30),
                        },
                        max_rps: o.number("max_rps")?,
                        backoff: Backoff::default(),
                    }),
                    _ => {
                        return Err(Error::invalid(
                            "options",
                            "a score job needs model or endpoint (not both)",
                        ))
                    }
                };
                let mut s = ScoreOptions::new(self.source.clone(), model, output);
                s.spec = self.spec()?;
                s.cache = cache.to_owned();
                s.input_name = o.string("input_name")?;
                s.progress = false;
                if let Some(n) = o.count("batch_size")? {
                    s.batch_size = n;
                }
                if let Some(n) = o.count("workers")? {
                    s.workers = n;
                }
                if let Some(n) = o.count("shard_rows")? {
                    s.shard_rows = n;
                }
                Ok(Prepared::Score(Box::new(s)))
            }
        }
    }
}

impl Prepared {
    pub fn run(self, monitor: Arc<ConvertMonitor>) -> Result<Outcome> {
        match self {
            Prepared::Convert(mut c) => {
                c.monitor = Some(monitor);
                let report = convert(&c)?;
                Ok(Outcome {
                    rows: Some(report.rows),
                    reused: Some(report.reused),
                    entry: Some(report.entry.display().to_string()),
                    output: None,
                    failures: report.failures,
                })
            }
            Prepared::Score(mut s) => {
                s.monitor = Some(monitor);
                let report = score(&s)?;
                Ok(Outcome {
                    rows: Some(report.rows),
                    reused: None,
                    entry: Some(report.input_entry.display().to_string()),
                    output: Some(report.output.display().to_string()),
                    failures: report
                        .failures
                        .into_iter()
                        .map(|f| Failure {
                            path: f.path,
                            error: f.error,
                        })
                        .collect(),
                })
            }
        }
    }
}
