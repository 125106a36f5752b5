//! When background work that came to nothing is due again: the one backoff
//! of the jobs that keep theirs in the database ([`crate::ports::RetrySchedule`]),
//! the reconciler's looks at unknown outcomes and the expiry of READY
//! payments. Each look that settles nothing counts an attempt; the delay
//! doubles with each, up to a cap, so what stays unsettled for a good reason
//! (or for a bad one: a stream that does not replay) is looked at less and
//! less often and never crowds out the rest.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first look that settled nothing.
    pub first: Duration,
    /// The delay never grows past this.
    pub max: Duration,
}

impl Backoff {
    /// When work looked at `attempts` times (at least 1) is due again.
    #[must_use]
    pub fn next_attempt(&self, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
        let delay = self
            .first
            .saturating_mul(2_u32.saturating_pow(attempts.saturating_sub(1)))
            .min(self.max);
        chrono::Duration::from_std(delay)
            .ok()
            .and_then(|delay| now.checked_add_signed(delay))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let backoff = Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(5 * 60),
        };
        let now = Utc::now();
        let delay = |attempts| backoff.next_attempt(attempts, now) - now;
        assert_eq!(delay(1), chrono::Duration::seconds(60));
        assert_eq!(delay(2), chrono::Duration::seconds(120), "doubled");
        assert_eq!(delay(30), chrono::Duration::minutes(5), "capped");
        assert_eq!(delay(u32::MAX), chrono::Duration::minutes(5), "no overflow");
    }
}
