//! Waiting for events without falling asleep at once, while few requests are in progress.
//!
//! A proxied request at low concurrency crosses three processes: the client wakes the runtime,
//! the runtime wakes the worker, the worker wakes the runtime again. Each of those wake-ups of a
//! sleeping thread costs a context switch, and on a VM whose idle vCPU has halted, a wake-up by
//! inter-processor interrupt as well: tens of microseconds per request, more than the runtime's
//! own work. When only a few requests are in progress nothing else would fill that time, so the
//! loop keeps polling (without blocking, yielding the CPU between polls so a worker or client on
//! the same CPU runs first) for a short window after it has handled events, and sleeps only when
//! that window passes quietly.
//!
//! With many requests in progress the loop is bound by throughput, not by wake-ups: events
//! arrive while it works, and sleeping lets them gather into larger batches. There it sleeps at
//! once. The measure is requests, not connections: a gateway keeps a pool of idle connections
//! open after a burst, and a connection without a request asks nothing of the loop. A loop
//! woken only by its timers (an idle runtime) never spins either.
//!
//! A spin that waits for a worker's answer can also hold that worker off: when the kernel
//! wakes the worker on the runtime's own CPU (it expects a waker that wrote to a pipe to sleep
//! soon), `sched_yield` does not reliably run it first, and the answer comes only once the
//! window has passed. So a window that passed without an event after the loop had handed a
//! worker something turns the spin off after the next [`FEED_BACKOFF`] such hand-offs; the
//! spin for a client's next request stays. A slow handler, whose answer no window would have
//! caught, is spared the spin the same way.
//!
//! Nor does a runtime that may use only one CPU (its affinity, or its cgroup's CPU quota): the
//! worker it just handed a request to then waits on the same CPU, and `sched_yield` does not
//! reliably run it first. Pinned to one CPU with a log reader elsewhere, a spinning runtime
//! held its worker off for the whole window on every request (c=1 p50 175 µs against 85 µs
//! without the spin).

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

/// Waits after a hand-off to a worker that do not spin, once such a spin passed in vain.
pub const FEED_BACKOFF: u32 = 16;

/// When the loop may poll instead of sleeping, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyPoll {
    window: Duration,
    max_requests: usize,
    /// The CPUs this process may run on; spinning needs another one for the worker.
    cpus: usize,
    /// This iteration handed a worker something (frames were written to its pipe).
    fed_worker: bool,
    /// Waits after a hand-off that still sleep at once.
    feeds_without_spin: u32,
}

impl BusyPoll {
    /// Spin for up to `window` after handling events while at most `max_requests` requests are
    /// in progress, if the process may use more than one of `cpus`. A zero window turns spinning
    /// off.
    pub fn new(window: Duration, max_requests: usize, cpus: usize) -> Self {
        Self {
            window,
            max_requests,
            cpus,
            fed_worker: false,
            feeds_without_spin: 0,
        }
    }

    /// The loop wrote frames to a worker in this iteration.
    pub fn note_worker_fed(&mut self) {
        self.fed_worker = true;
    }

    /// Whether this iteration wrote frames to a worker (for the loop's tests).
    #[cfg(test)]
    pub fn worker_fed(&self) -> bool {
        self.fed_worker
    }

