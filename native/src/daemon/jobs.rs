//! Jobs: their records (one JSON file each under `STATE/jobs/`, written atomically on every
//! change of state), the queue, and the runners that take at most `--max-jobs` at a time.
//!
//! A job that was queued or running when the daemon stopped (SIGTERM, or kill -9) is queued
//! again when it starts: a conversion resumes from its entry's journal, a scoring from its
//! output's, so finished work is never redone and nothing half-written is kept.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::request::JobRequest;
use crate::cache::Failure;
use crate::convert::ConvertMonitor;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Items done: files (or table rows) for conversions, rows for scoring.
    pub done: u64,
    pub total: u64,
    pub rows_per_s: Option<f64>,
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub state: JobState,
    pub request: JobRequest,
    pub progress: Progress,
    /// The entry directory (conversions; scoring: the entry it scored).
    pub entry: Option<String>,
    /// Scoring: the output directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub failures: Vec<Failure>,
    pub error: Option<String>,
    /// Rows of the finished job's entry (conversions) or output (scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Conversions: rows taken from an earlier entry instead of transformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<u64>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub seconds: Option<f64>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A running job's live state.
#[derive(Debug)]
struct Running {
    monitor: Arc<ConvertMonitor>,
    started: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: BTreeMap<String, JobRecord>,
    /// Ids in the order they run.
    queue: VecDeque<String>,
    running: BTreeMap<String, Running>,
    shutting_down: bool,
}

/// The jobs of one daemon; shared by the HTTP handlers and the runners.
#[derive(Debug)]
pub struct Jobs {
    dir: PathBuf,
    cache: PathBuf,
    inner: Mutex<Inner>,
    wake: Condvar,
    pub metrics: Metrics,
}

impl Jobs {
    /// Loads every job under `state/jobs`, queueing again the ones that had not finished.
    pub fn open(state: &Path, cache: PathBuf) -> Result<Arc<Jobs>> {
        let (dir, records) = super::records::load::<JobRecord>(state, "jobs")?;
        let mut inner = Inner::default();
        let mut unfinished = Vec::new();
        for mut record in records {
            if !record.state.finished() {
                record.state = JobState::Queued;
                unfinished.push((record.created.clone(), record.id.clone()));
            }
            inner.jobs.insert(record.id.clone(), record);
        }
        unfinished.sort();
        inner.queue = unfinished.into_iter().map(|(_, id)| id).collect();
        let jobs = Arc::new(Jobs {
            dir,
            cache,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            metrics: Metrics::default(),
        });
        for record in jobs.lock().jobs.values() {
            jobs.save(record)?;
        }
        Ok(jobs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, record: &JobRecord) -> Result<()> {
        super::records::save(&self.dir, &record.id, record)
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// Queues a checked request; returns its record.
    pub fn submit(&self, request: JobRequest) -> Result<JobRecord> {
        let id = format!("{:016x}", rand::random::<u64>());
        let record = JobRecord {
            id: id.clone(),
            kind: request.kind.clone(),
            state: JobState::Queued,
            request,
            progress: Progress::default(),
            entry: None,
            output: None,
            failures: Vec::new(),
            error: None,
            rows: None,
            reused: None,
            created: now(),
            started: None,
            finished: None,
            seconds: None,
        };
        self.save(&record)?;
        let mut inner = self.lock();
        inner.jobs.insert(id.clone(), record.clone());
        inner.queue.push_back(id);
        self.wake.notify_one();
        Ok(record)
    }

    /// A job with its live progress.
    pub fn get(&self, id: &str) -> Option<JobRecord> {
        let inner = self.lock();
        let mut record = inner.jobs.get(id)?.clone();
        if let Some(running) = inner.running.get(id) {
            record.progress = live_progress(running);
        }
        Some(record)
    }

    pub fn list(&self) -> Vec<JobRecord> {
        let ids: Vec<String> = self.lock().jobs.keys().cloned().collect();
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Cancels a job: a queued one at once, a running one at its next safe point. `None`
    /// when there is no such job; `Err` with the state when it has finished already.
    pub fn cancel(&self, id: &str) -> Option<std::result::Result<JobRecord, JobState>> {
        let mut inner = self.lock();
        let state = inner.jobs.get(id)?.state;
        match state {
            JobState::Queued => {
                inner.queue.retain(|q| q != id);
                let record = inner.jobs.get_mut(id).expect("present");
                record.state = JobState::Cancelled;
                record.finished = Some(now());
                let record = record.clone();
                drop(inner);
                if let Err(e) = self.save(&record) {
                    eprintln!("kiln daemon: {e}");
                }
                Some(Ok(record))
            }
            JobState::Running => {
                if let Some(running) = inner.running.get(id) {
                    running.monitor.cancel();
                }
                inner.jobs.get(id).cloned().map(Ok)
            }
            finished => Some(Err(finished)),
        }
    }

    /// Counts by state.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let inner = self.lock();
        let mut counts: BTreeMap<&'static str, u64> = JobState::ALL.iter().map(|s| (s.name(), 0)).collect();
        for record in inner.jobs.values() {
            *counts.entry(record.state.name()).or_default() += 1;
        }
        counts
    }

    /// Rows and bytes of the jobs running now (not yet in the metrics' totals).
    pub fn running_totals(&self) -> (u64, u64, u64) {
        let inner = self.lock();
        inner.running.values().fold((0, 0, 0), |(r, b, f), run| {
            (
                r + run.monitor.rows.load(Ordering::Relaxed),
                b + run.monitor.bytes_read.load(Ordering::Relaxed),
                f + run.monitor.failed.load(Ordering::Relaxed),
            )
        })
    }

    /// Stops taking jobs and asks the running ones to stop at a safe point; they are saved
    /// as queued, to resume when the daemon starts again.
    pub fn shut_down(&self) {
        let mut inner = self.lock();
        inner.shutting_down = true;
        for running in inner.running.values() {
            running.monitor.cancel();
        }
        self.wake.notify_all();
    }

    /// A runner: takes queued jobs until shutdown.
    pub fn run_worker(self: &Arc<Self>) {
        loop {
            let (id, request, monitor) = {
                let mut inner = self.lock();
                loop {
                    if inner.shutting_down {
                        return;
                    }
                    if let Some(id) = inner.queue.pop_front() {
                        let monitor = Arc::new(ConvertMonitor::default());
                        inner.running.insert(
                            id.clone(),
                            Running {
                                monitor: monitor.clone(),
                                started: Instant::now(),
                            },
                        );
                        let record = inner.jobs.get_mut(&id).expect("queued jobs exist");
                        record.state = JobState::Running;
                        record.started = Some(now());
                        record.error = None;
                        let request = record.request.clone();
                        let saved = record.clone();
                        drop(inner);
                        if let Err(e) = self.save(&saved) {
                            eprintln!("kiln daemon: {e}");
                        }
                        break (id, request, monitor);
                    }
                    inner = self.wake.wait(inner).unwrap_or_else(|e| e.into_inner());
                }
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                request
                    .prepare(&self.cache)
                    .and_then(|prepared| prepared.run(monitor.clone()))
            }))
            .unwrap_or_else(|panic| Err(Error::panicked("a job", panic)));
            self.finish(&id, outcome, &monitor);
        }
    }

