// The dashboard's service worker: shows a notification for each decision the hub sends by
// Web Push (system.push.subscribe), also when no dashboard tab is open, and brings the
// dashboard forward when one is clicked. A message's body is the webhook body:
// {type, timestamp, data}, data being the notification's params.

const TITLES = {
  'quorum.decision.made': (d) => [`Decided: ${d.decision}`, `${d.value} (${d.voteCount} of ${d.totalInstances} votes)`],
  'quorum.decision.expired': (d) => [`Expired: ${d.decision}`, `no quorum (${d.voteCount} of ${d.totalInstances} votes)`],
  'system.events.incomplete': () => ['Decisions missed', 'Some decisions could not be delivered; open the dashboard for the current state.'],
};

self.addEventListener('push', (event) => {
  let message;
  try {
    message = event.data.json();
  } catch {
    return;
  }
  const title = TITLES[message.type];
  if (!title) return;
  const [heading, body] = title(message.data || {});
  event.waitUntil(
    self.registration.showNotification(heading, {
      body,
      // One notification per decision: a later event of the same decision replaces it.
      tag: message.data && message.data.decision ? `decision:${message.data.decision}` : message.type,
      data: { type: message.type, decision: message.data && message.data.decision },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const dashboard = self.registration.scope;
    const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const open = tabs.find((tab) => tab.url.startsWith(dashboard));
    if (open) return open.focus();
    return self.clients.openWindow(dashboard);
  })());
});
