//! When to resend a request and when to give up, without I/O or clocks: [`UdpRpc::call`]
//! drives it with tokio's timers, the simulator with its virtual clock.
//!
//! A request is resent with the same id after each time-out (servers answer a retry from
//! their deduplication table), each time-out twice the previous one up to a ceiling, until
//! the policy's deadline has passed since the first attempt.
//!
//! [`UdpRpc::call`]: crate::UdpRpc::call

/// How long to wait for an answer, and for how long to keep trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// Give up after this long in total.
    pub deadline_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_timeout_ms: 250,
            max_timeout_ms: 2_000,
            deadline_ms: 30_000,
        }
    }
}

/// Exponential back-off: `base_ms` doubled `doublings` times, at most `max_ms`. The one
/// doubling rule for time-outs and waits between retries.
pub fn backoff_ms(base_ms: u64, max_ms: u64, doublings: u32) -> u64 {
    let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
    base_ms.saturating_mul(factor).min(max_ms)
}

/// One attempt to send: which one, and how long to wait for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 0 for the first; callers look the address up again from it.
    pub index: u32,
    pub timeout_ms: u64,
}

/// The retries of one request.
#[derive(Clone, Debug)]
pub struct Retry {
    policy: RetryPolicy,
    attempts: u32,
}

impl Retry {
    pub fn new(policy: RetryPolicy) -> Retry {
        Retry {
            policy,
            attempts: 0,
        }
    }

    /// The next attempt (the caller sends it now and waits its time-out).
    pub fn next_attempt(&mut self) -> Attempt {
        let index = self.attempts;
        self.attempts = self.attempts.saturating_add(1);
        // The first waits the initial time-out even if it is above the ceiling.
        let timeout_ms = match index {
            0 => self.policy.initial_timeout_ms,
            n => backoff_ms(
                self.policy.initial_timeout_ms,
                self.policy.max_timeout_ms,
                n,
            ),
        };
        debug_assert!(
            timeout_ms
                <= self
                    .policy
                    .initial_timeout_ms
                    .max(self.policy.max_timeout_ms)
        );
        Attempt { index, timeout_ms }
    }

    /// The last attempt timed out `elapsed_ms` after the first was sent: whether to stop
    /// (the request's outcome is then unknown) instead of sending another.
    pub fn gives_up(&self, elapsed_ms: u64) -> bool {
        assert!(self.attempts > 0, "a time-out before any attempt");
        elapsed_ms >= self.policy.deadline_ms
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_outs_double_up_to_the_ceiling() {
        let mut r = Retry::new(RetryPolicy::default());
        let t: Vec<u64> = (0..6).map(|_| r.next_attempt().timeout_ms).collect();
        assert_eq!(t, vec![250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(r.attempts(), 6);
    }

    #[test]
    fn attempts_are_numbered_from_zero() {
        let mut r = Retry::new(RetryPolicy::default());
        assert_eq!(r.next_attempt().index, 0);
        assert_eq!(r.next_attempt().index, 1);
    }

    #[test]
    fn gives_up_at_the_deadline_not_before() {
        let policy = RetryPolicy {
            deadline_ms: 1000,
            ..RetryPolicy::default()
        };
        let mut r = Retry::new(policy);
        r.next_attempt();
        assert!(!r.gives_up(999));
        assert!(r.gives_up(1000));
    }

    #[test]
    fn a_first_time_out_above_the_ceiling_is_kept_once() {
        let mut r = Retry::new(RetryPolicy {
            initial_timeout_ms: 5000,
            max_timeout_ms: 2000,
            deadline_ms: 60_000,
        });
        assert_eq!(r.next_attempt().timeout_ms, 5000);
        assert_eq!(r.next_attempt().timeout_ms, 2000);
    }

    #[test]
    fn backoff_never_overflows() {
        assert_eq!(backoff_ms(100, 5000, 0), 100);
        assert_eq!(backoff_ms(100, 5000, 3), 800);
        assert_eq!(backoff_ms(100, 5000, 63), 5000);
        assert_eq!(backoff_ms(100, 5000, u32::MAX), 5000);
        assert_eq!(backoff_ms(u64::MAX, 7, 1), 7);
    }

    #[test]
    #[should_panic(expected = "before any attempt")]
    fn a_time_out_needs_an_attempt() {
        Retry::new(RetryPolicy::default()).gives_up(0);
    }
}