    fn finish(&self, id: &str, outcome: Result<super::request::Outcome>, monitor: &ConvertMonitor) {
        let mut inner = self.lock();
        let running = inner.running.remove(id);
        let shutting_down = inner.shutting_down;
        let Some(record) = inner.jobs.get_mut(id) else {
            return;
        };
        let seconds = running.as_ref().map(|r| r.started.elapsed().as_secs_f64());
        record.progress = Progress {
            done: monitor.done.load(Ordering::Relaxed),
            total: monitor.total.load(Ordering::Relaxed),
            rows_per_s: None,
            eta_s: None,
        };
        match outcome {
            Ok(done) => {
                record.state = JobState::Succeeded;
                record.entry = done.entry;
                record.output = done.output;
                record.failures = done.failures;
                record.rows = done.rows;
                record.reused = done.reused;
                record.progress.done = record.progress.total.max(record.progress.done);
            }
            Err(Error::Cancelled) if shutting_down => {
                // Resumes when the daemon starts again.
                record.state = JobState::Queued;
            }
            Err(Error::Cancelled) => record.state = JobState::Cancelled,
            Err(e) => {
                record.state = JobState::Failed;
                record.error = Some(e.to_string());
            }
        }
        if record.state.finished() {
            record.finished = Some(now());
            record.seconds = seconds;
            self.metrics.job_finished(seconds.unwrap_or(0.0));
        }
        self.metrics.add_totals(
            monitor.rows.load(Ordering::Relaxed),
            monitor.bytes_read.load(Ordering::Relaxed),
            monitor.failed.load(Ordering::Relaxed),
        );
        let record = record.clone();
        drop(inner);
        if let Err(e) = self.save(&record) {
            eprintln!("kiln daemon: {e}");
        }
    }
}

fn live_progress(running: &Running) -> Progress {
    let m = &running.monitor;
    let (done, total) = (m.done.load(Ordering::Relaxed), m.total.load(Ordering::Relaxed));
    // Work an interrupted run finished is not this run's rate.
    let start = m.resumed.load(Ordering::Relaxed);
    let elapsed = running.started.elapsed().as_secs_f64();
    let rate = (elapsed > 0.5 && done > start).then(|| (done - start) as f64 / elapsed);
    Progress {
        done,
        total,
        rows_per_s: rate.map(|_| m.rows.load(Ordering::Relaxed) as f64 / elapsed),
        eta_s: rate.map(|r| total.saturating_sub(done) as f64 / r),
    }
}
