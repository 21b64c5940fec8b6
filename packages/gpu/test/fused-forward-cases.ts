/**
 * Shared helpers for the fused-forward GPU tests: build a case, run it on the GPU (optionally with a forced
 * config) and on the CPU reference (`@natten-web/cpu`, f64 accumulation), compare with STYLE §5 tolerances.
 */
import {
  type Comparison,
  compareTensors,
  type DType,
  type FusedForwardArgs,
  lseShape,
  type NaRank,
  randn,
  type Tensor,
  zeros,
} from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { type FusedForwardConfig, fusedForwardSpec, type GeneratedKernel, generateFusedForward } from '@natten-web/wgsl';
import { expect } from 'vitest';
import { fusedForward, type GpuContext, type GpuTensor } from '../src/index.ts';
import { checkFusedForwardGpu } from '../src/ops/na-fused-forward.ts';

export interface FwdCase {
  readonly rank: NaRank;
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation?: readonly number[];
  readonly isCausal?: readonly boolean[];
  readonly stride?: readonly number[];
  readonly batch?: number;
  readonly heads?: number;
  readonly headsKv?: number;
  readonly dim?: number;
  readonly dimV?: number;
  readonly dtype?: 'float32' | 'float16';
  readonly rpb?: boolean;
  readonly lse?: boolean;
  readonly scale?: number | null;
  readonly seed?: number;
}

export function caseLabel(c: FwdCase): string {
  return `r${c.rank} L=${c.spatial.join('x')} K=${c.kernelSize.join(',')} d=${(c.dilation ?? []).join(',') || 1} causal=${(c.isCausal ?? []).map((x) => (x ? 'T' : 'F')).join('') || 'F'} s=${(c.stride ?? []).join(',') || 1} B=${c.batch ?? 1} H=${c.heads ?? 2}/${c.headsKv ?? c.heads ?? 2} D=${c.dim ?? 8}/${c.dimV ?? c.dim ?? 8} ${c.dtype ?? 'float32'}${c.rpb ? ' rpb' : ''}${c.lse === false ? ' nolse' : ''}`;
}

/**
 * A case and two variants of it that reach every index path of a config: dilation 2 where it fits, and batch 2 +
 * GQA (4 heads on 2 kv heads) + stride 2. Config tests compile one kernel and run all three through it.
 */
export function fwdVariants(base: FwdCase): FwdCase[] {
  const K = base.kernelSize;
  return [
    base,
    { ...base, dilation: K.map((k, a) => (2 * k <= (base.spatial[a] as number) ? 2 : 1)) },
    { ...base, batch: 2, heads: 4, headsKv: 2, stride: K.map((k) => Math.min(2, k)) },
  ];
}

/** Shapes-only arguments of a case (validation and planning need no data). */
export function fwdShapes(c: FwdCase) {
  const B = c.batch ?? 1;
  const H = c.heads ?? 2;
  const D = c.dim ?? 8;
  const Dv = c.dimV ?? D;
  const dtype = c.dtype ?? 'float32';
  const t = (shape: number[], dt: 'float32' | 'float16' = dtype) => ({ shape, dtype: dt });
  return {
    query: t([B, ...c.spatial, H, D]),
    key: t([B, ...c.spatial, c.headsKv ?? H, D]),
    value: t([B, ...c.spatial, c.headsKv ?? H, Dv]),
    output: t([B, ...c.spatial, H, Dv]),
    rpb: c.rpb ? t([H, ...c.kernelSize.map((k) => 2 * k - 1)]) : undefined,
    logsumexp: c.lse === false ? undefined : t(lseShape(B, c.spatial, H), 'float32'),
    kernelSize: c.kernelSize,
    isCausal: c.isCausal,
  };
}

interface Built {
  readonly args: FusedForwardArgs<Tensor>;
  readonly dtype: DType;
}

function build(c: FwdCase): Built {
  const dtype = c.dtype ?? 'float32';
  const B = c.batch ?? 1;
  const H = c.heads ?? 2;
  const Hkv = c.headsKv ?? H;
  const D = c.dim ?? 8;
  const Dv = c.dimV ?? D;
  const seed = c.seed ?? 7;
  const query = randn([B, ...c.spatial, H, D], dtype, seed);
  const key = randn([B, ...c.spatial, Hkv, D], dtype, seed + 1);
  const value = randn([B, ...c.spatial, Hkv, Dv], dtype, seed + 2);
  const output = zeros([B, ...c.spatial, H, Dv], dtype);
  const logsumexp = c.lse === false ? undefined : zeros(lseShape(B, c.spatial, H), 'float32');
  const params = { rank: c.rank, kernelSize: c.kernelSize, dilation: c.dilation ?? c.kernelSize.map(() => 1), isCausal: c.isCausal ?? c.kernelSize.map(() => false), stride: c.stride ?? c.kernelSize.map(() => 1) } as const;
  const rpb = c.rpb ? randn([H, ...c.kernelSize.map((k) => 2 * k - 1)], dtype, seed + 3, 0.5) : undefined;
  return {
    dtype,
    args: {
      output,
      query,
      key,
      value,
      rpb,
      logsumexp,
      kernelSize: c.kernelSize,
      dilation: params.dilation,
      isCausal: params.isCausal,
      stride: params.stride,
      attnScale: c.scale,
    },
  };
}

