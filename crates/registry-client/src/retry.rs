//! When to retry and how long to wait: bounded exponential backoff on connection errors,
//! 5xx and 429, honouring `Retry-After`. Pure: the caller sleeps.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// How many times to try and how long to wait in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    pub base_delay: Duration,
    /// The longest computed wait.
    pub max_delay: Duration,
    /// The longest wait a `Retry-After` may ask for; a longer one fails at once.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 250 ms doubling up to 8 s, `Retry-After` up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What happened to an attempt, as far as retrying goes.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    /// No response: connection refused or reset, timeout, a body cut short.
    NoResponse,
    /// A response with this status and headers.
    Status(u16, &'a HeaderMap),
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// After attempt number `attempt` (1-based) ended with `outcome`, how long to wait
    /// before the next one; `None` to give up (not retryable, or out of attempts).
    pub(crate) fn delay(
        &self,
        attempt: u32,
        outcome: &Outcome<'_>,
        now: SystemTime,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let backoff = self
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.max_delay);
        match outcome {
            Outcome::NoResponse => Some(backoff),
            Outcome::Status(status, headers) => {
                if !is_retryable_status(*status) {
                    return None;
                }
                match retry_after(headers, now) {
                    Some(d) if d > self.max_retry_after => None,
                    Some(d) => Some(d),
                    None => Some(backoff),
                }
            }
        }
    }
}

/// 429 and the 5xx that mean "try again": 500, 502, 503, 504 (and 408 Request Timeout).
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let p = RetryPolicy::default();
        let now = SystemTime::now();
        let d: Vec<_> = (1..=5)
            .map(|a| p.delay(a, &Outcome::NoResponse, now))
            .collect();
        assert_eq!(
            d,
            [
                Some(Duration::from_millis(250)),
                Some(Duration::from_millis(500)),
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                None
            ]
        );
        let p = RetryPolicy {
            max_attempts: 40,
            ..p
        };
        assert_eq!(
            p.delay(30, &Outcome::NoResponse, now),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            RetryPolicy::none().delay(1, &Outcome::NoResponse, now),
            None
        );
    }

    #[test]
    fn statuses() {
        let p = RetryPolicy::default();
        let now = SystemTime::now();
        let h = headers(None);
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(p.delay(1, &Outcome::Status(s, &h), now).is_some(), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 416, 501] {
            assert!(p.delay(1, &Outcome::Status(s, &h), now).is_none(), "{s}");
        }
    }

    #[test]
    fn retry_after_header() {
        let p = RetryPolicy::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(Some("3"));
        assert_eq!(
            p.delay(1, &Outcome::Status(429, &h), now),
            Some(Duration::from_secs(3))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let h = headers(Some(&date));
        assert_eq!(
            p.delay(1, &Outcome::Status(503, &h), now),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        let h = headers(Some(&past));
        assert_eq!(
            p.delay(1, &Outcome::Status(503, &h), now),
            Some(Duration::ZERO)
        );
        // longer than we are willing to wait: give up now rather than hang
        let h = headers(Some("3600"));
        assert_eq!(p.delay(1, &Outcome::Status(429, &h), now), None);
        // garbage: ordinary backoff
        let h = headers(Some("soon"));
        assert_eq!(
            p.delay(1, &Outcome::Status(429, &h), now),
            Some(Duration::from_millis(250))
        );
        // but not on a status that is not retryable
        let h = headers(Some("1"));
        assert_eq!(p.delay(1, &Outcome::Status(404, &h), now), None);
    }
}
