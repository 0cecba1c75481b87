// The dashboard: instances, decisions with live tallies (open ones counting down to their
// deadline, expired ones with their tally at expiry), audit trails, a live feed of decisions,
// the hub's webhook endpoints and a simulator. Every string from the hub is rendered as text,
// never HTML.

import { Client, backoffDelay } from './lib/index.js';
import { pushSubscribed, pushSupported, subscribePush, unsubscribePush } from './push.js';

const REFRESH_MS = 5000;
const MAX_DECISIONS = 50;
const MAX_FEED = 100;
// How often the deadlines of open decisions are counted down on screen.
const COUNTDOWN_MS = 250;
// How often the webhook endpoints are read again (each decision event reads them at once too).
const WEBHOOKS_REFRESH_MS = 3000;
// The JSON-RPC error of a call the page's token (or, without a secret, its address) does not allow.
const UNAUTHORIZED = -32002;

const $ = (id) => document.getElementById(id);
// The page's own ?token=, for the hub's sessions (the page's and the simulated agents').
const pageToken = new URLSearchParams(window.location.search).get('token');
// name -> {name, state ('open' | 'decided' | 'expired'), totalInstances, quorum, voteCount,
//          tally: Map, finalDecision, decidedAt, openedAt, closesAt, expiredAt, and under a
//          policy threshold and electorate ({role, members}, members once its status is read)}
const decisions = new Map();
const instances = new Map(); // id -> {instanceId, roles, status, lastSeen}
let selected = null;
let notificationsOn = false;
// Reads of the webhook list asked for and shown: a reply older than the one shown is dropped.
let webhooksAsked = 0;
let webhooksShown = 0;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'class') node.className = value;
    else if (key.startsWith('aria-') || key === 'role' || key === 'tabindex') node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '–');

// Time left until `ms`, e.g. "2d 3h", "4m 05s", "12.3s"; "0s" once it has passed.
function remaining(ms) {
  const left = Math.max(0, ms - Date.now());
  const s = Math.floor(left / 1000);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60];
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return left < 10000 ? `${(left / 1000).toFixed(1)}s` : `${s}s`;
}

const closed = (d) => d.state === 'decided' || d.state === 'expired';
const closedAt = (d) => (d.state === 'decided' ? d.decidedAt : d.state === 'expired' ? d.expiredAt : null);

// ---- state from the hub ----

// A hub without lifecycle states says only whether quorum was reached.
const stateOf = (summary) => summary.state ?? (summary.finalDecision != null ? 'decided' : 'open');

function decisionFrom(summary) {
  const known = decisions.get(summary.decision);
  // A page read before the decision closed must not reopen it once its event arrived (a
  // decision opened after that, once the closed one's keys expired, is a new one).
  if (known && closed(known) && stateOf(summary) === 'open' && summary.openedAt <= closedAt(known)) return known;
  return {
    name: summary.decision,
    state: stateOf(summary),
    totalInstances: summary.totalInstances,
    quorum: summary.quorum,
    voteCount: summary.voteCount,
    tally: known?.tally ?? new Map(),
    finalDecision: summary.finalDecision ?? null,
    decidedAt: summary.decidedAt ?? null,
    openedAt: summary.openedAt ?? known?.openedAt ?? Date.now(),
    closesAt: summary.closesAt ?? null,
    expiredAt: summary.expiredAt ?? null,
    threshold: summary.threshold ?? null,
    electorate: known?.electorate ?? (summary.electorateRole ? { role: summary.electorateRole, members: null } : null),
  };
}

async function loadTally(name) {
  try {
    const status = await socket.call('system.quorum.status', { decision: name });
    const decision = decisions.get(name);
    if (!decision) return;
    // A status read before a vote this page has already counted is not taken back to.
    if (status.voteCount >= decision.voteCount) {
      decision.tally = new Map(Object.entries(status.tally));
      decision.voteCount = status.voteCount;
    }
    if (!closed(decision) || stateOf(status) !== 'open') {
      decision.state = stateOf(status);
      decision.finalDecision = status.finalDecision ?? null;
      decision.decidedAt = status.decidedAt ?? null;
      decision.expiredAt = status.expiredAt ?? null;
    }
    decision.closesAt = status.closesAt ?? decision.closesAt;
    decision.threshold = status.policy?.threshold ?? decision.threshold;
    decision.electorate = status.policy?.electorate ?? decision.electorate;
    renderDecisions();
    if (selected === name) renderDetail(status);
  } catch {
    // A decision without votes, or the socket dropped: the next refresh tries again.
  }
}

