// The dashboard: instances, decisions with live tallies, audit trails, a live feed of
// decisions and a simulator. Every string from the hub is rendered as text, never HTML.

import { RpcSocket, hubUrl } from './rpc-socket.js';

const REFRESH_MS = 5000;
const MAX_DECISIONS = 50;
const MAX_FEED = 100;

const $ = (id) => document.getElementById(id);
const decisions = new Map(); // name -> {name, totalInstances, quorum, voteCount, tally: Map, finalDecision, decidedAt}
const instances = new Map(); // id -> {instanceId, roles, status, lastSeen}
let selected = null;
let notificationsOn = false;

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

// ---- state from the hub ----

function decisionFrom(summary) {
  const known = decisions.get(summary.decision);
  return {
    name: summary.decision,
    totalInstances: summary.totalInstances,
    quorum: summary.quorum,
    voteCount: summary.voteCount,
    tally: known?.tally ?? new Map(),
    finalDecision: summary.finalDecision ?? null,
    decidedAt: summary.decidedAt ?? null,
    openedAt: summary.openedAt ?? known?.openedAt ?? Date.now(),
  };
}

async function loadTally(name) {
  try {
    const status = await socket.call('system.quorum.status', { decision: name });
    const decision = decisions.get(name);
    if (!decision) return;
    decision.tally = new Map(Object.entries(status.tally));
    decision.voteCount = status.voteCount;
    decision.finalDecision = status.finalDecision ?? null;
    decision.decidedAt = status.decidedAt ?? null;
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

// ---- events ----

function onNotification(method, params) {
  switch (method) {
    case 'quorum.decision.made': return onDecision(params);
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
    decisions.set(name, { name, totalInstances, quorum, voteCount: 0, tally: new Map(), finalDecision: null, decidedAt: null, openedAt: Date.now() });
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
  decision.finalDecision = event.value;
  decision.decidedAt = event.timestamp;
  decision.voteCount = Math.max(decision.voteCount, event.voteCount);
  if ([...decision.tally.values()].reduce((a, b) => a + b, 0) < event.voteCount) loadTally(event.decision);
  renderDecisions();
  addFeed(el('li', { dataset: { decision: event.decision, value: event.value } },
    el('time', {}, time(event.timestamp)),
    el('strong', {}, event.decision), ' → ', el('span', { class: 'value' }, event.value),
    ` (${event.voteCount} of ${event.totalInstances} votes, quorum ${event.quorum})`));
  if (notificationsOn && document.visibilityState !== 'visible') {
    new Notification(`Decided: ${event.decision}`, { body: `${event.value} (${event.voteCount}/${event.totalInstances})` });
  }
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

function renderDecision(d) {
  const decided = d.finalDecision !== null;
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
  const badge = decided
    ? el('span', { class: 'badge decided' }, `Decided: ${d.finalDecision} at ${time(d.decidedAt)}`)
    : el('span', { class: 'badge open' }, 'Open');
  const card = el('li', {
    class: 'decision', tabindex: '0', role: 'button', 'aria-selected': String(selected === d.name),
    dataset: { decision: d.name, quorumReached: String(decided), final: d.finalDecision ?? '', quorum: d.quorum },
  },
  el('h3', {}, d.name),
  el('div', { class: 'meta' }, badge, el('span', {}, `${d.voteCount} of ${d.totalInstances} voted`), el('span', {}, `quorum ${d.quorum}`)),
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
  $('detail-summary').textContent = status.quorumReached
    ? `Decided ${status.finalDecision} at ${time(status.decidedAt)} with ${status.voteCount} of ${status.totalInstances} votes (quorum ${status.quorum}).`
    : `Open: ${status.voteCount} of ${status.totalInstances} votes, quorum ${status.quorum}.`;
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

async function simulate(decision, totalInstances, values) {
  const run = Math.random().toString(36).slice(2, 7);
  const url = hubUrl(window.location);
  let done = 0;
  const status = $('sim-status');
  status.textContent = `Opening ${values.length} sessions…`;
  const agents = values.map((value, i) => (async () => {
    const agent = new RpcSocket(url, {});
    try {
      for (let tries = 0; agent.state !== 'connected'; tries++) {
        if (tries > 100) throw new Error('could not connect');
        await sleep(50);
      }
      const instanceId = `sim-${run}-${i + 1}`;
      await agent.call('system.register', { instanceId, roles: ['simulated'] });
      await sleep(150 + Math.random() * 900);
      const reply = await agent.call('system.quorum.vote', { instanceId, decision, value, totalInstances });
      done++;
      status.textContent = `${done} of ${values.length} votes cast${reply.quorumReached ? `; decided: ${reply.finalDecision}` : ''}`;
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
  simulate($('sim-decision').value.trim(), Number($('sim-total').value), values);
});

$('notify').addEventListener('click', async () => {
  if (!('Notification' in window)) {
    $('notify').textContent = 'Notifications unsupported';
    return;
  }
  notificationsOn = (await Notification.requestPermission()) === 'granted';
  $('notify').textContent = notificationsOn ? 'Notifications on' : 'Notifications blocked';
});

// ---- the page's own session ----

const socket = new RpcSocket(hubUrl(window.location), {
  onState(state) {
    const node = $('conn-state');
    node.textContent = state;
    node.dataset.state = state;
  },
  async onOpen() {
    await socket.call('system.subscribe', { events: ['quorum.vote.recorded', 'instance.*'] }).catch(() => {});
    refresh();
  },
  onNotification,
});
setInterval(refresh, REFRESH_MS);
window.quorumDashboard = { socket, decisions, instances };
