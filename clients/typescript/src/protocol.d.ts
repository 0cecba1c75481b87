// The hub's wire types, generated from its OpenRPC document (quorum-hub openrpc)
// by scripts/generate-types.js: do not edit; run `npm run generate` after a protocol change.

/** Result of `system.register`. */
export type Registered = {
  registered: boolean;
  instanceId: string;
  /** How long the registration lives without a heartbeat (an open session keeps its own instance alive). */
  ttlSeconds: number;
};

/** Result of `system.heartbeat`. */
export type Alive = {
  /** False when the instance is not registered (anymore). */
  alive: boolean;
};

/** Result of `system.unregister`. */
export type Unregistered = {
  /** False when there was no registration to remove. */
  unregistered: boolean;
};

/** Result of `system.quorum.vote`. Fields go on the wire in this order, whatever the outcome. */
export type VoteReply = {
  /** Whether this call recorded the vote. */
  voted: boolean;
  quorumReached: boolean;
  finalDecision?: string | null;
  /** Votes recorded on the decision (absent when Redis was not asked). */
  voteCount?: number | null;
  reason?: NotVoted | null;
  /** The value this instance's earlier vote recorded (with `already_voted`). */
  recordedValue?: string | null;
};

/** Why a vote was not recorded, when that is a result rather than an error. */
export type NotVoted = "already_voted" | "decided" | "circuit_open" | "expired" | "unknown";

/** Result of `system.quorum.status`: a decision's audit trail. */
export type DecisionStatus = {
  decision: string;
  state: DecisionState;
  totalInstances: number;
  quorum: number;
  voteCount: number;
  /** Count per value, in the order each value first received a vote. */
  tally: Record<string, number>;
  votes: Array<RecordedVote>;
  quorumReached: boolean;
  finalDecision?: string | null;
  decidedAt?: number | null;
  /** The decision's deadline (ms), when it has one. */
  closesAt?: number | null;
  /** When the decision expired (ms), once it has. */
  expiredAt?: number | null;
  /** The policy the decision opened under, when one applied. */
  policy?: DecisionPolicy | null;
};

/** Where a decision is in its life. */
export type DecisionState = "open" | "decided" | "expired";

/** One recorded vote in a decision's audit trail. */
export type RecordedVote = {
  instanceId: string;
  value: string;
  /** Arrival order within the decision, from 1. */
  seq: number;
};

/** The terms a decision opened under, as `system.quorum.status` shows them. */
export type DecisionPolicy = {
  /** The pattern of the policy. */
  pattern: string;
  /** `majority`, `two_thirds`, `unanimous` or a count. */
  threshold: string;
  electorate?: ElectorateSnapshot | null;
  values?: Array<string> | null;
  openers?: string | null;
};

/** A decision's electorate: the instances registered with its role when it opened. */
export type ElectorateSnapshot = {
  role: string;
  /** In id order (at most `MAX_ELECTORATE`). */
  members: Array<string>;
};

/** Result of `system.get_state`: one page of instances and one of decisions. */
export type State = {
  /** Registered instances, in `instanceId` order. */
  instances: Array<InstanceInfo>;
  /** Pass as `instancesAfter` for the next page of instances; `null` after the last. */
  nextInstances: string | null;
  /** Decisions, the most recently opened first. */
  decisions: Array<DecisionSummary>;
  /** Pass as `decisionsAfter` for the next page of decisions; `null` after the last. */
  nextDecisions: DecisionCursor | null;
  hub: HubInfo;
  /** The calling session; `null` over `POST /rpc`. */
  session: SessionInfo | null;
};

/** A registered instance as listed by `system.get_state`. */
export type InstanceInfo = {
  instanceId: string;
  roles: Array<string>;
  metadata: Record<string, unknown>;
  /** `online` while a session or heartbeats keep it alive, `disconnected` after its session closed (until the TTL removes it). */
  status: string;
  lastSeen: number;
};

/** A decision as listed by `system.get_state`. */
export type DecisionSummary = {
  decision: string;
  state: DecisionState;
  totalInstances: number;
  quorum: number;
  voteCount: number;
  quorumReached: boolean;
  finalDecision?: string | null;
  openedAt: number;
  decidedAt?: number | null;
  closesAt?: number | null;
  expiredAt?: number | null;
  /** The pattern of the policy the decision opened under, when one applied. */
  policy?: string | null;
  /** Its threshold as the policy wrote it. */
  threshold?: string | null;
  /** The role its electorate was drawn from. */
  electorateRole?: string | null;
};

