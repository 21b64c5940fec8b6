import { cast, compareTensors, type NaRank } from '@natten-web/core';
import { enumerateFusedBackwardConfigs, type FusedBackwardConfig } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { selectFusedBackward } from '../src/index.ts';
import { type BwdCase, caseName, prepare, runGpu } from './fused-backward-cases.ts';
import { EXTENDED, gpuContext } from './setup.ts';

/**
 * Every enumerated backward config (tiles x num_splits_key x delta mode) on small problems, against the CPU
 * reference: the autotuner may pick any of them, so each must be exact, not just the default.
 */
const problems: BwdCase[] = [
  { rank: 1, batch: 1, spatial: [20], heads: 2, dim: 8, kernelSize: [5], causal: [true], dtype: 'float32' },
  { rank: 2, batch: 1, spatial: [4, 5], heads: 2, headsKv: 1, dim: 4, dimV: 8, kernelSize: [3, 4], causal: [false, true], dtype: 'float32' },
];

const tileKey = (c: FusedBackwardConfig): string => `q${c.queryTile.join('x')} k${c.keyTile.join('x')}`;

describe('every enumerated fused-backward config matches the CPU reference', () => {
  afterAll(async () => (await gpuContext()).destroy(), 60_000);
  // Default tier: the 1-D problem's configs; NATTEN_WEB_EXTENDED=1 adds the 2-D problem.
  for (const p of EXTENDED ? problems : problems.slice(0, 1)) {
    it(`${caseName(p)}: all configs`, async () => {
      const ctx = await gpuContext();
      const { args, ref } = prepare(p);
      const sel = selectFusedBackward(ctx, p.rank, args);
      const configs = enumerateFusedBackwardConfigs(sel.problem, ctx.limits);
      expect(configs.length).toBeGreaterThanOrEqual(p.rank === 1 ? 8 : 20);
      const byTile = new Map<string, FusedBackwardConfig[]>();
      for (const c of configs) byTile.set(tileKey(c), [...(byTile.get(tileKey(c)) ?? []), c]);
      let checked = 0;
      for (const group of byTile.values()) {
        for (const c of group) {
          const got = await runGpu(ctx, p.rank as NaRank, {
            ...args,
            queryTileSize: c.queryTile,
            keyTileSize: c.keyTile,
            numSplitsKey: c.numSplitsKey,
            computeDeltaWithTorch: c.computeDeltaWithTorch,
          });
          for (const [name, g, r] of [
            ['grad_query', got.gradQuery, ref.gradQuery],
            ['grad_key', got.gradKey, ref.gradKey],
            ['grad_value', got.gradValue, ref.gradValue],
          ] as const) {
            const cmp = compareTensors(cast(g, 'float32'), r);
            const where = `${JSON.stringify(c)} ${name}: worst ${cmp.worstIndex} expected ${cmp.worstExpected} got ${cmp.worstActual}`;
            expect(cmp.actualNonFinite, where).toBe(0);
            expect(cmp.maxAbs, where).toBeLessThanOrEqual(1e-4);
            expect(cmp.nmse, where).toBeLessThanOrEqual(1e-7);
          }
          checked++;
        }
      }
      expect(checked).toBe(configs.length);
    }, 900_000);
  }
});
