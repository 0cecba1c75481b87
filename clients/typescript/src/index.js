// quorum-hub's client for Node 20+ and browsers: see clients/typescript/README.md.

export {
  Client,
  DECISION_EXPIRED,
  DECISION_MADE,
  EVENT_BUFFER,
  EVENTS_INCOMPLETE,
  INSTANCE_LOST,
  REFRESH_AT_LIFETIME,
  REFRESH_RETRY_MS,
  backoffDelay,
  compareEventIds,
  parseEventId,
  tokenExpiryMs,
} from './client.js';
export {
  BackendUnavailable,
  CircuitOpen,
  ClientClosed,
  ConnectionLost,
  DecisionNotFound,
  InternalError,
  InvalidParams,
  InvalidRequest,
  MethodNotFound,
  NotRun,
  ParseError,
  QuorumHubError,
  RateLimited,
  RpcError,
  Unauthorized,
  rpcError,
} from './errors.js';
