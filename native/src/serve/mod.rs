//! `kiln serve`: the labeling page (embedded in the binary) and, with `--dir`, a dataset's files
//! and a labels endpoint that saves `labels.csv` in that directory atomically.
//!
//! Routes: `GET /` (the page), `GET /api/files` (`{"files": [relative paths]}`),
//! `GET/PUT /api/labels` (`labels.csv`, `path,label`), `GET /files/PATH` (one file, streamed,
//! with `Range` support).
//!
//! The server assumes every client may be hostile:
//! - only the canonical `--dir` is served: links out of it are neither listed nor served, and
//!   link loops are detected ([`files`]);
//! - requests must name this server in `Host:` (DNS rebinding) and writes must come from the
//!   page itself (`Origin`/`Sec-Fetch-Site`), see [`security`];
//! - on a non-loopback address a token is required on every request;
//! - headers, bodies, request time, idle connections, stalled readers and the number of open
//!   connections are bounded by [`Limits`]; accept errors (fd exhaustion) back off.
//!
//! ```no_run
//! # async fn example() -> Result<(), kiln::serve::ServeError> {
//! use kiln::serve::{bind, ServeOptions};
//! let server = bind(ServeOptions {
//!     listen: "127.0.0.1:0".into(),
//!     dir: Some("data".into()),
//!     token: None,
//! })
//! .await?;
//! println!("{}", server.url());
//! server.run().await;
//! # Ok(())
//! # }
//! ```

mod files;
mod io;
mod routes;
mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use files::LABELS_FILE;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// What `kiln serve` serves and where.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on (port 0: any free port). A non-loopback address needs a token.
    pub listen: String,
    /// Dataset directory (WAV, FLAC, MP3, Ogg; PNG, JPEG, WebP); labels are saved to `DIR/labels.csv`. Without it only
    /// the page is served.
    pub dir: Option<PathBuf>,
    /// Required on every request when set (`Authorization: Bearer TOKEN`, or the cookie that
    /// `/?token=TOKEN` sets). 16 to 256 characters, printable ASCII without `" , ; \`.
    pub token: Option<String>,
}

/// Bounds on what one client may cost the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// How long a client may take to send a request's line and headers; also how long an idle
    /// keep-alive connection is kept open. Default: 30 s.
    pub header_read_timeout: Duration,
    /// How long one request may take from its headers to its response's headers, reading the
    /// body included (answered `408 Request Timeout`). Default: 60 s.
    pub request_timeout: Duration,
    /// How long a response may wait on a client that reads nothing before the connection is
    /// dropped. Default: 30 s.
    pub write_timeout: Duration,
    /// Request line plus headers, in bytes (`431` above it). Default: 16 KiB; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Request body (a labels upload), in bytes (`413` above it). Default: 64 MiB.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait in the listen backlog. Default: 256.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 16 << 10,
            max_body_bytes: 64 << 20,
            max_connections: 256,
        }
    }
}

impl Limits {
    pub fn with_header_read_timeout(self, header_read_timeout: Duration) -> Self {
        Limits {
            header_read_timeout,
            ..self
        }
    }
    pub fn with_request_timeout(self, request_timeout: Duration) -> Self {
        Limits {
            request_timeout,
            ..self
        }
    }
    pub fn with_write_timeout(self, write_timeout: Duration) -> Self {
        Limits {
            write_timeout,
            ..self
        }
    }
    /// Values under 8 KiB are raised to 8 KiB (a browser's headers can approach that).
    pub fn with_max_header_bytes(self, max_header_bytes: usize) -> Self {
        Limits {
            max_header_bytes,
            ..self
        }
    }
    pub fn with_max_body_bytes(self, max_body_bytes: usize) -> Self {
        Limits {
            max_body_bytes,
            ..self
        }
    }
    /// Values under 1 are raised to 1.
    pub fn with_max_connections(self, max_connections: usize) -> Self {
        Limits {
            max_connections,
            ..self
        }
    }
}

/// Why `kiln serve` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("this kiln was built without the labeling page's wasm (run scripts/build-wasm, then rebuild)")]
    PageMissing,
    #[error("--dir {}: not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("--dir {}: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("--listen {listen}: {reason}")]
    Listen { listen: String, reason: String },
    #[error("listening on {listen}: {source}")]
    Bind { listen: String, source: std::io::Error },
    #[error(
        "--listen {listen} is reachable from the network; refusing to start without a token \
         (pass --token or set KILN_TOKEN, e.g. to the output of `openssl rand -hex 16`)"
    )]
    TokenRequired { listen: String },
    #[error("--token: {reason}")]
    BadToken { reason: String },
    #[error("starting the async runtime: {source}")]
    Runtime { source: std::io::Error },
}

/// A bound server: its address is known, nothing is accepted until [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: routes::SharedState,
    limits: Limits,
    addr: SocketAddr,
    network: bool,
    extra: Option<axum::Router>,
}

/// Binds with the default [`Limits`]; see [`bind_with_limits`].
pub async fn bind(options: ServeOptions) -> Result<Server, ServeError> {
    bind_with_limits(options, Limits::default()).await
}

