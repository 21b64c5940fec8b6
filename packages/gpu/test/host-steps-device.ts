/**
 * Device script (not a test): where an op's host time goes, step by step. The NAT-stage forward's dispatch (2-D
 * 56x56 K=7, head dim 32, batch 8, f16; the mma path where the adapter has it) is issued the way `ctx.dispatch` does
 * it, with each step timed over many calls: the plan, the pipeline lookup, the error scopes, the uniform buffer,
 * the bind group, the encoding, the submission, and the scopes' settling. Bundle with `tools/device/bundle.sh
 * packages/gpu/test/host-steps-device.ts` and run there (`tiny` as the first argument: fewer calls).
 */
import { packUniforms } from '@natten-web/wgsl';
import { fusedBackward, fusedForward } from '../src/index.ts';
import { gpuArgs, gpuBackwardArgs, makeArgs, openDevice, type Problem } from './device-forward-problems.ts';

const { ctx } = await openDevice();
const tiny = process.argv[2] === 'tiny';
const p: Problem = { name: 'NAT stage', rank: 2, spatial: [56, 56], heads: 2, dim: 32, kernelSize: [7, 7], batch: 8 };
const g = gpuArgs(ctx, p, makeArgs(p, 1));
const route = fusedForward.route(ctx, p.rank, g);
const { planFusedForwardMma } = await import('../src/index.ts');
const plan = (): { command: import('../src/index.ts').DispatchCommand; release: () => void } => {
  if (route) {
    const m = planFusedForwardMma(ctx, p.rank, g, route);
    return { command: m.commands[m.commands.length - 1] as import('../src/index.ts').DispatchCommand, release: m.release };
  }
  return { command: fusedForward.plan(ctx, p.rank, g).command, release: () => {} };
};
const dev = ctx.device;
const steps = ['plan', 'pipeline', 'push scopes', 'uniform', 'layout', 'bind group', 'encode', 'submit', 'pop scopes', 'release'] as const;
const acc = new Map<string, number>(steps.map((s) => [s, 0]));
const n = tiny ? 20 : 3000;
let t = performance.now();
const lap = (s: (typeof steps)[number]): void => {
  const now = performance.now();
  acc.set(s, (acc.get(s) as number) + now - t);
  t = now;
};
for (let i = 0; i < n + 50; i++) {
  if (i === 50) {
    await ctx.workDone();
    for (const s of steps) acc.set(s, 0);
  }
  t = performance.now();
  const { command, release } = plan();
  lap('plan');
  const pipeline = await ctx.pipeline(command.kernel);
  lap('pipeline');
  dev.pushErrorScope('out-of-memory');
  dev.pushErrorScope('validation');
  lap('push scopes');
  const data = packUniforms(command.kernel.uniforms, command.uniforms ?? {});
  const ub = ctx.pool.acquire(data.byteLength, 0x40 /* UNIFORM */ | 0x8 /* COPY_DST */, 'uniforms');
  dev.queue.writeBuffer(ub, 0, data);
  lap('uniform');
  // A new layout object per call (before session 21) against one kept per pipeline (now).
  const layout = pipeline.getBindGroupLayout(0);
  lap('layout');
  const entries: GPUBindGroupEntry[] = command.buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
  entries.push({ binding: command.buffers.length, resource: { buffer: ub, size: data.byteLength } });
  const bg = dev.createBindGroup({ layout, entries });
  lap('bind group');
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bg);
  pass.dispatchWorkgroups(...command.workgroups);
  pass.end();
  const cb = enc.finish();
  lap('encode');
  dev.queue.submit([cb]);
  lap('submit');
  const [v, o] = await Promise.all([dev.popErrorScope(), dev.popErrorScope()]);
  if (v || o) throw new Error(`scope error: ${(v ?? o)?.message}`);
  lap('pop scopes');
  ctx.pool.release(ub);
  release();
  lap('release');
}
await ctx.workDone();
const total = [...acc.values()].reduce((a, b) => a + b, 0);
console.log(`${route ? 'mma' : 'plain'} forward, ${n} calls: ${((total / n) * 1e3).toFixed(1)} us per call = ${steps.map((s) => `${s} ${(((acc.get(s) as number) / n) * 1e3).toFixed(1)}`).join(', ')}`);
// The whole ops, for comparison (the library keeps layouts and uniform buffers, so it skips those steps).
const b = gpuBackwardArgs(ctx, p, g);
for (const [name, op] of [
  ['fusedForward', () => fusedForward(ctx, p.rank, g)],
  ['fusedBackward', () => fusedBackward(ctx, p.rank, b)],
] as const) {
  for (let i = 0; i < 20; i++) await op();
  await ctx.workDone();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await op();
  const t1 = performance.now();
  await ctx.workDone();
  console.log(`${name}: ${(((t1 - t0) / n) * 1e3).toFixed(1)} us per call to queue`);
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
