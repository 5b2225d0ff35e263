/**
 * A small progress bar with no dependency. On a TTY it redraws one line in place; otherwise
 * (a pipe, a log file, CI) carriage returns would pile up as garbage, so it prints a plain line
 * at most every `lineIntervalMs` and once at the end.
 */

export interface ProgressOptions {
  total: number;
  label?: string;
  /** @default process.stdout */
  stream?: NodeJS.WriteStream;
  /** Bar width in characters (TTY only). @default 30 */
  width?: number;
  /** Non-TTY: at most one line per this many ms (the final update always prints). @default 2000 */
  lineIntervalMs?: number;
  /** TTY: at most one redraw per this many ms. @default 50 */
  redrawIntervalMs?: number;
}

export const PROGRESS_DEFAULTS = { width: 30, lineIntervalMs: 2000, redrawIntervalMs: 50 } as const;

export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly width: number;
  private readonly intervalMs: number;
  private lastDrawMs = Number.NEGATIVE_INFINITY;
  private done = 0;
  private suffix = '';
  private finished = false;

  constructor(private readonly o: ProgressOptions) {
    this.stream = o.stream ?? process.stdout;
    this.tty = this.stream.isTTY === true;
    this.width = o.width ?? PROGRESS_DEFAULTS.width;
    this.intervalMs = this.tty
      ? (o.redrawIntervalMs ?? PROGRESS_DEFAULTS.redrawIntervalMs)
      : (o.lineIntervalMs ?? PROGRESS_DEFAULTS.lineIntervalMs);
  }

  /** Set progress to `done` of total, with a short status text after the bar. */
  update(done: number, suffix = ''): void {
    if (this.finished) return;
    this.done = Math.min(Math.max(0, done), this.o.total);
    this.suffix = suffix;
    const now = performance.now();
    if (this.done < this.o.total && now - this.lastDrawMs < this.intervalMs) return;
    this.lastDrawMs = now;
    this.draw();
  }

  /** Draw the final state and end the line. Idempotent. */
  finish(suffix?: string): void {
    if (this.finished) return;
    if (suffix !== undefined) this.suffix = suffix;
    this.draw();
    if (this.tty) this.stream.write('\n');
    this.finished = true;
  }

  /** The text of one frame (exported for tests and for the non-TTY line). */
  render(): string {
    const total = this.o.total;
    const frac = total === 0 ? 1 : this.done / total;
    const pct = `${Math.floor(frac * 100)}%`.padStart(4);
    const count = `${String(this.done).padStart(String(total).length)}/${total}`;
    const label = this.o.label ? `${this.o.label} ` : '';
    const tail = this.suffix ? `  ${this.suffix}` : '';
    if (!this.tty) return `${label}${count} ${pct.trim()}${tail}`;
    const filled = Math.round(frac * this.width);
    const bar = '#'.repeat(filled) + '.'.repeat(this.width - filled);
    return `${label}[${bar}] ${count} ${pct}${tail}`;
  }

  private draw(): void {
    if (this.tty) this.stream.write(`\r\x1b[2K${this.render()}`);
    else this.stream.write(`${this.render()}\n`);
  }
}