async function refresh() {
  let state;
  try {
    // One page of the largest size: the dashboard shows at most that many instances.
    state = await socket.call('system.get_state', { limit: 1000 });
  } catch {
    return;
  }
  $('hub-sessions').textContent = state.hub.sessions;
  instances.clear();
  for (const instance of state.instances) instances.set(instance.instanceId, instance);
  renderInstances();
  for (const summary of state.decisions.slice(0, MAX_DECISIONS)) {
    const fresh = !decisions.has(summary.decision);
    decisions.set(summary.decision, decisionFrom(summary));
    if (fresh) loadTally(summary.decision);
  }
  renderDecisions();
}

async function refreshWebhooks() {
  const asked = ++webhooksAsked;
  let list;
  try {
    list = await socket.call('system.webhooks.list', {});
  } catch (error) {
    if (asked < webhooksShown) return;
    webhooksShown = asked;
    if (error.code === UNAUTHORIZED) {
      showWebhooksNote('refused', 'Webhooks are shown only to an admin: open this page with ?token= and an admin token (quorum-hub token --admin), or, on a hub without --auth-secret, from the hub\'s own machine.');
    } else if (error.code !== undefined) {
      showWebhooksNote('error', `Could not list the webhooks: ${error.message}`);
    }
    // Not connected: the next refresh tries again.
    return;
  }
  if (asked < webhooksShown) return;
  webhooksShown = asked;
  renderWebhooks(list.webhooks);
}

// ---- events ----

function onNotification(method, params) {
  switch (method) {
    case 'quorum.decision.made': return onDecision(params);
    case 'quorum.decision.expired': return onExpired(params);
    case 'quorum.vote.recorded': return onVote(params);
    case 'instance.registered':
      instances.set(params.instanceId, params);
      return renderInstances();
    case 'instance.unregistered':
      if (params.reason === 'disconnected' && instances.has(params.instanceId)) {
        instances.get(params.instanceId).status = 'disconnected';
      } else {
        instances.delete(params.instanceId);
      }
      return renderInstances();
    case 'system.events.incomplete':
      addFeed(el('li', { class: 'warning' }, incompleteText(params.reason)));
      return refresh();
    default:
  }
}

// What a system.events.incomplete notice means for this page, by its reason.
function incompleteText(reason) {
  if (reason === 'rewound') {
    return 'The hub\'s event log went back after a Redis failover: decisions shown may be gone; reloading the state.';
  }
  return 'Some decisions were missed while disconnected; reloading the state.';
}

function ensureDecision(name, totalInstances, quorum) {
  if (!decisions.has(name)) {
    decisions.set(name, {
      name, state: 'open', totalInstances, quorum, voteCount: 0, tally: new Map(), finalDecision: null,
      decidedAt: null, openedAt: Date.now(), closesAt: null, expiredAt: null,
    });
    // Its deadline (to count down) and its earlier votes come with its status.
    loadTally(name);
  }
  return decisions.get(name);
}

function onVote({ decision: name, value, voteCount, quorum, totalInstances }) {
  const decision = ensureDecision(name, totalInstances, quorum);
  if (voteCount > decision.voteCount) {
    decision.tally.set(value, (decision.tally.get(value) ?? 0) + 1);
    decision.voteCount = voteCount;
  }
  renderDecisions();
  if (selected === name) loadTally(name);
}

function onDecision(event) {
  const decision = ensureDecision(event.decision, event.totalInstances, event.quorum);
  decision.state = 'decided';
  decision.finalDecision = event.value;
  decision.decidedAt = event.timestamp;
  decision.voteCount = Math.max(decision.voteCount, event.voteCount);
  if ([...decision.tally.values()].reduce((a, b) => a + b, 0) < event.voteCount) loadTally(event.decision);
  renderDecisions();
  // Deliveries follow decisions.
  refreshWebhooks();
  addFeed(el('li', { dataset: { decision: event.decision, value: event.value, state: 'decided' } },
    el('time', {}, time(event.timestamp)),
    el('strong', {}, event.decision), ' → ', el('span', { class: 'value' }, event.value),
    ` (${event.voteCount} of ${event.totalInstances} votes, quorum ${event.quorum})`));
  if (notificationsOn && document.visibilityState !== 'visible') {
    new Notification(`Decided: ${event.decision}`, { body: `${event.value} (${event.voteCount}/${event.totalInstances})` });
  }
}

