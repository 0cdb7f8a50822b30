//! Waiting for events without falling asleep at once, while few clients are connected.
//!
//! A proxied request at low concurrency crosses three processes: the client wakes the runtime,
//! the runtime wakes the worker, the worker wakes the runtime again. Each of those wake-ups of a
//! sleeping thread costs a context switch, and on a VM whose idle vCPU has halted, a wake-up by
//! inter-processor interrupt as well: tens of microseconds per request, more than the runtime's
//! own work. When only a few clients are connected nothing else would fill that time, so the
//! loop keeps polling (without blocking, yielding the CPU between polls so a worker or client on
//! the same CPU runs first) for a short window after it has handled events, and sleeps only when
//! that window passes quietly.
//!
//! With many clients connected the loop is bound by throughput, not by wake-ups: events arrive
//! while it works, and sleeping lets them gather into larger batches. There it sleeps at once.
//! A loop woken only by its timers (an idle runtime) never spins either.
//!
//! Nor does a runtime that may use only one CPU (its affinity, or its cgroup's CPU quota): the
//! worker it just handed a request to then waits on the same CPU, and `sched_yield` does not
//! reliably run it first. Pinned to one CPU with a log reader elsewhere, a spinning runtime
//! held its worker off for the whole window on every request (c=1 p50 175 µs against 85 µs
//! without the spin).

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

/// When the loop may poll instead of sleeping, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    window: Duration,
    max_connections: usize,
    /// The CPUs this process may run on; spinning needs another one for the worker.
    cpus: usize,
}

impl BusyPoll {
    /// Spin for up to `window` after handling events while at most `max_connections` client
    /// connections are open, if the process may use more than one of `cpus`. A zero window turns
    /// spinning off.
    pub fn new(window: Duration, max_connections: usize, cpus: usize) -> Self {
        Self {
            window,
            max_connections,
            cpus,
        }
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
    /// serving someone), few clients are connected, and the wait would otherwise block.
    pub fn should_spin(&self, last_events: usize, connections: usize, timeout: Duration) -> bool {
        self.off_reason().is_none()
            && !timeout.is_zero()
            && last_events > 0
            && connections <= self.max_connections
    }

    /// Waits for events as `Poll::poll` does with `timeout`, spinning first when `spin` is set.
    /// The spin never outlasts `timeout`, so a timer that is due soon is not late.
    pub fn wait(
        &self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Duration,
        spin: bool,
    ) -> io::Result<()> {
        if spin {
            let start = Instant::now();
            let window = self.window.min(timeout);
            loop {
                poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() {
                    return Ok(());
                }
                let spun = start.elapsed();
                if spun >= window {
                    return poll.poll(events, Some(timeout.saturating_sub(spun)));
                }
                // A worker or client sharing this CPU gets it before the next poll.
                std::thread::yield_now();
            }
        }
        poll.poll(events, Some(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Token, Waker};

    const WINDOW: Duration = Duration::from_micros(100);

    #[test]
    fn spins_only_after_events_with_few_connections_and_a_wait_ahead() {
        let busy = BusyPoll::new(WINDOW, 4, 2);
        let wait = Duration::from_millis(5);
        assert!(busy.should_spin(1, 1, wait));
        assert!(busy.should_spin(3, 4, wait));
        // Many clients: batches form while the loop sleeps.
        assert!(!busy.should_spin(1, 5, wait));
        // Woken by a timer only: an idle runtime does not spin.
        assert!(!busy.should_spin(0, 1, wait));
        // Work is already queued for the next iteration: nothing to wait for.
        assert!(!busy.should_spin(1, 1, Duration::ZERO));
        assert!(!BusyPoll::new(Duration::ZERO, 4, 2).should_spin(1, 1, wait));
        // One CPU: the worker would wait for the spin to end.
        let one_cpu = BusyPoll::new(WINDOW, 4, 1);
        assert!(!one_cpu.should_spin(1, 1, wait));
        assert_eq!(
            one_cpu.off_reason(),
            Some("the runtime may use only one CPU")
        );
        assert_eq!(busy.off_reason(), None);
    }

    #[test]
    fn a_spinning_wait_returns_an_event_that_is_already_there() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(7)).expect("waker");
        waker.wake().expect("wake");
        let mut events = Events::with_capacity(8);
        let busy = BusyPoll::new(Duration::from_secs(5), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_secs(5), true)
            .expect("wait");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            events.iter().map(|e| e.token()).collect::<Vec<_>>(),
            [Token(7)]
        );
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
        let busy = BusyPoll::new(Duration::from_secs(5), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_secs(10), true)
            .expect("wait");
        thread.join().expect("join");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            events.iter().map(|e| e.token()).collect::<Vec<_>>(),
            [Token(3)]
        );
    }

    #[test]
    fn a_quiet_spin_falls_asleep_and_still_ends_at_the_timeout() {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let busy = BusyPoll::new(Duration::from_millis(2), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_millis(30), true)
            .expect("wait");
        let waited = start.elapsed();
        assert!(events.is_empty());
        // The timeout still holds: neither cut short by the spin nor extended past it by much.
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_spin_never_outlasts_a_timer_that_is_due_sooner() {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let busy = BusyPoll::new(Duration::from_secs(10), 4, 2);
        let start = Instant::now();
        busy.wait(&mut poll, &mut events, Duration::from_millis(20), true)
            .expect("wait");
        assert!(events.is_empty());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
