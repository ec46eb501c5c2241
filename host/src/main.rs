//! The `molecule` command: parses arguments, loads configuration and calls the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "molecule",
    version,
    about = "Control plane for organisations of AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the host.
    Serve {
        /// A TOML file layered between the defaults and the environment.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write, check and manage extensions (resolvers, classifiers, restart policies).
    Ext {
        #[command(subcommand)]
        command: molecule_host::cli::ext::ExtCommand,
    },
    /// List and import org templates on a running host.
    Org {
        #[command(subcommand)]
        command: molecule_host::cli::org::OrgCommand,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MOLECULE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // On stderr, so what `molecule ext`/`molecule org` print on stdout stays clean to pipe;
        // colours for a terminal only: a container's log, a file or a pipe gets plain text.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = molecule_host::Config::load(config.as_deref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async move {
                let addr = config.listen_addr()?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                molecule_host::run(config, listener, shutdown_signal()).await
            })
        }
        Command::Ext { command } => tokio::runtime::Runtime::new()
            .context("starting the async runtime")?
            .block_on(molecule_host::cli::ext::run(command)),
        Command::Org { command } => tokio::runtime::Runtime::new()
            .context("starting the async runtime")?
            .block_on(molecule_host::cli::org::run(command)),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// `molecule --help` and every subcommand's help describe every command and argument.
    #[test]
    fn every_command_and_argument_has_help() {
        fn check(command: &clap::Command, path: &str, gaps: &mut Vec<String>) {
            if command.get_about().is_none() {
                gaps.push(format!("{path}: no description"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    gaps.push(format!("{path} <{id}>: no help"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    check(sub, &format!("{path} {}", sub.get_name()), gaps);
                }
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut gaps = Vec::new();
        check(&cli, "molecule", &mut gaps);
        assert!(gaps.is_empty(), "help is missing for: {gaps:#?}");
    }
}
