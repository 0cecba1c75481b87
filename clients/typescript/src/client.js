// An agent's client for quorum-hub: one WebSocket that survives drops.
//
// The client connects, registers its instance, and keeps the session alive (the hub pings
// it and refreshes the registration while the session is open). When the socket drops it
// reconnects after a pause drawn at random within a doubling window ("full jitter"),
// registers again, re-subscribes, and resumes with `?lastEventId=` after the last decision
// event it queued, so `decisions()` yields every decision made or expired exactly once and
// in order. With a token function it fetches a fresh token at every connection, and before
// the token it holds expires it extends the session with `system.auth.refresh`.
//
// Plain ES module: it runs in browsers (the page's WebSocket) and in Node 20 or newer
// (globalThis.WebSocket when the runtime has one, else the `ws` package).

import { ClientClosed, ConnectionLost, InvalidRequest, RpcError, rpcError } from './errors.js';

export const DECISION_MADE = 'quorum.decision.made';
export const DECISION_EXPIRED = 'quorum.decision.expired';
export const EVENTS_INCOMPLETE = 'system.events.incomplete';
export const INSTANCE_LOST = 'system.instance.lost';

/**
 * Events the client holds for a consumer that is not reading `decisions()` (the Rust and
 * Python clients' bound). An event that finds the queue full makes the client leave the
 * session; it resumes after the last event it queued once the consumer has taken one.
 */
export const EVENT_BUFFER = 1024;

/**
 * How often the client pings the hub where its WebSocket can (the `ws` package; a browser's
 * cannot, and answers the hub's own pings by itself); a ping unanswered by the next one
 * ends the connection, so a hub that stopped answering is left for another (ms).
 */
export const PING_INTERVAL_MS = 20_000;

/** Share of a token's remaining lifetime after which the client asks for a newer one. */
export const REFRESH_AT_LIFETIME = 0.8;
/** Pause before asking the token function again when it had nothing newer or failed (ms). */
export const REFRESH_RETRY_MS = 1000;

const EVENT_ID = /^(\d+)-(\d+)$/;
// After these notices the events that follow continue from `since`, even where their ids
// are below ones already passed on (the hub's log went back, or the cursor was not its own).
const CURSOR_MOVES = new Set(['ahead', 'malformed', 'rewound']);
// The hub could not read Redis to replay what the client missed: resume again later.
const UNREADABLE = 'unreadable';
// WebSocket.OPEN, the same in every implementation.
const OPEN = 1;

/** `"1795769599264-0"` -> `[1795769599264n, 0n]`; null if it is not an event id. */
export function parseEventId(value) {
  if (typeof value !== 'string') return null;
  const match = EVENT_ID.exec(value);
  return match ? [BigInt(match[1]), BigInt(match[2])] : null;
}

/** Compares two parsed event ids as Redis orders stream ids: negative, zero or positive. */
export function compareEventIds(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return 0;
}

/**
 * The `exp` a JWT claims, in ms since the Unix epoch, read without checking its signature
 * (to decide when to fetch a newer token, never to trust one); null when the token is not a
 * JWT with a numeric `exp`.
 */
export function tokenExpiryMs(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)));
    const exp = claims?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? Math.trunc(exp * 1000) : null;
  } catch {
    return null;
  }
}

/**
 * The pause before reconnection attempt `attempt` (0 for the first after a drop): a random
 * time between 0 and a window of `minMs * 2**attempt`, capped at `maxMs` ("full jitter"),
 * so that a fleet dropped at once comes back spread out rather than in one burst.
 */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const window = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 60));
  return random() * window;
}

class NotSent extends Error {}

