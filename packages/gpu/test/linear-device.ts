/**
 * Device script (not a test): `linear` (y = x W^T + b) on the device's adapter, the tiled kernel against the
 * tensor-core kernel (64- and 128-column blocks) on the modules' projection shapes and larger GEMMs: max error
 * against an f64 reference on sampled rows, and GPU time (back-to-back timestamp timing, warm clocks) with TFLOP/s.
 * `bench/baselines/torch_linear.py` times torch's `F.linear` on the same shapes for comparison.
 * Bundle with `tools/device/bundle.sh packages/gpu/test/linear-device.ts` and run there.
 */
import { randn, toFloat64Values } from '@natten-web/core';
import { type GpuTensor, linearCommand, type LinearOptions, timeDispatch } from '../src/index.ts';
import { openDevice } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();
const shapes = [
  { name: 'NAT 56x56 C=64 b8 qkv', rows: 25088, nIn: 64, nOut: 192, parts: 3 as const },
  { name: 'NAT 56x56 C=64 b8 proj', rows: 25088, nIn: 64, nOut: 64, parts: 1 as const },
  { name: 'NAT 14x14 C=256 b8 qkv', rows: 1568, nIn: 256, nOut: 768, parts: 3 as const },
  { name: 'NAT 14x14 C=256 b8 proj', rows: 1568, nIn: 256, nOut: 256, parts: 1 as const },
  { name: 'MLP 25088x256 -> 1024', rows: 25088, nIn: 256, nOut: 1024, parts: 1 as const },
  { name: 'GEMM 8192x1024 -> 4096', rows: 8192, nIn: 1024, nOut: 4096, parts: 1 as const },
  { name: 'GEMM 8192x4096 -> 4096', rows: 8192, nIn: 4096, nOut: 4096, parts: 1 as const },
];
const sweepMode = process.argv.includes('--sweep');
const only = process.argv.slice(2).find((a) => !a.startsWith('--'));
for (const s of shapes) {
  if (only && !s.name.includes(only)) continue;
  for (const dtype of ['float16', 'float32'] as const) {
    const x = randn([s.rows, s.nIn], dtype, 1);
    const w = randn([s.nOut, s.nIn], dtype, 2, 1 / Math.sqrt(s.nIn));
    const b = randn([s.nOut], dtype, 3, 0.1);
    const gx = ctx.upload(x);
    const gw = ctx.upload(w);
    const gb = ctx.upload(b);
    const part = s.nOut / s.parts;
    const outs: GpuTensor[] = Array.from({ length: s.parts }, () => ctx.createTensor([s.rows, part], dtype));
    const args = { input: gx, weight: gw, bias: gb, outputs: outs };
    const xv = toFloat64Values(x);
    const wv = toFloat64Values(w);
    const bv = toFloat64Values(b);
    const sample = Array.from({ length: 48 }, (_, i) => Math.floor((i * (s.rows - 1)) / 47));
    // `--sweep`: the tensor-core kernel's layouts, twice each in turn (float16 only); else tiled, the layouts, auto.
    const sweep: [string, LinearOptions][] = [
      ['mma 64', { path: 'mma', frags: 4 }],
      ['mma 128', { path: 'mma', frags: 8 }],
      ['mma 2x2', { path: 'mma', rowFrags: 2 }],
    ];
    const variants: [string, LinearOptions][] =
      dtype === 'float32'
        ? sweepMode
          ? []
          : [['tiled', { path: 'tiled' }]]
        : sweepMode
          ? [...sweep, ...sweep]
          : [
              ['tiled', { path: 'tiled' }],
              ['mma 64 cols', { path: 'mma', frags: 4 }],
              ['mma 128 cols', { path: 'mma', frags: 8 }],
              ['mma 2x2', { path: 'mma', rowFrags: 2 }],
              ['auto', {}],
            ];
    for (const [label, options] of variants) {
      let command: ReturnType<typeof linearCommand>;
      try {
        command = linearCommand(ctx, args, options);
      } catch (e) {
        console.log(`${s.name.padEnd(26)} ${dtype} ${label.padEnd(16)} ${(e as Error).message}`);
        continue;
      }
      await ctx.dispatch([command], 'linear');
      let maxErr = 0;
      let maxRef = 0;
      const got = await Promise.all(outs.map(async (t) => toFloat64Values(await ctx.read(t))));
      for (const r of sample) {
        for (let o = 0; o < s.nOut; o++) {
          let acc = bv[o] as number;
          for (let i = 0; i < s.nIn; i++) acc += (xv[r * s.nIn + i] as number) * (wv[o * s.nIn + i] as number);
          const g = (got[Math.floor(o / part)] as Float64Array)[r * part + (o % part)] as number;
          maxErr = Math.max(maxErr, Math.abs(g - acc));
          maxRef = Math.max(maxRef, Math.abs(acc));
        }
      }
      const t = await timeDispatch(ctx, [command], { warmup: 3, iterations: 20, ...(warmer ? { warmer } : {}) });
      const us = t.medianNs / 1e3;
      const tflops = (2 * s.rows * s.nIn * s.nOut) / (us * 1e-6) / 1e12;
      console.log(
        `${s.name.padEnd(26)} ${dtype} ${label.padEnd(16)} ${us.toFixed(1).padStart(9)} us ${tflops.toFixed(1).padStart(6)} TFLOP/s  max err ${maxErr.toExponential(2)} (max |y| ${maxRef.toFixed(2)})  ${command.kernel.key.split(':')[0]} grid ${command.workgroups.join('x')}`,
      );
    }
    for (const t of [gx, gw, gb, ...outs]) t.buffer.destroy();
  }
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
