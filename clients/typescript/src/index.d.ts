// Type declarations of quorum-hub's client (src/index.js). The wire types come from
// protocol.d.ts, generated from the hub's OpenRPC document, so a protocol change the
// client misses fails the type check.

import type { Methods, Notifications } from './protocol.js';

export type * from './protocol.js';

/** A method's params, as the OpenRPC document declares them. */
export type ParamsOf<M extends keyof Methods> = Methods[M]['params'];
/** A method's result, as the OpenRPC document declares it. */
export type ResultOf<M extends keyof Methods> = Methods[M]['result'];

/** A token, or a function (plain or async) returning the current one. */
export type TokenSource = string | (() => string | Promise<string>);

/** What `decisions()` yields: a notification's params plus `event`, its method. */
export type ClientEvent = {
  [K in keyof Notifications]: Notifications[K] & { event: K };
}[keyof Notifications];

/** A decision made or expired, as `decisions()` yields it. */
export type DecisionEventOf<K extends 'quorum.decision.made' | 'quorum.decision.expired'> = Extract<ClientEvent, { event: K }>;

/** The client's connection state, as `onStateChange` reports it. */
export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A WebSocket class: the browser's, Node's global one, or the `ws` package's. */
export type WebSocketClass = new (url: string, options?: unknown) => unknown;

export interface ClientOptions {
  /** Registered at every connection when given; needed to vote. */
  instanceId?: string | null;
  /** On a hub with `--auth-secret`: a token, or a function returning one (called at every connection and before the token held expires). */
  token?: TokenSource | null;
  /** Sent with `system.register`. */
  roles?: ParamsOf<'system.register'>['roles'] | null;
  /** Sent with `system.register`. */
  metadata?: ParamsOf<'system.register'>['metadata'];
  /** An event id to resume after on the first connection. */
  since?: string | null;
  /** Send the token as `?token=` rather than an `Authorization` header (default: in the query where the WebSocket cannot send headers, i.e. a browser's). */
  tokenInQuery?: boolean | null;
  /** How long a call made while disconnected waits for the client to reconnect (ms, default 10,000). */
  reconnectWaitMs?: number;
  /** How long a call waits for its reply (ms, default 30,000). */
  callTimeoutMs?: number;
  /** The first reconnection window (ms, default 1,000); it doubles after each failed attempt. */
  minBackoffMs?: number;
  /** The largest reconnection window (ms, default 5,000). */
  maxBackoffMs?: number;
  /** Bound on one connection attempt (ms, default 10,000). */
  openTimeoutMs?: number;
  /** How often to ping the hub where the WebSocket can (the `ws` package); an unanswered ping ends the connection (ms, default `PING_INTERVAL_MS`, 20,000; 0: never). */
  pingIntervalMs?: number;
  /** Events held for `decisions()` (default `EVENT_BUFFER`). */
  eventBuffer?: number;
  /** The WebSocket class (default: globalThis.WebSocket, else the `ws` package). */
  WebSocket?: WebSocketClass | null;
  /** Called with each new connection state. */
  onStateChange?: ((state: ConnectionState) => void) | null;
  /** Called after each connection is registered and re-subscribed (the first and every reconnection). */
  onConnect?: ((client: Client) => void) | null;
}

/** The options of `vote`, fixed by the vote that opens a decision. */
export type VoteOptions = Pick<ParamsOf<'system.quorum.vote'>, 'totalInstances' | 'closeAfterMs'>;

/** A page of `getState`. */
export type StatePage = ParamsOf<'system.get_state'>;

export declare const DECISION_MADE: 'quorum.decision.made';
export declare const DECISION_EXPIRED: 'quorum.decision.expired';
export declare const EVENTS_INCOMPLETE: 'system.events.incomplete';
export declare const INSTANCE_LOST: 'system.instance.lost';
/** Events held for a consumer that is not reading `decisions()`. */
export declare const EVENT_BUFFER: number;
/** How often the client pings the hub where its WebSocket can (ms). */
export declare const PING_INTERVAL_MS: number;
export declare const REFRESH_AT_LIFETIME: number;
export declare const REFRESH_RETRY_MS: number;