// The deadline passed without quorum: the event carries the tally at that moment.
function onExpired(event) {
  const decision = ensureDecision(event.decision, event.totalInstances, event.quorum);
  decision.state = 'expired';
  decision.expiredAt = event.timestamp;
  decision.finalDecision = null;
  decision.voteCount = event.voteCount;
  decision.tally = new Map(Object.entries(event.tally));
  renderDecisions();
  if (selected === event.decision) loadTally(event.decision);
  refreshWebhooks();
  addFeed(el('li', { class: 'expired', dataset: { decision: event.decision, value: '', state: 'expired' } },
    el('time', {}, time(event.timestamp)),
    el('strong', {}, event.decision), ' expired without quorum',
    ` (${event.voteCount} of ${event.totalInstances} votes, quorum ${event.quorum}${tallyText(decision.tally)})`));
  if (notificationsOn && document.visibilityState !== 'visible') {
    new Notification(`Expired: ${event.decision}`, { body: `no quorum (${event.voteCount}/${event.totalInstances})` });
  }
}

// "; yes 1, no 2" for a tally, nothing for an empty one.
function tallyText(tally) {
  const parts = [...tally.entries()].map(([value, count]) => `${value} ${count}`);
  return parts.length ? `; ${parts.join(', ')}` : '';
}

function addFeed(item) {
  const feed = $('feed');
  feed.prepend(item);
  while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
}

// ---- rendering ----

function renderDecisions() {
  const list = $('decisions');
  const sorted = [...decisions.values()].sort((a, b) => b.openedAt - a.openedAt).slice(0, MAX_DECISIONS);
  $('no-decisions').hidden = sorted.length > 0;
  list.replaceChildren(...sorted.map(renderDecision));
}

// The badge for a decision's state; an open one with a deadline counts down to it.
function stateBadge(d) {
  if (d.state === 'decided') return el('span', { class: 'badge decided' }, `Decided: ${d.finalDecision} at ${time(d.decidedAt)}`);
  if (d.state === 'expired') return el('span', { class: 'badge expired' }, `Expired at ${time(d.expiredAt)}`);
  if (d.closesAt == null) return el('span', { class: 'badge open' }, 'Open');
  return el('span', { class: 'badge open' }, 'Open, closes in ',
    el('span', { class: 'countdown', dataset: { closesAt: d.closesAt } }, remaining(d.closesAt)));
}

function renderDecision(d) {
  const decided = d.state === 'decided';
  const scale = Math.max(d.totalInstances, 1);
  const rows = [...d.tally.entries()].map(([value, count]) => {
    const winner = decided && value === d.finalDecision;
    return el('li', { class: `bar-row${winner ? ' winner' : ''}`, dataset: { value, count } },
      el('span', { class: 'bar-label', title: value }, value),
      el('span', { class: 'bar-track', 'aria-hidden': 'true' },
        el('span', { class: 'bar-fill', style: `width:${(100 * count) / scale}%` }),
        el('span', { class: 'quorum-line', style: `left:${(100 * d.quorum) / scale}%` })),
      el('span', { class: 'bar-count', 'aria-label': `${count} votes` }, count));
  });
  // All votes together: the decision is reached when this bar meets the quorum line.
  const total = el('li', { class: `bar-row total${d.voteCount >= d.quorum ? ' reached' : ''}`, dataset: { value: '', count: d.voteCount } },
    el('span', { class: 'bar-label' }, 'all votes'),
    el('span', { class: 'bar-track', 'aria-hidden': 'true' },
      el('span', { class: 'bar-fill', style: `width:${(100 * d.voteCount) / scale}%` }),
      el('span', { class: 'quorum-line', style: `left:${(100 * d.quorum) / scale}%` })),
    el('span', { class: 'bar-count', 'aria-label': `${d.voteCount} votes in all` }, d.voteCount));
  const meta = [stateBadge(d), el('span', {}, `${d.voteCount} of ${d.totalInstances} voted`), el('span', {}, `quorum ${d.quorum}`)];
  if (d.state === 'expired' && d.closesAt != null) meta.push(el('span', { class: 'deadline' }, `deadline ${time(d.closesAt)}`));
  if (d.threshold) meta.push(el('span', { class: 'threshold' }, `threshold ${d.threshold}`));
  if (d.electorate) {
    const members = d.electorate.members ? `: ${d.electorate.members.join(', ')}` : '';
    meta.push(el('span', { class: 'electorate' }, `electorate ${d.electorate.role}${members}`));
  }
  const card = el('li', {
    class: `decision ${d.state}`, tabindex: '0', role: 'button', 'aria-selected': String(selected === d.name),
    dataset: {
      decision: d.name, state: d.state, quorumReached: String(decided), final: d.finalDecision ?? '', quorum: d.quorum,
      closesAt: d.closesAt ?? '', expiredAt: d.expiredAt ?? '',
    },
  },
  el('h3', {}, d.name),
  el('div', { class: 'meta' }, ...meta),
  el('ol', { class: 'bars' }, total, ...rows));
  const open = () => select(d.name);
  card.addEventListener('click', open);
  card.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
  return card;
}

