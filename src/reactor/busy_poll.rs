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
//! Requests in progress undercount one kind of load: clients that are many but each slow to
//! send. A Node.js gateway at c=64 is bound by its own thread and hands the runtime one request
//! every few tens of microseconds, each answered before the next arrives, so at most one or two
//! are in progress at a time, and the loop spun between all of them. Its spin found an event
//! every time, so it never backed off, and it took CPU from the gateway it waited for: on two
//! vCPUs the runtime used 12 to 27 µs of CPU per request instead of 10 to 12, and the gateway
//! served 13 % less (the median of ten alternated rounds). So the loop also counts the
//! clients: the connections that started or finished a request within the last
//! [`CLIENT_HORIZON`]. With more of them than `dataPlane.busyPollMaxRequests`, it sleeps at
//! once, as with that many requests. A client waiting for its answer before it sends again
//! (c=1 on the FC port, or through a gateway whose pool reuses its last connection, as Node's
//! and Go's do) is one connection, and keeps the spin.
//!
//! A spin that waits for a worker's answer can also hold that worker off: when the kernel
//! wakes the worker on the runtime's own CPU (it expects a waker that wrote to a pipe to sleep
//! soon), `sched_yield` does not reliably run it first, and the answer comes only once the
//! window has passed. So a window that passed without an event after the loop had handed a
//! worker something turns the spin off after the next [`FEED_BACKOFF`] such hand-offs; the
//! spin for a client's next request stays. A slow handler, whose answer no window would have
//! caught, is spared the spin the same way.
//!
//! Nor does a runtime on a machine whose CPUs are all wanted. A spinning loop stays runnable,
//! so it takes a share of the CPUs from whatever else waits for one: behind a Node.js gateway
//! that kept a core busy and handed the runtime a few requests at a time, the spin cost the
//! gateway 10 % of its throughput. The kernel's pressure stall information says how much of the
//! time some runnable task waited for a CPU. With `dataPlane.busyPollMaxCpuPressure` below 100,
//! the loop samples it once a second, and while that share is at or above the limit it sleeps
//! at once. (On two vCPUs it was 37 % through the gateway at c=64, 14 % through it at c=1, 5 %
//! for c=1 on the FC port, and 12 to 19 % on the idle, shared machine.) It is off by default:
//! the machine's background and the second the sample lags behind a burst also took the spin
//! away where it pays. Without the kernel's report (`/proc/pressure/cpu`), the spin goes by the
//! other rules alone.
//!
//! Nor does a runtime that may use only one CPU (its affinity, or its cgroup's CPU quota): the
//! worker it just handed a request to then waits on the same CPU, and `sched_yield` does not
//! reliably run it first. Pinned to one CPU with a log reader elsewhere, a spinning runtime
//! held its worker off for the whole window on every request (c=1 p50 175 µs against 85 µs
//! without the spin).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::slab::Key;

/// Waits after a hand-off to a worker that do not spin, once such a spin passed in vain.
pub const FEED_BACKOFF: u32 = 16;

/// How far back a connection that started or finished a request counts as a client being
/// served.
/// Several times the spin's window and a fast answer's round trip: a client at c=1 sends its next
/// request within it, and a gateway's many connections each started one within it.
pub const CLIENT_HORIZON: Duration = Duration::from_millis(1);

/// The most recent clients remembered, whatever `busyPollMaxRequests` says: a limit past it
/// never stops the spin.
const MAX_TRACKED_CLIENTS: usize = 64;

/// The kernel's report of the time runnable tasks waited for a CPU.
pub const CPU_PRESSURE_PATH: &str = "/proc/pressure/cpu";

