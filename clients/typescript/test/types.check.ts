// Type-checked by `tsc --noEmit` (never run): the declarations fit together and with the
// generated wire types, and an agent written against them compiles.

import {
  Client,
  RateLimited,
  BackendUnavailable,
  type ClientEvent,
  type ResultOf,
  type VoteReply,
  type DecisionStatus,
  type State,
} from '../src/index.js';

export async function agent(url: string): Promise<string | null> {
  const client = await Client.connect(url, { instanceId: 'agent-1', token: async () => 'token', roles: ['worker'] });
  const events = client.decisions();
  let reply: VoteReply;
  try {
    reply = await client.vote('upgrade', 'approve', { totalInstances: 3, closeAfterMs: 60_000 });
  } catch (error) {
    if (error instanceof RateLimited) return String(error.retryAfterMs);
    if (error instanceof BackendUnavailable) return error.reason;
    throw error;
  }
  if (reply.finalDecision) return reply.finalDecision;
  const status: DecisionStatus = await client.status('upgrade');
  const page: State = await client.getState({ limit: 10, instancesAfter: status.decision });
  const next: string | null | undefined = page.nextInstances;
  const again: ResultOf<'system.get_state'> = await client.call('system.get_state', { limit: 1 });
  void next;
  void again;
  for await (const event of events) {
    const seen: ClientEvent = event;
    if (seen.event === 'quorum.decision.made') return `${seen.decision} ${seen.value} ${seen.eventId}`;
    if (seen.event === 'quorum.decision.expired') return `${seen.decision} ${Object.keys(seen.tally).join(',')}`;
    if (seen.event === 'system.events.incomplete') return `${seen.reason} ${seen.since}`;
  }
  client.close();
  return null;
}
