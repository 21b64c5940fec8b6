/** Shared fixtures of the fused-forward generator tests: a validated problem and a plain kernel spec. */
import { checkFusedForward, type FusedProblem, type NaRank } from '@natten-web/core';
import { FUSED_FORWARD_TILES, type FusedForwardSpec } from '../src/index.ts';

/** A validated forward problem (batch 1, 2 heads; head dim 32 unless given) from shapes alone. */
export function problem(
  rank: NaRank,
  spatial: number[],
  kernelSize: number[],
  opts: { dim?: number; dimV?: number; dtype?: 'float32' | 'float16'; causal?: boolean[]; dilation?: number[]; rpb?: boolean } = {},
): FusedProblem {
  const dtype = opts.dtype ?? 'float32';
  const D = opts.dim ?? 32;
  const Dv = opts.dimV ?? D;
  const t = (shape: number[], dt: 'float32' | 'float16' = dtype) => ({ shape, dtype: dt });
  return checkFusedForward(
    `na${rank}d_forward`,
    rank,
    {
      query: t([1, ...spatial, 2, D]),
      key: t([1, ...spatial, 2, D]),
      value: t([1, ...spatial, 2, Dv]),
      output: t([1, ...spatial, 2, Dv]),
      rpb: opts.rpb ? t([2, ...kernelSize.map((k) => 2 * k - 1)]) : undefined,
      logsumexp: t([1, ...spatial, 2], 'float32'),
      kernelSize,
      isCausal: opts.causal,
      dilation: opts.dilation,
    },
    FUSED_FORWARD_TILES,
  );
}

/** A 2-D plain f32 spec with rpb and lse (K 3x5, D 32, Dv 16, query tile 4x8, chunk 32); `over` replaces fields. */
export const plainSpec = (over: Partial<FusedForwardSpec> = {}): FusedForwardSpec => ({
  path: 'plain',
  rank: 2,
  kernelSize: [3, 5],
  causal: [false, false],
  dim: 32,
  dimV: 16,
  dtype: 'float32',
  queryTile: [4, 8],
  keyChunk: 32,
  stage: 'f32',
  hasRpb: true,
  hasLse: true,
  ...over,
});
