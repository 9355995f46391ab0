//! `dynplugctl`: a thin D-Bus client for dynplugd.

mod agent;
mod cli;
mod client;
mod commands;
mod exit;
mod install;
mod jobs;
mod output;
mod top;

use std::time::Duration;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use client::{Bus, Client, CtlError};
use output::Output;

async fn dispatch(cli: Cli, out: Output) -> Result<(), CtlError> {
    let bus = match (&cli.address, cli.session) {
        (Some(a), _) => Bus::Address(a.clone()),
        (None, true) => Bus::Session,
        (None, false) => Bus::System,
    };
    // Read stdin before connecting, so a slow producer cannot hit the call timeout.
    let input = match &cli.command {
        Command::Execute { input, file, .. } => {
            Some(commands::read_input(input.clone(), file.as_deref())?)
        }
        _ => None,
    };
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let mut client = Client::connect(bus, timeout, !cli.no_ask_password).await?;
    match cli.command {
        Command::List => commands::list(&client, out).await,
        Command::Info { name } => commands::info(&client, out, &name).await,
        Command::Enable { names, all } => commands::toggle(&client, out, names, all, true).await,
        Command::Disable { names, all } => commands::toggle(&client, out, names, all, false).await,
        Command::Execute { name, detach, .. } => {
            commands::execute(&client, out, &name, input.unwrap_or_default(), detach).await
        }
        Command::Install { reference, detach } => {
            install::install(&client, out, &reference, detach).await
        }
        Command::Installed => install::installed(&client, out).await,
        Command::Rollback { name } => install::undo(&client, out, "Rollback", &name).await,
        Command::Remove { name } => install::undo(&client, out, "Remove", &name).await,
        Command::Jobs => jobs::list(&client, out).await,
        Command::Job { id, wait } => jobs::show(&client, out, &id, wait).await,
        Command::Cancel { id } => jobs::cancel(&client, out, &id).await,
        Command::Reload => commands::reload(&client, out).await,
        Command::Status => commands::status(&client, out).await,
        Command::Watch => commands::watch(&mut client, out).await,
        Command::Top { interval, once } => {
            top::run(&client, out, Duration::from_secs_f64(interval), once).await
        }
        Command::Completions { .. } | Command::Man | Command::Inspect { .. } => Ok(()),
    }
}

/// Parses the command line. With `--json`, a usage error is a JSON error document on
/// stdout (exit 2) like every other error; help and version print as usual.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            let informational =
                matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if !json || informational {
                e.exit();
            }
            // clap's text without its usage block, on one line.
            let text = e.render().to_string();
            let message = text
                .trim_start_matches("error: ")
                .split("\n\n")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Output::new(true).error(
                &CtlError::new(client::Kind::InvalidArgument, message)
                    .hint("see `dynplugctl --help`"),
            );
            std::process::exit(exit::USAGE);
        }
    }
}

/// `inspect FILE`: the daemon's binary reads the file (`dynplugd --inspect`), so the
/// client never links the plugin host. Returns only if it cannot be started.
fn inspect(file: &std::path::Path, config: Option<&std::path::Path>, json: bool) -> CtlError {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("dynplugd")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| "dynplugd".into());
    let mut command = std::process::Command::new(&program);
    command.arg("--inspect").arg(file);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if json {
        command.arg("--json");
    }
    let e = command.exec();
    CtlError::new(
        client::Kind::Failure,
        format!("cannot run {}: {e}", program.display()),
    )
    .hint("inspect needs dynplugd installed beside dynplugctl or in PATH")
}

fn main() {
    let cli = parse();
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "dynplugctl",
                &mut std::io::stdout(),
            );
            return;
        }
        Command::Man => {
            let mut page = Vec::new();
            if clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .is_ok()
            {
                output::print_stdout(&String::from_utf8_lossy(&page));
            }
            return;
        }
        _ => {}
    }
    if let Command::Inspect { file, config } = &cli.command {
        let error = inspect(file, config.as_deref(), cli.json);
        Output::new(cli.json).error(&error);
        std::process::exit(exit::FAILURE);
    }
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&CtlError::new(
                client::Kind::Failure,
                format!("cannot start: {e}"),
            ));
            std::process::exit(exit::FAILURE);
        }
    };
    let code = match runtime.block_on(dispatch(cli, out)) {
        Ok(()) => exit::OK,
        Err(e) => {
            if !e.message.is_empty() {
                out.error(&e);
            }
            e.kind.exit_code()
        }
    };
    std::process::exit(code);
}
