//! `/metrics` in the Prometheus text exposition format (version 0.0.4). Written by hand: the
//! daemon has seven metrics and no labels beyond a job's state, which the format makes a few
//! lines each; a registry crate would add more code than it saves.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the job-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 9] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Totals of finished runs (running jobs are added when scraped).
#[derive(Debug, Default)]
pub struct Metrics {
    rows: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    durations: Mutex<Histogram>,
}

/// What a scrape reports beyond the counters.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub jobs: Vec<(&'static str, u64)>,
    /// Rows, bytes and failures of running jobs so far.
    pub running: (u64, u64, u64),
    pub cache_bytes: u64,
    pub flight_streams: u64,
}

impl Metrics {
    pub fn add_totals(&self, rows: u64, bytes: u64, failures: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.failures.fetch_add(failures, Ordering::Relaxed);
    }

    pub fn job_finished(&self, seconds: f64) {
        let mut h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP kiln_jobs Jobs by state.\n# TYPE kiln_jobs gauge");
        for (state, n) in &snapshot.jobs {
            let _ = writeln!(out, "kiln_jobs{{state=\"{state}\"}} {n}");
        }
        let (rows, bytes, failures) = snapshot.running;
        let counters = [
            (
                "kiln_rows_converted_total",
                "Rows written by conversions.",
                self.rows.load(Ordering::Relaxed) + rows,
            ),
            (
                "kiln_bytes_read_total",
                "Bytes of source files read by conversions.",
                self.bytes.load(Ordering::Relaxed) + bytes,
            ),
            (
                "kiln_failures_total",
                "Items that failed in conversions.",
                self.failures.load(Ordering::Relaxed) + failures,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP kiln_job_duration_seconds Wall time of finished jobs.\n# TYPE kiln_job_duration_seconds histogram"
        );
        for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts.iter()) {
            let _ = writeln!(out, "kiln_job_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "kiln_job_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "kiln_job_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "kiln_job_duration_seconds_count {}", h.count);
        let gauges = [
            (
                "kiln_cache_bytes",
                "Bytes of the cache's entries.",
                snapshot.cache_bytes,
            ),
            (
                "kiln_flight_streams",
                "Arrow Flight streams open now.",
                snapshot.flight_streams,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.job_finished(0.5);
        m.job_finished(20.0);
        m.add_totals(10, 100, 1);
        let text = m.render(&Snapshot {
            jobs: vec![("queued", 2)],
            running: (5, 50, 0),
            ..Default::default()
        });
        assert!(text.contains("kiln_jobs{state=\"queued\"} 2\n"), "{text}");
        assert!(text.contains("kiln_rows_converted_total 15\n"), "{text}");
        assert!(
            text.contains("kiln_job_duration_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kiln_job_duration_seconds_bucket{le=\"60\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kiln_job_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("kiln_job_duration_seconds_sum 20.5\n"), "{text}");
    }
}
