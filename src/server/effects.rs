//! Work that a handler records instead of doing on the spot, so that no handler runs inside
//! another: a worker's death, a deadline or a frame only records what must follow (drive a
//! connection, re-plan a function, flush bytes), and the loop carries the records out after the
//! event, to a fixed point, each by the one part of the server that owns it.
//!
//! The order of a drain keeps writes batched: every recorded piece of work (driving
//! connections, planning launches, dispatching queues, answering waiters) runs before any
//! worker's frames are written, and those before any client's bytes, so all the frames one
//! iteration makes for a worker leave in one `write`. Work recorded while flushing runs before
//! the remaining flushes.

use super::reconfig::Retirement;
use crate::ids::ConnRef;
use crate::ids::FunctionId;
use crate::ids::WorkerKey;
use crate::reactor::slab::Key;

/// One piece of recorded work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Parse, forward and complete what a connection can, from its buffered input.
    DriveConn(Key),
    /// A function's capacity or demand changed: plan its launches (or fail its queue).
    Scale(FunctionId),
    /// A function's workers may have room: hand them its queued requests.
    Dispatch(FunctionId),
    /// `worker.disableRequestQueue`: answer an invocation that is still queued after its
    /// function's dispatch at once, instead of letting it wait.
    RefuseIfStillQueued {
        /// The function.
        function: FunctionId,
        /// The invocation.
        client: ConnRef,
    },
    /// A worker leaves because the profiles changed: a starting one is stopped, a ready one
    /// drained.
    Retire {
        /// The worker.
        worker: WorkerKey,
        /// Why it leaves.
        why: Retirement,
    },
    /// A function's warm seed follows it: started with it, replaced with its code, stopped
    /// when it is removed.
    FollowSeed(FunctionId),
    /// The functions or their environment changed: the spare pool follows the shapes they
    /// need.
    BalanceSpares,
    /// A seed reported the pid of the worker it forked.
    WorkerForked {
        /// The worker.
        worker: WorkerKey,
        /// Its pid.
        pid: i32,
    },
    /// Workers left service: fail what they were running, shrink their pools, back off
    /// crash loops and failed starts, re-plan their functions (`Supervisor::take_departures`).
    WorkersGone,
    /// Workers were reaped: once their departures are dealt with, their records go and their
    /// exits are accounted.
    WorkersReaped,
    /// A request was answered while it waited in its function's queue: it leaves the queue.
    LeftQueue {
        /// The function.
        function: FunctionId,
        /// The request.
        client: ConnRef,
    },
    /// A request admitted by the scheduler ended (answered, cut or abandoned): its place in
    /// flight is freed.
    RequestEnded {
        /// Its function.
        function: FunctionId,
        /// The request.
        client: ConnRef,
        /// It never left the queue.
        still_queued: bool,
        /// What it contributes to its function's metrics (`None`: it was never admitted).
        finished: Option<crate::metrics::Finished>,
    },
    /// A request's client went away or its connection closes: its worker stream is
    /// cancelled, `why` being what the worker is told.
    CancelStream {
        /// The worker.
        worker: WorkerKey,
        /// The stream.
        stream: u32,
        /// Why.
        why: &'static str,
    },
    /// Response bytes left for the client: the worker gets that much credit back on the
    /// stream.
    ReturnCredit {
        /// The worker.
        worker: WorkerKey,
        /// The stream.
        stream: u32,
        /// How many bytes.
        bytes: u32,
    },
    /// Workers came or went: start the background workers (seeds, spares) once the
    /// reservation has settled, and answer `/initialize` and `/pre-stop` waiters that can be.
    Waiters,
    /// Read on from a worker's pipe: the last read stopped at its budget with bytes left.
    ReadWorker(WorkerKey),
    /// Write a worker's buffered frames.
    FlushWorker(WorkerKey),
    /// Write a connection's buffered bytes, return credit, close it when it is done.
    FlushConn(Key),
}

impl Effect {
    /// Its bit in a [`Summary`]: equal effects have the same one.
    fn summary_bit(&self) -> usize {
        let key = |k: Key| (k.idx, k.generation);
        let function = |f: FunctionId| (u32::try_from(f.index()).unwrap_or(u32::MAX), 0);
        let (tag, (a, b)) = match *self {
            Effect::DriveConn(k) => (1, key(k)),
            Effect::Scale(f) => (2, function(f)),
            Effect::Dispatch(f) => (3, function(f)),
            Effect::RefuseIfStillQueued { client, .. } => (4, key(client.conn)),
            Effect::Retire { worker, .. } => (5, key(worker.0)),
            Effect::FollowSeed(f) => (6, function(f)),
            Effect::BalanceSpares => (7, (0, 0)),
            Effect::WorkerForked { worker, .. } => (8, key(worker.0)),
            Effect::WorkersGone => (9, (0, 0)),
            Effect::WorkersReaped => (10, (0, 0)),
            Effect::LeftQueue { client, .. } => (11, key(client.conn)),
            Effect::RequestEnded { client, .. } => (12, key(client.conn)),
            Effect::CancelStream { worker, stream, .. } => (13, (worker.0.idx, stream)),
            Effect::ReturnCredit { worker, stream, .. } => (14, (worker.0.idx, stream)),
            Effect::Waiters => (15, (0, 0)),
            Effect::ReadWorker(w) => (16, key(w.0)),
            Effect::FlushWorker(w) => (17, key(w.0)),
            Effect::FlushConn(k) => (18, key(k)),
        };
        summary_bit(tag, a, b)
    }
}

