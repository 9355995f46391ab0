//! The call path: `execute` with its limits, timeouts and retries, in process (on the
//! blocking pool, under the concurrency permits) or in a worker pool.

use super::*;

impl Manager {
    /// Runs `name` on `input` and waits for the answer.
    pub async fn execute(&self, name: &str, input: String) -> Result<String, ManagerError> {
        let slot = self.admit(name, &input)?;
        let host = CallHost::new(
            Arc::clone(&slot.label),
            Cancel::new(),
            Some(Arc::clone(&slot.outlet)),
            None,
        );
        self.run(slot, input, Arc::new(host)).await
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
        // Counted from now until the job's end is recorded, so a shutdown waits for it.
        self.inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let _guard = InFlightGuard(&manager.inner.in_flight);
            let result = manager.run(slot, input, Arc::new(host)).await;
            manager.inner.jobs.finish(&running, result);
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
        let max = read(&inner.config).max_input_bytes;
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

    /// Makes an admitted call, with its timeout, retries and statistics.
    async fn run(
        &self,
        slot: Arc<Slot>,
        input: String,
        host: Arc<CallHost>,
    ) -> Result<String, ManagerError> {
        let inner = &self.inner;
        let name = slot.name();
        let _guard = InFlightGuard::enter(&inner.in_flight);
        let limits = slot.limits();
        let timeout = limits.timeout;
        let began = Instant::now();
        let (retries, idempotent) = {
            let config = read(&inner.config);
            let p = config.plugin(name);
            (p.retries, p.idempotent)
        };
        let mut attempt = 0;
        let mut abandoned = inner.in_flight.abandon.subscribe();
        let calls = async {
            loop {
                let outcome = if let Some(pool) = &slot.pool {
                    Ok(self
                        .execute_isolated(pool, &slot, &input, timeout, &host)
                        .await)
                } else {
                    self.execute_in_process(
                        Arc::clone(&slot),
                        limits.clone(),
                        input.clone(),
                        timeout,
                        Arc::clone(&host),
                    )
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
                    Err(ManagerError::Timeout { .. }) => idempotent,
                    _ => false,
                };
                if !transient
                    || attempt >= retries
                    || inner.shutting_down.load(Ordering::Acquire)
                    || host.cancel_flag().is_cancelled()
                {
                    break result;
                }
                attempt += 1;
                slot.record_retry();
                if let Err(e) = &result {
                    tracing::warn!(plugin = name, attempt, error = %e, "retrying call");
                }
                tokio::time::sleep(Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(6)))
                    .await;
            }
        };
        let result = tokio::select! {
            result = calls => result,
            _ = abandoned.wait_for(|a| *a) => Err(ManagerError::ShuttingDown),
        };
        let elapsed = began.elapsed();
        match &result {
            Ok(_) => {
                slot.record(elapsed, Ok(()));
                tracing::debug!(
                    plugin = name,
                    duration_us = elapsed.as_micros() as u64,
                    "executed"
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
                    ManagerError::Call(CallError::Panicked { .. } | CallError::Crashed { .. })
                        | ManagerError::Timeout { .. }
                ) {
                    let _ = inner.events.send(Event::PluginFailed {
                        name: name.to_owned(),
                        error: message,
                    });
                }
            }
        }
        result
    }

    /// An in-process call: on the blocking pool, under the concurrency limit. A call
    /// cancelled by its caller is abandoned [`CANCEL_GRACE`] later if the plugin has not
    /// returned by then (its thread and permit are released only when it does).
    async fn execute_in_process(
        &self,
        call_slot: Arc<Slot>,
        limits: Limits,
        input: String,
        timeout: Duration,
        host: Arc<CallHost>,
    ) -> Result<Result<String, ManagerError>, tokio::time::error::Elapsed> {
        let name = call_slot.name().to_owned();
        let limits_max_output = limits.max_output;
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
                instance
                    .execute_bounded(&input, limits_max_output, Some(&*host))
                    .map_err(ManagerError::from)
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
        let (error, quarantined) = match pool.call(input, timeout, host).await {
            Ok(output) => return Ok(output),
            Err(pair) => pair,
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
            let mut runtime = lock(&self.inner.runtime);
            runtime.quarantined.insert(name.clone(), record);
            if let Err(e) = self.inner.store.save(&runtime) {
                tracing::warn!(error = %e, "cannot save the quarantine");
            }
            drop(runtime);
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
