/**
 * Device script (not a test): host time per op. A loop of ops as a model runs them (each awaited in turn, the GPU
 * drained once at the end), wall time per call, next to the GPU time of one call; with `ctx.blocking` on and off
 * where the context has it (before it existed, every op waited for the GPU). Bundle with `tools/device/bundle.sh
 * packages/gpu/test/host-time-device.ts` and run there (also from an older checkout, for an A/B).
 */
import { fusedBackward, fusedForward, planFusedForwardMma } from '../src/index.ts';
import { free, gpuArgs, gpuBackwardArgs, makeArgs, openDevice, type Problem } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();
const label = process.argv[2] ?? '';
// `tiny` (second argument): one small problem and few runs, to rehearse the script on a software adapter.
const tiny = process.argv[3] === 'tiny';
const problems: Problem[] = tiny ? [{ name: 'tiny 2-D 8x8 K=3', rank: 2, spatial: [8, 8], heads: 1, dim: 16, kernelSize: [3, 3] }] : [
  { name: 'NAT stage 56x56 K=7 b8 h2 d32', rank: 2, spatial: [56, 56], heads: 2, dim: 32, kernelSize: [7, 7], batch: 8 },
  { name: '2-D 14x14 K=7 b8 h8 d32', rank: 2, spatial: [14, 14], heads: 8, dim: 32, kernelSize: [7, 7], batch: 8 },
  { name: '1-D 4096 K=127', rank: 1, spatial: [4096], heads: 8, dim: 64, kernelSize: [127] },
  { name: '2-D 128x128 K=7', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7] },
  { name: '3-D 16x32x32 K=3x7x7', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7] },
];
const hasBlocking = 'blocking' in ctx;
// blocking (each op waits for the GPU), queued (each op resolves once its work is submitted and its error scopes
// settled); an older checkout's ops always wait.
const modes: string[] = hasBlocking ? ['blocking', 'queued'] : ['waits'];
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] as number;
const setMode = (m: string): void => {
  if (!hasBlocking) return;
  (ctx as unknown as { blocking: boolean }).blocking = m === 'blocking';
};
/** Median over batches of the time per call (us) of `batch` awaited calls, the GPU drained after each batch. */
async function perCall(f: () => unknown, batches: number, batch: number): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < batches; i++) {
    const t0 = performance.now();
    for (let j = 0; j < batch; j++) await f();
    const t1 = performance.now();
    await ctx.workDone();
    t.push(((t1 - t0) / batch) * 1e3);
  }
  return median(t);
}
// Host parts alone: an error-scope round trip with nothing in it, one around an empty submission, the plan of
// the NAT-stage forward on the mma path (memoised checks and kernel) and the whole op.
{
  const dev = ctx.device;
  const pop = await perCall(async () => {
    dev.pushErrorScope('validation');
    await dev.popErrorScope();
  }, 5, 200);
  const submit = await perCall(async () => {
    dev.pushErrorScope('validation');
    dev.queue.submit([dev.createCommandEncoder().finish()]);
    await dev.popErrorScope();
  }, 5, 200);
  const p0 = problems[0] as Problem;
  const g0 = gpuArgs(ctx, p0, makeArgs(p0, 1));
  let plan = Number.NaN;
  try {
    plan = await perCall(() => planFusedForwardMma(ctx, p0.rank, g0).release(), 5, 200);
  } catch {
    // no mma path here
  }
  console.log(`${label} host: scope round trip ${pop.toFixed(1)} us, around an empty submit ${submit.toFixed(1)} us, mma forward plan ${plan.toFixed(1)} us`);
  free(g0);
}
for (const p of problems) {
  const g = gpuArgs(ctx, p, makeArgs(p, 1));
  const b = gpuBackwardArgs(ctx, p, g);
  const cells: string[] = [];
  for (const pass of ['fwd', 'fwd+bwd'] as const) {
    const once = async (): Promise<void> => {
      await fusedForward(ctx, p.rank, g);
      if (pass === 'fwd+bwd') await fusedBackward(ctx, p.rank, b);
    };
    const gpu: number[] = [];
    if (warmer) await warmer.warm(200);
    for (let i = 0; i < 7; i++) {
      warmer?.queue();
      gpu.push(((await ctx.profile(once)).gpuNs ?? 0) / 1e3);
    }
    const walls: string[] = [];
    for (const m of modes) {
      setMode(m);
      for (let i = 0; i < 5; i++) await once();
      await ctx.workDone();
      if (warmer) await warmer.warm(100);
      // Host time to queue a call (the GPU drained after each batch, outside the timing) and the whole loop's time.
      const queue = await perCall(once, tiny ? 2 : 7, tiny ? 3 : 30);
      const n = tiny ? 5 : 100;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await once();
      await ctx.workDone();
      walls.push(`${m} ${queue.toFixed(0)}/${(((performance.now() - t0) / n) * 1e3).toFixed(0)}`);
    }
    setMode('queued');
    cells.push(`${pass}: GPU ${median(gpu).toFixed(1)}, host/loop ${walls.join(', ')}`);
  }
  console.log(`${label} ${p.name.padEnd(30)} us per call  ${cells.join('  |  ')}`);
  free(g);
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
