//! A rate limit for messages a guest can cause at will: each trap it provokes (an access to
//! nothing, an undefined system register) would otherwise print a line, and printing holds the
//! console, with interrupts masked, as long as the UART takes (about 10 ms a line at 115200
//! baud on a board) — every other VM's and the hypervisor's output waits behind it. As the
//! kernel's `printk_ratelimited` does: at most `burst` messages per window; the first message
//! printed after some were dropped says how many.

/// What to do with one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Print it; `dropped` messages were dropped since the last one printed.
    Print {
        dropped: u64,
    },
    Drop,
}

/// One source's budget: `burst` messages per window of `window` time units (counter ticks).
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    window: Option<u64>,
    start: u64,
    printed: u32,
    dropped: u64,
}

impl RateLimit {
    pub const fn new(burst: u32) -> Self {
        Self {
            burst,
            window: None,
            start: 0,
            printed: 0,
            dropped: 0,
        }
    }

    /// A message at time `now`; a window is `window` long (the first message opens one).
    pub fn check(&mut self, now: u64, window: u64) -> Verdict {
        if self.window.is_none() || now.wrapping_sub(self.start) >= window {
            self.window = Some(window);
            self.start = now;
            self.printed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            Verdict::Print {
                dropped: core::mem::take(&mut self.dropped),
            }
        } else {
            self.dropped += 1;
            Verdict::Drop
        }
    }

    /// The messages dropped since the last one printed (for a last word when the source ends);
    /// the count starts again from 0.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(v: Verdict) -> bool {
        matches!(v, Verdict::Print { .. })
    }

    #[test]
    fn a_burst_per_window_then_the_count_of_dropped_ones() {
        let mut r = RateLimit::new(3);
        let got: Vec<bool> = (0..10).map(|t| printed(r.check(t, 100))).collect();
        assert_eq!(
            got,
            [
                true, true, true, false, false, false, false, false, false, false
            ]
        );
        assert_eq!(r.check(99, 100), Verdict::Drop, "still the first window");
        assert_eq!(r.check(100, 100), Verdict::Print { dropped: 8 });
        assert_eq!(r.check(101, 100), Verdict::Print { dropped: 0 });
    }

    #[test]
    fn a_flood_prints_a_bounded_number_of_lines() {
        let mut r = RateLimit::new(10);
        let window = 5_000;
        let lines = (0..1_000_000u64)
            .filter(|&t| printed(r.check(t, window)))
            .count();
        // 200 windows of 5,000 ticks, 10 lines each.
        assert_eq!(lines, 2_000);
    }

    #[test]
    fn a_counter_that_wraps_opens_a_new_window() {
        let mut r = RateLimit::new(1);
        assert!(printed(r.check(u64::MAX - 5, 100)));
        assert_eq!(r.check(u64::MAX, 100), Verdict::Drop);
        assert_eq!(
            r.check(93, 100),
            Verdict::Drop,
            "99 ticks after the window opened"
        );
        assert_eq!(
            r.check(94, 100),
            Verdict::Print { dropped: 2 },
            "100 ticks after"
        );
    }

    #[test]
    fn what_was_dropped_at_the_end_is_counted_once() {
        let mut r = RateLimit::new(1);
        r.check(0, 100);
        r.check(1, 100);
        r.check(2, 100);
        assert_eq!(r.take_dropped(), 2);
        assert_eq!(r.take_dropped(), 0);
        assert_eq!(r.check(200, 100), Verdict::Print { dropped: 0 });
    }
}