/** Where a page of decisions ends; pass it back as `decisionsAfter`. */
export type DecisionCursor = string;

/** The answering hub, as `system.get_state` reports it. */
export type HubInfo = {
  hubId: string;
  /** Open WebSocket sessions on this hub. */
  sessions: number;
  uptimeSeconds: number;
  breaker: BreakerState;
  /** The last decision event this hub delivered. */
  lastEventId: EventId | null;
  version: string;
};

/** State of a hub's circuit breaker in front of Redis. */
export type BreakerState = "closed" | "open" | "halfOpen";

/** The id of an event in the hub's event log, `<ms>-<seq>`, ordered as Redis orders stream ids. */
export type EventId = string;

/** The calling session, as `system.get_state` reports it. */
export type SessionInfo = {
  /** The instance this session registered as. */
  instanceId: string | null;
};

/** Result of `system.subscribe` and `system.unsubscribe`. */
export type Subscribed = {
  /** Every pattern the session is subscribed to now. */
  subscribed: Array<string>;
  /** With `since`: how many decision events were replayed. */
  replayed?: number | null;
};

/** Result of `system.auth.refresh`. */
export type Refreshed = {
  /** When the session's token now expires (its `exp`), in ms since the Unix epoch. */
  expiresAt: number;
};

/** Result of `system.webhooks.add` and `system.webhooks.rotate`: the endpoint's secret, shown only here. */
export type WebhookSecret = {
  id: string;
  /** A Standard Webhooks secret (`whsec_` and base64): deliveries are signed with it. */
  secret: string;
};

/** Result of `system.webhooks.list`. */
export type WebhookList = {
  /** Every endpoint, in the order they were added. */
  webhooks: Array<WebhookInfo>;
};

/** One webhook endpoint, without its secret. */
export type WebhookInfo = {
  id: string;
  url: string;
  /** The event patterns it gets. */
  events: Array<string>;
  description?: string | null;
  /** `enabled`, or `disabled` (see `disabledReason`). */
  state: string;
  disabledReason?: string | null;
  /** When it was disabled (ms since the Unix epoch). */
  disabledAt?: number | null;
  /** When it was added (ms since the Unix epoch). */
  addedAt: number;
  lastAttempt?: WebhookAttempt | null;
  /** Deliveries waiting: due, or being attempted. Events logged since the endpoint last took any (within a second while it is enabled; a disabled one takes none) are not counted yet. */
  pending: number;
};

/** One delivery attempt. */
export type WebhookAttempt = {
  /** The event delivered (for a notice of missing events, the id after which they are missing). */
  eventId: string;
  /** Which attempt at this delivery (from 1; absent for the latest attempt of `list`). */
  attempt?: number | null;
  /** The receiver's HTTP status, if it answered. */
  status?: number | null;
  /** Why there was no answer (refused address, timeout, connection refused, ...). */
  error?: string | null;
  /** How long the attempt took (absent for the latest attempt of `list`). */
  durationMs?: number | null;
  /** When it was made (ms since the Unix epoch). */
  at: number;
  /** What followed: `delivered`, `retry`, `given_up` or `gone` (the endpoint was disabled). */
  outcome: string;
};

/** Result of `system.webhooks.remove` and `system.webhooks.enable`. */
export type WebhookChanged = {
  id: string;
  /** `removed` or `enabled`. */
  done: string;
};

/** Result of `system.webhooks.deliveries`. */
export type WebhookDeliveries = {
  /** The attempt log, newest first. */
  attempts: Array<WebhookAttempt>;
  /** Pass as `after` for the next page (absent on the last). */
  next?: string | null;
};

/** Result of `system.push.subscribe` and `system.push.unsubscribe`. */
export type PushSubscribed = {
  /** The subscription's id: the same for the same endpoint. */
  id: string;
  /** `subscribed` (new), `renewed` (its keys and patterns replaced), `removed`, or `absent` (there was no such subscription). */
  done: string;
};

/** Result of `system.push.list`: every subscription, without its endpoint's path or keys. */
export type PushList = {
  subscriptions: Array<PushInfo>;
};

/** One push subscription as an operator sees it. */
export type PushInfo = {
  id: string;
  /** The push service's origin (the rest of the endpoint identifies the browser). */
  pushService: string;
  events: Array<string>;
  /** When it was added (ms since the Unix epoch). */
  addedAt: number;
  /** The latest attempt's outcome, if any (`delivered`, `retry`, `given_up`). */
  lastOutcome?: string | null;
  /** Deliveries waiting: due, or being attempted. */
  pending: number;
};

