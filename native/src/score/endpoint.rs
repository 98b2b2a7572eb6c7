//! An external model server over the Open Inference Protocol v2 REST API (Triton, KServe,
//! MLServer): readiness and metadata before the first batch, then one JSON `infer` request
//! per batch, retried with backoff on connection errors, timeouts, 429 and 5xx.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize, Serializer};

use super::engine::{BatchResult, Scorer};
use super::model::{InputBatch, InputSpec, InputType, InputValues, ModelInfo, OutputSpec, OutputTensor};
use super::retry::{parse_retry_after, Backoff, RateLimiter};
use crate::error::{Error, Result};

/// Responses larger than this are refused (a batch's outputs, as JSON, are far smaller).
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Metadata and readiness answers are small.
const MAX_METADATA_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Base URL, e.g. `http://127.0.0.1:8080` (the `/v2/...` paths are added).
    pub url: String,
    pub model_name: String,
    pub model_version: Option<String>,
    pub input_name: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Per attempt: connecting, sending and reading the whole answer.
    pub timeout: Duration,
    /// Attempts per second, retries included.
    pub max_rps: Option<f64>,
    pub backoff: Backoff,
}

#[derive(Debug)]
pub struct Endpoint {
    client: reqwest::Client,
    options: EndpointOptions,
    model_url: url::Url,
    limiter: Option<RateLimiter>,
    info: ModelInfo,
    /// Versions the metadata lists, and the version answers named (recorded in the manifest).
    versions: Vec<String>,
    served_version: Mutex<Option<String>>,
}

/// Why an attempt failed, and whether another may succeed.
struct AttemptError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl AttemptError {
    fn fatal(message: impl Into<String>) -> Self {
        AttemptError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
struct TensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

#[derive(Deserialize)]
struct ModelMetadata {
    #[serde(default)]
    versions: Option<Vec<String>>,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

#[derive(Serialize)]
struct InferRequest<'a> {
    id: String,
    inputs: [InferInput<'a>; 1],
}

#[derive(Serialize)]
struct InferInput<'a> {
    name: &'a str,
    shape: Vec<usize>,
    datatype: &'static str,
    data: Data<'a>,
}

/// Tensor values as JSON numbers. float32 values go out widened to float64, whose shortest
/// decimal is exact: a server parsing JSON numbers as doubles (Python, C++) then narrowing to
/// float32 gets back the very bits kiln sent (f32's shortest decimal read as a double and
/// narrowed can round twice).
struct Data<'a>(&'a InputValues);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            InputValues::F32(v) => serializer.collect_seq(v.iter().map(|&x| x as f64)),
            InputValues::U8(v) => serializer.collect_seq(v.iter()),
        }
    }
}

#[derive(Deserialize)]
struct InferResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model_version: Option<String>,
    outputs: Vec<ResponseOutput>,
}

#[derive(Deserialize)]
struct ResponseOutput {
    name: String,
    shape: Vec<i64>,
    data: serde_json::Value,
}

fn v2_type(datatype: &str) -> Option<InputType> {
    match datatype {
        "FP32" => Some(InputType::Float32),
        "UINT8" => Some(InputType::Uint8),
        _ => None,
    }
}

fn dims(shape: &[i64]) -> Vec<Option<usize>> {
    shape.iter().map(|&d| usize::try_from(d).ok()).collect()
}

/// A short, printable excerpt of an error body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Flattens a JSON tensor (flat or nested, numbers or booleans) into `out`.
fn flatten(value: &serde_json::Value, out: &mut Vec<f32>, limit: usize) -> std::result::Result<(), String> {
    match value {
        serde_json::Value::Number(n) => {
            let x = n.as_f64().ok_or("a number out of range")?;
            out.push(x as f32);
        }
        serde_json::Value::Bool(b) => out.push(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
            }
        }
        other => {
            return Err(format!(
                "a non-numeric value {}",
                excerpt(other.to_string().as_bytes())
            ))
        }
    }
    if out.len() > limit {
        return Err(format!("more values than its shape's {limit}"));
    }
    Ok(())
}

/// Reads a response body up to `limit` bytes.
async fn read_body(mut response: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's own message is generic; its sources say what happened (refused, reset, ...).
    let mut message = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
        source = s.source();
    }
    message
}

