//! The `quorum-hub` binary: parses the command line and runs a hub.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use quorum_hub::auth::Authority;
use quorum_hub::config::{Config, parse_duration};
use tokio_util::sync::CancellationToken;

/// A WebSocket coordination hub: agents register instances and vote on named decisions;
/// Redis fixes each decision once, and every hub pushes it to every session.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a token (HS256 JWT) from the hub's secret and print it.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The instance the token lets its holder register and vote as.
    #[arg(
        long,
        required_unless_present = "observer",
        conflicts_with = "observer"
    )]
    sub: Option<String>,
    /// A read-only token: connect, read state, receive events; never register or vote.
    #[arg(long)]
    observer: bool,
    /// How long the token is valid (e.g. 30m, 1h, 24h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: std::time::Duration,
    /// The hub's secret.
    #[arg(long, env = "QUORUM_AUTH_SECRET", hide_env_values = true)]
    auth_secret: String,
}

fn mint(args: &TokenArgs) -> Result<String, String> {
    let authority = Authority::new(&args.auth_secret)?;
    authority.mint(args.sub.as_deref(), args.observer, args.ttl)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = &cli.command {
        return match mint(args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("quorum-hub token: {err}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("quorum-hub: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quorum-hub: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    quorum_hub::server::run(listener, config, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