/** A quorum-hub session that reconnects by itself. See the package's README. */
export class Client {
  /**
   * @param {string} url the hub's WebSocket URL (`ws://host:port/ws`)
   * @param {object} [options] see index.d.ts, `ClientOptions`
   */
  constructor(url, options = {}) {
    const {
      instanceId = null,
      token = null,
      roles = null,
      metadata = null,
      since = null,
      tokenInQuery = null,
      reconnectWaitMs = 10_000,
      callTimeoutMs = 30_000,
      minBackoffMs = 1000,
      maxBackoffMs = 5000,
      openTimeoutMs = 10_000,
      pingIntervalMs = PING_INTERVAL_MS,
      eventBuffer = EVENT_BUFFER,
      WebSocket: webSocket = null,
      onStateChange = null,
      onConnect = null,
    } = options;
    if (!(minBackoffMs > 0 && maxBackoffMs >= minBackoffMs)) {
      throw new RangeError('backoff bounds need 0 < minBackoffMs <= maxBackoffMs');
    }
    if (!(Number.isInteger(eventBuffer) && eventBuffer > 0)) {
      throw new RangeError('eventBuffer must be a positive integer');
    }
    if (token !== null && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('token must be a string or a function returning one');
    }
    this.url = url;
    this.instanceId = instanceId;
    this.roles = roles === null ? null : [...roles];
    this.metadata = metadata === null ? null : { ...metadata };
    this.reconnectWaitMs = reconnectWaitMs;
    this.callTimeoutMs = callTimeoutMs;
    this.minBackoffMs = minBackoffMs;
    this.maxBackoffMs = maxBackoffMs;
    this.openTimeoutMs = openTimeoutMs;
    this.pingIntervalMs = pingIntervalMs;
    this.eventBuffer = eventBuffer;
    this.#source = token;
    this.#tokenInQuery = tokenInQuery;
    this.#WebSocket = webSocket;
    this.#onStateChange = onStateChange;
    this.#onConnect = onConnect;
    if (since !== null) {
      const pair = parseEventId(since);
      if (pair === null) throw new RangeError(`since ${JSON.stringify(since)} is not an event id (<ms>-<seq>)`);
      this.#cursor = since;
      this.#cursorPair = pair;
      this.#yielded = since;
    }
    /** Why the last connection ended or the last attempt failed, for error messages. */
    this.lastError = null;
    /** How many times the client has connected (1 after the first connection). */
    this.connections = 0;
  }

  // The resume cursor: the newest decision event (made or expired) queued, as text and as a
  // pair. Everything queued reaches decisions(), so a resume after it misses nothing and
  // repeats nothing.
  #cursor = null;
  #cursorPair = null;
  // Before any decision event was queued: where the event log stood when the client first
  // connected (the hub's last delivered event), so that a reconnection still resumes and
  // gets the decisions made while it was away. Not used to drop repeats.
  #floor = null;
  // The newest decision event decisions() has yielded (what an agent persists).
  #yielded = null;

  #source;
  #tokenInQuery;
  #WebSocket;
  #onStateChange;
  #onConnect;
  // The token the session runs on, its expiry (ms), and when to ask for a newer one (ms).
  #held = null;
  #heldExp = null;
  #refreshDue = null;

  #ws = null;
  #connected = false;
  #connectedWaiters = new Set();
  #connectionEnded = null;
  #endConnection = () => {};
  #openedAt = 0;
  #started = false;
  #closed = false;
  #nextId = 1;
  #pending = new Map();
  #queue = [];
  #consumers = [];
  // Why the client left its last session by itself: 'full' (an event found the queue full:
  // it waits for room before reconnecting) or 'unreadable'.
  #leftFor = null;
  #roomWaiters = [];
  #subscriptions = [];
  #timers = new Set();
  #state = 'idle';

  // ---------------------------------------------------------------- lifecycle

  /** Creates a client and connects it (see `connect`). */
  static async connect(url, options) {
    const client = new Client(url, options);
    await client.connect();
    return client;
  }

