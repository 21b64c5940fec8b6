/**
 * The dense register-tiled forward (`fusedForwardTile`, experimental, opt-in) vs the CPU reference with the
 * fused-forward tolerances: ranks 1-3, causal, dilation, stride, rpb, lse on/off, GQA, Dv != D, f16 (both
 * stagings), extents that are not multiples of the tile (idle query rows), key chunks 16 and 32, query tiles 16-64,
 * large windows (where the path is meant to run) and small ones (mostly masked). Each `it` compiles one kernel and
 * runs a few shape variants through it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { fusedForwardTile, type GpuContext, planFusedForwardTile, type TileForwardConfig, tileForwardConfigProblem } from '../src/index.ts';
import { caseLabel, expectFwdClose, type FwdCase, fwdVariants, runFwdCaseWith } from './fused-forward-cases.ts';
import { gpuContext, limitsOf } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

/** Shapes-only 1-D arguments (L=64, 2 heads, head dims 32). */
function tileArgs(ctx: GpuContext) {
  const t = () => ctx.createTensor([1, 64, 2, 32], 'float32');
  return { query: t(), key: t(), value: t(), output: t(), kernelSize: [9] };
}

const TIMEOUT = 600_000;

function group(name: string, base: FwdCase, config: TileForwardConfig | undefined): void {
  it(`${name} (${config ? `q=${config.queryTile.join('x')} bk=${config.keyChunk}${config.stage ? ` ${config.stage}` : ''}` : 'default config'})`, async () => {
    const ctx = await gpuContext();
    for (const c of fwdVariants(base)) {
      const r = await runFwdCaseWith(ctx, c, (g) => fusedForwardTile(ctx, c.rank, g, config));
      expectFwdClose(r, `${caseLabel(c)} tile`);
    }
  }, TIMEOUT);
}

describe('float32', () => {
  group('1-D K=13 causal, D=32, L=45', { rank: 1, spatial: [45], kernelSize: [13], isCausal: [true], dim: 32 }, { path: 'tile', queryTile: [32], keyChunk: 32 });
  group('1-D K=9 rpb, D=16, Dv=32, L=37, chunk 16', { rank: 1, spatial: [37], kernelSize: [9], rpb: true, dim: 16, dimV: 32 }, { path: 'tile', queryTile: [16], keyChunk: 16 });
  group('1-D K=31 dilation 2, D=32, L=70', { rank: 1, spatial: [70], kernelSize: [31], dilation: [2], dim: 32 }, { path: 'tile', queryTile: [64], keyChunk: 32 });
  group('2-D K=(5,7) rpb, D=32, 11x13', { rank: 2, spatial: [11, 13], kernelSize: [5, 7], rpb: true, dim: 32 }, { path: 'tile', queryTile: [4, 8], keyChunk: 32 });
  group('2-D K=(3,4) causal=FT no lse, D=16, Dv=32', { rank: 2, spatial: [9, 11], kernelSize: [3, 4], isCausal: [false, true], lse: false, dim: 16, dimV: 32 }, { path: 'tile', queryTile: [4, 4], keyChunk: 16 });
  group('3-D K=(3,3,5) rpb, D=32', { rank: 3, spatial: [5, 6, 9], kernelSize: [3, 3, 5], rpb: true, dim: 32 }, { path: 'tile', queryTile: [2, 2, 8], keyChunk: 32 });
  group('3-D K=(2,3,3) causal=TFF, D=32, default config', { rank: 3, spatial: [4, 5, 7], kernelSize: [2, 3, 3], isCausal: [true, false, false], dim: 32 }, undefined);
});

describe('float16 (f16 storage, f32 math, f32 lse)', () => {
  group('1-D K=17 causal, D=32, f16 staging', { rank: 1, spatial: [50], kernelSize: [17], isCausal: [true], dim: 32, dtype: 'float16' }, { path: 'tile', queryTile: [32], keyChunk: 32 });
  group('2-D K=(5,5) D=64, f32 staging', { rank: 2, spatial: [10, 12], kernelSize: [5, 5], dim: 64, dtype: 'float16' }, { path: 'tile', queryTile: [4, 8], keyChunk: 32, stage: 'f32' });
});

describe('validation', () => {
  it('rejects head dims and configs it cannot run, naming the rule', async () => {
    const ctx = await gpuContext();
    const shape = [1, 8, 8, 2, 16];
    const t = () => ctx.createTensor(shape, 'float32');
    const args = { query: t(), key: t(), value: t(), output: t(), kernelSize: [3, 3] };
    // Dv = 16 is not a multiple of 4 x 8 (key chunk 32 shares each row over 8 invocations).
    expect(() => planFusedForwardTile(ctx, 2, args, { path: 'tile', queryTile: [4, 8], keyChunk: 32 })).toThrow(
      /na2d_forward: tile path query_tile=\[4, 8\], key_chunk=32 cannot run here: value head_dim=16 must be a multiple of 32/,
    );
    expect(() => planFusedForwardTile(ctx, 2, args, { path: 'tile', queryTile: [4, 6], keyChunk: 16 })).toThrow(/query tile \[4, 6\] has product 24, not one of 16, 32, 64/);
    // With chunk 16 (4 invocations per row) it runs.
    expect(planFusedForwardTile(ctx, 2, args, { path: 'tile', queryTile: [4, 4], keyChunk: 16 }).kernel.workgroupSize[0]).toBe(16);
    for (const x of Object.values(args)) if (typeof x === 'object' && 'buffer' in x) x.buffer.destroy();
  });

  it('names the device rule a config breaks: subgroups, their width, workgroup memory', async () => {
    const ctx = await gpuContext();
    const args = tileArgs(ctx);
    const { problem } = planFusedForwardTile(ctx, 1, args, { path: 'tile', queryTile: [16], keyChunk: 16 });
    for (const t of [args.query, args.key, args.value, args.output]) t.buffer.destroy();
    const fake = (over: { hasSubgroups?: boolean; subgroupMinSize?: number; storage?: number }) =>
      ({
        hasSubgroups: over.hasSubgroups ?? true,
        adapterInfo: { ...ctx.adapterInfo, subgroupMinSize: over.subgroupMinSize ?? 8 },
        limits: { ...limitsOf(ctx), maxComputeWorkgroupStorageSize: over.storage ?? 32768 },
      }) as unknown as GpuContext;
    const c32: TileForwardConfig = { path: 'tile', queryTile: [32], keyChunk: 32 };
    expect(tileForwardConfigProblem(fake({}), problem, c32)).toBeUndefined();
    expect(tileForwardConfigProblem(fake({ hasSubgroups: false }), problem, c32)).toBe("the tile path needs the WebGPU feature 'subgroups'");
    expect(tileForwardConfigProblem(fake({ subgroupMinSize: 4 }), problem, c32)).toBe(
      "key chunk 32 shares each query row over 8 invocations, more than this adapter's minimum subgroup size 4",
    );
    expect(tileForwardConfigProblem(fake({ storage: 8192 }), problem, c32)).toMatch(
      /^query tile \[32\] with key chunk 32 needs \d+ bytes of workgroup memory; this device allows 8192$/,
    );
  });
});
