//! The engine seam: anything that turns an input batch into outputs. In-process models run
//! on blocking threads, one model state per worker (the model itself is loaded once and
//! shared); endpoints are plain async requests.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::model::{InputBatch, ModelInfo, OutputTensor};
use crate::error::Result;

/// A batch's failure after whatever retrying the engine does: recorded, never dropped.
pub type BatchResult = std::result::Result<Vec<OutputTensor>, String>;

pub trait Scorer: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// What names the model in the manifest, and decides whether an earlier run in the same
    /// output directory scored with the same model.
    fn identity(&self) -> serde_json::Value;
    /// The model version a server said it answered with (endpoints).
    fn served_version(&self) -> Option<String> {
        None
    }
    /// Batches in flight at once.
    fn parallelism(&self) -> usize;
    fn score(self: Arc<Self>, batch: InputBatch) -> BoxFuture<'static, BatchResult>;
}

/// A model run in this process.
pub trait LocalModel: Send + Sync + 'static {
    /// What one worker keeps between batches (run states, sessions).
    type Worker: Send + 'static;
    fn info(&self) -> &ModelInfo;
    fn engine(&self) -> &'static str;
    fn worker(&self) -> Result<Self::Worker>;
    fn run(&self, worker: &mut Self::Worker, batch: InputBatch) -> BatchResult;
}

/// A [`LocalModel`] with a pool of workers, used from blocking threads.
pub struct LocalScorer<M: LocalModel> {
    model: M,
    identity: serde_json::Value,
    workers: usize,
    idle: Mutex<Vec<M::Worker>>,
}

impl<M: LocalModel> std::fmt::Debug for LocalScorer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalScorer")
            .field("identity", &self.identity)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl<M: LocalModel> LocalScorer<M> {
    /// `identity` names the model file (path and SHA-256); the engine is added to it, since
    /// two engines agree only to ~1e-7.
    pub fn new(model: M, mut identity: serde_json::Value, workers: usize) -> Result<Self> {
        identity["engine"] = model.engine().into();
        // Workers are made up front so a model that cannot run fails before any batch.
        let idle = (0..workers).map(|_| model.worker()).collect::<Result<Vec<_>>>()?;
        Ok(LocalScorer {
            model,
            identity,
            workers,
            idle: Mutex::new(idle),
        })
    }
}

impl<M: LocalModel> Scorer for LocalScorer<M> {
    fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    fn identity(&self) -> serde_json::Value {
        self.identity.clone()
    }

    fn parallelism(&self) -> usize {
        self.workers
    }

    fn score(self: Arc<Self>, batch: InputBatch) -> BoxFuture<'static, BatchResult> {
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut worker = match taken {
                    Some(worker) => worker,
                    None => self.model.worker().map_err(|e| e.to_string())?,
                };
                // A panic inside the engine is this batch's failure, not the run's end.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.model.run(&mut worker, batch)
                }));
                match result {
                    Ok(result) => {
                        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(worker);
                        result
                    }
                    Err(panic) => Err(crate::Error::panicked("the model engine", panic).to_string()),
                }
            });
            task.await
                .unwrap_or_else(|e| Err(format!("scoring task failed: {e}")))
        })
    }
}
