/**
 * Entry point of the replica actor (`kvfabric replica --config <file>`). Thin on purpose: it reads the
 * config and signals; the actor's behaviour lives in its state machine beside this file.
 * For now it only starts, logs its effective config and exits 0 on SIGTERM/SIGINT.
 */
import { bootActor, waitForShutdown } from '../../shared/process.js';

const WHAT = "Runs a replica actor: pulls copies of its primaries' blocks so a failed node loses nothing.";

export async function main(argv: string[]): Promise<number> {
  const boot = bootActor('replica', WHAT, argv); // also starts watching for SIGTERM/SIGINT
  if (typeof boot === 'number') return boot;
  const { log } = boot;
  log.info('started');
  const signal = await waitForShutdown();
  log.info('stopping', { signal });
  return 0;
}