    /// The CPUs this process may use: its affinity mask, within its cgroup's CPU quota.
    pub fn available_cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Whether the loop spins at all, and if not, why.
    pub fn off_reason(&self) -> Option<&'static str> {
        if self.window.is_zero() {
            Some("dataPlane.busyPollMicros is 0")
        } else if self.cpus < 2 {
            Some("the runtime may use only one CPU")
        } else {
            None
        }
    }

    /// Whether the next wait should spin first: the last wait returned events (the loop is
    /// serving someone), few requests are in progress, the wait would otherwise block, and spins
    /// after hand-offs to workers are not backed off.
    fn should_spin(&mut self, last_events: usize, requests: usize, timeout: Duration) -> bool {
        if self.off_reason().is_some()
            || timeout.is_zero()
            || last_events == 0
            || requests > self.max_requests
        {
            return false;
        }
        if self.fed_worker && self.feeds_without_spin > 0 {
            self.feeds_without_spin -= 1;
            return false;
        }
        true
    }

    /// Waits for events as `Poll::poll` does with `timeout`. It spins first when the last wait
    /// returned `last_events` events and `requests` requests are in progress, as
    /// [`BusyPoll`] describes. The spin never outlasts `timeout`, so a timer that is due soon
    /// is not late.
    pub fn wait(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Duration,
        last_events: usize,
        requests: usize,
    ) -> io::Result<()> {
        let spin = self.should_spin(last_events, requests, timeout);
        let fed_worker = std::mem::take(&mut self.fed_worker);
        if !spin {
            return poll.poll(events, Some(timeout));
        }
        let start = Instant::now();
        let window = self.window.min(timeout);
        loop {
            poll.poll(events, Some(Duration::ZERO))?;
            if !events.is_empty() {
                return Ok(());
            }
            let spun = start.elapsed();
            if spun >= window {
                if fed_worker {
                    self.feeds_without_spin = FEED_BACKOFF;
                }
                return poll.poll(events, Some(timeout.saturating_sub(spun)));
            }
            // A worker or client sharing this CPU gets it before the next poll.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Token, Waker};

    const WINDOW: Duration = Duration::from_micros(100);

    fn tokens(events: &Events) -> Vec<Token> {
        events.iter().map(|e| e.token()).collect()
    }

    #[test]
    fn spins_only_after_events_with_few_requests_and_a_wait_ahead() {
        let mut busy = BusyPoll::new(WINDOW, 4, 2);
        let wait = Duration::from_millis(5);
        assert!(busy.should_spin(1, 1, wait));
        assert!(busy.should_spin(3, 4, wait));
        // Many requests in progress: batches form while the loop sleeps.
        assert!(!busy.should_spin(1, 5, wait));
        // Woken by a timer only: an idle runtime does not spin.
        assert!(!busy.should_spin(0, 1, wait));
        // Work is already queued for the next iteration: nothing to wait for.
        assert!(!busy.should_spin(1, 1, Duration::ZERO));
        assert!(!BusyPoll::new(Duration::ZERO, 4, 2).should_spin(1, 1, wait));
        // One CPU: the worker would wait for the spin to end.
        let mut one_cpu = BusyPoll::new(WINDOW, 4, 1);
        assert!(!one_cpu.should_spin(1, 1, wait));
        assert_eq!(
            one_cpu.off_reason(),
            Some("the runtime may use only one CPU")
        );
        assert_eq!(busy.off_reason(), None);
    }

    #[test]
    fn a_spin_after_a_hand_off_that_passed_in_vain_backs_off_such_spins_only() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(1)).expect("waker");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(Duration::from_millis(1), 4, 2);
        let timeout = Duration::from_millis(2);
        // A hand-off whose answer came within the window: spins stay on.
        busy.note_worker_fed();
        waker.wake().expect("wake");
        busy.wait(&mut poll, &mut events, timeout, 1, 1)
            .expect("wait");
        assert_eq!(events.iter().count(), 1);
        busy.note_worker_fed();
        assert!(busy.should_spin(1, 1, timeout));
        busy.fed_worker = false;
        // A hand-off whose window passed quietly.
        busy.note_worker_fed();
        busy.wait(&mut poll, &mut events, timeout, 1, 1)
            .expect("wait");
        assert!(events.is_empty());
        // The next FEED_BACKOFF hand-offs sleep at once; waits for clients still spin.
        for _ in 0..FEED_BACKOFF {
            assert!(busy.should_spin(1, 1, timeout), "a wait for a client");
            busy.note_worker_fed();
            assert!(!busy.should_spin(1, 1, timeout), "a wait after a hand-off");
            busy.fed_worker = false;
        }
        busy.note_worker_fed();
        assert!(busy.should_spin(1, 1, timeout), "then it tries again");
    }

    #[test]
    fn a_quiet_wait_for_a_client_does_not_back_off() {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(Duration::from_millis(1), 4, 2);
        let timeout = Duration::from_millis(2);
        busy.wait(&mut poll, &mut events, timeout, 1, 1)
            .expect("wait");
        assert!(events.is_empty());
        busy.note_worker_fed();
        assert!(busy.should_spin(1, 1, timeout));
    }

    #[test]
    fn a_spinning_wait_returns_an_event_that_is_already_there() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(7)).expect("waker");
        waker.wake().expect("wake");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(Duration::from_secs(5), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_secs(5), 1, 1)
            .expect("wait");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(tokens(&events), [Token(7)]);
    }

    #[test]
    fn a_spinning_wait_sees_an_event_that_arrives_during_the_spin() {
        let mut poll = Poll::new().expect("poll");
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), Token(3)).expect("waker"));
        let remote = std::sync::Arc::clone(&waker);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            remote.wake().expect("wake");
        });
        let mut events = Events::with_capacity(8);
        // A window far longer than the wake's delay: the event ends the spin.
        let mut busy = BusyPoll::new(Duration::from_secs(5), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_secs(10), 1, 1)
            .expect("wait");
        thread.join().expect("join");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(tokens(&events), [Token(3)]);
    }

    /// How long a spinning wait with nothing to find takes, for `window` and `timeout`.
    fn quiet_wait(window: Duration, timeout: Duration) -> Duration {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(window, 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, timeout, 1, 1)
            .expect("wait");
        assert!(events.is_empty());
        start.elapsed()
    }

    #[test]
    fn a_quiet_spin_falls_asleep_and_still_ends_at_the_timeout() {
        let waited = quiet_wait(Duration::from_millis(2), Duration::from_millis(30));
        // The timeout still holds: neither cut short by the spin nor extended past it by much.
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_spin_never_outlasts_a_timer_that_is_due_sooner() {
        let waited = quiet_wait(Duration::from_secs(10), Duration::from_millis(20));
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