/// When the loop may poll instead of sleeping, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BusyPoll {
    window: Duration,
    max_requests: usize,
    /// The CPUs this process may run on; spinning needs another one for the worker.
    cpus: usize,
    /// This iteration handed a worker something (frames were written to its pipe).
    fed_worker: bool,
    /// Waits after a hand-off that still sleep at once.
    feeds_without_spin: u32,
    /// At or above this share (percent) of time in which some task waited for a CPU, the loop
    /// does not spin; 100 ignores the pressure.
    max_cpu_pressure: u8,
    /// The last sample of the cumulative CPU stall time, in microseconds, and when it was taken.
    pressure_sample: Option<(Instant, u64)>,
    /// The share of time some task waited for a CPU between the last two samples, in percent.
    cpu_pressure: Option<f64>,
    /// The connections that started or finished the latest requests.
    clients: RecentClients,
}

/// The distinct connections that started or finished the most recent requests, and when each
/// last did: enough of them to tell whether more than `limit` did within [`CLIENT_HORIZON`].
/// Holding the `limit + 1` most recent is enough, and keeps the work per request bounded.
#[derive(Debug, Clone, PartialEq)]
struct RecentClients {
    /// `(connection, when its latest request started or ended)`, in no order.
    latest: Vec<(Key, Instant)>,
    /// How many it holds at most.
    capacity: usize,
}

impl RecentClients {
    fn new(limit: usize) -> Self {
        let capacity = limit.saturating_add(1).min(MAX_TRACKED_CLIENTS);
        Self {
            latest: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// `client` started or finished a request at `at`: it replaces its own older entry, or else
    /// the oldest.
    fn note(&mut self, client: Key, at: Instant) {
        if let Some(entry) = self.latest.iter_mut().find(|(c, _)| *c == client) {
            entry.1 = at;
        } else if self.latest.len() < self.capacity {
            self.latest.push((client, at));
        } else if let Some(oldest) = self.latest.iter_mut().min_by_key(|(_, t)| *t) {
            *oldest = (client, at);
        }
    }

    /// How many of the held clients were active within [`CLIENT_HORIZON`] before `now`.
    fn within_horizon(&self, now: Instant) -> usize {
        (self.latest.iter())
            .filter(|(_, t)| now.saturating_duration_since(*t) <= CLIENT_HORIZON)
            .count()
    }
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
            max_cpu_pressure: 100,
            pressure_sample: None,
            cpu_pressure: None,
            clients: RecentClients::new(max_requests),
        }
    }

    /// Connection `client` started or finished a request at `at`.
    pub fn note_client(&mut self, client: Key, at: Instant) {
        self.clients.note(client, at);
    }

    /// Does not spin while some task waited for a CPU `percent` % of the time or more (see
    /// [`BusyPoll::sample_cpu_pressure`]); 100 ignores the pressure.
    pub fn with_max_cpu_pressure(mut self, percent: u8) -> Self {
        self.max_cpu_pressure = percent;
        self
    }

    /// Whether CPU pressure can stop the spin (a limit below 100 %).
    pub fn watches_cpu_pressure(&self) -> bool {
        self.max_cpu_pressure < 100
    }

