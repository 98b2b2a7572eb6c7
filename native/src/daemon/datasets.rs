//! Datasets kept current: a source watched every `poll`, converted through the job queue
//! with the latest version's entry to reuse from, so a new, changed or removed file produces a
//! new version (a new entry) in which only new work ran. Unchanged sources give the same
//! entry back (a cache hit), which is not a new version.
//!
//! Each dataset is one JSON file under `STATE/datasets/` (written atomically), so watching
//! survives restarts; the conversion in flight is a job like any other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::jobs::{JobState, Jobs};
use super::request::JobRequest;
use crate::error::{Error, Result};

/// Polls faster than this would only list the source over and over.
const MIN_POLL: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(200);

fn default_poll() -> String {
    "30s".into()
}

/// `PUT /v1/datasets/{name}`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRequest {
    pub source: String,
    pub spec: Value,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default = "default_poll")]
    pub poll: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub entry: String,
    pub rows: Option<u64>,
    /// Rows taken from the previous version rather than transformed.
    pub reused: Option<u64>,
    pub job: String,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    #[serde(flatten)]
    pub request: DatasetRequest,
    pub versions: Vec<Version>,
    /// The conversion in flight, if any.
    pub job: Option<String>,
    /// Why the last conversion failed (cleared by the next success).
    pub error: Option<String>,
}

#[derive(Debug)]
struct Watched {
    dataset: Dataset,
    poll: Duration,
    next_poll: Instant,
}

#[derive(Debug)]
pub struct Datasets {
    dir: PathBuf,
    jobs: Arc<Jobs>,
    watched: Mutex<BTreeMap<String, Watched>>,
    stop: AtomicBool,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Names become file names and URL segments: keep them plain.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "dataset name",
            format!("{name:?}: use 1 to 128 letters, digits, '-', '_' or '.' (not first)"),
        ))
    }
}

impl DatasetRequest {
    fn job(&self, reuse: Option<&Version>) -> JobRequest {
        JobRequest {
            kind: "convert".into(),
            source: self.source.clone(),
            spec: Some(self.spec.clone()),
            options: self.options.clone(),
            reuse: reuse.map(|v| vec![v.entry.clone()]).unwrap_or_default(),
        }
    }

    fn poll(&self) -> Result<Duration> {
        let poll = crate::units::parse_duration("poll", &self.poll)?;
        if poll < MIN_POLL {
            return Err(Error::invalid(
                "poll",
                format!("{:?} is below the minimum of 1s", self.poll),
            ));
        }
        Ok(poll)
    }
}

impl Datasets {
    pub fn open(state: &Path, jobs: Arc<Jobs>) -> Result<Arc<Datasets>> {
        let (dir, datasets) = super::records::load::<Dataset>(state, "datasets")?;
        let mut watched = BTreeMap::new();
        for dataset in datasets {
            let poll = dataset.request.poll().unwrap_or(Duration::from_secs(30));
            watched.insert(
                dataset.name.clone(),
                Watched {
                    dataset,
                    poll,
                    next_poll: Instant::now(),
                },
            );
        }
        Ok(Arc::new(Datasets {
            dir,
            jobs,
            watched: Mutex::new(watched),
            stop: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, dataset: &Dataset) -> Result<()> {
        super::records::save(&self.dir, &dataset.name, dataset)
    }

    /// Creates or replaces a watched dataset (its versions are kept when only the poll
    /// interval changes; a new source or spec starts a new history).
    pub fn put(&self, name: &str, request: DatasetRequest) -> Result<Dataset> {
        check_name(name)?;
        let poll = request.poll()?;
        request.job(None).check(self.jobs.cache())?;
        let mut watched = self.lock();
        let versions = match watched.get(name) {
            Some(w)
                if w.dataset.request.source == request.source
                    && w.dataset.request.spec == request.spec
                    && w.dataset.request.options == request.options =>
            {
                w.dataset.versions.clone()
            }
            _ => Vec::new(),
        };
        let job = watched.get(name).and_then(|w| w.dataset.job.clone());
        let dataset = Dataset {
            name: name.to_owned(),
            request,
            versions,
            job,
            error: None,
        };
        self.save(&dataset)?;
        watched.insert(
            name.to_owned(),
            Watched {
                dataset: dataset.clone(),
                poll,
                next_poll: Instant::now(),
            },
        );
        Ok(dataset)
    }

    pub fn get(&self, name: &str) -> Option<Dataset> {
        self.lock().get(name).map(|w| w.dataset.clone())
    }

    pub fn list(&self) -> Vec<Dataset> {
        self.lock().values().map(|w| w.dataset.clone()).collect()
    }

    /// Stops watching; the versions' entries stay in the cache.
    pub fn delete(&self, name: &str) -> Result<Option<Dataset>> {
        let removed = self.lock().remove(name);
        if removed.is_some() {
            let path = self.dir.join(format!("{name}.json"));
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
        Ok(removed.map(|w| w.dataset))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Polls every watched dataset until [`Self::stop`].
    pub fn run_watcher(self: &Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.tick() {
                eprintln!("kiln daemon: datasets: {e}");
            }
            std::thread::sleep(TICK);
        }
    }

    fn tick(&self) -> Result<()> {
        let mut watched = self.lock();
        for w in watched.values_mut() {
            let changed = match w.dataset.job.clone() {
                Some(id) => match self.jobs.get(&id) {
                    Some(job) if !job.state.finished() => false,
                    Some(job) => {
                        if job.state == JobState::Succeeded {
                            let entry = job.entry.clone().unwrap_or_default();
                            if w.dataset.versions.last().is_none_or(|v| v.entry != entry) {
                                w.dataset.versions.push(Version {
                                    version: w.dataset.versions.len() as u64 + 1,
                                    entry,
                                    rows: job.rows,
                                    reused: job.reused,
                                    job: id,
                                    created: now(),
                                });
                            }
                            w.dataset.error = None;
                        } else {
                            w.dataset.error = Some(
                                job.error
                                    .unwrap_or_else(|| format!("conversion {}", job.state.name())),
                            );
                        }
                        w.dataset.job = None;
                        w.next_poll = Instant::now() + w.poll;
                        true
                    }
                    None => {
                        w.dataset.job = None;
                        true
                    }
                },
                None if Instant::now() >= w.next_poll => {
                    let request = w.dataset.request.job(w.dataset.versions.last());
                    match self.jobs.submit(request) {
                        Ok(job) => w.dataset.job = Some(job.id),
                        Err(e) => {
                            w.dataset.error = Some(e.to_string());
                            w.next_poll = Instant::now() + w.poll;
                        }
                    }
                    true
                }
                None => false,
            };
            if changed {
                self.save(&w.dataset)?;
            }
        }
        Ok(())
    }
}
