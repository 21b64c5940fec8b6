/**
 * Run a tune problem with a forced config on the GPU and on the CPU reference (`@natten-web/cpu`), and compare with
 * STYLE §5 tolerances (f32: atol 1e-4 and NMSE <= 1e-7; f16: atol 1e-2 and NMSE <= 1e-6).
 */
import { compareTensors, type Comparison, lseShape, randn, rpbShape, type Tensor, toFloat64Values, zeros } from '@natten-web/core';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { fusedBackwardMma, fusedBackwardWithConfig, fusedForward, fusedForwardMma, type GpuContext, type GpuTensor, type MmaBackwardConfig, type MmaForwardConfig } from '@natten-web/gpu';
import type { FusedBackwardConfig, FusedForwardConfig } from '@natten-web/wgsl';
import { expect } from 'vitest';
import type { BackwardTuneProblem, ForwardTuneProblem } from '../src/index.ts';

function hostInputs(p: ForwardTuneProblem, seed: number) {
  const dtype = p.dtype === 'float16' ? 'float16' : 'float32';
  return {
    dtype,
    query: randn([p.batch, ...p.spatial, p.heads, p.dim], dtype, seed),
    key: randn([p.batch, ...p.spatial, p.headsKv, p.dim], dtype, seed + 1),
    value: randn([p.batch, ...p.spatial, p.headsKv, p.dimV], dtype, seed + 2),
    rpb: p.hasRpb ? randn(rpbShape(p.heads, p.params), dtype, seed + 3, 0.5) : undefined,
    outShape: [p.batch, ...p.spatial, p.heads, p.dimV],
    lseShape: lseShape(p.batch, p.spatial, p.heads),
    params: { kernelSize: p.params.kernelSize, dilation: p.params.dilation, stride: p.params.stride, isCausal: p.params.isCausal, attnScale: 0.3 },
  } as const;
}

export function expectClose(cmp: Comparison, f16: boolean, label: string, atolScale = 1): void {
  const msg = `${label}: maxAbs=${cmp.maxAbs} nmse=${cmp.nmse} worst #${cmp.worstIndex} expected ${cmp.worstExpected} got ${cmp.worstActual}`;
  expect(cmp.actualNonFinite, msg).toBe(0);
  expect(cmp.nonFiniteMismatches, msg).toBe(0);
  expect(cmp.maxAbs, msg).toBeLessThanOrEqual((f16 ? 1e-2 : 1e-4) * Math.max(1, atolScale));
  expect(cmp.nmse, msg).toBeLessThanOrEqual(f16 ? 1e-6 : 1e-7);
}

/** A forced config (plain or tensor-core) against the CPU reference. */
export async function checkForwardConfig(ctx: GpuContext, p: ForwardTuneProblem, config: FusedForwardConfig | MmaForwardConfig, label: string): Promise<void> {
  const h = hostInputs(p, 11);
  const out = zeros(h.outShape, h.dtype);
  const lse = p.hasLse ? zeros(h.lseShape, 'float32') : undefined;
  cpuFusedForward(p.rank, { ...h.params, query: h.query, key: h.key, value: h.value, rpb: h.rpb, output: out, logsumexp: lse });
  const made: GpuTensor[] = [];
  const up = (t: Tensor): GpuTensor => {
    const g = ctx.upload(t);
    made.push(g);
    return g;
  };
  try {
    const g = {
      ...h.params,
      query: up(h.query),
      key: up(h.key),
      value: up(h.value),
      rpb: h.rpb ? up(h.rpb) : undefined,
      output: up(zeros(h.outShape, h.dtype)),
      logsumexp: lse ? up(zeros(h.lseShape, 'float32')) : undefined,
    };
    await (config.path === 'mma' ? fusedForwardMma(ctx, p.rank, g, config) : fusedForward.withConfig(ctx, p.rank, g, config));
    expectClose(compareTensors(await ctx.read(g.output), out), p.dtype === 'float16', `${label} output`);
    if (lse && g.logsumexp) expectClose(compareTensors(await ctx.read(g.logsumexp), lse), p.dtype === 'float16', `${label} lse`);
  } finally {
    for (const t of made) t.buffer.destroy();
  }
}

/** A forced config (plain or tensor-core) against the CPU reference. */
export async function checkBackwardConfig(ctx: GpuContext, p: BackwardTuneProblem, config: FusedBackwardConfig | MmaBackwardConfig, label: string): Promise<void> {
  const h = hostInputs(p, 21);
  const out = zeros(h.outShape, h.dtype);
  const lse = zeros(h.lseShape, 'float32');
  cpuFusedForward(p.rank, { ...h.params, query: h.query, key: h.key, value: h.value, rpb: h.rpb, output: out, logsumexp: lse });
  const dO = randn(h.outShape, h.dtype, 99);
  const ref = {
    gradQuery: zeros(h.query.shape, h.dtype),
    gradKey: zeros(h.key.shape, h.dtype),
    gradValue: zeros(h.value.shape, h.dtype),
    gradRpb: p.hasGradRpb && h.rpb ? zeros(h.rpb.shape, h.dtype) : undefined,
  };
  cpuFusedBackward(p.rank, { ...h.params, query: h.query, key: h.key, value: h.value, rpb: h.rpb, output: out, logsumexp: lse, gradOutput: dO, ...ref });
  const made: GpuTensor[] = [];
  const up = (t: Tensor): GpuTensor => {
    const g = ctx.upload(t);
    made.push(g);
    return g;
  };
  try {
    const g = {
      ...h.params,
      query: up(h.query),
      key: up(h.key),
      value: up(h.value),
      rpb: h.rpb ? up(h.rpb) : undefined,
      output: up(out),
      logsumexp: up(lse),
      gradOutput: up(dO),
      gradQuery: up(zeros(h.query.shape, h.dtype)),
      gradKey: up(zeros(h.key.shape, h.dtype)),
      gradValue: up(zeros(h.value.shape, h.dtype)),
      gradRpb: ref.gradRpb ? up(zeros(ref.gradRpb.shape, h.dtype)) : undefined,
    };
    await ('querySubgroups' in config ? fusedBackwardMma(ctx, p.rank, g, config) : fusedBackwardWithConfig(ctx, p.rank, g, config));
    const f16 = p.dtype === 'float16';
    expectClose(compareTensors(await ctx.read(g.gradQuery), ref.gradQuery), f16, `${label} dQ`);
    expectClose(compareTensors(await ctx.read(g.gradKey), ref.gradKey), f16, `${label} dK`);
    expectClose(compareTensors(await ctx.read(g.gradValue), ref.gradValue), f16, `${label} dV`);
    // d_rpb sums dS over every (batch, query) of a cell: atol scaled by its largest reference value (as in the gpu tests).
    if (g.gradRpb && ref.gradRpb) {
      const refMax = Math.max(...Array.from(toFloat64Values(ref.gradRpb), Math.abs));
      expectClose(compareTensors(await ctx.read(g.gradRpb), ref.gradRpb), f16, `${label} dRpb`, refMax);
    }
  } finally {
    for (const t of made) t.buffer.destroy();
  }
}