/// Mixes an effect's kind and key into one of [`Summary`]'s bits.
fn summary_bit(tag: u32, a: u32, b: u32) -> usize {
    let mixed = tag
        .wrapping_mul(0x9e37_79b1)
        .wrapping_add(a.wrapping_mul(0x85eb_ca77))
        .wrapping_add(b.wrapping_mul(0xc2b2_ae3d))
        .wrapping_mul(0x27d4_eb2f);
    (mixed >> 24) as usize % SUMMARY_BITS
}

/// Bits in a [`Summary`].
const SUMMARY_BITS: usize = 256;

/// Which effects may be waiting in a list: one bit per [`Effect::summary_bit`], set on push and
/// cleared with the list. A clear bit means no equal effect waits, so a push skips the scan for
/// one; a set bit may be another effect's, and the scan decides. At high concurrency a drain
/// holds dozens of entries, and scanning all of them on every push was quadratic.
#[derive(Debug, Default)]
struct Summary([u64; SUMMARY_BITS / 64]);

impl Summary {
    fn may_hold(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn add(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self) {
        self.0 = [0; SUMMARY_BITS / 64];
    }
}

/// Work of one kind waiting to be handed out, in the order recorded, from `next`.
#[derive(Debug)]
struct WorkList<T> {
    items: Vec<T>,
    /// Position of the next item to hand out.
    next: usize,
    /// What `items[next..]` may hold.
    summary: Summary,
}

impl<T> Default for WorkList<T> {
    fn default() -> Self {
        WorkList {
            items: Vec::new(),
            next: 0,
            summary: Summary::default(),
        }
    }
}

impl<T: Copy + PartialEq> WorkList<T> {
    /// Appends `item` unless an equal one still waits (what was handed out already may be due
    /// again); `bit` is its effect's [`Effect::summary_bit`].
    fn push_unique(&mut self, item: T, bit: usize) {
        if self.summary.may_hold(bit) && self.items[self.next..].contains(&item) {
            return;
        }
        self.summary.add(bit);
        self.items.push(item);
    }

    /// Appends `item` whether or not an equal one waits.
    fn push(&mut self, item: T) {
        self.items.push(item);
    }

    /// The next item; once there is none, the list starts over empty.
    fn pop(&mut self) -> Option<T> {
        if let Some(&item) = self.items.get(self.next) {
            self.next += 1;
            return Some(item);
        }
        self.items.clear();
        self.summary.clear();
        self.next = 0;
        None
    }
}

/// The queue of recorded work.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Driving, planning, dispatching and waiters.
    work: WorkList<Effect>,
    /// Workers with frames to write.
    workers: WorkList<WorkerKey>,
    /// Connections with bytes to write.
    conns: WorkList<Key>,
    /// Connections to drive on the next iteration (they used up their rounds in this one).
    next_iteration: Vec<Key>,
    /// Workers whose pipes to read on in the next iteration.
    reads_next_iteration: Vec<WorkerKey>,
    /// Loop iterations so far (`noslate metrics`).
    iterations: u64,
    /// The fewest client events in one batch at which it is handled in two halves
    /// (`dataPlane.halveBatchesFrom`; 0: never).
    halve_from: usize,
    /// Client events of the current batch in its first half (0: the batch is handled whole),
    /// and those handled so far.
    first_half: usize,
    handled: usize,
}

impl Effects {
    /// A queue whose batches of at least `halve_from` client events are handled in two halves
    /// (0: never).
    pub(super) fn with_halved_batches_from(halve_from: usize) -> Self {
        Effects {
            halve_from,
            ..Effects::default()
        }
    }

    /// The batch about to be handled has `client_events` client events (readiness of client
    /// connections). With enough of them, the work the first half records is carried out before
    /// the second half is handled: a worker then starts on the first half's requests while the
    /// loop reads the rest, instead of waiting for the whole batch and then leaving the loop to
    /// wait for all of its answers.
    pub(super) fn begin_batch(&mut self, client_events: usize) {
        self.handled = 0;
        self.first_half = if self.halve_from > 0 && client_events >= self.halve_from {
            client_events.div_ceil(2)
        } else {
            0
        };
    }

