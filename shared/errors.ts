/**
 * Typed errors with stable numeric codes, grouped in ranges by subsystem (Mooncake-style).
 * Codes never change meaning once released; new codes are appended inside their range.
 * An error crosses NATS as a reply with the `Nats-Service-Error` / `Nats-Service-Error-Code`
 * headers (the NATS micro-service convention) plus a JSON body (see protocol/codec.ts).
 */
export const ErrorCode = {
  // 1000-1099: protocol and request validation
  BAD_REQUEST: 1000,
  MALFORMED: 1001,
  UNKNOWN_OPERATION: 1002,
  VERSION_MISMATCH: 1003,
  PAYLOAD_TOO_LARGE: 1004,
  BATCH_TOO_LARGE: 1005,
  // 1100-1199: models and block shapes
  UNKNOWN_MODEL: 1100,
  INVALID_PROFILE: 1101,
  SHAPE_MISMATCH: 1102,
  DTYPE_MISMATCH: 1103,
  PROFILE_CONFLICT: 1104,
  // 1200-1299: placement, epochs and leadership
  STALE_EPOCH: 1200,
  NOT_OWNER: 1201,
  NO_PLACEMENT: 1202,
  NOT_LEADER: 1203,
  FENCED: 1204,
  /** A replica asked to serve a cell it has not (yet) copied in full from the primary. */
  NOT_IN_SYNC: 1205,
  // 1300-1399: storage (arenas, blocks, leases)
  ARENA_FULL: 1300,
  BLOCK_NOT_FOUND: 1301,
  CHECKSUM_MISMATCH: 1302,
  LEASE_EXPIRED: 1303,
  ALLOCATION_NOT_FOUND: 1304,
  CLOSED: 1305,
  OUT_OF_RANGE: 1306,
  DOUBLE_FREE: 1307,
  // 1400-1499: data transport (UCX, CUDA)
  TRANSPORT: 1400,
  PEER_UNREACHABLE: 1401,
  TIMEOUT: 1402,
  CUDA_UNAVAILABLE: 1403,
  NATIVE_UNAVAILABLE: 1404,
  // 1500-1599: index (Redis)
  INDEX_DEGRADED: 1500,
  // 1600-1699: configuration
  CONFIG_INVALID: 1600,
  // 1900-1999: internal
  INTERNAL: 1900,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

const NAME_BY_CODE = new Map<number, ErrorCodeName>(
  (Object.entries(ErrorCode) as [ErrorCodeName, number][]).map(([k, v]) => [v, k]),
);

export function errorCodeName(code: number): ErrorCodeName | undefined {
  return NAME_BY_CODE.get(code);
}

/** Every operating error kvfabric raises or returns over the wire is a KvfError. */
export class KvfError extends Error {
  override name = 'KvfError';
  readonly code: ErrorCodeValue;
  readonly codeName: ErrorCodeName;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    codeName: ErrorCodeName,
    message: string,
    opts: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.codeName = codeName;
    this.code = ErrorCode[codeName];
    this.details = opts.details;
  }

  toJSON(): { code: number; name: string; message: string; details?: Record<string, unknown> } {
    return { code: this.code, name: this.codeName, message: this.message, details: this.details };
  }

  /** Rebuild an error received over the wire; unknown codes become INTERNAL with the code kept. */
  static fromWire(code: number, message: string, details?: Record<string, unknown>): KvfError {
    const name = errorCodeName(code);
    return new KvfError(name ?? 'INTERNAL', message, {
      details: name ? details : { ...details, remoteCode: code },
    });
  }
}

export function isKvfError(err: unknown, codeName?: ErrorCodeName): err is KvfError {
  return err instanceof KvfError && (codeName === undefined || err.codeName === codeName);
}

export const isStaleEpoch = (err: unknown): err is KvfError => isKvfError(err, 'STALE_EPOCH');
export const isNotOwner = (err: unknown): err is KvfError => isKvfError(err, 'NOT_OWNER');
export const isUnknownModel = (err: unknown): err is KvfError => isKvfError(err, 'UNKNOWN_MODEL');
export const isChecksumMismatch = (err: unknown): err is KvfError => isKvfError(err, 'CHECKSUM_MISMATCH');
export const isTimeout = (err: unknown): err is KvfError => isKvfError(err, 'TIMEOUT');

/** Wrap anything thrown into a KvfError (programmer errors become INTERNAL). */
export function toKvfError(err: unknown): KvfError {
  if (err instanceof KvfError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KvfError('INTERNAL', message, { cause: err });
}
