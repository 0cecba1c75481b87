//! The `quorum-hub` binary: parses the command line, then runs a hub or one of its tools.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quorum_hub::auth::Authority;
use quorum_hub::bench::{self, ConnectionsOptions, FanoutOptions, VotesOptions};
use quorum_hub::client::ClientConfig;
use quorum_hub::config::{Config, parse_duration};
use quorum_hub::tools;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: a hub allocates many small, short-lived
/// buffers per message, and glibc's malloc showed up as a tenth of its CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A WebSocket coordination hub: agents register instances and vote on named decisions;
/// Redis fixes each decision once, and every hub pushes it to every session.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    /// Log as plain text lines or as JSON objects (for log shippers).
    #[arg(long, env = "QUORUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a token (HS256 JWT) from the hub's secret and print it.
    Token(TokenArgs),
    /// Register as an instance, cast one vote, and print the hub's reply as JSON.
    Vote(VoteArgs),
    /// Print each decision as one JSON line as it is made, until interrupted.
    Watch(WatchArgs),
    /// Load-test a running hub.
    #[command(subcommand)]
    Bench(BenchCommand),
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
    ttl: Duration,
    /// The hub's secret.
    #[arg(long, env = "QUORUM_AUTH_SECRET", hide_env_values = true)]
    auth_secret: String,
}

#[derive(Debug, Args)]
struct Connection {
    /// The hub's WebSocket endpoint.
    #[arg(long, env = "QUORUM_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// A token, when the hub requires one.
    #[arg(long, env = "QUORUM_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct VoteArgs {
    #[command(flatten)]
    connection: Connection,
    /// The instance to register and vote as.
    #[arg(long)]
    instance: String,
    #[arg(long)]
    decision: String,
    #[arg(long)]
    value: String,
    /// totalInstances (only the first vote of a decision sets it).
    #[arg(long)]
    total: Option<u64>,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Also print the decisions made after this event id (resume).
    #[arg(long, value_parser = clap::value_parser!(quorum_hub::decision::EventId))]
    since: Option<quorum_hub::decision::EventId>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Vote throughput and latency: S sessions, G to a decision, one vote in flight each.
    Votes {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value_t = 60)]
        group: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Stop after this many votes.
        #[arg(long)]
        votes: Option<u64>,
        /// Votes per second per session (default: as fast as replies come).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Fan-out latency: K idle sessions and a voter making decisions.
    Fanout {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        #[arg(long, default_value_t = 20)]
        decisions: usize,
        #[arg(long)]
        json: bool,
    },
    /// Memory per session: open and register K sessions, read the hub's resident memory.
    Connections {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// The hub's process id (its memory is read from /proc).
        #[arg(long)]
        hub_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Everything above plus redis-benchmark on the vote script, as one table.
    Suite {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 10_000)]
        fanout_sessions: usize,
        #[arg(long, default_value_t = 50)]
        fanout_decisions: usize,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long)]
        hub_pid: Option<u32>,
        /// Unix socket of the hub's Redis, for redis-benchmark.
        #[arg(long)]
        redis_socket: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = &cli.command {
        return report(
            Authority::new(&args.auth_secret)
                .and_then(|a| a.mint(args.sub.as_deref(), args.observer, args.ttl)),
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.command.is_some() {
            "warn"
        } else {
            "info"
        })
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("quorum-hub: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => match runtime.block_on(serve(cli.config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("quorum-hub: {err}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Vote(args)) => {
            let config = client_config(&args.connection, Some(args.instance.clone()), None);
            let reply = runtime.block_on(tools::vote(
                config,
                &args.instance,
                &args.decision,
                &args.value,
                args.total,
            ));
            report(reply.map(|v| v.to_string()))
        }
        Some(Command::Watch(args)) => {
            let config = client_config(&args.connection, None, args.since);
            report(
                runtime
                    .block_on(tools::watch(config, std::io::stdout().lock()))
                    .map(|()| String::new()),
            )
        }
        Some(Command::Bench(command)) => report(runtime.block_on(run_bench(command))),
        Some(Command::Token(_)) => unreachable!("handled above"),
    }
}

/// Prints a tool's output (or its error on stderr) and picks the exit code.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn client_config(
    connection: &Connection,
    instance: Option<String>,
    since: Option<quorum_hub::decision::EventId>,
) -> ClientConfig {
    ClientConfig {
        url: connection.url.clone(),
        instance,
        roles: Vec::new(),
        token: connection.token.clone(),
        since,
    }
}

fn render<T: serde::Serialize>(
    report: &T,
    json: bool,
    table: impl FnOnce(&T) -> String,
) -> Result<String, String> {
    if json {
        serde_json::to_string_pretty(report).map_err(|e| e.to_string())
    } else {
        Ok(table(report))
    }
}

fn pretty<T: serde::Serialize>(report: &T) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

async fn run_bench(command: BenchCommand) -> Result<String, String> {
    match command {
        BenchCommand::Votes {
            url,
            sessions,
            group,
            duration,
            votes,
            rate,
            json,
        } => {
            let options = VotesOptions {
                url,
                sessions,
                group,
                duration,
                max_votes: votes,
                rate,
            };
            let report = bench::votes(&options).await.map_err(|e| e.to_string())?;
            render(&report, json, pretty)
        }
        BenchCommand::Fanout {
            url,
            sessions,
            decisions,
            json,
        } => {
            let report = bench::fanout(&FanoutOptions {
                url,
                sessions,
                decisions,
            })
            .await
            .map_err(|e| e.to_string())?;
            render(&report, json, pretty)
        }
        BenchCommand::Connections {
            url,
            sessions,
            hub_pid,
            json,
        } => {
            let options = ConnectionsOptions {
                url,
                sessions,
                hub_pid,
            };
            let report = bench::connections(&options)
                .await
                .map_err(|e| e.to_string())?;
            render(&report, json, pretty)
        }
        BenchCommand::Suite {
            url,
            sessions,
            duration,
            fanout_sessions,
            fanout_decisions,
            connections,
            hub_pid,
            redis_socket,
            json,
        } => {
            let options = tools::SuiteOptions {
                url,
                sessions,
                duration,
                fanout_sessions,
                fanout_decisions,
                connections,
                hub_pid,
                redis_socket,
            };
            let suite = tools::suite(&options).await?;
            render(&suite, json, tools::suite_table)
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
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
