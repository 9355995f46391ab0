//! `dynplugd` entry point.

use clap::Parser;

fn main() {
    let args = dynplugd::cli::Args::parse();
    if args.man_page {
        let command = <dynplugd::cli::Args as clap::CommandFactory>::command();
        let mut page = Vec::new();
        if let Err(e) = clap_mangen::Man::new(command)
            .section("8")
            .render(&mut page)
        {
            eprintln!("dynplugd: cannot render the man page: {e}");
            std::process::exit(1);
        }
        use std::io::Write;
        let _ = std::io::stdout().write_all(&page);
        return;
    }
    if let Some(file) = &args.inspect {
        // Signatures are judged by the configuration's `trust:` (defaults if unreadable).
        let env = |k: &str| std::env::var(k).ok();
        let path = args.config_path(&env);
        let loaded =
            dynplugd::state::load_config(&path, false, &dynplugd::state::Overrides::default());
        let (trust, judged_by) = match loaded {
            Ok(c) if path.is_file() => (c.trust, Some(path.display().to_string())),
            Ok(c) => (c.trust, None),
            Err(e) => {
                eprintln!("dynplugd: {e}; judging signatures by the default `trust:` settings");
                (Default::default(), None)
            }
        };
        let mut report = dynplug_core::inspect::inspect(
            file,
            dynplug_core::trust::TrustPolicy::for_current_process(),
            &trust,
        );
        report.judged_by = judged_by;
        let text = if args.json {
            serde_json::to_string(&report)
                .map(|j| j + "\n")
                .unwrap_or_default()
        } else {
            dynplug_core::inspect::render(&report)
        };
        use std::io::Write;
        let _ = std::io::stdout().write_all(text.as_bytes());
        std::process::exit(if report.usable() { 0 } else { 1 });
    }
    // Nothing of the daemon's own user (isolated plugins included, where they share it)
    // may ptrace it or read its /proc files; and a SIGSEGV raised by in-process plugin
    // code ends the daemon instead of being swallowed.
    dynplug_core::worker::sandbox::make_undumpable();
    dynplug_core::fatal::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dynplugd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynplugd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(dynplugd::run::run(args, std::future::pending()));
    // Plugin calls still hung at exit must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Err(e) = result {
        tracing::error!(error = %e, "dynplugd failed");
        eprintln!("dynplugd: {e}");
        std::process::exit(e.exit_code());
    }
}
