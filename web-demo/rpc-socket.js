// A JSON-RPC 2.0 client over one WebSocket that reconnects with backoff and resumes
// decision events from the last eventId it saw.

const MIN_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;
// system.events.incomplete reasons after which decision events continue from the notice's `since`.
const RESTART_REASONS = ['ahead', 'malformed', 'rewound'];

export class RpcSocket {
  /**
   * @param {string} url ws:// or wss:// URL of the hub's /ws endpoint
   * @param {{onState?: (state: string) => void, onNotification?: (method: string, params: any) => void, onOpen?: () => void}} handlers
   */
  constructor(url, handlers = {}) {
    this.url = url;
    this.handlers = handlers;
    this.nextId = 1;
    this.pending = new Map();
    this.lastEventId = null;
    this.delay = MIN_DELAY_MS;
    this.stopped = false;
    this.connect();
  }

  connect() {
    const url = new URL(this.url);
    if (this.lastEventId) url.searchParams.set('lastEventId', this.lastEventId);
    this.setState(this.lastEventId === null && this.delay === MIN_DELAY_MS ? 'connecting' : 'reconnecting');
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = MIN_DELAY_MS;
      this.setState('connected');
      this.handlers.onOpen?.();
    };
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = () => {
      for (const { reject } of this.pending.values()) reject(new Error('connection closed'));
      this.pending.clear();
      if (this.stopped) {
        this.setState('closed');
        return;
      }
      this.setState('reconnecting');
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
  }

  setState(state) {
    this.state = state;
    this.handlers.onState?.(state);
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (item.method) {
        if (item.params?.eventId) this.lastEventId = item.params.eventId;
        // The hub could not place the cursor, or its log went back: events continue from `since`.
        else if (item.method === 'system.events.incomplete' && RESTART_REASONS.includes(item.params?.reason)) {
          this.lastEventId = item.params.since;
        }
        this.handlers.onNotification?.(item.method, item.params ?? {});
      } else if (this.pending.has(item.id)) {
        const { resolve, reject } = this.pending.get(item.id);
        this.pending.delete(item.id);
        if (item.error) reject(Object.assign(new Error(item.error.message), { code: item.error.code, data: item.error.data }));
        else resolve(item.result);
      }
    }
  }

  /** Sends a request and resolves with its result (rejects with the JSON-RPC error). */
  call(method, params = {}) {
    if (this.socket?.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  close() {
    this.stopped = true;
    this.socket?.close();
  }
}

/** The hub's /ws URL for this page, carrying the page's own ?token= if it has one. */
export function hubUrl(location) {
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(location.search).get('token');
  if (token) url.searchParams.set('token', token);
  return url.toString();
}
