/**
 * Error classes. Every error the library throws on purpose is a `NattenError`,
 * so callers can tell our errors apart from bugs in their own code.
 */

export type NattenErrorCode =
  | 'argument'
  | 'unsupported'
  | 'not-implemented'
  | 'shader'
  | 'device'
  | 'internal';

export class NattenError extends Error {
  readonly code: NattenErrorCode;
  constructor(message: string, code: NattenErrorCode = 'internal', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NattenError';
    this.code = code;
  }
}

/** Bad shapes, dtypes or argument values. The message names the op, the argument, the rule and the value. */
export class NattenArgumentError extends NattenError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'argument', options);
    this.name = 'NattenArgumentError';
  }
}

/** A valid request that this backend, dtype, rank or adapter cannot serve. */
export class NattenUnsupportedError extends NattenError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'unsupported', options);
    this.name = 'NattenUnsupportedError';
  }
}

/** An op or option that is planned but not implemented yet. */
export class NattenNotImplementedError extends NattenError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'not-implemented', options);
    this.name = 'NattenNotImplementedError';
  }
}

/** Internal invariant: a failure here is a bug in natten-web, not in the caller's input. */
export function invariant(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    const text = typeof message === 'function' ? message() : message;
    throw new NattenError(`natten-web internal error: ${text}`, 'internal');
  }
}
