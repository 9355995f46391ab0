//! `/metrics`: per-plugin call counters and latency histograms, daemon uptime and
//! reloads, read from the manager at scrape time and encoded by prometheus-client.

use dynplug_core::LATENCY_BOUNDS_US;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::Shared;

#[derive(Debug)]
struct Snapshot {
    uptime: f64,
    reloads_ok: u64,
    reloads_failed: u64,
    in_flight: i64,
    own: dynplug_core::resources::Usage,
    workers: Vec<(String, dynplug_core::resources::Usage)>,
    plugins: Vec<(String, dynplug_core::CallStats, bool)>,
    wasm: Vec<(String, dynplug_core::wasm_tier::WasmStatus)>,
}

type Labels = [(&'static str, String); 1];

/// Reads one counter out of a plugin's statistics.
type StatField = fn(&dynplug_core::CallStats) -> u64;

fn label(name: &str) -> Labels {
    [("plugin", name.to_owned())]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.uptime);
        g.encode(encoder.encode_descriptor(
            "dynplug_uptime_seconds",
            "Seconds since dynplugd started",
            None,
            g.metric_type(),
        )?)?;
        let c = ConstCounter::new(self.own.cpu_usec as f64 / 1e6);
        c.encode(encoder.encode_descriptor(
            "dynplug_process_cpu_seconds",
            "CPU time used by dynplugd",
            None,
            c.metric_type(),
        )?)?;
        let g = ConstGauge::new(i64::try_from(self.own.rss_bytes).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "dynplug_process_resident_memory_bytes",
            "Resident memory of dynplugd",
            None,
            g.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_worker_cpu_seconds",
                "CPU time of the live worker processes of an isolated plugin",
                None,
                MetricType::Counter,
            )?;
            for (plugin, usage) in &self.workers {
                ConstCounter::new(usage.cpu_usec as f64 / 1e6)
                    .encode(family.encode_family(&label(plugin))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_worker_resident_memory_bytes",
                "Resident memory of the live worker processes of an isolated plugin",
                None,
                MetricType::Gauge,
            )?;
            for (plugin, usage) in &self.workers {
                ConstGauge::new(i64::try_from(usage.rss_bytes).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&label(plugin))?)?;
            }
        }
        self.encode_wasm(&mut encoder)?;
        let g = ConstGauge::new(self.in_flight);
        g.encode(encoder.encode_descriptor(
            "dynplug_calls_in_flight",
            "Plugin calls being served",
            None,
            g.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_reloads",
                "Configuration reloads",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [
                ("success", self.reloads_ok),
                ("failure", self.reloads_failed),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        let counters: [(&str, &str, StatField); 4] = [
            ("dynplug_plugin_calls", "Calls per plugin", |s| s.calls),
            (
                "dynplug_plugin_errors",
                "Failed calls per plugin (errors, panics, timeouts)",
                |s| s.errors,
            ),
            (
                "dynplug_plugin_timeouts",
                "Timed-out calls per plugin",
                |s| s.timeouts,
            ),
            (
                "dynplug_plugin_retries",
                "Retried attempts per plugin",
                |s| s.retries,
            ),
        ];
        for (name, help, get) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (plugin, stats, _) in &self.plugins {
                ConstCounter::new(get(stats)).encode(family.encode_family(&label(plugin))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_plugin_enabled",
                "1 if the plugin is enabled",
                None,
                MetricType::Gauge,
            )?;
            for (plugin, _, enabled) in &self.plugins {
                ConstGauge::new(i64::from(*enabled))
                    .encode(family.encode_family(&label(plugin))?)?;
            }
        }
        // `dynplug_call_duration_seconds` is the name to use; the older
        // `dynplug_plugin_call_duration_seconds` carries the same figures for scrapers
        // written against it.
        for (name, help) in [
            (
                "dynplug_call_duration_seconds",
                "Duration of plugin calls, by plugin",
            ),
            (
                "dynplug_plugin_call_duration_seconds",
                "Duration of plugin calls (same as dynplug_call_duration_seconds)",
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (plugin, stats, _) in &self.plugins {
                // Per-bucket (not cumulative) counts: the encoder accumulates them. The
                // count is their sum, so the +Inf bucket always equals it.
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
                    .iter()
                    .map(|bound| *bound as f64 / 1e6)
                    .chain([f64::INFINITY])
                    .zip(stats.latency_buckets.iter().copied())
                    .collect();
                family
                    .encode_family(&label(plugin))?
                    .encode_histogram::<Vec<(String, String)>>(
                        stats.total_us as f64 / 1e6,
                        stats.latency_buckets.iter().sum(),
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

impl Snapshot {
    /// The WebAssembly plugins' traps, memory and compile time.
    fn encode_wasm(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_wasm_traps",
                "Calls of a WebAssembly plugin that trapped or were stopped at a limit",
                None,
                MetricType::Counter,
            )?;
            for (plugin, status) in &self.wasm {
                ConstCounter::new(status.traps).encode(family.encode_family(&label(plugin))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "dynplug_wasm_peak_memory_bytes",
                "The most memory one instance of a WebAssembly plugin had",
                None,
                MetricType::Gauge,
            )?;
            for (plugin, status) in &self.wasm {
                ConstGauge::new(i64::try_from(status.peak_memory).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&label(plugin))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "dynplug_wasm_compile_seconds",
            "How long compiling a WebAssembly plugin (or loading its precompiled artifact) took",
            None,
            MetricType::Gauge,
        )?;
        for (plugin, status) in &self.wasm {
            ConstGauge::new(status.compile_us as f64 / 1e6)
                .encode(family.encode_family(&label(plugin))?)?;
        }
        Ok(())
    }
}

/// Renders the metrics in the Prometheus text format.
pub(super) fn render(control: &Shared) -> Result<String, std::fmt::Error> {
    let (reloads_ok, reloads_failed) = control.reload_counts();
    let plugins: Vec<dynplug_core::PluginInfo> = control
        .manager
        .list()
        .into_iter()
        .filter(|p| !p.version.is_empty())
        .collect();
    let snapshot = Snapshot {
        uptime: control.uptime().as_secs_f64(),
        reloads_ok,
        reloads_failed,
        in_flight: i64::try_from(control.manager.in_flight()).unwrap_or(i64::MAX),
        own: dynplug_core::resources::own(),
        workers: plugins
            .iter()
            .filter_map(|p| p.workers.as_ref().map(|w| (p.name.clone(), w.usage)))
            .collect(),
        wasm: plugins
            .iter()
            .filter_map(|p| p.wasm.clone().map(|w| (p.name.clone(), w)))
            .collect(),
        plugins: plugins
            .into_iter()
            .map(|p| (p.name, p.stats, p.enabled))
            .collect(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}