impl Endpoint {
    /// Waits for the model to be ready (retrying as for batches), then reads its metadata.
    pub async fn connect(options: EndpointOptions) -> Result<Endpoint> {
        let url_text = options.url.clone();
        let endpoint_error = |problem: String| Error::Endpoint {
            url: url_text.clone(),
            problem,
        };
        let mut model_url =
            url::Url::parse(&options.url).map_err(|e| endpoint_error(format!("not a URL: {e}")))?;
        if !matches!(model_url.scheme(), "http" | "https") || model_url.cannot_be_a_base() {
            return Err(endpoint_error("needs an http:// or https:// URL".into()));
        }
        if options.model_name.is_empty() {
            return Err(Error::invalid("--model-name", "is empty"));
        }
        {
            let mut segments = model_url
                .path_segments_mut()
                .map_err(|_| endpoint_error("cannot hold a path".into()))?;
            segments
                .pop_if_empty()
                .extend(["v2", "models", &options.model_name]);
            if let Some(version) = &options.model_version {
                segments.extend(["versions", version]);
            }
        }
        // Proxies from the environment are not applied: model servers are usually on the
        // same network (or loopback), where a corporate proxy would only get in the way.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(options.concurrency)
            .build()
            .map_err(|e| endpoint_error(format!("starting the HTTP client: {e}")))?;
        let limiter = options.max_rps.map(RateLimiter::new);
        let mut endpoint = Endpoint {
            client,
            model_url,
            limiter,
            info: ModelInfo {
                input: InputSpec {
                    name: String::new(),
                    input_type: InputType::Float32,
                    shape: vec![],
                },
                outputs: vec![],
            },
            versions: vec![],
            served_version: Mutex::new(None),
            options,
        };
        let ready_url = endpoint.url_with("ready");
        endpoint
            .with_retries(|| endpoint.get(ready_url.clone(), MAX_METADATA_BYTES))
            .await
            .map_err(|e| {
                endpoint_error(format!(
                    "model {:?} is not ready: {e}",
                    endpoint.options.model_name
                ))
            })?;
        let metadata_url = endpoint.model_url.clone();
        let body = endpoint
            .with_retries(|| endpoint.get(metadata_url.clone(), MAX_METADATA_BYTES))
            .await
            .map_err(|e| endpoint_error(format!("reading model metadata: {e}")))?;
        let metadata: ModelMetadata = serde_json::from_slice(&body)
            .map_err(|e| endpoint_error(format!("model metadata is not OIP v2 JSON: {e}")))?;
        endpoint.info = endpoint.model_info(&metadata).map_err(endpoint_error)?;
        endpoint.versions = metadata.versions.unwrap_or_default();
        Ok(endpoint)
    }

    fn model_info(&self, metadata: &ModelMetadata) -> std::result::Result<ModelInfo, String> {
        let names: Vec<&str> = metadata.inputs.iter().map(|i| i.name.as_str()).collect();
        let input = match &self.options.input_name {
            Some(wanted) => metadata
                .inputs
                .iter()
                .find(|i| &i.name == wanted)
                .ok_or_else(|| format!("model has no input {wanted:?} (inputs: {names:?})"))?,
            None => match metadata.inputs.as_slice() {
                [only] => only,
                _ => {
                    return Err(format!(
                        "model has inputs {names:?}: choose one with --input-name"
                    ))
                }
            },
        };
        let input_type = v2_type(&input.datatype).ok_or_else(|| {
            format!(
                "input {:?} is {}; kiln sends FP32 or UINT8",
                input.name, input.datatype
            )
        })?;
        if metadata.outputs.is_empty() {
            return Err("model metadata lists no outputs".into());
        }
        Ok(ModelInfo {
            input: InputSpec {
                name: input.name.clone(),
                input_type,
                shape: dims(&input.shape),
            },
            outputs: metadata
                .outputs
                .iter()
                .map(|o| OutputSpec {
                    name: o.name.clone(),
                    row_shape: o.shape.get(1..).and_then(|d| dims(d).into_iter().collect()),
                })
                .collect(),
        })
    }

