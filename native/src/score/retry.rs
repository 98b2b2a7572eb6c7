//! Retry pacing for endpoints: exponential backoff with jitter, the server's `Retry-After`,
//! and a rate limit over every attempt. Written here rather than taken from a crate (backon,
//! governor) because it is a few lines over tokio's timer, which kiln already has.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The longest wait kiln accepts from a `Retry-After`: a server asking for more is treated as
/// asking for this, so a hostile or confused one cannot park a run for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first retry waits between base/2 and base; each further one doubles it.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (0 for the first): "equal jitter", half the
    /// exponential step fixed and half random, so concurrent clients spread out yet every
    /// retry still waits (a restarting server gets the time it needs), and never less than
    /// the server's `Retry-After`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let half = step / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        (half + jitter).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 10.2.3); `None` when unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default().min(MAX_RETRY_AFTER))
}

/// At most `rate` attempts per second, spaced evenly (GCRA with no burst): each caller takes
/// the next free slot and sleeps until it.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_respects_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let d0 = b.delay(0, None);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = b.delay(3, None);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            // Capped, and no overflow for absurd retry counts.
            assert!(b.delay(40, None) <= Duration::from_millis(1000));
            assert!(b.delay(u32::MAX, None) <= Duration::from_millis(1000));
        }
        assert!(b.delay(0, Some(Duration::from_secs(2))) == Duration::from_secs(2));
        assert_eq!(b.delay(0, Some(Duration::from_secs(1_000_000))), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // RFC 9110's example date is `now`; ten seconds later waits ten seconds.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_rate_limit_spaces_attempts() {
        let limiter = RateLimiter::new(20.0);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // Five attempts at 20/s: the fifth starts four 50 ms intervals after the first.
        assert!(
            start.elapsed() >= Duration::from_millis(199),
            "{:?}",
            start.elapsed()
        );
    }
}
