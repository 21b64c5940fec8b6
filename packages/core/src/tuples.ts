import { NattenArgumentError } from './errors.ts';

/** Rank of neighborhood attention: the number of spatial axes. */
export type NaRank = 1 | 2 | 3;

/** A per-axis tuple, typed by rank. */
export type Dims<R extends NaRank> = R extends 1
  ? readonly [number]
  : R extends 2
    ? readonly [number, number]
    : readonly [number, number, number];

export type BoolDims<R extends NaRank> = R extends 1
  ? readonly [boolean]
  : R extends 2
    ? readonly [boolean, boolean]
    : readonly [boolean, boolean, boolean];

/** A number applies to every axis; a tuple gives one value per axis. */
export type DimsOrScalar<R extends NaRank> = number | Dims<R>;
export type BoolDimsOrScalar<R extends NaRank> = boolean | BoolDims<R>;

export function isNaRank(value: unknown): value is NaRank {
  return value === 1 || value === 2 || value === 3;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => String(v)).join(', ')}]`;
  if (typeof value === 'string') return `'${value}'`;
  return String(value);
}

/**
 * Normalize an integer-or-tuple argument to a rank-length tuple of integers >= `min`.
 * `op` and `name` are used in the error message, e.g. `na2d: kernel_size[1]=1 must be an integer >= 2`.
 */
export function normalizeDims<R extends NaRank>(op: string, name: string, value: unknown, rank: R, min = 1): Dims<R> {
  let out: number[];
  if (typeof value === 'number') {
    out = new Array<number>(rank).fill(value);
  } else if (Array.isArray(value)) {
    if (value.length !== rank) {
      throw new NattenArgumentError(
        `${op}: ${name} has ${value.length} entries (${describe(value)}) but this is a ${rank}-D op; give one integer or a tuple of ${rank}`,
      );
    }
    out = value as number[];
  } else {
    throw new NattenArgumentError(
      `${op}: invalid value for ${name}; expected an integer or a tuple of ${rank} integers, got ${describe(value)}`,
    );
  }
  for (let i = 0; i < rank; i++) {
    const v = out[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      const label = rank === 1 && typeof value === 'number' ? name : `${name}[${i}]`;
      throw new NattenArgumentError(`${op}: ${label}=${describe(v)} must be an integer >= ${min}`);
    }
  }
  return Object.freeze([...out]) as unknown as Dims<R>;
}

/** Normalize a boolean-or-tuple argument (e.g. `is_causal`). */
export function normalizeBools<R extends NaRank>(op: string, name: string, value: unknown, rank: R): BoolDims<R> {
  let out: unknown[];
  if (typeof value === 'boolean') out = new Array<boolean>(rank).fill(value);
  else if (Array.isArray(value)) {
    if (value.length !== rank) {
      throw new NattenArgumentError(
        `${op}: ${name} has ${value.length} entries (${describe(value)}) but this is a ${rank}-D op; give one boolean or a tuple of ${rank}`,
      );
    }
    out = value;
  } else {
    throw new NattenArgumentError(
      `${op}: invalid value for ${name}; expected a boolean or a tuple of ${rank} booleans, got ${describe(value)}`,
    );
  }
  for (let i = 0; i < rank; i++) {
    if (typeof out[i] !== 'boolean') {
      throw new NattenArgumentError(`${op}: ${name}[${i}]=${describe(out[i])} must be a boolean`);
    }
  }
  return Object.freeze([...(out as boolean[])]) as unknown as BoolDims<R>;
}

export function product(values: readonly number[]): number {
  let p = 1;
  for (const v of values) p *= v;
  return p;
}
