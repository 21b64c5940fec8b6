/**
 * Proves a compute shader runs under Deno's WebGPU (wgpu + naga). Bundle and run:
 *   tools/deno-smoke/run.sh tools/deno-smoke/smoke.ts
 * Exit code = number of failed checks.
 */
import { describeAdapter, formatAdapterLine, runTinyCompute } from '../src/webgpu-probe.ts';
import { check, runChecksAndExit } from './harness.ts';

function denoVersion(): string {
  const deno: unknown = Reflect.get(globalThis, 'Deno');
  const version: unknown = typeof deno === 'object' && deno !== null ? Reflect.get(deno, 'version') : undefined;
  const v: unknown = typeof version === 'object' && version !== null ? Reflect.get(version, 'deno') : undefined;
  return typeof v === 'string' ? v : '?';
}

let adapter: GPUAdapter | null = null;
let device: GPUDevice | undefined;

check('navigator.gpu.requestAdapter() gives an adapter', async () => {
  if (typeof navigator === 'undefined' || navigator.gpu === undefined) {
    throw new Error('navigator.gpu is undefined (run deno with --unstable-webgpu)');
  }
  adapter = await navigator.gpu.requestAdapter();
  if (adapter === null) throw new Error('requestAdapter() returned null (no Vulkan driver?)');
  console.log(formatAdapterLine(describeAdapter(adapter), `deno ${denoVersion()} wgpu`));
});

check('a tiny compute shader returns exact results', async () => {
  if (adapter === null) throw new Error('no adapter');
  device = await adapter.requestDevice();
  const result = await runTinyCompute(device);
  if (!result.ok) throw new Error(`mismatch ${JSON.stringify(result.mismatch)}`);
  device.destroy();
});

await runChecksAndExit();