/** `"1795769599264-0"` -> `[1795769599264n, 0n]`; null if it is not an event id. */
export declare function parseEventId(value: unknown): [bigint, bigint] | null;
/** Compares two parsed event ids as Redis orders them. */
export declare function compareEventIds(a: [bigint, bigint], b: [bigint, bigint]): number;
/** The `exp` a JWT claims, in ms since the Unix epoch (unverified); null when it has none. */
export declare function tokenExpiryMs(token: string): number | null;
/** The pause before reconnection attempt `attempt`: random within `min(maxMs, minMs * 2**attempt)`. */
export declare function backoffDelay(attempt: number, minMs: number, maxMs: number, random?: () => number): number;

export declare class Client {
  constructor(url: string, options?: ClientOptions);
  /** Creates a client and connects it. */
  static connect(url: string, options?: ClientOptions): Promise<Client>;
  readonly url: string;
  readonly instanceId: string | null;
  reconnectWaitMs: number;
  callTimeoutMs: number;
  minBackoffMs: number;
  maxBackoffMs: number;
  openTimeoutMs: number;
  pingIntervalMs: number;
  readonly eventBuffer: number;
  /** Why the last connection ended or the last attempt failed. */
  readonly lastError: string | null;
  /** How many times the client has connected. */
  readonly connections: number;
  readonly connected: boolean;
  readonly state: ConnectionState;
  /** The newest decision event `decisions()` has yielded: persist it, pass it back as `since`. */
  readonly lastEventId: string | null;
  /** When the session's token expires (ms since the Unix epoch). */
  readonly tokenExpiresAt: number | null;
  /** Events waiting in the queue for `decisions()`. */
  readonly queued: number;

  /** Opens the first connection and registers; then keeps the session going until `close`. */
  connect(): Promise<void>;
  /** Closes the session: pending calls reject with `ClientClosed`; `decisions()` ends once drained. */
  close(): void;

  /** Any JSON-RPC call. */
  call<M extends keyof Methods>(method: M, params?: ParamsOf<M>): Promise<ResultOf<M>>;
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  register(): Promise<ResultOf<'system.register'>>;
  vote(decision: string, value: string, options?: VoteOptions): Promise<ResultOf<'system.quorum.vote'>>;
  status(decision: string): Promise<ResultOf<'system.quorum.status'>>;
  getState(page?: StatePage): Promise<ResultOf<'system.get_state'>>;
  heartbeat(): Promise<ResultOf<'system.heartbeat'>>;
  subscribe(events: Iterable<string>, since?: string | null): Promise<ResultOf<'system.subscribe'>>;
  unsubscribe(events: Iterable<string>): Promise<ResultOf<'system.unsubscribe'>>;
  refreshToken(token?: string | null): Promise<ResultOf<'system.auth.refresh'>>;
  /** Every event the hub pushes, in order; decision events once each across reconnections. */
  decisions(): AsyncIterableIterator<ClientEvent>;
}

export declare class QuorumHubError extends Error {}
export declare class ConnectionLost extends QuorumHubError {}
export declare class ClientClosed extends ConnectionLost {}
export declare class RpcError extends QuorumHubError {
  constructor(code: number, message: string, data?: unknown);
  readonly code: number;
  /** The hub's message (`message` adds the code and data). */
  readonly rpcMessage: string;
  readonly data: unknown;
  /** `data.reason` when the hub gave one. */
  readonly reason: string | null;
}
export declare class ParseError extends RpcError {}
export declare class InvalidRequest extends RpcError {}
export declare class MethodNotFound extends RpcError {}
export declare class InvalidParams extends RpcError {
  /** `data.field`: the parameter refused. */
  readonly field: string | null;
}
export declare class InternalError extends RpcError {}
export declare class RateLimited extends RpcError {
  /** `data.retryAfterMs`: when to try again. */
  readonly retryAfterMs: number | null;
}
export declare class CircuitOpen extends RpcError {
  readonly retryAfterMs: number | null;
}
export declare class Unauthorized extends RpcError {}
export declare class NotRun extends RpcError {}
export declare class DecisionNotFound extends RpcError {}
export declare class BackendUnavailable extends RpcError {}
/** The error for a JSON-RPC `error` member. */
export declare function rpcError(error: unknown): RpcError;