/// Checks the options, resolves and binds `options.listen`. Refuses a non-loopback address
/// without a token. Does not need the page's wasm (only [`serve`] does): the API routes work
/// without it and `/` says what is missing.
pub async fn bind_with_limits(options: ServeOptions, limits: Limits) -> Result<Server, ServeError> {
    bind_with_routes(options, limits, None).await
}

/// [`bind_with_limits`] with more routes (the daemon's API) served beside the page, behind
/// the same token, `Host`/`Origin` checks and limits.
pub async fn bind_with_routes(
    options: ServeOptions,
    limits: Limits,
    extra: Option<axum::Router>,
) -> Result<Server, ServeError> {
    let ServeOptions { listen, dir, token } = options;
    if let Some(token) = &token {
        security::check_token(token)?;
    }
    let root = match dir {
        Some(path) => Some(files::canonical_root(&path)?),
        None => None,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen.as_str())
        .await
        .map_err(|e| ServeError::Listen {
            listen: listen.clone(),
            reason: format!("not a HOST:PORT address ({e})"),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ServeError::Listen {
            listen,
            reason: "resolves to no address".into(),
        });
    }
    // Decided on every address the name resolves to, before binding any of them.
    let network = addrs.iter().any(|a| !a.ip().to_canonical().is_loopback());
    if network && token.is_none() {
        return Err(ServeError::TokenRequired { listen });
    }
    let listener = TcpListener::bind(&addrs[..])
        .await
        .map_err(|source| ServeError::Bind {
            listen: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        listen: listen.clone(),
        source,
    })?;
    let state = Arc::new(routes::ServerState {
        root,
        guard: security::Guard::new(&listen, addr.port(), token),
        save_lock: std::sync::Mutex::new(()),
        max_body_bytes: limits.max_body_bytes,
    });
    Ok(Server {
        listener,
        state,
        limits,
        addr,
        network,
        extra,
    })
}

impl Server {
    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server listens on a non-loopback address (it then requires the token).
    pub fn is_network_reachable(&self) -> bool {
        self.network
    }

    /// The page's address, with `?token=` when a token is set (opening it once sets the
    /// cookie). An unspecified address (`0.0.0.0`, `::`) is shown as loopback.
    pub fn url(&self) -> String {
        let ip = self.addr.ip();
        let host = if ip.is_unspecified() {
            match ip {
                std::net::IpAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], self.addr.port())),
                std::net::IpAddr::V6(_) => {
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.addr.port()))
                }
            }
        } else {
            self.addr
        };
        match self.state.guard.token() {
            Some(token) => format!("http://{host}/?token={token}"),
            None => format!("http://{host}/"),
        }
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then stops accepting (connections in flight are
    /// dropped with the runtime).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = self.accept_loop() => {}
            () = shutdown => {}
        }
    }

    async fn accept_loop(self) {
        let Server {
            listener,
            state,
            limits,
            extra,
            ..
        } = self;
        let router = routes::router(state, &limits, extra);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // hyper answers 431 once this much has arrived without the head's end, so a huge
            // request line is never buffered whole.
            .max_header_size(limits.max_header_bytes.max(8192));
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut backoff = Backoff::default();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff.reset();
                    stream
                }
                // The peer gave up before we accepted: nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
                // EMFILE/ENFILE/ENOBUFS: retrying at once would spin on the same error while
                // the pending connection stays in the backlog; wait for fds to free up.
                Err(e) => {
                    let delay = backoff.next();
                    if backoff.first() {
                        eprintln!("kiln serve: accepting a connection: {e}; retrying with back-off");
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let io = TokioIo::new(io::WriteTimeout::new(stream, limits.write_timeout));
            let connection = http.serve_connection(io, TowerToHyperService::new(router.clone()));
            tokio::spawn(async move {
                // Errors here are one client's (timeouts, resets, bad requests answered
                // already); the server goes on.
                let _ = connection.await;
                drop(slot);
            });
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Exponential back-off for accept errors: 10 ms doubling to 1 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let delay = Self::FIRST
            .checked_mul(1u32.checked_shl(self.failures).unwrap_or(u32::MAX))
            .unwrap_or(Self::MAX)
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Whether the last `next` began a run of failures (to report it once).
    fn first(&self) -> bool {
        self.failures == 1
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `kiln serve`: binds, prints where the page is (and a warning when it is reachable from the
/// network), and serves until the process is stopped. Blocking: builds its own tokio runtime.
/// Refuses to run without the page's wasm, after checking the options (so their errors come
/// first).
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Runtime { source })?;
    runtime.block_on(async {
        let server = bind(options).await?;
        if server.is_network_reachable() {
            eprintln!(
                "kiln serve: warning: listening on {}, reachable from the network; every request \
                 must carry the token",
                server.local_addr()
            );
        }
        if !assets::PAGE_COMPLETE {
            return Err(ServeError::PageMissing);
        }
        eprintln!("kiln serve: {}", server.url());
        server.run().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.next(), Backoff::MAX);
        }
        b.reset();
        assert_eq!(b.next(), Backoff::FIRST);
        assert!(b.first());
    }
}
