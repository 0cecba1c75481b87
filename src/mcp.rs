//! `quorum-hub mcp`: the hub as a Model Context Protocol server over stdio, so that an LLM
//! agent can vote, read a decision and wait for it with the tools and resources its host
//! already speaks. One [`Client`] session to the hub (registered as the agent's instance,
//! reconnecting and resuming as the client does) serves every tool call; the decision
//! events it passes on wake waiting calls and subscribed resources. stdout carries the
//! protocol only: logs go to stderr.

mod closings;
mod reply;
mod resources;
mod tools;
mod wait;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use crate::client::{Client, ClientConfig};
use closings::Closings;

/// What the server tells its host about itself when the session starts.
const INSTRUCTIONS: &str = "Vote on named decisions shared with other agents through a \
quorum-hub. quorum_vote casts this agent's vote (the first vote opens the decision and may \
set totalInstances and a deadline); quorum_wait blocks until the decision is made or \
expires; quorum_status and the resource quorum://decision/{name} show its tally; \
quorum_decisions lists recent decisions. A decision is made when a majority of \
totalInstances voted; the value with the most votes wins.";

/// The MCP server: the hub session and what watches its events.
#[derive(Clone)]
struct QuorumServer {
    client: Client,
    /// The instance this server registered as and votes as.
    instance: Arc<str>,
    closings: Arc<Closings>,
}

/// Connects to the hub as `config.instance`, then serves MCP on stdin and stdout until the
/// host closes them.
pub async fn serve(config: ClientConfig) -> Result<(), String> {
    let instance: Arc<str> = config
        .instance
        .as_deref()
        .ok_or("an instance to vote as is needed")?
        .into();
    let (client, events) = Client::connect(config)
        .await
        .map_err(|e| format!("cannot connect to the hub: {e}"))?;
    let closings = Closings::follow(events, client.link());
    let server = QuorumServer {
        client,
        instance,
        closings,
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP session did not start: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP session failed: {e}"))?;
    Ok(())
}

impl ServerHandler for QuorumServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("quorum-hub", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    /// The revisions with the `initialize` handshake, whose `resources/subscribe` and
    /// `notifications/resources/updated` this server implements.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = tools::call(self, &request.name, request.arguments, &context).await?;
        Ok(CallToolResponse::Complete(result))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.client).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            resources::template(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(resources::read(&self.client, &request.uri).await?.into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let decision = resources::decision_of(&request.uri)?;
        self.closings.subscribe(decision, context.peer);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let decision = resources::decision_of(&request.uri)?;
        self.closings.unsubscribe(&decision);
        Ok(())
    }
}
