//! The daemon's HTTP API under `/v1` (documented in `openapi.json`, served at
//! `/v1/openapi.json`), `/metrics` and `/healthz`. Errors are JSON `{"error": message}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::datasets::{DatasetRequest, Datasets};
use super::flight::FlightStats;
use super::jobs::{JobRecord, Jobs};
use super::metrics::Snapshot;
use super::request::JobRequest;
use crate::Error;

/// Job requests are small JSON documents (a spec and options).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
const OPENAPI: &str = include_str!("openapi.json");
/// How often `/events` sends a job's progress.
const EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub jobs: Arc<Jobs>,
    pub datasets: Arc<Datasets>,
    pub flight: Arc<FlightStats>,
}

pub fn router(api: Api) -> Router {
    let datasets = Router::new()
        .route("/v1/datasets", get(list_datasets))
        .route(
            "/v1/datasets/{name}",
            get(get_dataset).put(put_dataset).delete(delete_dataset),
        )
        .with_state(api.datasets.clone());
    Router::new()
        .merge(datasets)
        .route("/metrics", get(metrics).with_state(api.clone()))
        .route("/v1/jobs", get(list_jobs).post(submit))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/entries", get(entries))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .with_state(api.jobs)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

fn json_response(status: StatusCode, value: impl serde::Serialize) -> Response {
    match serde_json::to_string(&value) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")).into_response(),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({ "error": message.into() }))
}

/// Blocking work (file reads, listing the cache) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")))
}

async fn submit(State(jobs): State<Arc<Jobs>>, body: Bytes) -> Response {
    let request: JobRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a job request: {e}")),
    };
    let result = blocking(move || {
        request.check(jobs.cache())?;
        jobs.submit(request)
    })
    .await;
    match result {
        Ok(Ok(record)) => json_response(StatusCode::ACCEPTED, record),
        Ok(Err(e @ (Error::Invalid { .. } | Error::Spec { .. } | Error::Labels { .. }))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(response) => response,
    }
}

async fn list_jobs(State(jobs): State<Arc<Jobs>>) -> Response {
    json_response(StatusCode::OK, json!({ "jobs": jobs.list() }))
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no job {id:?}"))
}

async fn get_job(State(jobs): State<Arc<Jobs>>, Path(id): Path<String>) -> Response {
    match jobs.get(&id) {
        Some(record) => json_response(StatusCode::OK, record),
        None => not_found(&id),
    }
}

async fn cancel(State(jobs): State<Arc<Jobs>>, Path(id): Path<String>) -> Response {
    match jobs.cancel(&id) {
        Some(Ok(record)) => json_response(StatusCode::ACCEPTED, record),
        Some(Err(state)) => error(
            StatusCode::CONFLICT,
            format!("job {id:?} has {} already", state.name()),
        ),
        None => not_found(&id),
    }
}

/// The job as Server-Sent Events (`event: job`, the record as data) every half second while
/// it runs; the stream ends after the event that shows it finished.
async fn events(State(jobs): State<Arc<Jobs>>, Path(id): Path<String>) -> Response {
    if jobs.get(&id).is_none() {
        return not_found(&id);
    }
    let stream = futures::stream::unfold(Some((jobs, id, true)), |state| async move {
        let (jobs, id, first) = state?;
        if !first {
            tokio::time::sleep(EVENT_INTERVAL).await;
        }
        let record: JobRecord = jobs.get(&id)?;
        let event = Event::default()
            .event("job")
            .data(serde_json::to_string(&record).ok()?);
        let next = (!record.state.finished()).then_some((jobs, id, false));
        Some((Ok::<_, Infallible>(event), next))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn entries(State(jobs): State<Arc<Jobs>>) -> Response {
    let cache = jobs.cache().to_owned();
    match blocking(move || crate::cache::list_entries(&cache)).await {
        Ok(Ok(entries)) => json_response(StatusCode::OK, json!({ "entries": entries })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(response) => response,
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(api): State<Api>) -> Response {
    let (jobs, flight) = (api.jobs, api.flight);
    let text = blocking(move || {
        let cache_bytes = crate::cache::list_entries(jobs.cache())
            .map(|entries| entries.iter().map(|e| e.bytes).sum())
            .unwrap_or(0);
        let snapshot = Snapshot {
            jobs: jobs.counts().into_iter().collect(),
            running: jobs.running_totals(),
            cache_bytes,
            flight_streams: flight.streams.load(std::sync::atomic::Ordering::Relaxed),
        };
        jobs.metrics.render(&snapshot)
    })
    .await;
    match text {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(response) => response,
    }
}

fn bad_request(e: Error) -> Response {
    match e {
        Error::Invalid { .. } | Error::Spec { .. } | Error::Labels { .. } => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn list_datasets(State(datasets): State<Arc<Datasets>>) -> Response {
    json_response(StatusCode::OK, json!({ "datasets": datasets.list() }))
}

async fn get_dataset(State(datasets): State<Arc<Datasets>>, Path(name): Path<String>) -> Response {
    match datasets.get(&name) {
        Some(dataset) => json_response(StatusCode::OK, dataset),
        None => error(StatusCode::NOT_FOUND, format!("no dataset {name:?}")),
    }
}

async fn put_dataset(
    State(datasets): State<Arc<Datasets>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let request: DatasetRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a dataset request: {e}")),
    };
    match blocking(move || datasets.put(&name, request)).await {
        Ok(Ok(dataset)) => json_response(StatusCode::OK, dataset),
        Ok(Err(e)) => bad_request(e),
        Err(response) => response,
    }
}

async fn delete_dataset(State(datasets): State<Arc<Datasets>>, Path(name): Path<String>) -> Response {
    match blocking(move || datasets.delete(&name).map(|d| (name, d))).await {
        Ok(Ok((_, Some(dataset)))) => json_response(StatusCode::OK, dataset),
        Ok(Ok((name, None))) => error(StatusCode::NOT_FOUND, format!("no dataset {name:?}")),
        Ok(Err(e)) => bad_request(e),
        Err(response) => response,
    }
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({ "ok": true }))
}