function select(name) {
  selected = name;
  renderDecisions();
  loadTally(name);
}

function renderDetail(status) {
  $('detail-empty').hidden = true;
  $('detail').hidden = false;
  $('detail-name').textContent = status.decision;
  const votes = `${status.voteCount} of ${status.totalInstances} votes`;
  const state = stateOf(status);
  $('detail-summary').textContent = state === 'decided'
    ? `Decided ${status.finalDecision} at ${time(status.decidedAt)} with ${votes} (quorum ${status.quorum}).`
    : state === 'expired'
      ? `Expired at ${time(status.expiredAt)} without quorum: ${votes}, quorum ${status.quorum}${status.closesAt ? `; deadline ${time(status.closesAt)}` : ''}.`
      : `Open: ${votes}, quorum ${status.quorum}${status.closesAt ? `; closes at ${time(status.closesAt)}` : ''}.`;
  $('detail-votes').replaceChildren(...status.votes.map((v) => el('tr', {}, el('td', {}, v.seq), el('td', {}, v.instanceId), el('td', {}, v.value))));
}

function renderInstances() {
  $('instance-count').textContent = instances.size;
  const rows = [...instances.values()].sort((a, b) => a.instanceId.localeCompare(b.instanceId)).map((i) =>
    el('tr', { dataset: { instance: i.instanceId } },
      el('td', {}, i.instanceId),
      el('td', {}, (i.roles ?? []).join(', ')),
      el('td', { class: `status-${i.status}` }, i.status),
      el('td', {}, time(i.lastSeen))));
  $('instances').replaceChildren(...rows);
}

// A line in place of the webhook table: none added, not allowed to see them, or an error.
function showWebhooksNote(state, text) {
  const note = $('webhooks-note');
  note.dataset.state = state;
  note.textContent = text;
  note.hidden = false;
  $('webhooks-table').hidden = true;
  $('webhooks').replaceChildren();
}

// What followed an attempt, by its outcome.
const OUTCOMES = { delivered: 'delivered', retry: 'will retry', given_up: 'given up', gone: 'endpoint disabled' };

// "HTTP 200, delivered at 12:00:01", "connection refused by …, will retry at …"; "–" before any.
function attemptText(attempt) {
  if (!attempt) return '–';
  const answer = attempt.status != null ? `HTTP ${attempt.status}` : attempt.error ?? 'no answer';
  return `${answer}, ${OUTCOMES[attempt.outcome] ?? attempt.outcome} at ${time(attempt.at)}`;
}

function renderWebhooks(webhooks) {
  if (webhooks.length === 0) {
    showWebhooksNote('none', 'No webhook endpoints. Add one with quorum-hub webhooks add URL.');
    return;
  }
  const note = $('webhooks-note');
  note.dataset.state = 'listed';
  note.hidden = true;
  $('webhooks-table').hidden = false;
  $('webhooks').replaceChildren(...webhooks.map((w) => {
    const last = w.lastAttempt;
    const endpoint = [el('span', { class: 'webhook-url' }, w.url)];
    if (w.description) endpoint.push(el('span', { class: 'webhook-description' }, w.description));
    const state = [w.state];
    if (w.state === 'disabled') {
      state.push(el('span', { class: 'webhook-reason' }, `${w.disabledReason ?? 'no reason given'} (at ${time(w.disabledAt)})`));
    }
    return el('tr', { dataset: { webhook: w.id, state: w.state, status: last?.status ?? '', outcome: last?.outcome ?? '', event: last?.eventId ?? '', pending: w.pending } },
      el('td', {}, ...endpoint),
      el('td', { class: `webhook-${w.state}` }, ...state),
      el('td', {}, attemptText(last)),
      el('td', {}, w.pending));
  }));
}

// ---- simulation: real sessions, one instance each ----

