//! `count`: counts to N, one step every 100 ms — a long job to watch and cancel.
//!
//! Input: N (1 to 100000; empty means 10). Each step reports progress, every tenth
//! step is logged, and the plugin stops as soon as its caller gives up
//! (`Context::cancelled`). At the end it publishes the event `counted`.

use std::time::Duration;

use dynplug_sdk::{plugin, Context, Plugin, PluginResult};

/// The time one step takes.
const STEP: Duration = Duration::from_millis(100);
/// The largest N accepted.
const MAX: u32 = 100_000;

/// The plugin.
#[derive(Debug, Default)]
pub struct Count;

impl Count {
    /// The instance.
    pub fn new() -> Self {
        Count
    }
}

fn parse(input: &str) -> PluginResult<u32> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(10);
    }
    match input.parse::<u32>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX}, got `{input}`").into()),
    }
}

#[plugin(
    name = "count",
    description = "counts to N (default 10), one step every 100 ms, with progress"
)]
impl Plugin for Count {
    fn execute_with(&self, ctx: &Context<'_>, input: &str) -> PluginResult<String> {
        let n = parse(input)?;
        ctx.progress(0.0, &format!("0 of {n}"));
        for step in 1..=n {
            std::thread::sleep(STEP);
            if ctx.cancelled() {
                ctx.info(&format!("cancelled at step {step} of {n}"));
                return Err(format!("cancelled at step {step} of {n}").into());
            }
            ctx.progress(f64::from(step) / f64::from(n), &format!("{step} of {n}"));
            if step % 10 == 0 {
                ctx.info(&format!("step {step} of {n}"));
            }
        }
        ctx.emit("counted", &format!("{{\"n\":{n}}}"));
        Ok(n.to_string())
    }
}
