//! The inspector, on the scheduler: which functions have it on, and the launch decision of
//! their one inspect worker. While a function's inspector is on its queue is served by its
//! inspect worker only (`Scheduler::next_dispatch` picks among the workers whose `inspect`
//! matches the function's flag); its ordinary workers keep their reservation and idle shrink
//! but take no new invocation. The inspect worker is wanted whenever the inspector is on
//! (Noslate's reservation of 1), is never launched for the queue beyond that one, never by the
//! scaler, and never shrunk (the tick does not see it).

use super::Scheduler;
use super::reconfig::Retirement;
use super::schedule::{LaunchDecision, WorkerCounts};
use crate::config::SystemConfig;
use crate::ids::{FunctionId, WorkerKey};
use crate::inspector;
use crate::reactor::slab::Slab;
use crate::sched::ScaleAction;
use crate::sched::plan::{self, Blocker, PlanInput};
use crate::server::client::InvokeError;
use crate::server::effects::{Effect, Effects};
use crate::turf::worker::{Worker, WorkerState};
use std::time::Instant;

impl Scheduler {
    /// The function named `name`, if it is configured.
    pub(in crate::server) fn function_id(&self, name: &str) -> Option<FunctionId> {
        self.by_name.get(name).copied()
    }

    /// Whether `function`'s invocations go to its inspect worker.
    pub(in crate::server) fn inspecting(&self, function: FunctionId) -> bool {
        self.functions
            .get(function.index())
            .is_some_and(|f| f.inspector)
    }

    /// Turns `function`'s inspector on or off (Noslate's `useInspector`). Returns whether it
    /// changed. Turning it on for a function whose workers are not Node.js is refused (409).
    /// Turning it off retires the inspect workers (they drain: what they run finishes), and
    /// the queue goes back to the ordinary workers.
    pub(in crate::server) fn use_inspector(
        &mut self,
        function: FunctionId,
        on: bool,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) -> Result<bool, InvokeError> {
        let f = &mut self.functions[function];
        if on && !inspector::supports(f.profile.runtime) {
            let message = inspector::unsupported_message(&f.profile.name, f.profile.runtime);
            return Err(InvokeError::new(409, "InspectorUnsupported", message));
        }
        if f.inspector == on {
            return Ok(false);
        }
        f.inspector = on;
        log::info!(
            "[cp] function {}: inspector {}",
            f.profile.name,
            if on { "on" } else { "off" }
        );
        if !on {
            self.retire_inspect_workers(function, workers, effects);
        }
        effects.push(Effect::Scale(function));
        effects.push(Effect::Dispatch(function));
        effects.push(Effect::Waiters);
        Ok(true)
    }

    /// Records the retirement of `function`'s inspect workers that still start or serve.
    pub(in crate::server) fn retire_inspect_workers(
        &self,
        function: FunctionId,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        for &worker in &self.functions[function].pool.workers {
            if workers
                .get(worker)
                .is_some_and(|w| w.inspect && w.state <= WorkerState::Ready)
            {
                effects.push(Effect::Retire {
                    worker,
                    why: Retirement::InspectorOff,
                });
            }
        }
    }

    /// A function whose runtime changed away from Node.js loses its inspector.
    pub(in crate::server) fn drop_unsupported_inspector(
        &mut self,
        function: FunctionId,
        workers: &Slab<Worker, WorkerKey>,
        effects: &mut Effects,
    ) {
        let f = &mut self.functions[function];
        if f.inspector && !inspector::supports(f.profile.runtime) {
            f.inspector = false;
            log::warn!(
                "[cp] function {}: inspector off: {}",
                f.profile.name,
                inspector::unsupported_message(&f.profile.name, f.profile.runtime)
            );
            self.retire_inspect_workers(function, workers, effects);
        }
    }

    /// The launch decision for `function`'s inspect worker, from the counts of its inspect
    /// workers of the current generation: one when none starts or serves (within the back-off
    /// and `virtualMemoryPoolSize`, which counts the function's own memory limit, not the
    /// relaxed one), else none; queued requests wait for it. With nothing coming after a failed
    /// start, they fail with the start error.
    pub(in crate::server) fn plan_inspect_launch(
        &mut self,
        function: FunctionId,
        counts: WorkerCounts,
        config: &SystemConfig,
        now: Instant,
    ) -> LaunchDecision {
        let f = &mut self.functions[function];
        if !f.inspector || counts.alive >= inspector::MAX_INSPECT_WORKERS {
            return LaunchDecision::default();
        }
        let input = PlanInput {
            queued: f.pool.queue.len(),
            starting: counts.starting,
            alive: counts.alive,
            max_active: f.max_active(),
            replica_limit: inspector::MAX_INSPECT_WORKERS,
            reservation: inspector::MAX_INSPECT_WORKERS,
            rollout_target: 0,
            expand_concurrency: 1,
            disposable: false,
            backoff: f.pool.backoff(),
            memory_per_worker: f.profile.resource_limit.memory,
            pool_used: counts.pool_used,
            pool_size: config.virtual_memory_pool_size,
            fast_fail: false,
            action: ScaleAction::Hold,
        };
        let decided = plan::launch_plan(input, now);
        let fail = match decided.fail_queue() {
            Some(Blocker::Backoff) => self.take_queue_with_start_error(function),
            Some(Blocker::Capacity(block)) => {
                let f = &mut self.functions[function];
                f.rejected.no_memory += f.pool.queue.len() as u64;
                let err = InvokeError::new(503, block.error_type(), block.to_string());
                Some((f.pool.queue.drain(..).collect(), err))
            }
            None => None,
        };
        if let Some(Blocker::Capacity(block)) = decided.blocked_by() {
            log::warn!(
                "[cp] function {}: no inspect worker can start: {block}",
                self.functions[function].profile.name
            );
        }
        LaunchDecision {
            launch: decided.launch().min(inspector::MAX_INSPECT_WORKERS),
            fail,
        }
    }
}
