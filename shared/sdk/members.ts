/**
 * The SDK reads member records (UCX addresses, per-model rkeys) through the same watched cache as
 * the actors: shared/cluster/members-cache.ts.
 */
export { MembersCache } from '../cluster/members-cache.js';