    /// Reads the kernel's CPU pressure report at `path` (once a second, from the loop's tick) and
    /// keeps the share of time since the last reading in which some task waited for a CPU.
    /// Without a report the share is unknown and does not stop the spin.
    pub fn sample_cpu_pressure(&mut self, path: &Path, at: Instant) {
        let total = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| stalled_micros(&text));
        self.note_cpu_stall(at, total);
    }

    /// The share of time some task waited for a CPU between the last two samples, in percent
    /// (`None` while the pressure is not watched, or not reported).
    pub fn cpu_pressure(&self) -> Option<f64> {
        self.cpu_pressure
    }

    fn note_cpu_stall(&mut self, at: Instant, total_micros: Option<u64>) {
        let Some(total) = total_micros else {
            self.pressure_sample = None;
            self.cpu_pressure = None;
            return;
        };
        if let Some((then, before)) = self.pressure_sample {
            let wall = at.saturating_duration_since(then).as_micros() as f64;
            if wall > 0.0 {
                let stalled = total.saturating_sub(before) as f64;
                self.cpu_pressure = Some((stalled / wall * 100.0).min(100.0));
            }
        }
        self.pressure_sample = Some((at, total));
    }

    /// Whether CPU pressure stops the spin now.
    fn pressured(&self) -> bool {
        self.watches_cpu_pressure()
            && self
                .cpu_pressure
                .is_some_and(|share| share >= f64::from(self.max_cpu_pressure))
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

    /// How many connections started or finished a request within [`CLIENT_HORIZON`] before
    /// `now`, up to one more than the limit (for the loop's tests).
    #[cfg(test)]
    pub fn recent_clients(&self, now: Instant) -> usize {
        self.clients.within_horizon(now)
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

    /// Why the loop does not spin at the moment, beyond [`BusyPoll::off_reason`].
    pub fn paused_reason(&self) -> Option<String> {
        self.pressured().then(|| {
            format!(
                "tasks waited for a CPU {:.0} % of the last second \
                 (dataPlane.busyPollMaxCpuPressure {} %)",
                self.cpu_pressure.unwrap_or(0.0),
                self.max_cpu_pressure
            )
        })
    }

    /// Whether the next wait, at `now`, should spin first: the last wait returned events (the
    /// loop is serving someone), few requests are in progress and few clients sent them lately,
    /// the wait would otherwise block, and spins after hand-offs to workers are not backed off.
    fn should_spin(
        &mut self,
        last_events: usize,
        requests: usize,
        timeout: Duration,
        now: Instant,
    ) -> bool {
        if self.off_reason().is_some()
            || timeout.is_zero()
            || last_events == 0
            || requests > self.max_requests
            || self.clients.within_horizon(now) > self.max_requests
            || self.pressured()
        {
            return false;
        }
        if self.fed_worker && self.feeds_without_spin > 0 {
            self.feeds_without_spin -= 1;
            return false;
        }
        true
    }

    /// Waits for events as `Poll::poll` does with `timeout`, from `now`. It spins first when
    /// the last wait returned `last_events` events and `requests` requests are in progress, as
    /// [`BusyPoll`] describes. The spin never outlasts `timeout`, so a timer that is due soon
    /// is not late.
    pub fn wait(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Duration,
        (last_events, requests): (usize, usize),
        now: Instant,
    ) -> io::Result<()> {
        let spin = self.should_spin(last_events, requests, timeout, now);
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

/// The cumulative time, in microseconds, in which some runnable task waited for a CPU: the
/// `total` of the `some` line of a pressure report (`some avg10=0.00 avg60=0.00 avg300=0.00
/// total=123`).
fn stalled_micros(report: &str) -> Option<u64> {
    let some = report.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Token, Waker};

    const WINDOW: Duration = Duration::from_micros(100);

    fn conn(idx: u32) -> Key {
        Key { idx, generation: 1 }
    }

    fn tokens(events: &Events) -> Vec<Token> {
        events.iter().map(|e| e.token()).collect()
    }

    #[test]
    fn spins_only_after_events_with_few_requests_and_a_wait_ahead() {
        let mut busy = BusyPoll::new(WINDOW, 4, 2);
        let wait = Duration::from_millis(5);
        assert!(busy.should_spin(1, 1, wait, Instant::now()));
        assert!(busy.should_spin(3, 4, wait, Instant::now()));
        // Many requests in progress: batches form while the loop sleeps.
        assert!(!busy.should_spin(1, 5, wait, Instant::now()));
        // Woken by a timer only: an idle runtime does not spin.
        assert!(!busy.should_spin(0, 1, wait, Instant::now()));
        // Work is already queued for the next iteration: nothing to wait for.
        assert!(!busy.should_spin(1, 1, Duration::ZERO, Instant::now()));
        assert!(!BusyPoll::new(Duration::ZERO, 4, 2).should_spin(1, 1, wait, Instant::now()));
        // One CPU: the worker would wait for the spin to end.
        let mut one_cpu = BusyPoll::new(WINDOW, 4, 1);
        assert!(!one_cpu.should_spin(1, 1, wait, Instant::now()));
        assert_eq!(
            one_cpu.off_reason(),
            Some("the runtime may use only one CPU")
        );
        assert_eq!(busy.off_reason(), None);
    }

    #[test]
    fn many_clients_lately_stop_the_spin_as_many_requests_do() {
        let mut busy = BusyPoll::new(WINDOW, 4, 2);
        let wait = Duration::from_millis(5);
        let t0 = Instant::now();
        // One client, request after request: it keeps the spin, however many it sends.
        for i in 0..100 {
            busy.note_client(conn(7), t0 + WINDOW * i);
        }
        let after = t0 + WINDOW * 100;
        assert!(busy.should_spin(1, 1, wait, after));
        // Four more clients within the horizon: five, more than the limit of four.
        for client in 1..=3 {
            busy.note_client(conn(client), after);
            assert!(
                busy.should_spin(1, 1, wait, after),
                "{} clients",
                client + 1
            );
        }
        busy.note_client(conn(4), after);
        assert!(!busy.should_spin(1, 1, wait, after));
        // Once the horizon has passed since all but one of them sent anything, it spins again.
        let later = after + CLIENT_HORIZON + Duration::from_micros(1);
        busy.note_client(conn(7), later);
        assert!(busy.should_spin(1, 1, wait, later));
    }

    #[test]
    fn many_clients_replace_the_oldest_and_the_record_stays_bounded() {
        let mut busy = BusyPoll::new(WINDOW, 2, 2);
        let wait = Duration::from_millis(5);
        let t0 = Instant::now();
        // A gateway's pool: a hundred connections, each sending now and then.
        for i in 0..1000u32 {
            busy.note_client(conn(i % 100), t0 + Duration::from_micros(u64::from(i) * 30));
        }
        assert_eq!(busy.clients.latest.len(), 3);
        assert!(!busy.should_spin(1, 1, wait, t0 + Duration::from_micros(30_000)));
        // A limit past what is tracked never stops the spin.
        let mut lax = BusyPoll::new(WINDOW, usize::MAX, 2);
        for client in 0..1000 {
            lax.note_client(conn(client), t0);
        }
        assert_eq!(lax.clients.latest.len(), MAX_TRACKED_CLIENTS);
        assert!(lax.should_spin(1, 1, wait, t0));
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
        busy.wait(&mut poll, &mut events, timeout, (1, 1), Instant::now())
            .expect("wait");
        assert_eq!(events.iter().count(), 1);
        busy.note_worker_fed();
        assert!(busy.should_spin(1, 1, timeout, Instant::now()));
        busy.fed_worker = false;
        // A hand-off whose window passed quietly.
        busy.note_worker_fed();
        busy.wait(&mut poll, &mut events, timeout, (1, 1), Instant::now())
            .expect("wait");
        assert!(events.is_empty());
        // The next FEED_BACKOFF hand-offs sleep at once; waits for clients still spin.
        for _ in 0..FEED_BACKOFF {
            assert!(
                busy.should_spin(1, 1, timeout, Instant::now()),
                "a wait for a client"
            );
            busy.note_worker_fed();
            assert!(
                !busy.should_spin(1, 1, timeout, Instant::now()),
                "a wait after a hand-off"
            );
            busy.fed_worker = false;
        }
        busy.note_worker_fed();
        assert!(
            busy.should_spin(1, 1, timeout, Instant::now()),
            "then it tries again"
        );
    }

    #[test]
    fn a_quiet_wait_for_a_client_does_not_back_off() {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(Duration::from_millis(1), 4, 2);
        let timeout = Duration::from_millis(2);
        busy.wait(&mut poll, &mut events, timeout, (1, 1), Instant::now())
            .expect("wait");
        assert!(events.is_empty());
        busy.note_worker_fed();
        assert!(busy.should_spin(1, 1, timeout, Instant::now()));
    }

    #[test]
    fn a_spinning_wait_returns_an_event_that_is_already_there() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(7)).expect("waker");
        waker.wake().expect("wake");
        let mut events = Events::with_capacity(8);
        let mut busy = BusyPoll::new(Duration::from_secs(5), 4, 2);
        let start = Instant::now();
        busy.wait(
            &mut poll,
            &mut events,
            Duration::from_secs(5),
            (1, 1),
            Instant::now(),
        )
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
        busy.wait(
            &mut poll,
            &mut events,
            Duration::from_secs(10),
            (1, 1),
            Instant::now(),
        )
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
        busy.wait(&mut poll, &mut events, timeout, (1, 1), Instant::now())
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

    #[test]
    fn a_pressure_report_gives_its_stall_total() {
        let report = "some avg10=14.62 avg60=19.93 avg300=13.37 total=5015617574\n\
                      full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(stalled_micros(report), Some(5_015_617_574));
        assert_eq!(stalled_micros("full avg10=0.00 total=7\n"), None);
        assert_eq!(stalled_micros("some avg10=0.00 total=x\n"), None);
        assert_eq!(stalled_micros(""), None);
    }

    #[test]
    fn cpu_pressure_at_the_limit_stops_the_spin_until_it_falls() {
        let mut busy = BusyPoll::new(WINDOW, 4, 2).with_max_cpu_pressure(25);
        let wait = Duration::from_millis(5);
        let t0 = Instant::now();
        // One sample is no share yet.
        busy.note_cpu_stall(t0, Some(1_000_000));
        assert_eq!(busy.cpu_pressure(), None);
        assert!(busy.should_spin(1, 1, wait, Instant::now()));
        // 300 ms of stall in one second: 30 %.
        busy.note_cpu_stall(t0 + Duration::from_secs(1), Some(1_300_000));
        assert_eq!(busy.cpu_pressure(), Some(30.0));
        assert!(!busy.should_spin(1, 1, wait, Instant::now()));
        assert!(busy.paused_reason().is_some_and(|why| why.contains("30 %")));
        // 250 ms: at the limit, still no spin.
        busy.note_cpu_stall(t0 + Duration::from_secs(2), Some(1_550_000));
        assert!(!busy.should_spin(1, 1, wait, Instant::now()));
        // 100 ms: it spins again.
        busy.note_cpu_stall(t0 + Duration::from_secs(3), Some(1_650_000));
        assert_eq!(busy.cpu_pressure(), Some(10.0));
        assert!(busy.should_spin(1, 1, wait, Instant::now()));
        assert_eq!(busy.paused_reason(), None);
        // The report went away: the pressure is unknown, and does not stop the spin.
        busy.note_cpu_stall(t0 + Duration::from_secs(4), None);
        assert_eq!(busy.cpu_pressure(), None);
        assert!(busy.should_spin(1, 1, wait, Instant::now()));
    }

    #[test]
    fn a_limit_of_100_percent_ignores_the_pressure() {
        let mut busy = BusyPoll::new(WINDOW, 4, 2);
        let t0 = Instant::now();
        busy.note_cpu_stall(t0, Some(0));
        busy.note_cpu_stall(t0 + Duration::from_secs(1), Some(2_000_000));
        assert_eq!(busy.cpu_pressure(), Some(100.0));
        assert!(busy.should_spin(1, 1, Duration::from_millis(5), Instant::now()));
    }

    #[test]
    fn the_pressure_is_read_from_the_kernels_report() {
        let path = std::env::temp_dir().join(format!("noslate-psi-{}", std::process::id()));
        let mut busy = BusyPoll::new(WINDOW, 4, 2).with_max_cpu_pressure(25);
        let t0 = Instant::now();
        std::fs::write(&path, "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").expect("write");
        busy.sample_cpu_pressure(&path, t0);
        std::fs::write(
            &path,
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
        )
        .expect("write");
        busy.sample_cpu_pressure(&path, t0 + Duration::from_secs(1));
        assert_eq!(busy.cpu_pressure(), Some(50.0));
        let _ = std::fs::remove_file(&path);
        busy.sample_cpu_pressure(&path, t0 + Duration::from_secs(2));
        assert_eq!(busy.cpu_pressure(), None, "no report, no share");
    }
}
