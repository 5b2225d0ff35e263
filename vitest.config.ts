import { defineConfig } from 'vitest/config';

// Three tiers. Unit tests do no I/O and run in parallel. Integration and chaos tests start real
// nats-server / redis-server / UCX peers on ephemeral loopback ports; on a 2-core machine they run
// one file at a time so timing-sensitive assertions are not starved.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: 'forks',
          fileParallelism: false,
          env: { UCX_MEM_MMAP_HOOK_MODE: 'none' },
        },
      },
      {
        test: {
          name: 'chaos',
          include: ['test/chaos/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          pool: 'forks',
          fileParallelism: false,
          env: { UCX_MEM_MMAP_HOOK_MODE: 'none' },
        },
      },
    ],
  },
});
