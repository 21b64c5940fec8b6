/**
 * The device script's timing probes (mma-probes.ts) patch kernel texts by anchors in them: every probe must still
 * find its anchor in the default kernels it is meant for, and patched kernels must still compile (matrix builtins
 * emulated on this adapter), or a device call would time nothing ("the patch matched nothing") or fail to compile.
 */
import { generateFusedBackwardMmaDkv, generateFusedBackwardMmaDq, generateFusedForwardMma } from '@natten-web/wgsl';
import { emulateSubgroupMatrix } from '@natten-web/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { BACKWARD_PROBES, countResidency, type Probe, PROBES, probeBytes, probeOf, residencyKernel } from './mma-probes.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

// The float16 defaults' shapes of 2-D K=7 and 3-D K=3x7x7 (packed coordinates), at head dim 16 to keep compiles short.
const forward2d = generateFusedForwardMma({ rank: 2, kernelSize: [7, 7], causal: [false, false], dim: 16, dimV: 16, queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, hasLse: true, packedCoords: true }).code;
const forward3d = generateFusedForwardMma({ rank: 3, kernelSize: [3, 7, 7], causal: [false, false, false], dim: 16, dimV: 16, queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, hasLse: true, packedCoords: true }).code;
const backward = { rank: 3 as const, kernelSize: [3, 7, 7], causal: [false, false, false], dim: 16, dimV: 16, chunk: 16 as const, tightScratch: true, packedCoords: true };
const dq = generateFusedBackwardMmaDq({ ...backward, tile: [2, 4, 8], subgroups: 4, sharedScratch: true }).code;
const dkv = generateFusedBackwardMmaDkv({ ...backward, tile: [2, 4, 4], subgroups: 2 }).code;
// Probes on head-dim columns past 16 (`half-frags` maps columns 32-63 onto 0-31) are checked on head dim 64 texts.
const WIDE_PROBES = new Set(['half-frags']);
const at64 = {
  forward2d: generateFusedForwardMma({ rank: 2, kernelSize: [7, 7], causal: [false, false], dim: 64, dimV: 64, queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, hasLse: true, packedCoords: true }).code,
  forward3d: generateFusedForwardMma({ rank: 3, kernelSize: [3, 7, 7], causal: [false, false, false], dim: 64, dimV: 64, queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, hasLse: true, packedCoords: true }).code,
  dq: generateFusedBackwardMmaDq({ ...backward, dim: 64, dimV: 64, tile: [2, 4, 8], subgroups: 4, sharedScratch: true }).code,
  dkv: generateFusedBackwardMmaDkv({ ...backward, dim: 64, dimV: 64, tile: [2, 4, 4], subgroups: 2 }).code,
};

describe('device timing probes (mma-probes.ts)', () => {
  it('every forward probe finds its anchors in the 2-D and 3-D default forwards; the memory and register probes in dq and dkv', () => {
    for (const [name, probe] of Object.entries(PROBES)) {
      const [f2, f3] = WIDE_PROBES.has(name) ? [at64.forward2d, at64.forward3d] : [forward2d, forward3d];
      expect(probe.patch(f2), `${name} (2-D forward)`).not.toBe(f2);
      expect(probe.patch(f3), `${name} (3-D forward)`).not.toBe(f3);
    }
    for (const name of BACKWARD_PROBES) {
      const probe = PROBES[name];
      const [q, kv] = WIDE_PROBES.has(name) ? [at64.dq, at64.dkv] : [dq, dkv];
      expect(probe, name).toBeDefined();
      expect(probe?.patch(q), `${name} (dq)`).not.toBe(q);
      expect(probe?.patch(kv), `${name} (dkv)`).not.toBe(kv);
    }
    // s24 widens the scratch rows and declares the bytes it adds (two scratches of 32 rows in this dkv kernel).
    const s24 = PROBES.s24 as Probe;
    expect(s24.patch(dkv)).toContain('const LDS: u32 = 24u;');
    expect(probeBytes(s24, dkv)).toBe(2 * 32 * 8 * 4);
  });
  it('patched kernels compile on this adapter (matrix builtins emulated): memory and registers in each kernel, fetch, coordinates and mask in the forward', async () => {
    const ctx = await gpuContext();
    const cases: [string, string, string][] = [
      ['pad2k', 'forward', forward2d],
      ['regs16', 'forward', forward2d],
      ['no-fetch', 'forward', forward3d],
      ['kc-free', 'forward', forward3d],
      ['no-mask', 'forward', forward2d],
      ['no-exp', 'forward', forward3d],
      ['no-s', 'forward', forward2d],
      ['no-p-store', 'forward', forward3d],
      ['no-walk', 'forward', forward2d],
      ['one-chunk', 'forward', forward3d],
      ['no-out', 'forward', forward2d],
      ['empty', 'forward', forward3d],
      ['empty-first', 'forward', forward2d],
      ['no-q-load', 'forward', forward2d],
      ['no-walk+no-epilogue', 'forward', forward2d],
      ['s24', 'forward', forward3d],
      ['no-s-store', 'forward', forward2d],
      ['half-frags', 'forward', at64.forward2d],
      ['s24', 'dkv', dkv],
      ['no-s-store', 'dq', dq],
      ['pad2k', 'dq', dq],
      ['regs16', 'dkv', dkv],
      ['no-walk', 'dkv', dkv],
      ['one-chunk', 'dq', dq],
    ];
    for (const [name, kernel, code] of cases) {
      const module = ctx.device.createShaderModule({ code: emulateSubgroupMatrix((probeOf(name) as Probe).patch(code)) });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
      expect(errors, `${name} on ${kernel}`).toEqual([]);
    }
  });
  it('the residency counter compiles into each default kernel, and counts a resident workgroup in and out', async () => {
    const ctx = await gpuContext();
    for (const [kernel, code] of [['forward', forward2d], ['dq', dq], ['dkv', dkv]] as const) {
      const k = (code.match(/var<storage, /g) ?? []).length;
      const patched = countResidency(code, k);
      expect(patched, kernel).toContain(`@binding(${k}) var<storage, read_write> occ`);
      expect(patched, kernel).toContain(`@binding(${k + 1}) var<uniform>`);
      const module = ctx.device.createShaderModule({ code: emulateSubgroupMatrix(patched) });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
      expect(errors, kernel).toEqual([]);
    }
    const occ = ctx.createTensor([4], 'float32');
    ctx.zero(occ);
    await ctx.dispatch([{ kernel: residencyKernel(64, 4096, 100), buffers: [occ.buffer], workgroups: [8, 1, 1] }]);
    const counts = new Uint32Array(new Float32Array((await ctx.read(occ)).data as Float32Array).buffer);
    // Every workgroup left (occ[0] back to 0), at least one was seen resident, at most all eight.
    expect(counts[0]).toBe(0);
    expect(counts[1]).toBeGreaterThanOrEqual(1);
    expect(counts[1]).toBeLessThanOrEqual(8);
    occ.buffer.destroy();
  });
});
