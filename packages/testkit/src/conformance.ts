import { cpuBackend } from '@natten-web/cpu';
import { type DType, type NaBackend, type NaRank, type OpFamily, opName } from '@natten-web/core';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { buildCases, type CaseSize, type NaCase } from './cases.ts';
import { type NaReference, runNaCase, type ToleranceOverride } from './run-case.ts';
import { appendSupportRecords, dtypeAbbr, SUPPORT_OUT_ENV } from './support.ts';

/** A case pattern a backend cannot run, with the reason (an unsupported feature, never a failure to hide). */
export interface Exclusion {
  readonly pattern: RegExp;
  readonly reason: string;
}

export interface NaConformanceOptions {
  /** Suite name; also the backend's name in the support record. */
  readonly name: string;
  readonly makeBackend: () => Promise<NaBackend>;
  /** Dtypes to run (float64 only where the backend has it, i.e. cpu). */
  readonly dtypes: readonly DType[];
  /** Loosenings on top of the STYLE.md §5 defaults, each with its reason. */
  readonly tolerance?: readonly ToleranceOverride[];
  readonly exclusions?: readonly Exclusion[];
  /** `quick` (default; lavapipe/CI) or `large` (NVIDIA machine; needs a backend reference). */
  readonly size?: CaseSize;
  /**
   * `'oracle'` (default): the dense f64 oracle of this package. `'cpu'`: `cpuBackend` of
   * `@natten-web/cpu`, run in float64 on the same (rounded) inputs (required for `size: 'large'`).
   * Or any other reference backend (or a factory for one), also run in float64.
   */
  readonly reference?: 'oracle' | 'cpu' | NaBackend | (() => Promise<NaBackend>);
  /** Restrict to some op families / ranks (all by default). */
  readonly ops?: readonly OpFamily[];
  readonly ranks?: readonly NaRank[];
  /** Use these cases instead of the built-in grid. */
  readonly cases?: readonly NaCase[];
  /** Per-test timeout in ms (default: the vitest config's). */
  readonly timeoutMs?: number;
}

export function findExclusion(key: string, exclusions: readonly Exclusion[] = []): Exclusion | undefined {
  return exclusions.find((e) => e.pattern.test(key));
}

/** The cases a conformance run would register, in order (for tools and for tests of the grid). */
export function conformanceCases(options: Pick<NaConformanceOptions, 'dtypes' | 'size' | 'ops' | 'ranks' | 'cases'>): NaCase[] {
  const wanted = new Set(options.dtypes);
  if (options.cases) return options.cases.filter((c) => wanted.has(c.dtype));
  return buildCases({
    size: options.size ?? 'quick',
    dtypes: options.dtypes,
    ...(options.ops ? { ops: options.ops } : {}),
    ...(options.ranks ? { ranks: options.ranks } : {}),
  });
}

function isBackend(x: unknown): x is NaBackend {
  return typeof x === 'object' && x !== null && typeof (x as NaBackend).fusedForward === 'function';
}

/**
 * Register the conformance suite as vitest blocks: `describe(name) > describe(naXd_op) > it(case key)`.
 * Each case builds seeded inputs, runs the backend, computes the reference on exactly the same
 * (dtype-rounded) values, and compares every output at the per-dtype tolerance; excluded cases
 * are registered as `it.skip` with the reason in the title.
 */
export function defineNaConformance(options: NaConformanceOptions): void {
  const size = options.size ?? 'quick';
  const referenceOpt = options.reference === 'cpu' ? cpuBackend : (options.reference ?? 'oracle');
  if (size === 'large' && referenceOpt === 'oracle') {
    throw new Error(`defineNaConformance(${options.name}): size 'large' cannot use the dense O(N^2) oracle; pass reference: 'cpu'`);
  }
  const cases = conformanceCases(options);
  let backend: NaBackend | undefined;
  let reference: NaReference | undefined;

  describe(options.name, () => {
    beforeAll(async () => {
      backend = await options.makeBackend();
      reference = referenceOpt === 'oracle' || isBackend(referenceOpt) ? referenceOpt : await referenceOpt();
    });
    afterAll(async () => {
      await backend?.dispose?.();
    });

    const byOp = new Map<string, NaCase[]>();
    for (const c of cases) {
      const name = opName(c.rank, c.op);
      const list = byOp.get(name) ?? [];
      list.push(c);
      byOp.set(name, list);
    }
    for (const [name, list] of byOp) {
      describe(name, () => {
        for (const c of list) {
          const excluded = findExclusion(c.key, options.exclusions);
          if (excluded) {
            it.skip(`${c.key} [excluded: ${excluded.reason}]`, () => {});
            continue;
          }
          it(
            c.key,
            async () => {
              if (!backend || !reference) throw new Error(`${c.key}: backend was not created (makeBackend failed?)`);
              let ok = false;
              try {
                const report = await runNaCase(backend, c, { reference, ...(options.tolerance ? { tolerance: options.tolerance } : {}) });
                if (!report.ok) throw new Error(report.message);
                ok = true;
              } finally {
                const out = process.env[SUPPORT_OUT_ENV];
                if (out) {
                  appendSupportRecords(out, [
                    { op: name, rank: c.rank, dtype: dtypeAbbr(c.dtype), backend: options.name, status: ok ? 'passed' : 'failed', case: c.key },
                  ]);
                }
              }
            },
            options.timeoutMs,
          );
        }
      });
    }
  });
}