export interface FwdResult {
  readonly out: Comparison;
  readonly lse: Comparison | undefined;
  readonly dtype: DType;
}

/** Run a case on the GPU (forced config or the op's own choice) and on the CPU reference. */
export function runFwdCase(ctx: GpuContext, c: FwdCase, config?: FusedForwardConfig): Promise<FwdResult> {
  return runFwdCaseWith(ctx, c, (g) => (config ? fusedForward.withConfig(ctx, c.rank, g, config) : fusedForward(ctx, c.rank, g)));
}

/** Run a case on the GPU with `run` (any forward op, on the uploaded arguments) and on the CPU reference. */
export async function runFwdCaseWith(ctx: GpuContext, c: FwdCase, run: (g: FusedForwardArgs<GpuTensor>) => Promise<void>): Promise<FwdResult> {
  const { args, dtype } = build(c);
  const ref = { ...args, output: zeros(args.output.shape, args.output.dtype), logsumexp: args.logsumexp ? zeros(args.logsumexp.shape, 'float32') : undefined };
  cpuFusedForward(c.rank, ref);
  const up = (t: Tensor | null | undefined): GpuTensor | undefined => (t ? ctx.upload(t) : undefined);
  const g: FusedForwardArgs<GpuTensor> = {
    ...args,
    query: ctx.upload(args.query),
    key: ctx.upload(args.key),
    value: ctx.upload(args.value),
    output: ctx.createTensor(args.output.shape, c.dtype ?? 'float32'),
    rpb: up(args.rpb),
    logsumexp: args.logsumexp ? ctx.createTensor(args.logsumexp.shape, 'float32') : undefined,
  };
  try {
    await run(g);
    const out = compareTensors(await ctx.read(g.output), ref.output);
    const lse = g.logsumexp && ref.logsumexp ? compareTensors(await ctx.read(g.logsumexp), ref.logsumexp) : undefined;
    return { out, lse, dtype };
  } finally {
    for (const t of [g.query, g.key, g.value, g.output, g.rpb, g.logsumexp]) t?.buffer.destroy();
  }
}

/** STYLE §5: f32 atol 1e-4 and NMSE <= 1e-7; f16 atol 1e-2 and NMSE <= 1e-6; no NaN/Inf. LSE is f32 always. */
export function expectFwdClose(r: FwdResult, label: string): void {
  const f16 = r.dtype === 'float16';
  const check = (cmp: Comparison, what: string, atol: number, nmse: number): void => {
    const msg = `${label} ${what}: maxAbs=${cmp.maxAbs} nmse=${cmp.nmse} worst #${cmp.worstIndex} expected ${cmp.worstExpected} got ${cmp.worstActual}`;
    expect(cmp.actualNonFinite, msg).toBe(0);
    expect(cmp.nonFiniteMismatches, msg).toBe(0);
    expect(cmp.maxAbs, msg).toBeLessThanOrEqual(atol);
    expect(cmp.nmse, msg).toBeLessThanOrEqual(nmse);
  };
  check(r.out, 'output', f16 ? 1e-2 : 1e-4, f16 ? 1e-6 : 1e-7);
  // f16 inputs give f16-rounded q/k, but the lse itself is accumulated in f32 on both sides.
  if (r.lse) check(r.lse, 'logsumexp', f16 ? 1e-2 : 1e-4, f16 ? 1e-6 : 1e-7);
}

/** The kernel a forward config generates for a case's problem, validated on this device first. */
export function configKernel(ctx: GpuContext, base: FwdCase, config: FusedForwardConfig): GeneratedKernel {
  const { problem } = checkFusedForwardGpu(ctx, base.rank, fwdShapes(base), config);
  return generateFusedForward(fusedForwardSpec(problem, config));
}

/** Run a case and its variants (`fwdVariants`) through one forward config against the CPU reference. */
export async function expectVariantsClose(ctx: GpuContext, base: FwdCase, config: FusedForwardConfig, tag: string): Promise<void> {
  for (const c of fwdVariants(base)) expectFwdClose(await runFwdCase(ctx, c, config), `${caseLabel(c)} ${tag}`);
}
