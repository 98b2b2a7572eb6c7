//! Arrow Flight: remote trainers pull the loader's batches (exactly what `kiln stream` gives
//! for the same entry, shard, seed and state) as Arrow record batches over gRPC.
//!
//! `GetFlightInfo` takes a command descriptor whose command is JSON `{"path", "batch_size",
//! "cur_shard", "shard_count", "seed", "epoch", "state"}` (`path`: an entry directory in the
//! daemon's cache, or a watched dataset's name for its latest version; `state` as `kiln stream
//! --state-out` writes it) and answers with one endpoint whose ticket is that request, checked.
//! `DoGet` streams one epoch from there. The loader runs on its own thread and hands batches
//! through a small channel, so a slow client holds at most a few batches in memory.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming};

use super::datasets::Datasets;
use crate::loader::{delivered_tensor, Loader, LoaderState};
use crate::shards::{EntryReader, Layout};

/// Batches a stream holds ahead of a slow client.
const PREFETCH: usize = 2;
/// Flight requests are small JSON documents.
const MAX_COMMAND_BYTES: usize = 64 << 10;

/// What a client asks for (the command, and the ticket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    pub path: String,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub cur_shard: u64,
    #[serde(default = "one")]
    pub shard_count: u64,
    #[serde(default)]
    pub seed: Option<u64>,
    /// The epoch to start at (ignored when `state` is given).
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub state: Option<LoaderState>,
}

fn default_batch_size() -> usize {
    32
}

fn one() -> u64 {
    1
}

/// Open streams, for `/metrics`.
#[derive(Debug, Default)]
pub struct FlightStats {
    pub streams: AtomicU64,
}

#[derive(Debug)]
pub struct FlightServer {
    cache: PathBuf,
    datasets: Arc<Datasets>,
    token: Option<String>,
    stats: Arc<FlightStats>,
}

/// Counts a stream while it lives.
struct StreamGuard(Arc<FlightStats>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FlightServer {
    pub fn new(
        cache: PathBuf,
        datasets: Arc<Datasets>,
        token: Option<String>,
        stats: Arc<FlightStats>,
    ) -> Self {
        FlightServer {
            cache,
            datasets,
            token,
            stats,
        }
    }

    pub fn into_service(self) -> FlightServiceServer<FlightServer> {
        FlightServiceServer::new(self).max_decoding_message_size(MAX_COMMAND_BYTES)
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else { return Ok(()) };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in full whatever the first difference, so timing tells nothing.
        let matches = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if matches {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "kiln daemon: this server needs `authorization: Bearer TOKEN`",
            ))
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<(StreamRequest, PathBuf), Status> {
        let request: StreamRequest = serde_json::from_slice(bytes).map_err(|e| {
            Status::invalid_argument(format!("the command is not a kiln stream request: {e}"))
        })?;
        let entry = self.resolve(&request.path)?;
        Ok((request, entry))
    }

    /// A dataset's latest version, or an entry directory inside the daemon's cache (nothing
    /// else on the machine is served).
    fn resolve(&self, path: &str) -> Result<PathBuf, Status> {
        if let Some(dataset) = self.datasets.get(path) {
            let latest = dataset
                .versions
                .last()
                .ok_or_else(|| Status::unavailable(format!("dataset {path:?} has no version yet")))?;
            return Ok(PathBuf::from(&latest.entry));
        }
        let canonical = std::fs::canonicalize(path).map_err(|_| {
            Status::not_found(format!("{path:?} is neither a dataset nor an entry in the cache"))
        })?;
        if canonical.parent() != Some(self.cache.as_path()) {
            return Err(Status::permission_denied(format!(
                "{path:?} is not an entry of this daemon's cache ({})",
                self.cache.display()
            )));
        }
        Ok(canonical)
    }

    fn loader(request: &StreamRequest, entry: &PathBuf) -> Result<Loader, Status> {
        let state = request.state.unwrap_or(LoaderState {
            seed: request.seed,
            epoch: request.epoch,
            position: 0,
        });
        // The rest of the state's epoch (the loader counts epochs from 0).
        let mut builder = Loader::builder(entry)
            .batch_size(request.batch_size)
            .shard(request.cur_shard, request.shard_count)
            .epochs(Some(state.epoch.saturating_add(1)))
            .prefetch(PREFETCH);
        if let Some(seed) = state.seed {
            builder = builder.shuffle(seed);
        }
        builder = builder.resume(state);
        builder
            .build()
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

type FlightStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "kiln daemon serves GetFlightInfo, GetSchema and DoGet, not {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for FlightServer {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("Handshake (send the token as `authorization: Bearer`)")
    }

    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let descriptor = request.into_inner();
        let (stream_request, entry) = self.parse(&descriptor.cmd)?;
        // Checked now (shard counts, state), so a bad request fails here, not in DoGet.
        let rows = {
            let loader = Self::loader(&stream_request, &entry)?;
            loader.rows_per_epoch()
        };
        let reader = EntryReader::open(&entry).map_err(|e| Status::internal(e.to_string()))?;
        let layout = Layout::Tensor(delivered_tensor(&reader).map_err(|e| Status::internal(e.to_string()))?);
        let schema = crate::shards::schema(&layout);
        let ticket = serde_json::to_vec(&StreamRequest {
            path: entry.display().to_string(),
            ..stream_request
        })
        .expect("requests serialise");
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_total_records(rows as i64)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        unimplemented("PollFlightInfo")
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        self.authorize(&request)?;
        let (_, entry) = self.parse(&request.into_inner().cmd)?;
        let reader = EntryReader::open(&entry).map_err(|e| Status::internal(e.to_string()))?;
        let layout = Layout::Tensor(delivered_tensor(&reader).map_err(|e| Status::internal(e.to_string()))?);
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let result = SchemaResult::try_from(arrow_flight::SchemaAsIpc::new(
            &crate::shards::schema(&layout),
            &options,
        ))
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorize(&request)?;
        let (stream_request, entry) = self.parse(&request.into_inner().ticket)?;
        let loader = Self::loader(&stream_request, &entry)?;
        let (send, receive) =
            tokio::sync::mpsc::channel::<Result<arrow::record_batch::RecordBatch, FlightError>>(PREFETCH);
        // The loader blocks; it runs beside the runtime and stops when the client goes away
        // (the channel closes).
        std::thread::Builder::new()
            .name("kiln-flight".into())
            .spawn(move || {
                for batch in loader {
                    let item = batch
                        .map(|b| b.records)
                        .map_err(|e| FlightError::ExternalError(Box::new(e)));
                    let failed = item.is_err();
                    if send.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Status::internal(format!("starting a stream: {e}")))?;
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        let guard = StreamGuard(self.stats.clone());
        let batches: BoxStream<'static, Result<arrow::record_batch::RecordBatch, FlightError>> =
            futures::stream::unfold(receive, |mut r| async { r.recv().await.map(|b| (b, r)) }).boxed();
        let data = FlightDataEncoderBuilder::new().build(batches).map(move |item| {
            let _alive = &guard;
            item.map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(data)))
    }

    async fn do_put(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented("DoPut")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("DoExchange")
    }

    async fn do_action(&self, _: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented("DoAction")
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("ListActions")
    }
}