/** Result of `system.policies.set` and `system.policies.remove`. */
export type PolicyChanged = {
  pattern: string;
  /** `set` or `removed`. */
  done: string;
};

/** Result of `system.policies.list`: the policies this hub applies, and their version. */
export type PolicyList = {
  policies: Array<PolicyEntry>;
  version: number;
};

/** One policy and the pattern it applies to. */
export type PolicyEntry = {
  pattern: string;
  policy: Policy;
};

/** What an operator fixes for the decisions a pattern matches. */
export type Policy = {
  /** Only these instances vote, and `totalInstances` is their number. */
  electorate?: Electorate | null;
  threshold: Threshold;
  /** The deadline a decision opens with, and the longest a vote may state. */
  closeAfterMs?: number | null;
  /** The only values a vote may carry. */
  values?: Array<string> | null;
  /** Only instances registered with this role open a decision. */
  openers?: string | null;
};

/** Who may vote: the instances registered with `role` when the decision opens. */
export type Electorate = {
  role: string;
};

export type Threshold = "majority" | "two_thirds" | "unanimous" | number;

/** `quorum.decision.made`: a decision was fixed. */
export type DecisionEvent = {
  decision: string;
  value: string;
  voteCount: number;
  quorum: number;
  totalInstances: number;
  /** Unique and identical for every observer; resume after it with `?lastEventId=`. */
  eventId: EventId;
  timestamp: number;
};

/** `quorum.decision.expired`: a decision's deadline passed without quorum; it is closed. */
export type DecisionExpired = {
  decision: string;
  voteCount: number;
  quorum: number;
  totalInstances: number;
  /** Count per value at expiry, in the order each value first received a vote. */
  tally: Record<string, number>;
  /** In the same sequence as decision events; resume after it with `?lastEventId=`. */
  eventId: EventId;
  /** When the decision expired (ms). */
  timestamp: number;
};

/** `system.events.incomplete`: the session cannot be given every decision event after its cursor. `since` is where the events that follow pick up: the cursor itself when events after it are lost, unreadable or not in the log, the newest event when the cursor is ahead of the log, the point the hub went back to when its log was rewound. */
export type EventsIncomplete = {
  since: EventId;
  reason: GapReason;
  message: string;
  /** The oldest event the hub's event log holds (absent when the log is empty or could not be read). */
  oldest?: EventId | null;
  /** The newest event the hub's event log holds (absent when the log is empty or could not be read). */
  newest?: EventId | null;
};

/** Why a session's events are incomplete. */
export type GapReason = "trimmed" | "unreadable" | "ahead" | "malformed" | "unknown" | "rewound";

/** `system.instance.lost`: this session's instance was taken by another session (its binding lapsed while Redis was unreachable); the session is closed next. */
export type InstanceLost = {
  instanceId: string;
  message: string;
};

/** `quorum.vote.recorded`: one vote was recorded. */
export type VoteRecorded = {
  decision: string;
  instanceId: string;
  value: string;
  voteCount: number;
  quorum: number;
  totalInstances: number;
};

/** `instance.registered`: an instance registered or refreshed its registration. */
export type InstanceRegistered = {
  instanceId: string;
  roles: Array<string>;
  metadata: Record<string, unknown>;
  status: string;
  lastSeen: number;
};

/** `instance.unregistered`: an instance was removed, or its session closed. */
export type InstanceUnregistered = {
  instanceId: string;
  /** `unregistered` or `disconnected`. */
  reason: string;
};

