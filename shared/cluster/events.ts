/**
 * Publishing to the KVF_EVENTS stream. Events are an audit log: a failed publish is logged by
 * the caller and never blocks the state change it describes (the KV write is the truth).
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import {
  encodeRecord,
  EVENT_SUBJECTS,
  type LeaderEvent,
  type MemberEvent,
  type PlacementEvent,
  type ReplicationEvent,
} from '../protocol/cluster.js';

export type ClusterEvent =
  | { subject: typeof EVENT_SUBJECTS.placement; body: PlacementEvent }
  | { subject: typeof EVENT_SUBJECTS.member; body: MemberEvent }
  | { subject: typeof EVENT_SUBJECTS.leader; body: LeaderEvent }
  | { subject: typeof EVENT_SUBJECTS.replication; body: ReplicationEvent };

export async function publishEvent(js: JetStreamClient, e: ClusterEvent): Promise<number> {
  const ack = await js.publish(e.subject, encodeRecord(e.body));
  return ack.seq;
}
