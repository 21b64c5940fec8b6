/**
 * Device script (not a test): the BMM-style ops (`qkForward`, `avForward`, `qkBackward`, `avBackward`; heads-first) on
 * the default path against the CPU reference, float16 and float32: every case of `bmm-cases.ts` with head dims raised to multiples
 * of 16, and larger problems (several tiles, long windows, head dims 32-128), so on an adapter with subgroup matrices
 * every op runs on the tensor-core kernels. Their speed is `pnpm bench:bmm` (bench/src/bmm.ts; session 27 timed it with
 * this script's earlier version, at commit 7a2d328). Bundle with `tools/device/bundle.sh packages/gpu/test/bmm-device.ts`
 * and run there.
 */
import { cpuBackend } from '@natten-web/cpu';
import { createGpuBackend } from '../src/index.ts';
import { BMM_CASES, type BmmCase, type BmmOpName, mmaCase, outputMismatches, runBmm } from './bmm-cases.ts';
import { openDevice } from './device-forward-problems.ts';

const { ctx } = await openDevice();
// The unit cases with head dims raised to multiples of 16, and larger ones (several tiles, long windows).
const raised = BMM_CASES.map(mmaCase);
const larger: BmmCase[] = [
  { name: '1d 1024 K=127 causal D=64', rank: 1, sp: [1024], K: [127], d: [1], s: [1], causal: [true], rpb: false, B: 1, H: 2, D: 64 },
  { name: '2d 40x36 K=7 d=2 rpb D=32', rank: 2, sp: [40, 36], K: [7, 7], d: [2, 2], s: [1, 1], causal: [false, false], rpb: true, B: 2, H: 2, D: 32 },
  { name: '2d 33x30 K=9x5 s=2x3 causal D=128', rank: 2, sp: [33, 30], K: [9, 5], d: [1, 1], s: [2, 3], causal: [true, false], rpb: false, B: 1, H: 1, D: 128 },
  { name: '3d 8x12x16 K=3x5x7 rpb D=64', rank: 3, sp: [8, 12, 16], K: [3, 5, 7], d: [1, 1, 1], s: [1, 1, 1], causal: [false, false, false], rpb: true, B: 1, H: 2, D: 64 },
];
const gpu = createGpuBackend(ctx);
let bad = 0;
let n = 0;
// float32 runs on the tensor cores (hi / lo split) up to head dim 64; its D=128 case stays on the plain kernels.
for (const dtype of ['float16', 'float32'] as const) {
  for (const [i, k] of [...raised, ...larger].entries()) {
    for (const op of ['qk_forward', 'qk_backward', 'av_forward', 'av_backward'] as BmmOpName[]) {
      const want = await runBmm(cpuBackend, op, k, dtype, 100 + i);
      const got = await runBmm(gpu, op, k, dtype, 100 + i);
      const fails = outputMismatches(got, want, dtype);
      n++;
      if (fails.length > 0) bad++;
      console.log(`${fails.length ? 'FAIL' : 'ok  '} ${dtype} ${op.padEnd(12)} ${k.name}${fails.map((f) => ` | ${f}`).join('')}`);
    }
  }
}
console.log(`check: ${n - bad}/${n} ok (float16 and float32, default path: ${ctx.features.has('chromium-experimental-subgroup-matrix') ? 'tensor cores' : 'plain'})`);
process.exitCode = bad === 0 ? 0 : 1;
ctx.destroy();
setTimeout(() => process.exit(), 2000).unref();