  /**
   * Opens the first connection and registers; rejects if either fails (ConnectionLost when
   * the hub cannot be reached or refuses the token, Unauthorized when the instance is held
   * by another session). Then keeps the session going in the background until `close`.
   */
  async connect() {
    if (this.#started) throw new Error('the client is already connected');
    if (this.#closed) throw new ClientClosed('the client is closed');
    this.#started = true;
    this.#setState('connecting');
    try {
      await this.#open();
    } catch (error) {
      this.#started = false;
      this.#setState('idle');
      throw error;
    }
    this.#supervise();
  }

  /**
   * Closes the session; pending calls reject with ClientClosed and `decisions()` ends once
   * the events already queued are consumed.
   */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#dropConnection(new ClientClosed('the client was closed'));
    this.#setState('closed');
    this.#wake(this.#consumers);
    this.#wake(this.#connectedWaiters);
    this.#wake(this.#roomWaiters);
  }

  /** Whether the client is connected (and registered, when it has an instance). */
  get connected() {
    return this.#connected;
  }

  /** `idle`, `connecting`, `connected`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /**
   * The id of the newest decision event `decisions()` has yielded: persist it and pass it
   * back as `since` when the agent restarts.
   */
  get lastEventId() {
    return this.#yielded;
  }

  /** When the session's token expires (ms since the Unix epoch); null without a token. */
  get tokenExpiresAt() {
    return this.#heldExp;
  }

  /** How many events wait in the queue for `decisions()`. */
  get queued() {
    return this.#queue.length;
  }

  // ---------------------------------------------------------------- methods

  /**
   * Sends any JSON-RPC call and resolves with its result. While disconnected, waits up to
   * `reconnectWaitMs` for the client to reconnect, then rejects with ConnectionLost (saying
   * why the last attempt failed); a call in flight when the connection drops rejects at once
   * (it may or may not have run).
   */
  async call(method, params) {
    const deadline = Date.now() + this.reconnectWaitMs;
    for (;;) {
      if (this.#closed) throw new ClientClosed('the client is closed');
      if (!this.#connected) {
        const remaining = deadline - Date.now();
        if (remaining <= 0 || !(await this.#waitConnected(remaining))) {
          if (this.#closed) throw new ClientClosed('the client is closed');
          const why = this.lastError ? ` (last: ${this.lastError})` : '';
          throw new ConnectionLost(
            `${method}: not connected to ${this.url} after ${this.reconnectWaitMs / 1000} s${why}`,
          );
        }
        continue;
      }
      const ws = this.#ws;
      try {
        return await this.#callOn(ws, method, params);
      } catch (error) {
        if (!(error instanceof NotSent)) throw error;
        // The connection went away before the request left: nothing ran. Wait for the
        // next connection like any call made while disconnected.
        if (this.#ws === ws) this.#connected = false;
      }
    }
  }

  /** Registers the instance again (the client does so at every connection). */
  register() {
    this.#needInstance('register');
    return this.call('system.register', this.#registerParams());
  }

  /**
   * Votes `value` on `decision` as this client's instance. `totalInstances` and
   * `closeAfterMs` (a deadline) are fixed by the vote that opens the decision.
   */
  vote(decision, value, options = {}) {
    this.#needInstance('vote');
    const params = { instanceId: this.instanceId, decision, value };
    if (options.totalInstances !== undefined && options.totalInstances !== null) params.totalInstances = options.totalInstances;
    if (options.closeAfterMs !== undefined && options.closeAfterMs !== null) params.closeAfterMs = options.closeAfterMs;
    return this.call('system.quorum.vote', params);
  }

  /** `system.quorum.status`: the decision's tally and audit trail. */
  status(decision) {
    return this.call('system.quorum.status', { decision });
  }

  /** `system.get_state`: a page of instances and of decisions, and the hub's own state. */
  getState(page = {}) {
    const params = {};
    for (const key of ['limit', 'instancesAfter', 'decisionsAfter']) {
      if (page[key] !== undefined && page[key] !== null) params[key] = page[key];
    }
    for (const key of Object.keys(page)) {
      if (!(key in params) && page[key] !== undefined && page[key] !== null) params[key] = page[key];
    }
    return this.call('system.get_state', params);
  }

  /** `system.heartbeat` for this client's instance. */
  heartbeat() {
    this.#needInstance('heartbeat');
    return this.call('system.heartbeat', { instanceId: this.instanceId });
  }

  /**
   * `system.subscribe`: also receive these events (exact names or `prefix.*`) through
   * `decisions()`. The client subscribes again after every reconnection.
   */
  async subscribe(events, since) {
    const list = [...events];
    const params = { events: list };
    if (since !== undefined && since !== null) params.since = since;
    const result = await this.call('system.subscribe', params);
    for (const pattern of list) if (!this.#subscriptions.includes(pattern)) this.#subscriptions.push(pattern);
    return result;
  }

  /** `system.unsubscribe`. */
  async unsubscribe(events) {
    const list = [...events];
    const result = await this.call('system.unsubscribe', { events: list });
    this.#subscriptions = this.#subscriptions.filter((pattern) => !list.includes(pattern));
    return result;
  }

  /**
   * `system.auth.refresh`: extends the session with a newer token for the same instance
   * (without `token`, one from the token function). Resolves with `{expiresAt}`. The newer
   * token is also the one used at the next connection (a token function is asked again then).
   */
  async refreshToken(token) {
    if (token === undefined || token === null) {
      if (typeof this.#source !== 'function') throw new TypeError('refreshToken() needs a token, or a client with a token function');
      token = await this.#fetchToken();
    }
    const result = await this.call('system.auth.refresh', { token });
    this.#adopt(token, result);
    if (typeof this.#source !== 'function' && this.#held === token) this.#source = token;
    return result;
  }

  /**
   * Every event the hub pushes, in order, as the notification's params plus `event`, its
   * method: decisions made and expired (once each, across reconnections), the notices
   * `system.events.incomplete` and `system.instance.lost`, and subscribed events. Events are
   * queued from the moment the client connects. Meant for one consumer; ends when the client
   * is closed and the queue is empty.
   */
  decisions() {
    const next = () => this.#next();
    return {
      next,
      return: async () => ({ done: true, value: undefined }),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  // ---------------------------------------------------------------- events

  async #next() {
    for (;;) {
      if (this.#queue.length > 0) {
        const event = this.#queue.shift();
        if ((event.event === DECISION_MADE || event.event === DECISION_EXPIRED) && parseEventId(event.eventId)) {
          this.#yielded = event.eventId;
        } else if (event.event === EVENTS_INCOMPLETE && CURSOR_MOVES.has(event.reason) && parseEventId(event.since)) {
          this.#yielded = event.since;
        }
        this.#wake(this.#roomWaiters);
        return { done: false, value: event };
      }
      if (this.#closed) return { done: true, value: undefined };
      await new Promise((resolve) => this.#consumers.push(resolve));
    }
  }

  /**
   * Queues an event for decisions(); a decision event only once per id. False when the queue
   * is full (the event is not queued). The cursor moves only once the event is queued, so a
   * session left for a full queue resumes before this event.
   */
  #passOn(event) {
    let movedTo = null;
    if (event.event === DECISION_MADE || event.event === DECISION_EXPIRED) {
      const pair = parseEventId(event.eventId);
      if (pair !== null) {
        if (this.#cursorPair !== null && compareEventIds(pair, this.#cursorPair) <= 0) return true;
        movedTo = [event.eventId, pair];
      }
    } else if (event.event === EVENTS_INCOMPLETE && CURSOR_MOVES.has(event.reason)) {
      const pair = parseEventId(event.since);
      if (pair !== null) movedTo = [event.since, pair];
    }
    if (this.#queue.length >= this.eventBuffer) return false;
    this.#queue.push(event);
    if (movedTo !== null) [this.#cursor, this.#cursorPair] = movedTo;
    this.#wake(this.#consumers);
    return true;
  }

  #onMessage(ws, data) {
    if (ws !== this.#ws || typeof data !== 'string') return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (ws !== this.#ws) return; // left the session part way through a batch
      if (item === null || typeof item !== 'object') continue;
      if (typeof item.method === 'string' && !('id' in item)) {
        const params = item.params;
        const event = params !== null && typeof params === 'object' && !Array.isArray(params) ? { ...params } : { params };
        event.event = item.method;
        if (!this.#passOn(event)) {
          this.#leave(ws, 'full', `the event queue is full (${this.eventBuffer} events unread)`);
          return;
        }
        if (event.event === EVENTS_INCOMPLETE && event.reason === UNREADABLE) {
          // Leave this session before any live event moves the cursor past the gap, and
          // resume again from the same cursor on the next connection.
          this.#leave(ws, 'unreadable', 'the hub could not read its event log to resume');
          return;
        }
      } else {
        const call = this.#pending.get(item.id);
        if (call === undefined) continue;
        this.#pending.delete(item.id);
        clearTimeout(call.timer);
        if ('error' in item) call.reject(rpcError(item.error));
        else call.resolve(item.result);
      }
    }
  }

  // ---------------------------------------------------------------- connections

  async #open() {
    try {
      await this.#openOnce();
    } catch (error) {
      this.lastError = error instanceof Error ? error.message : String(error);
      throw error;
    }
  }

  async #openOnce() {
    const token = await this.#fetchToken();
    const ws = await this.#openSocket(token);
    try {
      if (this.instanceId !== null) {
        // A resumed session replays what it missed before it reads this call, so the
        // replayed events are queued first.
        await this.#callOn(ws, 'system.register', this.#registerParams());
      }
      if (this.#subscriptions.length > 0) {
        await this.#callOn(ws, 'system.subscribe', { events: this.#subscriptions });
      }
      if (this.#cursor === null && this.#floor === null) await this.#findFloor(ws);
      if (this.#closed) throw new ClientClosed('the client was closed');
      if (ws !== this.#ws) throw new NotSent();
    } catch (error) {
      const lost = this.lastError ? ` (${this.lastError})` : '';
      this.#dropConnection(new ConnectionLost('connection setup failed'));
      if (error instanceof NotSent) throw new ConnectionLost(`the connection dropped while registering${lost}`);
      throw error;
    }
    this.#held = token;
    this.#heldExp = token === null ? null : tokenExpiryMs(token);
    this.#scheduleRefresh(false);
    if (typeof this.#source === 'function' && this.#heldExp !== null) this.#refreshLoop(ws);
    this.connections += 1;
    this.#openedAt = Date.now();
    this.lastError = null;
    this.#connected = true;
    this.#setState('connected');
    this.#wake(this.#connectedWaiters);
    try {
      this.#onConnect?.(this);
    } catch {
      // A hook's failure is the caller's; the session goes on.
    }
  }

  async #webSocketClass() {
    if (this.#WebSocket !== null) return { WebSocket: this.#WebSocket, headers: false };
    if (typeof globalThis.WebSocket === 'function') return { WebSocket: globalThis.WebSocket, headers: false };
    const ws = await import('ws');
    return { WebSocket: ws.WebSocket ?? ws.default, headers: true };
  }

  async #openSocket(token) {
    const { WebSocket, headers } = await this.#webSocketClass();
    // A browser's WebSocket cannot send headers: the token goes in the query there.
    const inQuery = this.#tokenInQuery ?? !headers;
    const url = this.#connectUrl(inQuery ? token : null);
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = headers && token !== null && !inQuery
          ? new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } })
          : new WebSocket(url);
      } catch (error) {
        reject(new ConnectionLost(`cannot connect to ${this.url}: ${error.message}`));
        return;
      }
      let why = null;
      const fail = (message) => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = ws.onclose = null;
        reject(new ConnectionLost(message));
      };
      const timer = setTimeout(() => {
        fail(`cannot connect to ${this.url}: no answer within ${this.openTimeoutMs / 1000} s`);
        try {
          ws.close();
        } catch {
          // already closing
        }
      }, this.openTimeoutMs);
      ws.onerror = (event) => {
        why = event?.message || event?.error?.message || why;
      };
      ws.onclose = () => {
        const status = /Unexpected server response: (\d+)/.exec(why ?? '');
        fail(status ? `the hub refused the connection: HTTP ${status[1]}` : `cannot connect to ${this.url}: ${why ?? 'the connection closed'}`);
      };
      ws.onopen = () => {
        if (this.#closed) {
          fail('the client was closed');
          ws.close(1000);
          return;
        }
        clearTimeout(timer);
        ws.onopen = null;
        // Messages may follow the upgrade in the same read (a resume's replay): read them
        // from now on, before anything else runs.
        this.#adoptSocket(ws);
        resolve(ws);
      };
    });
  }

  /** Makes `ws` the connection: its messages are read, its end ends the connection. */
  #adoptSocket(ws) {
    this.#ws = ws;
    this.#leftFor = null;
    this.#connectionEnded = new Promise((resolve) => {
      this.#endConnection = resolve;
    });
    ws.onmessage = (message) => this.#onMessage(ws, message.data);
    ws.onclose = (event) => {
      if (ws !== this.#ws) return;
      this.lastError = closeText(event);
      this.#dropConnection(new ConnectionLost(`the connection to the hub dropped (${this.lastError})`));
    };
    ws.onerror = () => {};
    if (typeof ws.ping === 'function' && typeof ws.on === 'function' && this.pingIntervalMs > 0) this.#keepAlive(ws);
  }

  /** Pings the hub on `ws` while it is the connection; a ping unanswered by the next ends it. */
  #keepAlive(ws) {
    let answered = true;
    ws.on('pong', () => {
      answered = true;
    });
    const timer = setInterval(() => {
      if (ws !== this.#ws) {
        clearInterval(timer);
        this.#timers.delete(timer);
        return;
      }
      if (!answered) {
        clearInterval(timer);
        this.#timers.delete(timer);
        this.lastError = `the hub did not answer a ping within ${this.pingIntervalMs / 1000} s`;
        this.#dropConnection(new ConnectionLost(`the connection to the hub dropped (${this.lastError})`));
        ws.terminate?.();
        return;
      }
      answered = false;
      try {
        ws.ping();
      } catch {
        // closing: the close event ends the connection
      }
    }, this.pingIntervalMs);
    this.#timers.add(timer);
  }

  #connectUrl(token) {
    const url = new URL(this.url);
    url.searchParams.delete('lastEventId');
    url.searchParams.delete('token');
    const cursor = this.#cursor ?? this.#floor;
    if (cursor !== null) url.searchParams.set('lastEventId', cursor);
    if (token !== null) url.searchParams.set('token', token);
    return url.toString();
  }

  /**
   * Asks the hub where its event log stands, for a client that has queued no decision event
   * yet: without a cursor, a reconnection would not resume, and the decisions made while the
   * client was away would be lost.
   */
  async #findFloor(ws) {
    let state;
    try {
      state = await this.#callOn(ws, 'system.get_state', { limit: 1 });
    } catch (error) {
      if (error instanceof RpcError) return;
      throw error;
    }
    const floor = state?.hub?.lastEventId;
    if (this.#cursor === null && parseEventId(floor) !== null) this.#floor = floor;
  }

  #callOn(ws, method, params) {
    if (ws === null || ws.readyState !== OPEN) return Promise.reject(new NotSent());
    const id = this.#nextId++;
    const message = { jsonrpc: '2.0', id, method };
    if (params !== undefined && params !== null) message.params = params;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new ConnectionLost(`${method}: no reply within ${this.callTimeoutMs / 1000} s`));
      }, this.callTimeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify(message));
      } catch {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(new NotSent());
      }
    });
  }

  /** Leaves the session by itself (a full queue, an unreadable resume); the supervisor reconnects. */
  #leave(ws, why, message) {
    this.#leftFor = why;
    this.lastError = message;
    this.#dropConnection(new ConnectionLost(`the client left the session: ${message}`));
    try {
      ws.close(1000, why === 'full' ? 'event queue full' : 'resume again');
    } catch {
      // already closing
    }
  }

  #dropConnection(error) {
    const ws = this.#ws;
    this.#ws = null;
    this.#connected = false;
    for (const call of this.#pending.values()) {
      clearTimeout(call.timer);
      call.reject(error);
    }
    this.#pending.clear();
    if (ws !== null) {
      ws.onmessage = ws.onclose = null;
      if (ws.readyState === OPEN || ws.readyState === 0) {
        try {
          ws.close(1000);
        } catch {
          // already closing
        }
      }
    }
    this.#endConnection();
  }

  /** Waits for each connection to end, then reconnects until it works. */
  async #supervise() {
    let attempt = 0;
    while (!this.#closed) {
      await this.#connectionEnded;
      if (this.#closed) return;
      this.#setState('reconnecting');
      // A connection that lasted starts the backoff over; one that ended at once (the hub
      // closing it, an unreadable resume) goes on doubling it.
      if (Date.now() - this.#openedAt >= this.maxBackoffMs) attempt = 0;
      while (!this.#closed) {
        // Left for a full queue: resume once the consumer has taken an event.
        while (this.#leftFor === 'full' && this.#queue.length >= this.eventBuffer && !this.#closed) {
          await new Promise((resolve) => this.#roomWaiters.push(resolve));
        }
        await this.#sleep(backoffDelay(attempt, this.minBackoffMs, this.maxBackoffMs));
        attempt = Math.min(attempt + 1, 60);
        if (this.#closed) return;
        try {
          await this.#open();
          break;
        } catch {
          // lastError says why; try again after the next pause.
        }
      }
    }
  }

  // ---------------------------------------------------------------- tokens

  async #fetchToken() {
    const source = this.#source;
    if (source === null || typeof source === 'string') return source;
    let value;
    try {
      value = await source();
    } catch (error) {
      throw new ConnectionLost(`the token function failed: ${error?.message ?? error}`);
    }
    if (typeof value !== 'string' || value === '') {
      throw new ConnectionLost(`the token function returned ${JSON.stringify(value)}, not a token`);
    }
    return value;
  }

  /** The hub accepted `token`: the session now ends at `expiresAt` (the later of its tokens'). */
  #adopt(token, refreshed) {
    const claimed = tokenExpiryMs(token);
    if (this.#held === null || claimed === null || this.#heldExp === null || claimed >= this.#heldExp) this.#held = token;
    if (Number.isInteger(refreshed?.expiresAt)) this.#heldExp = refreshed.expiresAt;
    else if (claimed !== null) this.#heldExp = Math.max(claimed, this.#heldExp ?? 0);
    this.#scheduleRefresh(false);
  }

  #scheduleRefresh(retry) {
    if (retry) this.#refreshDue = Date.now() + REFRESH_RETRY_MS;
    else if (this.#heldExp === null) this.#refreshDue = null;
    else this.#refreshDue = Date.now() + Math.max(0, this.#heldExp - Date.now()) * REFRESH_AT_LIFETIME;
  }

  /**
   * While `ws` is the open connection, asks the token function for a newer token when the
   * one held has run most of its lifetime, and extends the session with it.
   */
  async #refreshLoop(ws) {
    for (;;) {
      const due = this.#refreshDue;
      if (due === null || ws !== this.#ws || this.#closed) return;
      if (Date.now() < due) {
        // refreshToken() may move the due time meanwhile: look again then.
        await this.#sleep(due - Date.now());
        continue;
      }
      let fresh;
      try {
        fresh = await this.#fetchToken();
      } catch {
        this.#scheduleRefresh(true);
        continue;
      }
      const claimed = tokenExpiryMs(fresh);
      if (claimed === null || (this.#heldExp !== null && claimed <= this.#heldExp)) {
        this.#scheduleRefresh(true); // nothing newer yet
        continue;
      }
      let result;
      try {
        result = await this.#callOn(ws, 'system.auth.refresh', { token: fresh });
      } catch (error) {
        if (error instanceof InvalidRequest) return; // a hub without a secret: nothing expires
        if (error instanceof RpcError) {
          this.#scheduleRefresh(true);
          continue;
        }
        return; // the connection dropped; the next one fetches its own token
      }
      this.#adopt(fresh, result);
    }
  }

  // ---------------------------------------------------------------- helpers

  #registerParams() {
    const params = { instanceId: this.instanceId };
    if (this.roles !== null) params.roles = this.roles;
    if (this.metadata !== null) params.metadata = this.metadata;
    return params;
  }

  #needInstance(what) {
    if (this.instanceId === null) throw new TypeError(`${what} needs a client created with instanceId`);
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    try {
      this.#onStateChange?.(state);
    } catch {
      // A hook's failure is the caller's.
    }
  }

  /** Resolves true once connected, false after `ms` or when the client is closed. */
  #waitConnected(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        this.#connectedWaiters.delete(done);
        resolve(this.#connected);
      };
      const timer = setTimeout(done, ms);
      this.#timers.add(timer);
      this.#connectedWaiters.add(done);
    });
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        resolve();
      }, ms);
      this.#timers.add(timer);
    });
  }

  #wake(waiters) {
    const all = [...waiters];
    if (Array.isArray(waiters)) waiters.length = 0;
    else waiters.clear();
    for (const wake of all) wake();
  }
}

function closeText(event) {
  const code = event?.code;
  if (!code) return 'the connection closed';
  return `the connection closed with code ${code}${event.reason ? ` (${event.reason})` : ''}`;
}
