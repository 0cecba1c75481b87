//! The MCP tools: `quorum_vote`, `quorum_status`, `quorum_wait` and `quorum_decisions`,
//! their arguments (JSON Schemas an LLM reads) and their results. A hub's error comes back
//! as a tool error (`isError`) holding its JSON-RPC `code`, `message` and `data`.

use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::QuorumServer;
use super::reply::answer;
use super::wait::{self, WaitArgs};
use crate::decision::{
    MAX_CLOSE_AFTER_MS, MAX_DECISION_LEN, MAX_TOTAL_INSTANCES, MAX_VALUE_LEN, MIN_CLOSE_AFTER_MS,
};
use crate::protocol::{State, StateParams, VoteParams, method, pattern};

/// Decisions `quorum_decisions` lists when no `limit` is given.
const DEFAULT_DECISIONS_LISTED: u64 = 20;
/// Most decisions `quorum_decisions` lists.
const MAX_DECISIONS_LISTED: u64 = 100;

const VOTE: &str = "quorum_vote";
const STATUS: &str = "quorum_status";
const WAIT: &str = "quorum_wait";
const DECISIONS: &str = "quorum_decisions";

/// Arguments of `quorum_vote`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct VoteArgs {
    /// The decision's name, shared by every agent voting on it (no whitespace or braces),
    /// e.g. "deploy-v42". The first vote opens it.
    #[schemars(length(min = 1, max = MAX_DECISION_LEN), regex(pattern = pattern::NAME))]
    decision: String,
    /// The value this agent votes for, e.g. "approve". The value with the most votes when
    /// a majority of totalInstances has voted wins.
    #[schemars(length(min = 1, max = MAX_VALUE_LEN), regex(pattern = pattern::VALUE))]
    value: String,
    /// How many agents are expected to vote (default 3); the decision is made when more
    /// than half of them voted. Only the vote that opens the decision sets it; later votes
    /// may leave it out or state the same number.
    #[schemars(range(min = 1, max = MAX_TOTAL_INSTANCES))]
    total_instances: Option<u64>,
    /// The decision's deadline in milliseconds from its first vote; without quorum by
    /// then it expires. Only the vote that opens the decision sets it (default: the hub's
    /// longest).
    #[schemars(range(min = MIN_CLOSE_AFTER_MS, max = MAX_CLOSE_AFTER_MS))]
    close_after_ms: Option<u64>,
}

/// Arguments of `quorum_status`.
#[derive(Debug, Deserialize, JsonSchema)]
struct StatusArgs {
    /// The decision's name.
    #[schemars(length(min = 1, max = MAX_DECISION_LEN), regex(pattern = pattern::NAME))]
    decision: String,
}

/// Arguments of `quorum_decisions`.
#[derive(Debug, Deserialize, JsonSchema)]
struct DecisionsArgs {
    /// How many of the most recent decisions to list (default 20).
    #[schemars(range(min = 1, max = MAX_DECISIONS_LISTED))]
    limit: Option<u64>,
}

/// The tools, with their descriptions and input schemas.
pub(super) fn list() -> Vec<Tool> {
    let empty = || std::sync::Arc::new(JsonObject::new());
    vec![
        Tool::new(
            VOTE,
            "Cast this agent's vote on a named decision shared with other agents. The first \
             vote opens the decision (and may set totalInstances and closeAfterMs); each agent \
             votes once (a repeated vote answers reason \"already_voted\" with the value \
             recorded). Returns voted, quorumReached, and finalDecision once a majority of \
             totalInstances has voted. To learn the outcome later, call quorum_wait.",
            empty(),
        )
        .with_input_schema::<VoteArgs>()
        // A repeated vote changes nothing: it answers with the value recorded.
        .annotate(ToolAnnotations::new().destructive(false).idempotent(true)),
        Tool::new(
            STATUS,
            "The current status of a decision: state (open, decided or expired), tally per \
             value, votes, voteCount, quorum (votes needed), totalInstances, finalDecision \
             once decided, closesAt (deadline, ms since the epoch).",
            empty(),
        )
        .with_input_schema::<StatusArgs>()
        .annotate(ToolAnnotations::new().read_only(true)),
        Tool::new(
            WAIT,
            "Wait until a decision is decided or expires, then return its status. Returns at \
             once if it already is; otherwise as soon as it closes, or after timeoutMs with \
             its current status and timedOut true (the decision may still be open: wait \
             again). Result: {timedOut, status}.",
            empty(),
        )
        .with_input_schema::<WaitArgs>()
        .annotate(ToolAnnotations::new().read_only(true)),
        Tool::new(
            DECISIONS,
            "The most recent decisions, newest first, each with its state, voteCount, quorum, \
             totalInstances and finalDecision once decided.",
            empty(),
        )
        .with_input_schema::<DecisionsArgs>()
        .annotate(ToolAnnotations::new().read_only(true)),
    ]
}

/// Runs one tool call. A tool that does not exist is a protocol error; anything the hub
/// or the arguments got wrong is a tool error the model can read.
pub(super) async fn call(
    server: &QuorumServer,
    name: &str,
    arguments: Option<JsonObject>,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let arguments = Value::Object(arguments.unwrap_or_default());
    Ok(match name {
        VOTE => match parse::<VoteArgs>(arguments) {
            Ok(args) => {
                let params = VoteParams {
                    instance_id: &server.instance,
                    decision: &args.decision,
                    value: &args.value,
                    total_instances: args.total_instances,
                    close_after_ms: args.close_after_ms,
                };
                answer(server.client.vote_with(&params).await)
            }
            Err(err) => invalid(&err),
        },
        STATUS => match parse::<StatusArgs>(arguments) {
            Ok(args) => answer(server.client.status(&args.decision).await),
            Err(err) => invalid(&err),
        },
        WAIT => match parse::<WaitArgs>(arguments) {
            Ok(args) => wait::until_closed(server, &args, context).await,
            Err(err) => invalid(&err),
        },
        DECISIONS => match parse::<DecisionsArgs>(arguments) {
            Ok(args) => {
                let params = StateParams {
                    limit: Some(
                        args.limit
                            .unwrap_or(DEFAULT_DECISIONS_LISTED)
                            .clamp(1, MAX_DECISIONS_LISTED),
                    ),
                    ..StateParams::default()
                };
                let state = server
                    .client
                    .call::<State>(method::GET_STATE, &params)
                    .await;
                answer(state.map(|state| json!({"decisions": state.decisions})))
            }
            Err(err) => invalid(&err),
        },
        other => {
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool named {other}; the tools are {VOTE}, {STATUS}, {WAIT}, {DECISIONS}"
                ),
                None,
            ));
        }
    })
}

/// A tool's arguments, read by the type that describes them.
fn parse<T: DeserializeOwned>(arguments: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(arguments)
}

/// The tool error that says what is wrong with the arguments.
fn invalid(err: &serde_json::Error) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "code": INVALID_ARGUMENTS,
        "message": format!("invalid arguments: {err}"),
    }))
}

/// The JSON-RPC code for invalid params, as the hub also uses it.
const INVALID_ARGUMENTS: i64 = -32602;