    fn url_with(&self, last: &str) -> url::Url {
        let mut url = self.model_url.clone();
        url.path_segments_mut().expect("checked as a base").push(last);
        url
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> std::result::Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, AttemptError>>,
    {
        let mut retry = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if !e.retryable => return Err(e.message),
                Err(e) if retry >= self.options.retries => {
                    return Err(if retry == 0 {
                        e.message
                    } else {
                        format!("{} (after {retry} retries)", e.message)
                    })
                }
                Err(e) => {
                    tokio::time::sleep(self.options.backoff.delay(retry, e.retry_after)).await;
                    retry += 1;
                }
            }
        }
    }

    /// Sends a request and reads its answer; classifies failures for [`Self::with_retries`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> std::result::Result<Vec<u8>, AttemptError> {
        let response = request
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|e| AttemptError {
                message: describe(&e),
                retryable: true,
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_body(response, limit).await.map_err(|message| AttemptError {
            message,
            // A timeout or reset while reading is as transient as one while connecting.
            retryable: true,
            retry_after: None,
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let retryable = status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        Err(AttemptError {
            message: format!("HTTP {status}: {}", excerpt(&body)),
            retryable,
            retry_after,
        })
    }

    async fn get(&self, url: url::Url, limit: usize) -> std::result::Result<Vec<u8>, AttemptError> {
        self.send(self.client.get(url), limit).await
    }

    async fn infer(&self, batch: &InputBatch) -> BatchResult {
        let request = InferRequest {
            id: batch.id.to_string(),
            inputs: [InferInput {
                name: &self.info.input.name,
                shape: batch.shape(),
                datatype: match batch.values {
                    InputValues::F32(_) => "FP32",
                    InputValues::U8(_) => "UINT8",
                },
                data: Data(&batch.values),
            }],
        };
        let body = Bytes::from(serde_json::to_vec(&request).map_err(|e| e.to_string())?);
        let url = self.url_with("infer");
        let answer = self
            .with_retries(|| {
                let request = self
                    .client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                async move {
                    let bytes = self.send(request, MAX_RESPONSE_BYTES).await?;
                    // A malformed answer is the server's bug, not a passing condition.
                    self.parse_answer(&bytes, batch).map_err(AttemptError::fatal)
                }
            })
            .await
            .map_err(|e| format!("{}: {e}", self.options.url))?;
        Ok(answer)
    }

    fn parse_answer(
        &self,
        body: &[u8],
        batch: &InputBatch,
    ) -> std::result::Result<Vec<OutputTensor>, String> {
        let answer: InferResponse =
            serde_json::from_slice(body).map_err(|e| format!("answer is not OIP v2 JSON: {e}"))?;
        if let Some(id) = &answer.id {
            if !id.is_empty() && id != &batch.id.to_string() {
                return Err(format!(
                    "answer is for request {id:?}, not {:?}",
                    batch.id.to_string()
                ));
            }
        }
        if let Some(version) = answer.model_version.filter(|v| !v.is_empty()) {
            *self.served_version.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
        }
        self.info
            .outputs
            .iter()
            .map(|spec| {
                let output = answer
                    .outputs
                    .iter()
                    .find(|o| o.name == spec.name)
                    .ok_or_else(|| format!("answer has no output {:?}", spec.name))?;
                let shape: Vec<usize> = output
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| format!("output {:?} has shape {:?}", spec.name, output.shape))?;
                let expected = shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .filter(|&n| n <= MAX_RESPONSE_BYTES)
                    .ok_or_else(|| format!("output {:?} has shape {:?}", spec.name, output.shape))?;
                let mut values = Vec::with_capacity(expected);
                flatten(&output.data, &mut values, expected)
                    .map_err(|e| format!("output {:?} holds {e}", spec.name))?;
                OutputTensor::from_batch_shape(&spec.name, &shape, values, batch.rows)
            })
            .collect()
    }
}

impl Scorer for Endpoint {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.options.url,
            "model_name": self.options.model_name,
            "model_version": self.options.model_version,
            "versions": self.versions,
        })
    }

    fn served_version(&self) -> Option<String> {
        self.served_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn parallelism(&self) -> usize {
        self.options.concurrency
    }

    fn score(self: Arc<Self>, batch: InputBatch) -> BoxFuture<'static, BatchResult> {
        Box::pin(async move { self.infer(&batch).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_goes_out_as_exact_doubles() {
        let values = InputValues::F32(vec![0.1, 1.0, -3.5e-8]);
        let json = serde_json::to_string(&Data(&values)).unwrap();
        let back: Vec<f64> = serde_json::from_str(&json).unwrap();
        let narrowed: Vec<f32> = back.iter().map(|&x| x as f32).collect();
        assert_eq!(narrowed, vec![0.1f32, 1.0, -3.5e-8]);
        assert!(json.starts_with("[0.10000000149011612,"), "{json}");
        let bytes = InputValues::U8(vec![0, 255]);
        assert_eq!(serde_json::to_string(&Data(&bytes)).unwrap(), "[0,255]");
    }

    #[test]
    fn answers_flatten_nested_and_boolean_tensors_within_their_shape() {
        let mut out = Vec::new();
        flatten(&serde_json::json!([[1, 2.5], [true, false]]), &mut out, 4).unwrap();
        assert_eq!(out, vec![1.0, 2.5, 1.0, 0.0]);
        let mut out = Vec::new();
        let e = flatten(&serde_json::json!([1, 2, 3]), &mut out, 2).unwrap_err();
        assert!(e.contains("more values"), "{e}");
        let e = flatten(&serde_json::json!(["a"]), &mut Vec::new(), 2).unwrap_err();
        assert!(e.contains("non-numeric"), "{e}");
    }
}