    /// Counts one client event of the batch; true when it ends the batch's first half, and the
    /// work recorded so far is to be carried out before the next event.
    pub(super) fn client_event_ends_half(&mut self) -> bool {
        self.handled += 1;
        self.first_half > 0 && self.handled == self.first_half
    }

    /// Records `effect`, once: a piece of work already waiting is not recorded twice.
    pub(super) fn push(&mut self, effect: Effect) {
        match effect {
            Effect::FlushWorker(key) => self.workers.push_unique(key, effect.summary_bit()),
            Effect::FlushConn(key) => self.conns.push_unique(key, effect.summary_bit()),
            // One per request, and credit is a sum: two equal returns are two returns. Neither
            // is looked for among the waiting work.
            Effect::RequestEnded { .. } | Effect::ReturnCredit { .. } => self.work.push(effect),
            _ => self.work.push_unique(effect, effect.summary_bit()),
        }
    }

    /// Drives `key` on the next iteration rather than in this one.
    pub(super) fn drive_next_iteration(&mut self, key: Key) {
        push_key(&mut self.next_iteration, 0, key);
    }

    /// Reads on from worker `key`'s pipe on the next iteration.
    pub(super) fn read_next_iteration(&mut self, key: WorkerKey) {
        push_key(&mut self.reads_next_iteration, 0, key);
    }

    /// Loop iterations so far.
    pub(super) fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Whether work waits for the next iteration (the loop must then not sleep in `poll`).
    pub(super) fn has_next_iteration(&self) -> bool {
        !self.next_iteration.is_empty() || !self.reads_next_iteration.is_empty()
    }

    /// Starts an iteration: the drives put off by the last one become due.
    pub(super) fn begin_iteration(&mut self) {
        self.iterations += 1;
        for key in std::mem::take(&mut self.next_iteration) {
            self.push(Effect::DriveConn(key));
        }
        for key in std::mem::take(&mut self.reads_next_iteration) {
            self.push(Effect::ReadWorker(key));
        }
    }

    /// The next piece of work to carry out: recorded work first, then worker flushes, then
    /// connection flushes. `None` at the fixed point.
    pub(super) fn pop(&mut self) -> Option<Effect> {
        (self.work.pop())
            .or_else(|| self.workers.pop().map(Effect::FlushWorker))
            .or_else(|| self.conns.pop().map(Effect::FlushConn))
    }
}

