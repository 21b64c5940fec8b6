/**
 * Fused NA forward on WebGPU vs the CPU reference (f64 accumulation): ranks 1-3, odd and even K, dilation,
 * every causal combination, rpb, lse on/off, GQA/MQA, Dv != D (vec4 and scalar paths), stride, f32 and f16,
 * extents that are not multiples of the tile, K*d == L. Each `it` compiles one kernel (lavapipe compiles are
 * slow) and runs every shape variant through it (sizes, dilation, stride, heads are uniforms).
 */
import type { NaRank } from '@natten-web/core';
import type { FusedForwardConfig } from '@natten-web/wgsl';
import { afterAll, describe, it } from 'vitest';
import { caseLabel, expectFwdClose, type FwdCase, runFwdCase } from './fused-forward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

const CONFIGS: Record<NaRank, FusedForwardConfig> = {
  1: { path: 'plain', queryTile: [16], keyTile: [16], stage: 'f32' },
  2: { path: 'plain', queryTile: [4, 4], keyTile: [4, 4], stage: 'f32' },
  3: { path: 'plain', queryTile: [2, 2, 4], keyTile: [2, 2, 4], stage: 'f32' },
};

const BASE_SPATIAL: Record<NaRank, number[]> = { 1: [21], 2: [9, 11], 3: [7, 5, 7] };

/** Shape variants that reuse one kernel: extents, dilation, stride, K*d == L, batch, GQA/MQA, explicit scale. */
function variants(base: Omit<FwdCase, 'spatial'>, full = true): FwdCase[] {
  const r = base.rank;
  const K = base.kernelSize;
  const sp = BASE_SPATIAL[r];
  const ones = K.map(() => 1);
  const out: FwdCase[] = [
    { ...base, spatial: sp },
    { ...base, spatial: sp, dilation: K.map((k, a) => (2 * k <= (sp[a] as number) ? 2 : 1)) },
    { ...base, spatial: sp, batch: 2, heads: 4, headsKv: 2, stride: K.map((k) => Math.min(2, k)) },
  ];
  if (full) {
    out.push(
      // K*d == L on every axis (d = 2): every group has exactly K members
      { ...base, spatial: K.map((k) => 2 * k), dilation: K.map(() => 2) },
      // dilation 3 with stride 2, MQA, explicit scale
      { ...base, spatial: K.map((k, a) => Math.max(3 * k, sp[a] as number)), dilation: K.map(() => 3), stride: K.map((k) => Math.min(2, k)), heads: 3, headsKv: 1, scale: 0.3 },
      // stride = K (blocked attention), extents not a multiple of K
      { ...base, spatial: sp, stride: K, dilation: ones },
      // K == L (one window covers the axis)
      { ...base, spatial: K },
    );
  }
  return out;
}

function group(name: string, base: Omit<FwdCase, 'spatial'>, config: FusedForwardConfig | undefined, full = true): void {
  it(name, async () => {
    const ctx = await gpuContext();
    for (const c of variants(base, full)) {
      expectFwdClose(await runFwdCase(ctx, c, config), caseLabel(c));
    }
  }, TIMEOUT);
}

const bools = (rank: number): boolean[][] =>
  Array.from({ length: 2 ** rank }, (_, m) => Array.from({ length: rank }, (_, a) => ((m >> (rank - 1 - a)) & 1) === 1));
const tf = (c: readonly boolean[]): string => c.map((x) => (x ? 'T' : 'F')).join('');

describe('na1d_forward', () => {
  for (const K of [3, 4]) {
    for (const causal of [false, true]) {
      group(`K=${K} causal=${causal}`, { rank: 1, kernelSize: [K], isCausal: [causal] }, CONFIGS[1]);
    }
  }
  group('rpb K=5 (dilation, stride, GQA)', { rank: 1, kernelSize: [5], rpb: true }, CONFIGS[1]);
});

describe('na2d_forward', () => {
  for (const causal of bools(2)) {
    group(`K=(3,4) causal=${tf(causal)}`, { rank: 2, kernelSize: [3, 4], isCausal: causal }, CONFIGS[2]);
  }
  group('rpb K=(3,5)', { rank: 2, kernelSize: [3, 5], rpb: true }, CONFIGS[2]);
  group('no lse, K=(5,2)', { rank: 2, kernelSize: [5, 2], lse: false }, CONFIGS[2]);
  group('Dv != D (vec4: D=8, Dv=12)', { rank: 2, kernelSize: [3, 3], dim: 8, dimV: 12 }, CONFIGS[2]);
  group('Dv != D, scalar rows (D=6, Dv=5)', { rank: 2, kernelSize: [3, 2], dim: 6, dimV: 5, isCausal: [true, false] }, CONFIGS[2]);
  group('D=32, K=7, default config', { rank: 2, kernelSize: [7, 7], dim: 32 }, undefined, false);
});

describe('na3d_forward', () => {
  for (const causal of bools(3)) {
    group(`K=(3,2,3) causal=${tf(causal)}`, { rank: 3, kernelSize: [3, 2, 3], isCausal: causal }, CONFIGS[3], false);
  }
  group('rpb K=(3,3,3)', { rank: 3, kernelSize: [3, 3, 3], rpb: true }, CONFIGS[3]);
});

describe('float16 (f16 storage, f32 math, f32 lse)', () => {
  group('1-D K=4 causal, default config', { rank: 1, kernelSize: [4], isCausal: [true], dtype: 'float16' }, undefined, false);
  group('2-D K=(3,3) rpb, f32 staging', { rank: 2, kernelSize: [3, 3], rpb: true, dtype: 'float16' }, CONFIGS[2]);
  group('2-D K=(3,4) causal=TF, f16 staging', { rank: 2, kernelSize: [3, 4], isCausal: [true, false], dtype: 'float16' }, { ...CONFIGS[2], stage: 'f16' });
  group('2-D K=(3,3) D=72 (> 64: q in f16 registers), default config', { rank: 2, kernelSize: [3, 3], dim: 72, dimV: 40, dtype: 'float16' }, undefined, false);
  group('3-D K=(2,3,2) causal=FTF, Dv != D, default config', { rank: 3, kernelSize: [2, 3, 2], isCausal: [false, true, false], dim: 8, dimV: 4, dtype: 'float16' }, undefined, false);
});