/** Every method: its params (by name) and its result. */
export interface Methods {
  /** Registers this session as an instance (one per session); registering again refreshes roles and metadata. */
  "system.register": {
    params: {
      /** The id to register as (no whitespace, control characters or braces). */
      instanceId: string;
      /** Role names, listed by `system.get_state` and `instance.registered`. */
      roles?: Array<string>;
      /** Free-form data shown with the instance: at most 1024 bytes of JSON. */
      metadata?: Record<string, unknown> | null;
    };
    result: Registered;
  };
  /** Keeps a registration alive without an open session. */
  "system.heartbeat": {
    params: {
      /** The instance this session registered as. */
      instanceId: string;
    };
    result: Alive;
  };
  /** Removes the instance's registration and frees it for another session. */
  "system.unregister": {
    params: {
      /** The instance this session registered as. */
      instanceId: string;
    };
    result: Unregistered;
  };
  /** Records this instance's vote on a decision (once, immutable); the vote that reaches a majority of totalInstances (or the threshold of the decision's policy, among its electorate) fixes the decision. */
  "system.quorum.vote": {
    params: {
      /** The instance this session registered as. */
      instanceId: string;
      /** The decision voted on; the first vote opens it. */
      decision: string;
      /** The value voted for. */
      value: string;
      /** Instances expected to vote; fixed by the first vote (default 3). A later vote may omit it or state the same number. */
      totalInstances?: number | null;
      /** The decision's deadline, from its first vote; fixed by the first vote (default and upper bound: the hub's `--max-open`). A later vote may omit it or state the same. */
      closeAfterMs?: number | null;
    };
    result: VoteReply;
  };
  /** A decision's state, tally and every recorded vote in arrival order. */
  "system.quorum.status": {
    params: {
      decision: string;
    };
    result: DecisionStatus;
  };
  /** One page of registered instances and one of decisions (newest first), with this hub and session. */
  "system.get_state": {
    params: {
      /** Most instances, and most decisions, to list (default 100). */
      limit?: number | null;
      /** `nextInstances` of the previous page. */
      instancesAfter?: string | null;
      /** `nextDecisions` of the previous page. */
      decisionsAfter?: string | null;
    };
    result: State;
  };
  /** Adds event subscriptions; with since, first replays the decision events after that id. Decision events reach every session without subscribing. */
  "system.subscribe": {
    params: {
      /** Event names, or a prefix followed by `.*` (`quorum.*`). */
      events?: Array<string>;
      /** Replay the decision events after this one first. */
      since?: string | null;
    };
    result: Subscribed;
  };
  /** Drops event subscriptions (every one when events is omitted). */
  "system.unsubscribe": {
    params: {
      /** Patterns to drop, as they were subscribed; without it, every subscription. */
      events?: Array<string>;
    };
    result: Subscribed;
  };
  /** Replaces the session's token with a newer one for the same instance and roles, before the old one expires. */
  "system.auth.refresh": {
    params: {
      /** A newer token for the same instance and roles (at most 4096 bytes). */
      token: string;
    };
    result: Refreshed;
  };
  /** Adds a webhook endpoint: decision events are POSTed to it, signed (Standard Webhooks), from the next event on. Returns its secret, shown only here. Admin tokens only (without a secret: clients on loopback). */
  "system.webhooks.add": {
    params: {
      /** Where deliveries are POSTed: an `http` or `https` URL. */
      url: string;
      /** Which decision events it gets, as `system.subscribe` patterns (default: both decision events, made and expired). */
      events?: Array<string>;
      /** What the endpoint is for, shown by `system.webhooks.list`. */
      description?: string | null;
    };
    result: WebhookSecret;
  };
  /** Every webhook endpoint with its state, last attempt and waiting deliveries (never its secret). */
  "system.webhooks.list": {
    params: {
    };
    result: WebhookList;
  };
  /** Removes a webhook endpoint and its waiting deliveries. */
  "system.webhooks.remove": {
    params: {
      /** The endpoint's id, as `system.webhooks.add` returned it. */
      id: string;
    };
    result: WebhookChanged;
  };
  /** Enables a disabled webhook endpoint; what waited for it is delivered. */
  "system.webhooks.enable": {
    params: {
      /** The endpoint's id, as `system.webhooks.add` returned it. */
      id: string;
    };
    result: WebhookChanged;
  };
  /** Gives a webhook endpoint a new secret; for 24 h deliveries carry the old one's signature too. */
  "system.webhooks.rotate": {
    params: {
      /** The endpoint's id, as `system.webhooks.add` returned it. */
      id: string;
    };
    result: WebhookSecret;
  };
  /** A webhook endpoint's attempt log, newest first. */
  "system.webhooks.deliveries": {
    params: {
      id: string;
      /** Most attempts to list (default 50). */
      limit?: number | null;
      /** List the attempts older than this one (`next` of the previous page). */
      after?: string | null;
    };
    result: WebhookDeliveries;
  };
  /** Subscribes a browser to decision events by Web Push: each is sent to its push service encrypted for it (RFC 8291) and signed with the hub's VAPID key (GET /push/key), with retries. Subscribing the same endpoint again replaces its keys and patterns. A push service answering 404 or 410 ends it. */
  "system.push.subscribe": {
    params: {
      /** A browser's push subscription, as `PushSubscription.toJSON()` gives it. */
      subscription: {
        /** The push service's URL for this browser: `https` (plain `http` only to loopback, on a hub started with `--webhook-allow-private`). */
        endpoint: string;
        /** The keys a push message is encrypted for (RFC 8291). */
        keys: {
          /** The browser's P-256 public key, base64url. */
          p256dh: string;
          /** The browser's 16-byte authentication secret, base64url. */
          auth: string;
        };
        /** Ignored: the push service says when a subscription ends (404 or 410). */
        expirationTime?: number | null;
      };
      /** Which decision events it gets, as `system.subscribe` patterns (default: both decision events, made and expired). */
      events?: Array<string>;
    };
    result: PushSubscribed;
  };
  /** Ends the push subscription made with this endpoint, and its waiting messages. */
  "system.push.unsubscribe": {
    params: {
      /** The endpoint the subscription was made with. */
      endpoint: string;
    };
    result: PushSubscribed;
  };
  /** Every push subscription: its push service, patterns, last outcome and waiting messages (never the endpoint's path or the keys). Admin tokens only (without a secret: clients on loopback). */
  "system.push.list": {
    params: {
    };
    result: PushList;
  };
  /** Sets the policy of a decision-name pattern (admin); decisions already open keep the terms they opened under. */
  "system.policies.set": {
    params: {
      /** A decision name, or a prefix of one followed by `*` (`*` alone: every decision). */
      pattern: string;
      /** What an operator fixes for the decisions a pattern matches. */
      policy: {
        /** Only these instances vote, and `totalInstances` is their number. */
        electorate?: {
          role: string;
        } | null;
        threshold?: "majority" | "two_thirds" | "unanimous" | number;
        /** The deadline a decision opens with, and the longest a vote may state. */
        closeAfterMs?: number | null;
        /** The only values a vote may carry. */
        values?: Array<string> | null;
        /** Only instances registered with this role open a decision. */
        openers?: string | null;
      };
    };
    result: PolicyChanged;
  };
  /** The decision policies this hub applies, and their version (admin). */
  "system.policies.list": {
    params: {
    };
    result: PolicyList;
  };
  /** Removes the policy of a decision-name pattern (admin). */
  "system.policies.remove": {
    params: {
      pattern: string;
    };
    result: PolicyChanged;
  };
}

