//! `dynplugd` entry point.

use clap::Parser;

fn main() {
    let args = dynplugd::cli::Args::parse();
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
