//! The hybrid logical clock (Kulkarni et al., 2014).
//!
//! An HLC time is a wall-clock millisecond plus a logical counter. It never goes backwards,
//! stays close to real time, and moves past every time the node has seen, so a change made
//! after seeing another gets a later time even if the wall clocks disagree a little.
//!
//! In depfs the HLC only orders *concurrent* changes ("the later write wins"); causality
//! itself is tracked exactly by version vectors. That is why a peer whose clock is far off
//! cannot break convergence: the clock just refuses to follow it further than
//! [`HlcClock::max_drift_ms`] ahead of the local wall clock, and reports the drift.
//!
//! The clock never reads the time itself: callers pass the wall clock in, which keeps this
//! module deterministic for the simulation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A hybrid-logical-clock time. Ordered by wall time, then logical counter.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the physical part).
    pub wall_ms: u64,
    /// Counter that orders events within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// The zero time, before every real change.
    pub const ZERO: Hlc = Hlc {
        wall_ms: 0,
        logical: 0,
    };

    /// Builds a time from its two parts.
    pub const fn new(wall_ms: u64, logical: u32) -> Self {
        Hlc { wall_ms, logical }
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A remote time further ahead of the local wall clock than the clock accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("remote clock is {ahead_ms} ms ahead of the local wall clock (limit {limit_ms} ms)")]
pub struct ClockDrift {
    /// How far the remote time was ahead of the local wall clock.
    pub ahead_ms: u64,
    /// The accepted drift.
    pub limit_ms: u64,
}

/// The clock state of one node.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// Default bound on how far ahead of local wall time a remote clock is followed: one
    /// hour. Clocks that are minutes off are followed; a clock a day ahead is not.
    pub const DEFAULT_MAX_DRIFT_MS: u64 = 60 * 60 * 1000;

    /// A clock that resumes after `last` (persisted by the store, so the clock survives
    /// restarts without going backwards).
    pub fn new(last: Hlc, max_drift_ms: u64) -> Self {
        HlcClock { last, max_drift_ms }
    }

    /// The last time handed out or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The drift bound in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A new time for a local event, strictly after every earlier one.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        self.last = if wall_ms > self.last.wall_ms {
            Hlc::new(wall_ms, 0)
        } else {
            self.successor_of_last()
        };
        self.last
    }

    /// Moves the clock past a time received from another node. A remote time more than
    /// [`HlcClock::max_drift_ms`] ahead of `wall_ms` is not followed (the clock still
    /// ticks normally) and the drift is returned so the caller can log it.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Result<(), ClockDrift> {
        let ahead_ms = remote.wall_ms.saturating_sub(wall_ms);
        if ahead_ms > self.max_drift_ms {
            return Err(ClockDrift {
                ahead_ms,
                limit_ms: self.max_drift_ms,
            });
        }
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }

    /// Moves the clock past `seen` unconditionally: a local change to a path must come
    /// after every version of it the node holds, or the change would not be visible
    /// where it was made.
    pub fn advance_past(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }

    /// The next time after `last`. At the very end of time (`u64::MAX` ms, which only
    /// a forged remote stamp can bring) it stays there rather than wrapping around to
    /// the epoch.
    fn successor_of_last(&self) -> Hlc {
        match (
            self.last.logical.checked_add(1),
            self.last.wall_ms.checked_add(1),
        ) {
            (Some(logical), _) => Hlc::new(self.last.wall_ms, logical),
            (None, Some(wall_ms)) => Hlc::new(wall_ms, 0),
            (None, None) => self.last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_the_wall_clock_goes_back() {
        let mut clock = HlcClock::new(Hlc::ZERO, HlcClock::DEFAULT_MAX_DRIFT_MS);
        let a = clock.tick(1000);
        let b = clock.tick(1000);
        let c = clock.tick(500);
        let d = clock.tick(2000);
        assert!(a < b && b < c && c < d);
        assert_eq!(a, Hlc::new(1000, 0));
        assert_eq!(c, Hlc::new(1000, 2));
        assert_eq!(d, Hlc::new(2000, 0));
    }

    #[test]
    fn a_restarted_clock_never_repeats_a_time() {
        let mut clock = HlcClock::new(Hlc::new(5000, 7), HlcClock::DEFAULT_MAX_DRIFT_MS);
        assert_eq!(clock.tick(4000), Hlc::new(5000, 8));
    }

    #[test]
    fn observing_a_later_time_moves_the_clock_past_it() {
        let mut clock = HlcClock::new(Hlc::ZERO, HlcClock::DEFAULT_MAX_DRIFT_MS);
        clock.observe(Hlc::new(10_000, 3), 9_000).unwrap();
        assert_eq!(clock.tick(9_001), Hlc::new(10_000, 4));
    }

    #[test]
    fn a_clock_beyond_the_drift_bound_is_not_followed() {
        let mut clock = HlcClock::new(Hlc::ZERO, 60_000);
        let err = clock.observe(Hlc::new(200_000, 0), 100_000).unwrap_err();
        assert_eq!(err.ahead_ms, 100_000);
        assert_eq!(clock.tick(100_001), Hlc::new(100_001, 0));
        // Ten minutes behind is harmless: the clock keeps its own time.
        clock.observe(Hlc::new(1, 0), 100_002).unwrap();
        assert_eq!(clock.tick(100_002), Hlc::new(100_002, 0));
    }

    #[test]
    fn the_end_of_time_does_not_wrap_around() {
        let end = Hlc::new(u64::MAX, u32::MAX);
        let mut clock = HlcClock::new(Hlc::ZERO, HlcClock::DEFAULT_MAX_DRIFT_MS);
        assert!(clock.observe(end, 1_000).is_err(), "far ahead: refused");
        assert_eq!(clock.last(), Hlc::ZERO);
        clock.advance_past(end);
        assert_eq!(clock.tick(0), end, "saturates instead of overflowing");
        let mut near = HlcClock::new(Hlc::new(u64::MAX, 7), u64::MAX);
        assert_eq!(near.tick(u64::MAX), Hlc::new(u64::MAX, 8));
    }

    #[test]
    fn the_logical_counter_overflows_into_the_wall_time() {
        let mut clock = HlcClock::new(Hlc::new(7, u32::MAX), HlcClock::DEFAULT_MAX_DRIFT_MS);
        assert_eq!(clock.tick(0), Hlc::new(8, 0));
    }
}
