//! `kiln daemon`: kiln as a service on the machine that holds the data. Jobs (conversions,
//! scoring) are submitted and watched over HTTP ([`api`], on the labeling server's stack with
//! its token and `Host`/`Origin` checks), run by at most `--max-jobs` runners ([`jobs`]), and
//! survive restarts: their records live in `--state`, and a conversion or scoring picks up
//! from its own journal.

mod api;
mod datasets;
mod flight;
mod jobs;
mod metrics;
mod records;
mod request;

use std::path::PathBuf;

pub use datasets::{Dataset, DatasetRequest, Version};
pub use jobs::{JobRecord, JobState, Progress};
pub use request::JobRequest;

use crate::error::{Error, Result};
use crate::serve::{bind_with_routes, Limits, ServeOptions};

pub const MAX_JOBS: usize = 64;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where job records live (and the lock that keeps one daemon per directory).
    pub state: PathBuf,
    pub cache: PathBuf,
    /// `HOST:PORT`; a non-loopback address needs a token.
    pub listen: String,
    /// `HOST:PORT` for Arrow Flight (gRPC); `None` serves no Flight.
    pub flight_listen: Option<String>,
    pub token: Option<String>,
    pub max_jobs: usize,
}

/// Runs the daemon until SIGTERM or Ctrl-C: then it stops taking jobs, stops running ones at
/// their next safe point (recorded as queued, to resume on the next start) and returns.
pub fn run(options: DaemonOptions) -> Result<()> {
    if options.max_jobs == 0 || options.max_jobs > MAX_JOBS {
        return Err(Error::invalid(
            "--max-jobs",
            format!("{} is not in 1..={MAX_JOBS}", options.max_jobs),
        ));
    }
    let state = &options.state;
    std::fs::create_dir_all(state).map_err(|e| Error::io("creating", state, e))?;
    let lock_path = state.join("daemon.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("opening", &lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(Error::invalid(
            "--state",
            format!("{} is in use by another kiln daemon", state.display()),
        ));
    }
    // Absolute paths: job records and the entries they name must not depend on the
    // directory the daemon was started from.
    let cache = &options.cache;
    std::fs::create_dir_all(cache).map_err(|e| Error::io("creating", cache, e))?;
    let cache = std::fs::canonicalize(cache).map_err(|e| Error::io("opening", cache, e))?;
    let jobs = jobs::Jobs::open(state, cache)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting", "the daemon's runtime", e))?;
    let datasets = datasets::Datasets::open(state, jobs.clone())?;
    let watcher = {
        let datasets = datasets.clone();
        std::thread::Builder::new()
            .name("kiln-datasets".into())
            .spawn(move || datasets.run_watcher())
            .map_err(|e| Error::io("starting", "the dataset watcher", e))?
    };
    let runners: Vec<_> = (0..options.max_jobs)
        .map(|i| {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("kiln-job-{i}"))
                .spawn(move || jobs.run_worker())
                .map_err(|e| Error::io("starting", "a job runner", e))
        })
        .collect::<Result<_>>()?;
    let flight_stats = std::sync::Arc::new(flight::FlightStats::default());
    let served = runtime.block_on(async {
        let (stop_send, stop) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let flight = match &options.flight_listen {
            Some(listen) => {
                let listener = bind_flight(listen, options.token.is_some()).await?;
                let address = listener
                    .local_addr()
                    .map_err(|e| Error::io("binding", listen, e))?;
                let service = flight::FlightServer::new(
                    jobs.cache().to_owned(),
                    datasets.clone(),
                    options.token.clone(),
                    flight_stats.clone(),
                )
                .into_service();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let shutdown = stopped(stop.clone());
                eprintln!("kiln daemon: Arrow Flight on grpc://{address}");
                Some(tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }))
            }
            None => None,
        };
        let server = bind_with_routes(
            ServeOptions {
                listen: options.listen.clone(),
                dir: None,
                token: options.token.clone(),
            },
            Limits::default(),
            Some(api::router(api::Api {
                jobs: jobs.clone(),
                datasets: datasets.clone(),
                flight: flight_stats.clone(),
            })),
        )
        .await?;
        if server.is_network_reachable() {
            eprintln!(
                "kiln daemon: warning: listening on {}, reachable from the network; every request \
                 must carry the token",
                server.local_addr()
            );
        }
        eprintln!("kiln daemon: listening on http://{}", server.local_addr());
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_send.send(true);
        });
        server.run_until(stopped(stop)).await;
        if let Some(flight) = flight {
            if let Ok(Err(e)) = flight.await {
                eprintln!("kiln daemon: Arrow Flight: {e}");
            }
        }
        Ok::<_, Error>(())
    });
    datasets.stop();
    let _ = watcher.join();
    jobs.shut_down();
    for runner in runners {
        let _ = runner.join();
    }
    drop(lock);
    served
}

/// Binds the Flight listener; like the HTTP one, an address reachable from the network needs
/// a token.
async fn bind_flight(listen: &str, has_token: bool) -> Result<tokio::net::TcpListener> {
    let invalid = |problem: String| Error::invalid("--flight-listen", format!("{listen}: {problem}"));
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| invalid(format!("not a HOST:PORT address ({e})")))?
        .collect();
    if addresses.is_empty() {
        return Err(invalid("resolves to no address".into()));
    }
    if !has_token && addresses.iter().any(|a| !a.ip().to_canonical().is_loopback()) {
        return Err(invalid(
            "reachable from the network: give a token (--token or KILN_TOKEN)".into(),
        ));
    }
    tokio::net::TcpListener::bind(&addresses[..])
        .await
        .map_err(|e| Error::io("binding", listen, e))
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("kiln daemon: stopping (running jobs resume on the next start)");
}
