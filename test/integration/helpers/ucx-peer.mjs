// A UCX peer process for the integration tests: JSON-line commands on stdin, replies on stdout.
// The protocol and the logic live in services/cli/commands/transfer-peer.ts (the benchmark
// drives the same peers); run `npm run build:ts` first. UCX_TLS etc. come from this process's environment.
process.env.UCX_MEM_MMAP_HOOK_MODE ??= 'none';
const { runTransferPeer } = await import('../../../dist/services/cli/commands/transfer-peer.js');
await runTransferPeer();