function parseSpread(text) {
  const values = [];
  for (const part of text.split(',')) {
    const [value, count] = part.split(':').map((s) => s.trim());
    const n = Number(count ?? 1);
    if (!value || !Number.isInteger(n) || n < 0 || n > 50) throw new Error(`bad entry "${part.trim()}": write value:count`);
    for (let i = 0; i < n; i++) values.push(value);
  }
  return values;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The hub's /ws URL for this page. */
function hubUrl(location) {
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

async function simulate(decision, totalInstances, values, closeAfterMs) {
  const run = Math.random().toString(36).slice(2, 7);
  const url = hubUrl(window.location);
  let done = 0;
  const status = $('sim-status');
  status.textContent = `Opening ${values.length} sessions…`;
  const agents = values.map((value, i) => (async () => {
    const agent = new Client(url, { instanceId: `sim-${run}-${i + 1}`, roles: ['simulated'], token: pageToken });
    try {
      await agent.connect();
      await sleep(150 + Math.random() * 900);
      const reply = await agent.vote(decision, value, { totalInstances, closeAfterMs });
      done++;
      const outcome = reply.quorumReached ? `; decided: ${reply.finalDecision}` : reply.reason === 'expired' ? '; the decision expired' : '';
      status.textContent = `${done} of ${values.length} votes cast${outcome}`;
      await sleep(1500);
    } catch (error) {
      status.textContent = `Simulation stopped: ${error.message}`;
    } finally {
      agent.close();
    }
  })());
  await Promise.all(agents);
}

$('sim-form').addEventListener('submit', (event) => {
  event.preventDefault();
  let values;
  try {
    values = parseSpread($('sim-spread').value);
  } catch (error) {
    $('sim-status').textContent = error.message;
    return;
  }
  // Seconds on the form, closeAfterMs on the wire; empty: the hub's longest (--max-open).
  const deadline = $('sim-deadline').value.trim();
  const closeAfterMs = deadline === '' ? null : Math.round(Number(deadline) * 1000);
  simulate($('sim-decision').value.trim(), Number($('sim-total').value), values, closeAfterMs);
});

$('notify').addEventListener('click', async () => {
  if (!('Notification' in window)) {
    $('notify').textContent = 'Notifications unsupported';
    return;
  }
  notificationsOn = (await Notification.requestPermission()) === 'granted';
  $('notify').textContent = notificationsOn ? 'Notifications on' : 'Notifications blocked';
  if (notificationsOn) offerPush();
});

// Offers Web Push once notifications are allowed, ticked if this browser is subscribed.
async function offerPush() {
  if (!pushSupported()) return;
  $('push-closed').checked = await pushSubscribed().catch(() => false);
  $('push-control').hidden = false;
}

$('push-closed').addEventListener('change', async (event) => {
  const on = event.target.checked;
  const call = (method, params) => socket.call(method, params);
  $('push-status').textContent = on ? 'subscribing…' : 'unsubscribing…';
  try {
    if (on) await subscribePush(call);
    else await unsubscribePush(call);
    $('push-status').textContent = on ? 'Web Push on' : 'Web Push off';
  } catch (err) {
    event.target.checked = !on;
    $('push-status').textContent = `Web Push: ${err.message || err}`;
  }
});
if ('Notification' in window && Notification.permission === 'granted') {
  notificationsOn = true;
  $('notify').textContent = 'Notifications on';
  offerPush();
}

// ---- the page's own session ----

function showState(state) {
  const node = $('conn-state');
  node.textContent = state;
  node.dataset.state = state;
}

// The page's session (the client reconnects by itself and resumes from the last decision
// event; it subscribes again after each reconnection, before onConnect).
const socket = new Client(hubUrl(window.location), {
  token: pageToken,
  minBackoffMs: 250,
  // A refresh while disconnected fails at once; the next connection refreshes.
  reconnectWaitMs: 0,
  onStateChange: showState,
  onConnect() {
    refresh();
    refreshWebhooks();
  },
});
(async () => {
  for (let attempt = 0; ; attempt++) {
    try {
      await socket.connect();
      break;
    } catch {
      showState('reconnecting');
      await sleep(backoffDelay(attempt, 250, 5000));
    }
  }
  await socket.subscribe(['quorum.vote.recorded', 'instance.*']).catch(() => {});
  refresh(); // what changed before the subscription took effect
  for await (const { event, ...params } of socket.decisions()) onNotification(event, params);
})();
setInterval(refresh, REFRESH_MS);
setInterval(refreshWebhooks, WEBHOOKS_REFRESH_MS);
// Counts down in place: re-rendering the cards would take the focus off a selected one.
setInterval(() => {
  for (const node of document.querySelectorAll('#decisions .countdown')) {
    node.textContent = remaining(Number(node.dataset.closesAt));
  }
}, COUNTDOWN_MS);
window.quorumDashboard = { socket, decisions, instances };
