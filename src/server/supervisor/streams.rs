//! The supervisor's side of a worker stream: reading a worker's frames out of its pipe, the
//! credit it grants and is given back, a stream's end, cancellation, and protocol errors.

use super::Supervisor;
use crate::ids::{ConnRef, FunctionId, WorkerKey};
use crate::reactor::buffer::ReadBuf;
use crate::sched::dispatch::StreamEnd;
use crate::server::effects::Effect;
use crate::server::{Lent, Timer};
use crate::turf::accounting::ExitReason;
use crate::turf::worker::{ReadResult, WorkerState};
use crate::wire;
use std::time::{Duration, Instant};

/// A stream the worker ended (its terminal frame), for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) struct StreamClosed {
    pub(in crate::server) function: FunctionId,
    /// The request it served, unless it was cancelled.
    pub(in crate::server) client: Option<ConnRef>,
    /// The worker's first completed invocation: proof the function can run.
    pub(in crate::server) first: bool,
    /// A disposable worker that has served its one request.
    pub(in crate::server) spent: bool,
    /// A draining worker with nothing left in flight.
    pub(in crate::server) drained: bool,
}

impl Supervisor {
    /// Reads what worker `key` sent into its buffer. `None` when the worker is gone.
    pub(in crate::server) fn fill_worker(
        &mut self,
        key: WorkerKey,
    ) -> Option<std::io::Result<ReadResult>> {
        Some(self.workers.get_mut(key)?.fill())
    }

    /// Takes worker `key`'s read buffer out, so that its frames can be handled while the
    /// worker (and any connection) is touched; [`Supervisor::put_back_frames`] returns it.
    pub(in crate::server) fn take_frames(&mut self, key: WorkerKey) -> Option<ReadBuf> {
        let worker = self.workers.get_mut(key)?;
        Some(std::mem::replace(&mut worker.rbuf, ReadBuf::new(0, 0)))
    }

    /// Returns a read buffer taken by [`Supervisor::take_frames`], its handled frames consumed.
    pub(in crate::server) fn put_back_frames(&mut self, key: WorkerKey, buf: ReadBuf) {
        if let Some(worker) = self.workers.get_mut(key) {
            worker.rbuf = buf;
            worker.compact();
        }
    }

    /// Whether worker `key` still reads: frames after its end are not handled.
    pub(in crate::server) fn worker_reads(&self, key: WorkerKey) -> bool {
        self.workers
            .get(key)
            .is_some_and(|w| w.from_worker.is_some())
    }

    /// The client of a stream, if the stream exists and is still bound to a live request.
    pub(in crate::server) fn stream_client(&self, key: WorkerKey, stream: u32) -> Option<ConnRef> {
        self.workers.get(key)?.streams.get(&stream)?.client
    }

    /// The worker granted `credit` more request-body bytes on `stream`: its client may send
    /// them.
    pub(in crate::server) fn on_request_window(
        &mut self,
        key: WorkerKey,
        stream: u32,
        credit: u32,
        lp: &mut Lent<'_>,
    ) {
        let Some(state) = self
            .workers
            .get_mut(key)
            .and_then(|w| w.streams.get_mut(&stream))
        else {
            return;
        };
        state.request_credit = state.request_credit.saturating_add(credit);
        if let Some(client) = state.client {
            lp.effects.push(Effect::DriveConn(client.conn));
        }
    }

    /// Response bytes of `stream` left for the client: the worker may send that much more.
    pub(in crate::server) fn return_credit(
        &mut self,
        key: WorkerKey,
        stream: u32,
        bytes: u32,
        lp: &mut Lent<'_>,
    ) {
        if let Some(w) = self.workers.get_mut(key)
            && w.streams.contains_key(&stream)
        {
            wire::put_window(&mut w.wbuf, stream, bytes);
            lp.effects.push(Effect::FlushWorker(key));
        }
    }

    /// The worker sent the terminal frame of `stream`: it is freed. `disposable` is whether
    /// the worker's function runs each request in a worker of its own.
    pub(in crate::server) fn close_stream(
        &mut self,
        key: WorkerKey,
        stream: u32,
        disposable: bool,
        lp: &mut Lent<'_>,
    ) -> Option<StreamClosed> {
        let worker = self.workers.get_mut(key)?;
        let state = worker.streams.remove(&stream)?;
        if let Some(timer) = state.cancel_timer {
            lp.timers.cancel(timer);
        }
        worker.served += 1;
        worker.last_active = lp.clock.now();
        Some(StreamClosed {
            function: worker.function,
            client: state.client,
            first: worker.served == 1,
            spent: disposable && worker.life.finish(StreamEnd::Completed),
            drained: worker.state == WorkerState::Draining && worker.streams.is_empty(),
        })
    }

    /// Tells the worker to abandon a stream; it must send its terminal frame within
    /// `dataPlane.cancelGracePeriod` or it is killed.
    pub(in crate::server) fn cancel_stream(
        &mut self,
        key: WorkerKey,
        stream: u32,
        reason: &str,
        lp: &mut Lent<'_>,
    ) {
        let grace = Duration::from_millis(lp.config.data_plane.cancel_grace_period_ms);
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        let Some(state) = worker.streams.get_mut(&stream) else {
            return;
        };
        if state.client.take().is_none() {
            return;
        }
        log::debug!(
            "[dp] cancel worker {} stream {stream}: {reason}",
            worker.process.id
        );
        if let Err(err) = wire::put_cancel(&mut worker.wbuf, stream, reason) {
            log::warn!(
                "[dp] cannot encode CANCEL for worker {}: {err}",
                worker.process.id
            );
        }
        let due = Instant::now() + grace;
        let timer = lp.timers.schedule(
            due,
            Timer::CancelGrace {
                worker: key,
                stream,
            },
        );
        if let Some(state) = worker.streams.get_mut(&stream) {
            state.cancel_timer = Some(timer);
        }
        lp.effects.push(Effect::FlushWorker(key));
    }

    /// A cancelled stream was not closed in time: the worker is stuck, kill it.
    pub(in crate::server) fn on_cancel_grace(
        &mut self,
        key: WorkerKey,
        stream: u32,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get_mut(key) else {
            return;
        };
        if let Some(state) = worker.streams.get_mut(&stream) {
            state.cancel_timer = None;
            let reason = format!(
                "worker {} did not close cancelled stream {stream} within \
                 dataPlane.cancelGracePeriod ({} ms)",
                worker.process.id, lp.config.data_plane.cancel_grace_period_ms
            );
            log::warn!("[dp] {reason}; killing it");
            self.kill_worker(key, &reason, ExitReason::TimeoutKill, lp);
        }
    }

    /// The worker broke the wire protocol: it is killed.
    pub(in crate::server) fn worker_protocol_error(
        &mut self,
        key: WorkerKey,
        detail: &str,
        lp: &mut Lent<'_>,
    ) {
        let Some(worker) = self.workers.get(key) else {
            return;
        };
        let reason = format!(
            "worker {} broke the wire protocol: {detail}",
            worker.process.id
        );
        log::warn!("[turf] {reason}");
        self.kill_worker(key, &reason, ExitReason::Crashed, lp);
    }
}
