/**
 * Whether the SDK's NATS connection is up, from the client's status events. While it is down
 * (a nats-server died and the client is reconnecting), shard calls fail at once with a typed
 * TRANSPORT error instead of each waiting out its timeout: the flows treat that as a failed copy,
 * so a get returns the best hit it can and a put stores what it can, quickly, and neither throws.
 */
import type { NatsConnection } from '@nats-io/transport-node';

export class NatsLink {
  connected = true;
  /** Disconnections seen since connect. */
  disconnects = 0;
  reconnects = 0;
}

const links = new WeakMap<NatsConnection, NatsLink>();

/** Start following a connection's status (ends when the connection closes). */
export function watchLink(nc: NatsConnection): NatsLink {
  const link = new NatsLink();
  links.set(nc, link);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        link.connected = false;
        link.disconnects++;
      } else if (s.type === 'reconnect') {
        link.connected = true;
        link.reconnects++;
      }
    }
  })().catch(() => undefined);
  return link;
}

/** false only while a watched connection is known to be disconnected. */
export function isLinkUp(nc: NatsConnection): boolean {
  return links.get(nc)?.connected !== false;
}
