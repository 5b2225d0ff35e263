/**
 * Length-prefixed frames: a 4-byte big-endian body length, then the body (UTF-8 JSON). The
 * decoder never buffers more than one frame's worth: a declared length above frameBytesMax is
 * fatal for the connection (the stream cannot be resynchronised), everything else is per frame.
 */
import { KvfError } from '../../shared/errors.js';

export const FRAME_HEADER_BYTES = 4;

export function encodeFrame(body: unknown, replacer?: (key: string, value: unknown) => unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body, replacer), 'utf8');
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + json.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, FRAME_HEADER_BYTES);
  return out;
}

export type Decoded = { kind: 'frame'; body: Buffer } | { kind: 'fatal'; error: KvfError };

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed = false;

  constructor(private readonly frameBytesMax: number) {}

  /** Feed bytes; returns the complete frames (and at most one fatal error, last). */
  push(data: Buffer): Decoded[] {
    if (this.failed) return [];
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Decoded[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) return out;
      const head = this.peek(FRAME_HEADER_BYTES);
      const length = head.readUInt32BE(0);
      if (length > this.frameBytesMax) {
        this.failed = true;
        out.push({
          kind: 'fatal',
          error: new KvfError(
            'PAYLOAD_TOO_LARGE',
            `frame of ${length} bytes exceeds frameBytesMax (${this.frameBytesMax})`,
            { details: { length, frameBytesMax: this.frameBytesMax } },
          ),
        });
        return out;
      }
      if (this.buffered < FRAME_HEADER_BYTES + length) return out;
      const whole = this.take(FRAME_HEADER_BYTES + length);
      out.push({ kind: 'frame', body: whole.subarray(FRAME_HEADER_BYTES) });
    }
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0] as Buffer).length < n) this.chunks = [Buffer.concat(this.chunks)];
    return (this.chunks[0] as Buffer).subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const frame = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return frame;
  }
}
