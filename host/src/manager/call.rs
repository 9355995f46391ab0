//! The call path: `execute` with its limits, timeouts and retries, in process (on the
//! blocking pool, under the concurrency permits) or in a worker pool.

use super::*;

/// Lets the worker run what waits in its "next" slot before this task goes on: the task
/// is woken during its own poll, which the runtime takes as a yield to the back of the
/// worker's queue, behind that slot (unlike `tokio::task::yield_now`, without waiting
/// for a poll of the I/O driver).
async fn step_aside() {
    let mut stepped = false;
    std::future::poll_fn(move |cx| {
        if stepped {
            return std::task::Poll::Ready(());
        }
        stepped = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Raises a call's cancel flag when dropped armed: its caller went away.
struct CancelOnDrop(Option<Arc<Cancel>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

/// Logs that a plugin's calls go back to threads.
pub(super) fn warn_demoted(plugin: &str, demoted: Demoted) {
    tracing::warn!(
        plugin,
        took_us = demoted.took.as_micros() as u64,
        "an inline call ran long: this plugin's calls go to threads from now on"
    );
}

impl Manager {
    /// Runs `name` on `input` and waits for the answer.
    ///
    /// A caller that goes away before the answer (this future dropped: a client that
    /// disconnected, a request that timed out) cancels the call, as a job's Cancel
    /// would: its plugin is told, and its place is not held for nobody.
    pub async fn execute(&self, name: &str, input: String) -> Result<String, ManagerError> {
        let slot = self.admit(name, &input)?;
        let cancel = Cancel::new();
        let host = CallHost::new(
            Arc::clone(&slot.label),
            Arc::clone(&cancel),
            Some(Arc::clone(&slot.outlet)),
            None,
        );
        let counted = InFlightGuard::enter(&self.inner.in_flight);
        let mut abandoned = CancelOnDrop(Some(cancel));
        let result = self.run(slot, input, Arc::new(host), &counted).await;
        abandoned.0 = None;
        result
    }

    /// Starts `name` on `input` as a job owned by `owner` and returns it at once; the
    /// call runs in the background with the same limits as [`Manager::execute`].
    pub fn start_job(
        &self,
        name: &str,
        input: String,
        owner: JobOwner,
    ) -> Result<Arc<Job>, ManagerError> {
        let slot = self.admit(name, &input)?;
        let job = self.inner.jobs.start(name, owner)?;
        let host = CallHost::new(
            Arc::clone(&slot.label),
            Arc::clone(job.cancel_flag()),
            Some(Arc::clone(&slot.outlet)),
            Some(Arc::clone(&job)),
        );
        tracing::info!(plugin = name, job = job.id(), "job started");
        let manager = self.clone();
        let running = Arc::clone(&job);
        // In flight from now until the job's end is recorded, so a shutdown waits for it.
        self.inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let counted = InFlightGuard(&manager.inner.in_flight);
            let result = manager.run(slot, input, Arc::new(host), &counted).await;
            manager.inner.jobs.finish(&running, result);
            drop(counted);
            let view = running.view();
            tracing::info!(plugin = %view.plugin, job = view.id, state = view.state.as_str(), "job ended");
        });
        Ok(job)
    }

    /// The job table.
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// Checks that a call of `name` with `input` may be made now; returns its slot.
    fn admit(&self, name: &str, input: &str) -> Result<Arc<Slot>, ManagerError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(ManagerError::ShuttingDown);
        }
        let max = inner.max_input.load(Ordering::Acquire);
        if input.len() > max {
            return Err(ManagerError::InvalidArgument(format!(
                "input is {} bytes, more than the {max} allowed (max_input_bytes)",
                input.len()
            )));
        }
        let slot = self.slot(name)?;
        if !slot.enabled() {
            return Err(ManagerError::Disabled(name.to_owned()));
        }
        if let Some(reason) = slot.failure() {
            return Err(ManagerError::Unavailable {
                name: name.to_owned(),
                reason,
            });
        }
        Ok(slot)
    }

    /// Makes an admitted call, with its timeout, retries and statistics: inline when the
    /// plugin has proven fast (see [`crate::fastpath`]), else on a thread or in a worker.
    /// The call is counted in flight by `_counted`, which the caller drops when it has
    /// dealt with the result.
    async fn run(
        &self,
        slot: Arc<Slot>,
        input: String,
        host: Arc<CallHost>,
        _counted: &InFlightGuard<'_>,
    ) -> Result<String, ManagerError> {
        let limits = slot.limits();
        let began = Instant::now();
        if slot.speed.inline() {
            // Let this worker first run what is queued on it: the task a waker put in
            // its "next" slot cannot be stolen by another worker, so it would wait for
            // the whole inline call (the bus itself stalled behind a plugin that blocks
            // inline, until this yield).
            step_aside().await;
        }
        let result = match self.inline(&slot, &limits, &input, &host) {
            Some(result) => result,
            None => {
                let mut abandoned = self.inner.in_flight.abandon.subscribe();
                tokio::select! {
                    result = self.attempts(&slot, &limits, input, &host) => result,
                    _ = abandoned.wait_for(|a| *a) => Err(ManagerError::ShuttingDown),
                }
            }
        };
        // A plugin that stops because its caller cancelled answers with an error of its
        // own words: it is the cancellation, not a failure of the plugin.
        let result = match result {
            Err(e)
                if host.cancel_flag().is_cancelled()
                    && !matches!(e, ManagerError::Timeout { .. }) =>
            {
                Err(ManagerError::Cancelled(slot.name().to_owned()))
            }
            other => other,
        };
        self.account(&slot, began.elapsed(), &result);
        result
    }

    /// The fast path: a call on this thread, for an in-process plugin whose calls proved
    /// fast, when an inline place and a permit are free at once. `None`: take the
    /// threaded path. A call that runs long demotes the plugin; past its timeout it is
    /// answered `Timeout` when it returns (an inline call cannot be abandoned earlier:
    /// that is what docs/isolation.md says is given up for speed).
    fn inline(
        &self,
        slot: &Slot,
        limits: &Limits,
        input: &str,
        host: &CallHost,
    ) -> Option<Result<String, ManagerError>> {
        if !limits.fast_path || slot.pool.is_some() || !slot.speed.inline() {
            return None;
        }
        let instance = slot.loaded()?;
        let Some(_place) = self.inner.inline_slots.try_enter() else {
            // Every inline place is taken: if one of this plugin's inline calls has been
            // running too long (a hang), its calls go to threads from now on.
            if let Some(demoted) = slot.speed.check_running() {
                warn_demoted(slot.name(), demoted);
            }
            return None;
        };
        let _permit = limits.permits.try_acquire().ok()?;
        slot.speed.begin();
        let started = Instant::now();
        let result = instance.execute_bounded(input, limits.max_output, Some(host));
        let took = started.elapsed();
        if let Some(demoted) = slot.speed.end(took) {
            warn_demoted(slot.name(), demoted);
        }
        if took > limits.timeout {
            host.cancel_flag().cancel();
            return Some(Err(ManagerError::Timeout {
                name: slot.name().to_owned(),
                timeout: limits.timeout,
            }));
        }
        Some(result.map_err(ManagerError::from))
    }

    /// The threaded path: attempts on a thread or in a worker, each under the timeout,
    /// retried as the plugin's `retries` allow.
    async fn attempts(
        &self,
        slot: &Arc<Slot>,
        limits: &Limits,
        mut input: String,
        host: &Arc<CallHost>,
    ) -> Result<String, ManagerError> {
        let name = slot.name();
        let timeout = limits.timeout;
        let mut attempt = 0;
        loop {
            let outcome = if let Some(wasm) = slot.wasm.get() {
                let owned = if attempt < limits.retries {
                    input.clone()
                } else {
                    std::mem::take(&mut input)
                };
                Ok(self.execute_wasm(slot, wasm, limits, owned, host).await)
            } else if let Some(pool) = &slot.pool {
                Ok(self
                    .execute_isolated(pool, slot, &input, timeout, host)
                    .await)
            } else {
                // The input moves to the thread; it is copied only for a retry.
                let owned = if attempt < limits.retries {
                    input.clone()
                } else {
                    std::mem::take(&mut input)
                };
                self.execute_in_process(Arc::clone(slot), limits.clone(), owned, Arc::clone(host))
                    .await
            };
            let result = outcome.unwrap_or_else(|_| {
                // The plugin may still be running: tell it its caller gave up.
                host.cancel_flag().cancel();
                Err(ManagerError::Timeout {
                    name: name.to_owned(),
                    timeout,
                })
            });
            // Only failures of the machinery are retried: a crashed or restarting worker,
            // and a timeout when the plugin says its calls may run twice. A plugin's own
            // error is an answer, not a fault.
            let transient = match &result {
                Err(ManagerError::Call(CallError::Crashed { .. })) => true,
                Err(ManagerError::Timeout { .. }) => limits.idempotent,
                _ => false,
            };
            if !transient
                || attempt >= limits.retries
                || self.inner.shutting_down.load(Ordering::Acquire)
                || host.cancel_flag().is_cancelled()
            {
                return result;
            }
            attempt += 1;
            slot.record_retry();
            if let Err(e) = &result {
                tracing::warn!(plugin = name, attempt, error = %e, "retrying call");
            }
            tokio::time::sleep(Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(6)))
                .await;
        }
    }

    /// Statistics, logs and failure events for a finished call.
    fn account(&self, slot: &Slot, elapsed: Duration, result: &Result<String, ManagerError>) {
        let name = slot.name();
        match result {
            Ok(_) => {
                slot.record(elapsed, Ok(()));
                tracing::debug!(
                    plugin = name,
                    duration_us = elapsed.as_micros() as u64,
                    "executed"
                );
            }
            // The caller gave up: a call, not a plugin error (not in Errors, LastError).
            Err(ManagerError::Cancelled(_)) => {
                slot.record(elapsed, Ok(()));
                tracing::info!(
                    plugin = name,
                    duration_us = elapsed.as_micros() as u64,
                    "call cancelled by its caller"
                );
            }
            Err(e) => {
                let message = e.to_string();
                slot.record(
                    elapsed,
                    Err((&message, matches!(e, ManagerError::Timeout { .. }))),
                );
                tracing::warn!(plugin = name, duration_us = elapsed.as_micros() as u64, error = %message, "execute failed");
                if matches!(
                    e,
                    ManagerError::Call(
                        CallError::Panicked { .. }
                            | CallError::Crashed { .. }
                            | CallError::Trapped { .. }
                    ) | ManagerError::Timeout { .. }
                ) {
                    let _ = self.inner.events.send(Event::PluginFailed {
                        name: name.to_owned(),
                        error: message,
                    });
                }
            }
        }
    }

    /// An in-process call: on the blocking pool, under the concurrency limit. A call
    /// cancelled by its caller is abandoned [`CANCEL_GRACE`] later if the plugin has not
    /// returned by then (its thread and permit are released only when it does).
    async fn execute_in_process(
        &self,
        call_slot: Arc<Slot>,
        limits: Limits,
        input: String,
        host: Arc<CallHost>,
    ) -> Result<Result<String, ManagerError>, tokio::time::error::Elapsed> {
        let timeout = limits.timeout;
        let name = call_slot.name().to_owned();
        let limits_max_output = limits.max_output;
        let fast_path = limits.fast_path;
        let cancel = Arc::clone(host.cancel_flag());
        let abandon = async move {
            cancel.cancelled().await;
            tokio::time::sleep(CANCEL_GRACE).await;
        };
        let cancelled_name = name.clone();
        let call = async move {
            let permit = limits
                .permits
                .acquire_owned()
                .await
                .map_err(|_| ManagerError::ShuttingDown)?;
            let call = tokio::task::spawn_blocking(move || {
                let _permit = permit; // released only when the plugin returns
                let instance = call_slot
                    .instance()
                    .map_err(|e| ManagerError::Unavailable {
                        name: call_slot.name().to_owned(),
                        reason: e.to_string(),
                    })?;
                let started = Instant::now();
                let result = instance
                    .execute_bounded(&input, limits_max_output, Some(&*host))
                    .map_err(ManagerError::from);
                if fast_path && call_slot.speed.observe(started.elapsed()) {
                    tracing::info!(
                        plugin = call_slot.name(),
                        "calls proved fast: they run inline from now on"
                    );
                }
                result
            });
            call.await.map_err(|e| {
                ManagerError::Call(CallError::Panicked {
                    plugin: name.to_owned(),
                    message: e.to_string(),
                })
            })?
        };
        tokio::time::timeout(timeout, async move {
            tokio::select! {
                result = call => result,
                () = abandon => Err(ManagerError::Cancelled(cancelled_name)),
            }
        })
        .await
    }

    /// A call in a worker process. A crash that tips the plugin into quarantine is
    /// recorded in the runtime state, keyed by the library file's identity.
    async fn execute_isolated(
        &self,
        pool: &WorkerPool,
        slot: &Slot,
        input: &str,
        timeout: Duration,
        host: &CallHost,
    ) -> Result<String, ManagerError> {
        let name = slot.name().to_owned();
        let PoolFailure { error, quarantined } = match pool.call(input, timeout, host).await {
            Ok(output) => return Ok(output),
            Err(failure) => failure,
        };
        if let Some(reason) = quarantined {
            tracing::error!(plugin = %name, error = %reason, "plugin quarantined");
            let identity = slot.library.identity();
            let record = Quarantine {
                path: slot.library.path().to_owned(),
                size: identity.size,
                mtime_ns: i64::try_from(identity.mtime_ns).unwrap_or(i64::MAX),
                reason: reason.clone(),
            };
            let (_, saved) = self.inner.runtime.update(|runtime| {
                runtime.quarantined.insert(name.clone(), record);
            });
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot save the quarantine");
            }
            let _ = self.inner.events.send(Event::PluginFailed {
                name: name.clone(),
                error: reason,
            });
        }
        Err(match error {
            PoolError::Call(e) => ManagerError::Call(e),
            PoolError::Crashed(message) => ManagerError::Call(CallError::Crashed {
                plugin: name,
                message,
            }),
            PoolError::Timeout => ManagerError::Timeout { name, timeout },
            PoolError::Quarantined(reason) | PoolError::Start(reason) => {
                ManagerError::Unavailable { name, reason }
            }
            PoolError::OutputTooLarge(limit) => ManagerError::Call(CallError::OutputTooLarge {
                plugin: name,
                limit,
            }),
            PoolError::Protocol(reason) => ManagerError::Call(CallError::Protocol {
                plugin: name,
                reason,
            }),
            PoolError::Cancelled => ManagerError::Cancelled(name),
        })
    }
}
