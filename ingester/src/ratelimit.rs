//! A token bucket per tenant: `--distributor.ingestion-rate-limit` samples per second
//! with a burst, refusing a whole request (429) that would overdraw it, as Mimir does.

use std::time::Instant;

/// The burst in force: the configured one, else one second of the rate (at least 1000).
fn effective_burst(rate: f64, burst: u64) -> f64 {
    if burst > 0 {
        burst as f64
    } else {
        rate.max(1000.0)
    }
}

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` ≤ 0 means unlimited.
    pub fn new(rate: f64, burst: u64) -> Self {
        let burst = effective_burst(rate, burst);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Change the rate and burst (a runtime configuration reload); tokens already in
    /// the bucket are kept, capped at the new burst.
    pub fn set_limits(&mut self, rate: f64, burst: u64) {
        let burst = effective_burst(rate, burst);
        if rate != self.rate || burst != self.burst {
            self.rate = rate;
            self.burst = burst;
            self.tokens = self.tokens.min(burst);
        }
    }

    /// Take `n` tokens if available; false (and nothing taken) otherwise.
    pub fn try_take(&mut self, n: u64) -> bool {
        self.try_take_at(n, Instant::now())
    }

    fn try_take_at(&mut self, n: u64, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        let n = n as f64;
        // A request larger than the whole burst could never pass; let it through when the
        // bucket is full so a big but within-rate sender is not starved forever.
        if n <= self.tokens || (n > self.burst && self.tokens >= self.burst) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 200);
        b.last = t0;
        assert!(b.try_take_at(200, t0));
        assert!(!b.try_take_at(1, t0));
        assert!(b.try_take_at(50, t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(10, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn unlimited() {
        let mut b = TokenBucket::new(0.0, 0);
        assert!(b.try_take(u64::MAX));
    }
}
