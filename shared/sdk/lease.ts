/**
 * Read-lease timing: a reader that outlives its lease fails closed. The lease starts on the node
 * when it answers a locate, which is after the client SENT it, so a deadline measured from the
 * local send time (monotonic clock) can only be early, never late, whatever the clocks of the two
 * hosts say. Blocks whose UCX read AND checksum check complete after the deadline minus a safety
 * margin (for the node's own timer granularity and the time the verdict takes to be acted on)
 * are treated as failed: the node may already have reused their slots.
 */

/** A monotonic clock in milliseconds (performance.now by default; tests inject one). */
export type MonoClock = () => number;

export const monoNow: MonoClock = () => performance.now();

export class LeaseWindow {
  /** Monotonic ms past which bytes read under this lease are not trusted. */
  readonly deadline: number;

  constructor(
    /** Local monotonic time the locate request was sent. */
    readonly sentAt: number,
    leaseTtlMs: number,
    safetyMarginMs: number,
    private readonly clock: MonoClock = monoNow,
  ) {
    this.deadline = sentAt + leaseTtlMs - safetyMarginMs;
  }

  /** Start the window now (call immediately before sending the locate). */
  static startNow(leaseTtlMs: number, safetyMarginMs: number, clock: MonoClock = monoNow): LeaseWindow {
    return new LeaseWindow(clock(), leaseTtlMs, safetyMarginMs, clock);
  }

  /** Whether work that completes now is still covered by the lease. */
  holds(): boolean {
    return this.clock() <= this.deadline;
  }
}

export interface BlockVerdictInput {
  /** UCX reported the transfer complete. */
  transferred: boolean;
  /** The block's crc32c as read, computed after the transfer (undefined when not transferred). */
  checksum: number | undefined;
  /** The checksum the locate reply gave. */
  expected: number;
}

export type BlockVerdict = 'ok' | 'transfer_failed' | 'corrupt' | 'late';

/**
 * The verdict of a batch of blocks read under one lease: checked after every transfer and
 * checksum of the batch is done, so a batch that finished too late is rejected as a whole.
 */
export function judgeBatch(window: LeaseWindow, blocks: readonly BlockVerdictInput[]): BlockVerdict[] {
  const inTime = window.holds();
  return blocks.map((b) => {
    if (!b.transferred) return 'transfer_failed';
    // A late block may mismatch because its slot was reused: not evidence of corruption.
    if (!inTime) return 'late';
    return b.checksum === b.expected ? 'ok' : 'corrupt';
  });
}