/** Every notification the hub pushes to a session: its params. */
export interface Notifications {
  /** A decision was fixed. Sent to every session, once, in event id order. */
  "quorum.decision.made": DecisionEvent;
  /** A decision's deadline passed without quorum; it is closed. Sent to every session, in the same sequence as decisions made. */
  "quorum.decision.expired": DecisionExpired;
  /** The session cannot be given every decision event after its cursor; since says where the events that follow pick up. */
  "system.events.incomplete": EventsIncomplete;
  /** Another session took this session's instance; this session is closed next. */
  "system.instance.lost": InstanceLost;
  /** A vote was recorded (to sessions subscribed to it). */
  "quorum.vote.recorded": VoteRecorded;
  /** An instance registered or refreshed its registration (to sessions subscribed to it). */
  "instance.registered": InstanceRegistered;
  /** An instance was removed, or its session closed (to sessions subscribed to it). */
  "instance.unregistered": InstanceUnregistered;
}

/** The JSON-RPC error codes the hub answers with, by name. */
export interface ErrorCodes {
  /** invalid params: a field is missing, of the wrong type, out of range or unknown; data.field names it */
  InvalidParams: -32602;
  /** rate limited: too many calls from this session, or votes from this instance; data.retryAfterMs says when to retry */
  RateLimited: -32000;
  /** circuit open: Redis failed repeatedly and is not called for a while; data.retryAfterMs says for how long */
  CircuitOpen: -32001;
  /** not allowed: the session is not registered as this instance, the instance is bound to another session, or the token does not allow it; a refusal by a decision policy names its rule in data.reason (not_in_electorate, not_an_opener, electorate_too_large, threshold_unreachable, no_policy, role_not_granted) */
  Unauthorized: -32002;
  /** not run: this batch's replies reached their size bound; send the call again */
  BatchReplyFull: -32003;
  /** no such decision */
  NotFound: -32004;
  /** backend unavailable: Redis could not be reached, did not answer in time (data.reason: timeout) or too few replicas confirmed the write (data.reason: replication); retrying is safe */
  BackendUnavailable: -32005;
  /** internal error */
  Internal: -32603;
}
