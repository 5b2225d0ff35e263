#!/usr/bin/env node
// Thin launcher: the CLI is compiled TypeScript under dist/. UCX's mmap hooks crash V8, so they are
// disabled before anything can load the native addon (native/index.ts sets it too).
process.env.UCX_MEM_MMAP_HOOK_MODE ??= 'none';
try {
  await import('../dist/services/cli/main.js');
} catch (err) {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/services/cli')) {
    console.error('kvfabric: not built yet. Run `npm run bootstrap` (or `npm run build`) in the repository first.');
    process.exit(1);
  }
  throw err;
}
