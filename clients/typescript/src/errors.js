// Errors raised by the quorum-hub client. Every JSON-RPC error the hub answers becomes an
// RpcError subclass chosen by its code (see the hub's docs/protocol.md, "Errors"), carrying
// code, message and data.

/** Base class of every error this package raises. */
export class QuorumHubError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The hub could not be reached: the connection dropped while a call was in flight (the
 * call may or may not have run; a vote may be repeated safely, the hub answers
 * `already_voted`), or the client stayed disconnected longer than `reconnectWaitMs`.
 */
export class ConnectionLost extends QuorumHubError {}

/** The client was closed. */
export class ClientClosed extends ConnectionLost {}

/** A JSON-RPC error answered by the hub. */
export class RpcError extends QuorumHubError {
  constructor(code, message, data) {
    super(`${message} (code ${code})${data === undefined || data === null ? '' : `: ${JSON.stringify(data)}`}`);
    this.code = code;
    this.rpcMessage = message;
    this.data = data ?? null;
  }

  /** `data.reason` when the hub gave one. */
  get reason() {
    const reason = this.data?.reason;
    return typeof reason === 'string' ? reason : null;
  }
}

/** -32700: the frame was not JSON. */
export class ParseError extends RpcError {}
/** -32600: not JSON-RPC 2.0, or a method not available here (system.auth.refresh without a secret). */
export class InvalidRequest extends RpcError {}
/** -32601. */
export class MethodNotFound extends RpcError {}
/** -32602: `field` names the offending parameter. */
export class InvalidParams extends RpcError {
  get field() {
    const field = this.data?.field;
    return typeof field === 'string' ? field : null;
  }
}
/** -32603: details are in the hub's log. */
export class InternalError extends RpcError {}

/** -32000: too many votes for this instance, or too many calls on this session. */
export class RateLimited extends RpcError {
  /** `data.retryAfterMs`: when to try again, in milliseconds. */
  get retryAfterMs() {
    const value = this.data?.retryAfterMs;
    return Number.isInteger(value) ? value : null;
  }
}
/** -32001: the hub's circuit breaker is open; Redis is not being called. */
export class CircuitOpen extends RpcError {
  get retryAfterMs() {
    const value = this.data?.retryAfterMs;
    return Number.isInteger(value) ? value : null;
  }
}
/** -32002: not registered, another session's instance, bound elsewhere, or a token refused. */
export class Unauthorized extends RpcError {}
/** -32003: the call was not run (its batch's replies were full); send it again. */
export class NotRun extends RpcError {}
/** -32004: no such decision (no votes, or past its retention), or no such webhook endpoint. */
export class DecisionNotFound extends RpcError {}
/** -32005: Redis could not be reached or did not finish in time (`reason`: `timeout`, `replication`); retrying is safe. */
export class BackendUnavailable extends RpcError {}

const BY_CODE = new Map([
  [-32700, ParseError],
  [-32600, InvalidRequest],
  [-32601, MethodNotFound],
  [-32602, InvalidParams],
  [-32603, InternalError],
  [-32000, RateLimited],
  [-32001, CircuitOpen],
  [-32002, Unauthorized],
  [-32003, NotRun],
  [-32004, DecisionNotFound],
  [-32005, BackendUnavailable],
]);

/** The error for a JSON-RPC `error` member. */
export function rpcError(error) {
  if (error === null || typeof error !== 'object') {
    return new InternalError(-32603, `malformed error from the hub: ${JSON.stringify(error)}`, null);
  }
  const code = Number.isInteger(error.code) ? error.code : -32603;
  const message = typeof error.message === 'string' ? error.message : '';
  const Kind = BY_CODE.get(code) ?? RpcError;
  return new Kind(code, message, error.data);
}
