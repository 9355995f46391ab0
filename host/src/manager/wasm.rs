//! The call path of WebAssembly plugins: a blocking thread under the plugin's permits,
//! a fresh instance per call, stopped at the timeout or after a cancellation grace by
//! the runtime itself; traps counted toward quarantine like worker crashes.

use super::*;
use crate::wasm_tier::WasmSlot;

impl Manager {
    /// One attempt at a call of a wasm plugin. The runtime stops guest code at the
    /// timeout, so the thread and the permit come back then too; the outer timeout
    /// only covers the wait for a permit and the compile on first use.
    pub(super) async fn execute_wasm(
        &self,
        slot: &Arc<Slot>,
        wasm: &Arc<WasmSlot>,
        limits: &Limits,
        input: String,
        host: &Arc<CallHost>,
    ) -> Result<String, ManagerError> {
        let name = slot.name().to_owned();
        if let Some(reason) = wasm.quarantined() {
            return Err(ManagerError::Unavailable { name, reason });
        }
        let call_limits = dynplug_wasm::CallLimits {
            timeout: limits.timeout,
            cancel_grace: CANCEL_GRACE,
            max_output: limits.max_output,
        };
        let permits = Arc::clone(&limits.permits);
        let (slot2, wasm2, host2) = (Arc::clone(slot), Arc::clone(wasm), Arc::clone(host));
        let call = async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| ManagerError::ShuttingDown)?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit; // released when the guest has returned or was stopped
                let plugin =
                    wasm2
                        .plugin(&slot2.library)
                        .map_err(|e| ManagerError::Unavailable {
                            name: slot2.name().to_owned(),
                            reason: e.to_string(),
                        })?;
                let settings = lock(&slot2.settings_json).clone();
                let host: Arc<dyn dynplug_sdk::host::Host + Send + Sync> = host2;
                Ok(plugin.call(&input, &settings, host, &call_limits))
            })
            .await
            .map_err(|e| ManagerError::Internal(format!("a wasm call's thread failed: {e}")))?
        };
        // The runtime answers at the timeout; a little slack so its own, precise
        // answer wins over this one.
        let outcome = tokio::time::timeout(limits.timeout + dynplug_wasm::TICK * 4, call).await;
        let result = match outcome {
            Err(_) => {
                host.cancel_flag().cancel();
                return Err(ManagerError::Timeout {
                    name,
                    timeout: limits.timeout,
                });
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(result)) => result,
        };
        match result {
            Ok(answer) => {
                wasm.record_memory(answer.peak_memory);
                Ok(answer.output)
            }
            Err(e) => Err(self.wasm_failure(slot, wasm, e)),
        }
    }

    /// The manager's error for a failed wasm call; a trap is counted, and quarantines
    /// the plugin (recorded in the runtime state for this very file) at its limit.
    fn wasm_failure(
        &self,
        slot: &Slot,
        wasm: &WasmSlot,
        error: dynplug_wasm::CallError,
    ) -> ManagerError {
        use dynplug_wasm::CallError as W;
        let name = slot.name().to_owned();
        match error {
            W::Plugin(message) => ManagerError::Call(CallError::Failed {
                plugin: name,
                message,
            }),
            W::Timeout(timeout) => ManagerError::Timeout { name, timeout },
            W::Cancelled => ManagerError::Cancelled(name),
            W::OutputTooLarge(limit) => ManagerError::Call(CallError::OutputTooLarge {
                plugin: name,
                limit,
            }),
            W::Instantiate(reason) => ManagerError::Unavailable { name, reason },
            fault => {
                let message = fault.to_string();
                if let Some(reason) = wasm.record_fault(&message) {
                    tracing::error!(plugin = %name, error = %reason, "plugin quarantined");
                    let identity = slot.library.identity();
                    let record = Quarantine {
                        path: slot.library.path().to_owned(),
                        size: identity.size,
                        mtime_ns: i64::try_from(identity.mtime_ns).unwrap_or(i64::MAX),
                        reason,
                    };
                    let (_, saved) = self.inner.runtime.update(|runtime| {
                        runtime.quarantined.insert(name.clone(), record);
                    });
                    if let Err(e) = saved {
                        tracing::warn!(error = %e, "cannot save the quarantine");
                    }
                }
                ManagerError::Call(CallError::Trapped {
                    plugin: name,
                    message,
                })
            }
        }
    }
}

/// The status of a wasm plugin's slot: loaded once compiled, failed if it could not
/// be, pending until then.
pub(crate) fn plugin_status(wasm: Option<&Arc<WasmSlot>>) -> crate::views::PluginStatus {
    use crate::views::PluginStatus;
    let Some(wasm) = wasm else {
        return PluginStatus::Pending;
    };
    if let Some(reason) = wasm.quarantined() {
        return PluginStatus::Failed(reason);
    }
    match wasm.state() {
        Some(Ok(())) => PluginStatus::Loaded,
        Some(Err(reason)) => PluginStatus::Failed(reason),
        None => PluginStatus::Pending,
    }
}

/// Compiles, on the blocking pool and in the background, the wasm plugins of
/// `plugins` not loaded yet: start-up does not wait for compilers, and a first call
/// that comes before its plugin is ready waits for that one compile.
pub(crate) fn prepare(plugins: &std::collections::BTreeMap<String, Arc<crate::slot::Slot>>) {
    for slot in plugins.values() {
        let Some(wasm) = slot.wasm.get() else {
            continue;
        };
        if wasm.state().is_some() || !slot.enabled() {
            continue;
        }
        let slot = Arc::clone(slot);
        tokio::task::spawn_blocking(move || {
            if let Some(wasm) = slot.wasm.get() {
                if let Err(e) = wasm.plugin(&slot.library) {
                    tracing::warn!(plugin = slot.name(), error = %e, "wasm plugin unusable");
                }
            }
        });
    }
}