/// Appends `key` unless it already waits in `list[from..]` (what is before `from` was handed
/// out already, and may be due again).
fn push_key<K: PartialEq>(list: &mut Vec<K>, from: usize, key: K) {
    if !list[from..].contains(&key) {
        list.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FunctionId;
    use crate::ids::WorkerKey;

    fn key(idx: u32) -> Key {
        Key { idx, generation: 0 }
    }

    fn drain(effects: &mut Effects) -> Vec<Effect> {
        std::iter::from_fn(|| effects.pop()).collect()
    }

    #[test]
    fn a_batch_of_enough_client_events_is_handled_in_two_halves() {
        let mut effects = Effects::with_halved_batches_from(8);
        let halves = |effects: &mut Effects, n: usize| -> Vec<usize> {
            effects.begin_batch(n);
            (1..=n)
                .filter(|_| effects.client_event_ends_half())
                .collect()
        };
        // The first half ends after its last event; an odd batch's first half is the larger.
        assert_eq!(halves(&mut effects, 64), [32]);
        assert_eq!(halves(&mut effects, 9), [5]);
        assert_eq!(halves(&mut effects, 8), [4]);
        // Smaller batches are handled whole.
        assert_eq!(halves(&mut effects, 7), Vec::<usize>::new());
        assert_eq!(halves(&mut effects, 1), Vec::<usize>::new());
        // Each batch is counted afresh.
        assert_eq!(halves(&mut effects, 16), [8]);
        // 0: never halved.
        let mut whole = Effects::with_halved_batches_from(0);
        assert_eq!(halves(&mut whole, 1000), Vec::<usize>::new());
    }

    #[test]
    fn work_runs_before_worker_flushes_and_those_before_connection_flushes() {
        let mut effects = Effects::default();
        effects.push(Effect::FlushConn(key(1)));
        effects.push(Effect::FlushWorker(WorkerKey(key(2))));
        effects.push(Effect::DriveConn(key(1)));
        effects.push(Effect::Scale(FunctionId::new(0)));
        assert_eq!(
            drain(&mut effects),
            [
                Effect::DriveConn(key(1)),
                Effect::Scale(FunctionId::new(0)),
                Effect::FlushWorker(WorkerKey(key(2))),
                Effect::FlushConn(key(1)),
            ]
        );
    }

    #[test]
    fn waiting_work_is_recorded_once() {
        let mut effects = Effects::default();
        for _ in 0..3 {
            effects.push(Effect::Dispatch(FunctionId::new(4)));
            effects.push(Effect::FlushWorker(WorkerKey(key(7))));
            effects.push(Effect::Waiters);
        }
        assert_eq!(
            drain(&mut effects),
            [
                Effect::Dispatch(FunctionId::new(4)),
                Effect::Waiters,
                Effect::FlushWorker(WorkerKey(key(7)))
            ]
        );
    }

    #[test]
    fn work_done_already_can_be_recorded_again() {
        let mut effects = Effects::default();
        effects.push(Effect::Scale(FunctionId::new(1)));
        assert_eq!(effects.pop(), Some(Effect::Scale(FunctionId::new(1))));
        // Recorded again while the drain is under way: it runs again.
        effects.push(Effect::Scale(FunctionId::new(1)));
        assert_eq!(effects.pop(), Some(Effect::Scale(FunctionId::new(1))));
        assert_eq!(effects.pop(), None);
    }

    #[test]
    fn work_recorded_during_flushes_runs_before_the_remaining_flushes() {
        let mut effects = Effects::default();
        effects.push(Effect::FlushConn(key(1)));
        effects.push(Effect::FlushConn(key(2)));
        assert_eq!(effects.pop(), Some(Effect::FlushConn(key(1))));
        // Flushing connection 1 finished its response: its next pipelined request is due.
        effects.push(Effect::DriveConn(key(1)));
        effects.push(Effect::FlushWorker(WorkerKey(key(3))));
        assert_eq!(
            drain(&mut effects),
            [
                Effect::DriveConn(key(1)),
                Effect::FlushWorker(WorkerKey(key(3))),
                Effect::FlushConn(key(2)),
            ]
        );
    }

    #[test]
    fn equal_credit_returns_both_count_and_a_flush_handed_out_can_be_due_again() {
        let mut effects = Effects::default();
        let credit = Effect::ReturnCredit {
            worker: WorkerKey(key(3)),
            stream: 1,
            bytes: 4096,
        };
        effects.push(Effect::FlushConn(key(1)));
        effects.push(credit);
        effects.push(credit);
        assert_eq!(effects.pop(), Some(credit));
        assert_eq!(effects.pop(), Some(credit));
        assert_eq!(effects.pop(), Some(Effect::FlushConn(key(1))));
        // The flush left bytes the socket did not take, and more were written since.
        effects.push(Effect::FlushConn(key(1)));
        effects.push(Effect::FlushConn(key(1)));
        assert_eq!(drain(&mut effects), [Effect::FlushConn(key(1))]);
    }

    #[test]
    fn many_waiting_effects_are_each_kept_once_though_their_bits_collide() {
        let mut effects = Effects::default();
        // Far more entries than summary bits: every bit is set, the scans decide.
        for round in 0..2 {
            for idx in 0..600 {
                effects.push(Effect::DriveConn(key(idx)));
                effects.push(Effect::FlushConn(key(idx)));
                effects.push(Effect::FlushWorker(WorkerKey(key(idx % 40))));
                if round == 0 {
                    // Not deduplicated: each is a request's end of its own.
                    effects.push(Effect::RequestEnded {
                        function: FunctionId::new(0),
                        client: ConnRef {
                            conn: key(idx),
                            seq: 1,
                        },
                        still_queued: false,
                        finished: None,
                    });
                }
            }
        }
        let all = drain(&mut effects);
        let count = |f: &dyn Fn(&Effect) -> bool| all.iter().filter(|e| f(e)).count();
        assert_eq!(count(&|e| matches!(e, Effect::DriveConn(_))), 600);
        assert_eq!(count(&|e| matches!(e, Effect::FlushConn(_))), 600);
        assert_eq!(count(&|e| matches!(e, Effect::FlushWorker(_))), 40);
        assert_eq!(count(&|e| matches!(e, Effect::RequestEnded { .. })), 600);
        // A drained queue forgets its summary: what comes next is taken at once.
        effects.push(Effect::DriveConn(key(7)));
        assert_eq!(drain(&mut effects), [Effect::DriveConn(key(7))]);
    }

    #[test]
    fn drives_put_off_run_at_the_next_iteration() {
        let mut effects = Effects::default();
        effects.drive_next_iteration(key(5));
        effects.drive_next_iteration(key(5));
        assert!(effects.has_next_iteration());
        assert_eq!(effects.pop(), None, "not in this iteration");
        effects.begin_iteration();
        assert!(!effects.has_next_iteration());
        assert_eq!(drain(&mut effects), [Effect::DriveConn(key(5))]);
    }
}
