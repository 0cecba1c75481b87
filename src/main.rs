//! The `quorum-hub` binary: parses the command line, then runs a hub or one of its tools.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quorum_hub::auth::Authority;
use quorum_hub::client::{ClientConfig, TokenSource};
use quorum_hub::config::{Config, parse_duration};
use quorum_hub::protocol::EventId;
use quorum_hub::tools;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
    /// Print each decision as one JSON line as it is made or expires, until interrupted.
    Watch(WatchArgs),
    /// Manage the hub's webhook endpoints (an admin token, or without a secret a client on
    /// loopback): add, list, remove, deliveries. Prints the hub's reply as JSON.
    Webhooks(WebhooksArgs),
    /// Serve the Model Context Protocol on stdin and stdout for an LLM agent: tools to
    /// vote, read and wait for decisions, and each decision as a resource. Logs go to stderr.
    Mcp(McpArgs),
    /// Print the hub's OpenRPC document (what `GET /openrpc.json` serves), to generate a
    /// client from.
    Openrpc,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The instance the token lets its holder register and vote as.
    #[arg(
        long,
        required_unless_present_any = ["observer", "admin"],
        conflicts_with_all = ["observer", "admin"]
    )]
    sub: Option<String>,
    /// A role the instance may register with (repeatable); with --auth-secret an instance
    /// claims only the roles its token grants.
    #[arg(long = "role", requires = "sub")]
    roles: Vec<String>,
    /// A read-only token: connect, read state, receive events; never register or vote.
    #[arg(long, conflicts_with = "admin")]
    observer: bool,
    /// A token that manages the hub (its webhooks and decision policies), reads state and
    /// receives events; never registers or votes.
    #[arg(long)]
    admin: bool,
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
    /// A token, when the hub requires one (the session ends when it expires).
    #[arg(
        long,
        env = "QUORUM_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the token, read again at every reconnection and before the token
    /// expires: replace its content with a newer token and the session goes on.
    #[arg(long, env = "QUORUM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
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
    /// totalInstances (only the first vote of a decision sets it; under a policy with an
    /// electorate, the electorate's size).
    #[arg(long)]
    total: Option<u64>,
    /// A role to register the instance with (repeatable), for decision policies'
    /// electorates and openers; with a secret, only roles the token grants.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// The decision's deadline, counted from its first vote, e.g. 30s or 2h (only the first
    /// vote of a decision sets it; without one, the hub's --max-open applies).
    #[arg(long, value_parser = quorum_hub::config::parse_duration)]
    close_after: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
struct McpArgs {
    #[command(flatten)]
    connection: Connection,
    /// The instance to register and vote as (the agent's own name).
    #[arg(long)]
    instance: String,
    /// Roles to register with (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
}

#[derive(Debug, Args)]
struct WebhooksArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Add an endpoint; prints its id and its secret (shown only now).
    Add {
        /// Where deliveries are POSTed (http:// or https://).
        endpoint: String,
        /// Event patterns it gets (repeatable; default both decision events).
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the endpoints with their state, last attempt and waiting deliveries.
    List,
    /// Remove an endpoint.
    Remove { id: String },
    /// An endpoint's attempt log, newest first.
    Deliveries {
        id: String,
        #[arg(long)]
        limit: Option<u64>,
        /// List the attempts older than this one (`next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Also print the decisions made or expired after this event id (resume).
    #[arg(long, value_parser = clap::value_parser!(EventId))]
    since: Option<EventId>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Token(args)) => {
            return report(Authority::new(&args.auth_secret).and_then(|a| {
                if args.admin {
                    a.mint_admin(args.ttl)
                } else {
                    a.mint_with_roles(args.sub.as_deref(), args.observer, &args.roles, args.ttl)
                }
            }));
        }
        Some(Command::Openrpc) => {
            println!("{}", quorum_hub::protocol::openrpc::document_text());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.command.is_some() {
            "warn"
        } else {
            "info"
        })
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    // Under `mcp`, stdout carries the protocol.
    let logs = logs.with_writer(if matches!(cli.command, Some(Command::Mcp(_))) {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    });
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
            let mut config = client_config(&args.connection, Some(args.instance.clone()), None);
            config.roles = args.roles.clone();
            let params = quorum_hub::protocol::VoteParams {
                instance_id: &args.instance,
                decision: &args.decision,
                value: &args.value,
                total_instances: args.total,
                close_after_ms: args.close_after.map(|d| d.as_millis() as u64),
            };
            let reply = runtime.block_on(tools::vote(config, &params));
            report(reply.map(|reply| serde_json::to_string(&reply).unwrap_or_default()))
        }
        Some(Command::Watch(args)) => {
            let config = client_config(&args.connection, None, args.since);
            report(
                runtime
                    .block_on(tools::watch(
                        config,
                        std::io::stdout().lock(),
                        std::io::stderr(),
                    ))
                    .map(|()| String::new()),
            )
        }
        Some(Command::Webhooks(args)) => {
            let config = client_config(&args.connection, None, None);
            let command = match args.command {
                WebhooksCommand::Add {
                    endpoint,
                    events,
                    description,
                } => tools::WebhookCommand::Add {
                    url: endpoint,
                    events,
                    description,
                },
                WebhooksCommand::List => tools::WebhookCommand::List,
                WebhooksCommand::Remove { id } => tools::WebhookCommand::Remove { id },
                WebhooksCommand::Deliveries { id, limit, after } => {
                    tools::WebhookCommand::Deliveries { id, limit, after }
                }
            };
            report(runtime.block_on(tools::webhooks(config, command)))
        }
        Some(Command::Mcp(args)) => {
            let mut config = client_config(&args.connection, Some(args.instance.clone()), None);
            config.roles = args.roles;
            report(
                runtime
                    .block_on(quorum_hub::mcp::serve(config))
                    .map(|()| String::new()),
            )
        }
        Some(Command::Token(_) | Command::Openrpc) => unreachable!("handled above"),
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
    since: Option<EventId>,
) -> ClientConfig {
    ClientConfig {
        url: connection.url.clone(),
        instance,
        roles: Vec::new(),
        token: match (&connection.token, &connection.token_file) {
            (Some(token), _) => Some(TokenSource::Static(token.clone())),
            (None, Some(path)) => Some(TokenSource::File(path.clone())),
            (None, None) => None,
        },
        since,
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = quorum_hub::server::bind(config.listen)
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
