//! The routes: the embedded page, `/api/files`, `/api/labels` and `/files/PATH`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tower_http::timeout::TimeoutLayer;

use super::files::{self, Refusal};
use super::security::{self, Guard};
use super::{assets, Limits};

/// What every request handler sees.
#[derive(Debug)]
pub(super) struct ServerState {
    /// The canonical `--dir`, if any.
    pub(super) root: Option<PathBuf>,
    pub(super) guard: Guard,
    /// Held for the whole of a labels save, so saves replace the file one at a time.
    pub(super) save_lock: Mutex<()>,
    pub(super) max_body_bytes: usize,
}

pub(super) type SharedState = Arc<ServerState>;

/// The page's routes, plus `extra` (the daemon's API), all behind the same guard and limits.
pub(super) fn router(state: SharedState, limits: &Limits, extra: Option<Router>) -> Router {
    let mut router = Router::new()
        .route("/api/files", get(list_files))
        .route("/api/labels", get(get_labels).put(put_labels).post(put_labels))
        .route("/files/{*path}", get(get_file))
        .fallback(page)
        .with_state(state.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    router
        .layer(axum::middleware::from_fn_with_state(state, security::guard))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

fn refusal((status, message): Refusal) -> Response {
    (status, format!("kiln serve: {message}\n")).into_response()
}

fn no_dir() -> Response {
    refusal((
        StatusCode::NOT_FOUND,
        "not found (serve with --dir for a dataset)".into(),
    ))
}

/// Runs blocking file-system work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err((StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))))
}

async fn list_files(State(state): State<SharedState>) -> Response {
    let Some(root) = state.root.clone() else {
        return no_dir();
    };
    match blocking(move || files::list_media(&root)).await {
        Ok(files) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "files": files }).to_string(),
        )
            .into_response(),
        Err(refused) => refusal(refused),
    }
}

async fn get_labels(State(state): State<SharedState>) -> Response {
    let Some(root) = state.root.clone() else {
        return no_dir();
    };
    let max = state.max_body_bytes;
    match blocking(move || files::read_labels(&root, max)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(refused) => refusal(refused),
    }
}

async fn put_labels(State(state): State<SharedState>, request: Request) -> Response {
    if state.root.is_none() {
        return no_dir();
    }
    let max = state.max_body_bytes;
    let body = match axum::body::to_bytes(request.into_body(), max).await {
        Ok(body) => body,
        Err(e) => {
            // `Limited` reports an over-long body as its error's source.
            let too_long =
                std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_long {
                refusal((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("labels: the body is over {max} bytes"),
                ))
            } else {
                refusal((StatusCode::BAD_REQUEST, format!("labels: reading the body: {e}")))
            };
        }
    };
    match std::str::from_utf8(&body) {
        Ok(text) if text.starts_with("path,label") => {}
        Ok(_) => {
            return refusal((
                StatusCode::BAD_REQUEST,
                "labels must be CSV starting with the header path,label".into(),
            ))
        }
        Err(e) => return refusal((StatusCode::BAD_REQUEST, format!("labels must be UTF-8 CSV ({e})"))),
    }
    // The lock is taken inside the blocking task, so a request that times out (and drops this
    // future) cannot let a second save start while its write is still running.
    let saved = blocking(move || {
        let _one_at_a_time = state.save_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let root = state.root.as_deref().expect("checked above");
        files::write_labels(root, &body)
    })
    .await;
    match saved {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain")], "saved").into_response(),
        Err(refused) => refusal(refused),
    }
}

async fn get_file(State(state): State<SharedState>, request: Request) -> Response {
    let Some(root) = state.root.clone() else {
        return no_dir();
    };
    // The raw (still encoded) path: decoded once, strictly, by `resolve_media`.
    let raw = request
        .uri()
        .path()
        .strip_prefix("/files/")
        .unwrap_or_default()
        .to_owned();
    let (path, mime) = match blocking(move || files::resolve_media(&root, &raw)).await {
        Ok(found) => found,
        Err(refused) => return refusal(refused),
    };
    // Streams the file in chunks, with Range and conditional requests.
    let mut response = match ServeFile::new(path).oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    }
    response
}

/// The embedded page's files; anything else is not found.
async fn page(method: Method, uri: axum::http::Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return refusal((StatusCode::NOT_FOUND, "not found".into()));
    }
    let route = match uri.path() {
        "/" => "/index.html",
        other => other,
    };
    if let Some((_, mime, bytes)) = assets::ASSETS.iter().find(|(r, _, _)| *r == route) {
        return ([(header::CONTENT_TYPE, *mime)], *bytes).into_response();
    }
    if route == "/index.html" && !assets::PAGE_COMPLETE {
        return refusal((
            StatusCode::SERVICE_UNAVAILABLE,
            "this kiln was built without the labeling page's wasm (run scripts/build-wasm, then rebuild)"
                .into(),
        ));
    }
    refusal((StatusCode::NOT_FOUND, "not found".into()))
}
