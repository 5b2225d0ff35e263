/** `kvfabric version`: what this build speaks, so two nodes (or a foreign engine) can be compared. */
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KEY_SCHEME_VERSION } from '../../../shared/hashing.js';
import { PROTOCOL_VERSION } from '../../../shared/protocol/codec.js';

/** The package.json above this file, found by walking up (source and dist/ sit at different depths). */
export function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = path.join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'kvfabric' && pkg.version) return pkg.version;
    }
    const up = path.dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}

export function versionInfo(): { kvfabric: string; protocol: number; keyScheme: number; node: string } {
  return {
    kvfabric: packageVersion(),
    protocol: PROTOCOL_VERSION,
    keyScheme: KEY_SCHEME_VERSION,
    node: process.version,
  };
}

export function run(argv: string[]): Promise<number> {
  const info = versionInfo();
  if (argv.includes('--json')) {
    process.stdout.write(JSON.stringify(info) + '\n');
  } else if (argv.length > 0) {
    process.stderr.write('usage: kvfabric version [--json]\n');
    return Promise.resolve(2);
  } else {
    process.stdout.write(
      `kvfabric ${info.kvfabric}\nprotocol ${info.protocol}\nkey-scheme ${info.keyScheme}\nnode ${info.node}\n`,
    );
  }
  return Promise.resolve(0);
}
