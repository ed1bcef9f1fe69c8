//! How load is offered: a closed loop (a fixed number of clients, each starting
//! its next saga when the last one ended) or an open loop (sagas start on a fixed
//! schedule whatever the system does), and when a run stops.
//!
//! The one decision to know: in the open loop a saga's latency is measured from
//! the time it was *scheduled* to start, not from when a free slot let it start.
//! A system that falls behind therefore shows its queueing in the latency instead
//! of silently lowering the offered rate (coordinated omission).

use std::time::Duration;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` clients, each with one saga in flight.
    Closed { concurrency: usize },
    /// `rate` sagas started per second; at most `max_in_flight` at once (beyond
    /// that a start waits, and its wait counts in its latency).
    Open { rate: f64, max_in_flight: usize },
}

impl Mode {
    /// The most sagas that can be in flight at once.
    pub fn max_in_flight(&self) -> usize {
        match *self {
            Mode::Closed { concurrency } => concurrency.max(1),
            Mode::Open { max_in_flight, .. } => max_in_flight.max(1),
        }
    }

    /// `closed` or `open`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Closed { .. } => "closed",
            Mode::Open { .. } => "open",
        }
    }
}

/// When a run stops starting sagas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many sagas.
    Sagas(u64),
    /// After this long (the sagas in flight then are still followed to their end).
    Duration(Duration),
}

impl Stop {
    /// How many sagas an open loop at `rate` per second starts before it stops.
    pub fn open_loop_sagas(&self, rate: f64) -> u64 {
        match *self {
            Stop::Sagas(n) => n,
            Stop::Duration(d) => (d.as_secs_f64() * rate).ceil().max(0.0) as u64,
        }
    }
}

/// When the open loop starts saga `index`, from the start of the run.
pub fn scheduled_offset(index: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(index as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_loop_spaces_starts_evenly_at_the_rate() {
        assert_eq!(scheduled_offset(0, 200.0), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 200.0), Duration::from_millis(5));
        assert_eq!(scheduled_offset(200, 200.0), Duration::from_secs(1));
        assert_eq!(scheduled_offset(3, 0.5), Duration::from_secs(6));
        assert_eq!(scheduled_offset(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_duration_becomes_rate_times_seconds_sagas_in_the_open_loop() {
        assert_eq!(Stop::Duration(Duration::from_secs(10)).open_loop_sagas(150.0), 1500);
        assert_eq!(Stop::Duration(Duration::from_millis(1500)).open_loop_sagas(3.0), 5);
        assert_eq!(Stop::Sagas(42).open_loop_sagas(1000.0), 42);
    }

    #[test]
    fn in_flight_is_bounded_by_the_mode() {
        assert_eq!(Mode::Closed { concurrency: 8 }.max_in_flight(), 8);
        assert_eq!(Mode::Closed { concurrency: 0 }.max_in_flight(), 1);
        assert_eq!(Mode::Open { rate: 10.0, max_in_flight: 4096 }.max_in_flight(), 4096);
    }
}
