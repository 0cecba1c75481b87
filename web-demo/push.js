// Web Push for the dashboard: subscribes this browser with the hub's VAPID key, so that
// the service worker (sw.js) shows decisions also when the tab is closed, and unsubscribes.

// Whether this browser can receive Web Push at all.
export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

// The service worker's registration, registered on first use.
async function registration() {
  await navigator.serviceWorker.register('sw.js');
  return navigator.serviceWorker.ready;
}

// Whether this browser is subscribed already.
export async function pushSubscribed() {
  if (!pushSupported()) return false;
  const existing = await navigator.serviceWorker.getRegistration();
  return Boolean(existing && (await existing.pushManager.getSubscription()));
}

// Subscribes this browser and hands the subscription to the hub; `call` is the page's
// JSON-RPC call. Resolves to the hub's reply.
export async function subscribePush(call) {
  const reg = await registration();
  const answer = await fetch('push/key');
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error || `GET /push/key answered ${answer.status}`);
  let subscription = await reg.pushManager.getSubscription();
  if (!subscription) {
    subscription = await reg.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: fromBase64url(body.publicKey),
    });
  }
  return call('system.push.subscribe', { subscription: subscription.toJSON() });
}

// Ends this browser's subscription, at the hub and in the browser.
export async function unsubscribePush(call) {
  const reg = await navigator.serviceWorker.getRegistration();
  const subscription = reg && (await reg.pushManager.getSubscription());
  if (!subscription) return;
  await call('system.push.unsubscribe', { endpoint: subscription.endpoint });
  await subscription.unsubscribe();
}

function fromBase64url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}
