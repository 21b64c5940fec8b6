/**
 * natten-web demo (Node): 2-D neighborhood attention, B=1, 64x64 tokens, 4 heads, head dim 32,
 * kernel 7x7, float32, on the best backend found; checked against the CPU reference.
 * Run from the repository root with `pnpm demo` (tools/setup.sh installs Dawn + Mesa lavapipe).
 */
import { fnaFlops } from '@natten-web/core';
import {
  type AnyTensor,
  compareTensors,
  dispose,
  info,
  na2d,
  NattenError,
  NattenNotImplementedError,
  randn,
  synchronize,
  type Tensor,
  toGpu,
  toHost,
  VERSION,
} from 'natten-web';

const B = 1;
const X = 64;
const Y = 64;
const H = 4;
const D = 32;
const K = 7;
const RUNS = 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function checksum(t: Tensor): number {
  let s = 0;
  for (const v of t.data) s += v;
  return s;
}

/** Median wall time of `runs` calls; a WebGPU op resolves once its work is queued, so wait for the GPU too. */
async function timed<T>(runs: number, f: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const times: number[] = [];
  let result = await f();
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    result = await f();
    await synchronize();
    times.push(performance.now() - t0);
  }
  return { result, ms: median(times) };
}

async function main(): Promise<void> {
  const shape = [B, X, Y, H, D];
  console.log(`natten-web ${VERSION} demo: na2d, q/k/v [${shape.join(', ')}] float32, kernelSize ${K}x${K}`);
  const env = await info().catch((e: unknown) => {
    console.log(`WebGPU probe failed: ${(e as Error).message}`);
    return undefined;
  });
  const adapter = env?.adapter;
  console.log(
    adapter
      ? `backend: webgpu, adapter: ${adapter.vendor} / ${adapter.architecture} / ${adapter.device}${adapter.fallback ? ' (software fallback adapter)' : ''}`
      : 'backend: cpu (no WebGPU adapter found)',
  );

  const q = randn(shape, 'float32', 1);
  const k = randn(shape, 'float32', 2);
  const v = randn(shape, 'float32', 3);
  const flops = fnaFlops({ batch: B, heads: H, spatial: [X, Y], dim: D, kernelSize: [K, K] });

  // CPU reference (f64 accumulation): one warm-up + median of a few runs (fewer: it is the slow one).
  const cpu = await timed(2, () => na2d(q, k, v, { kernelSize: K, backend: 'cpu' }));
  const reference = cpu.result;

  let used = 'cpu';
  let out = reference;
  let ms = cpu.ms;
  if (env?.backend === 'webgpu') {
    const [gq, gk, gv] = await Promise.all([toGpu(q), toGpu(k), toGpu(v)]);
    try {
      // GPU tensors in, GPU tensors out: no readback inside the timed loop.
      const gpu = await timed(RUNS, () => na2d(gq, gk, gv, { kernelSize: K, backend: 'webgpu' }) as Promise<AnyTensor>);
      out = await toHost(gpu.result);
      ms = gpu.ms;
      used = 'webgpu';
    } catch (e) {
      if (!(e instanceof NattenError)) throw e;
      const why = e instanceof NattenNotImplementedError ? 'the WebGPU fused forward is not implemented yet' : `WebGPU failed (${e.name})`;
      console.log(`${why}: ${e.message.split('\n')[0]}; falling back to the CPU backend`);
    }
  }

  const err = compareTensors(out, reference);
  console.log(`ran on: ${used}`);
  console.log(`output [${out.shape.join(', ')}] checksum: ${checksum(out).toFixed(6)}`);
  console.log(`max abs error vs CPU reference: ${err.maxAbs.toExponential(3)}`);
  console.log(`time (median of ${used === 'cpu' ? 2 : RUNS} runs): ${ms.toFixed(2)} ms, ${(flops / (ms * 1e6)).toFixed(2)} GFLOP/s`);
  console.log(
    used === 'cpu'
      ? `CPU reference: ${cpu.ms.toFixed(2)} ms (this run used the CPU backend)`
      : `CPU reference: ${cpu.ms.toFixed(2)} ms, ${(cpu.ms / ms).toFixed(1)}x slower than ${used}`,
  );
  await dispose();
}

await main();
